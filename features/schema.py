"""Canonical clinical columns: names, types, units and allowed values.

This module is the one place that states what a canonical cohort table holds (docs/design.md section 3).
Every other module refers to columns through the constants below, never by retyping the
string. Binary columns are stored as 0/1 (pandas nullable ``Int64``), categorical columns as
lower-case strings, continuous columns as floats in the unit given here.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["id", "text", "path", "float", "int", "binary", "category"]


@dataclass(frozen=True)
class Column:
    """One canonical column: its type, unit and allowed values."""

    name: str
    kind: Kind
    description: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    role: Literal["id", "context", "input", "outcome", "image"] = "input"
    # When the value is known: at diagnosis, before chemotherapy ("baseline"), after
    # chemotherapy but before liver surgery ("preoperative"), or after surgery. A model
    # predicting chemotherapy response may only use baseline inputs.
    timing: Literal["baseline", "preoperative", "postoperative"] = "baseline"


PATIENT_ID = "patient_id"
IMAGE = "image"
MASK = "mask"
SITE = "site"
AGE = "age_years"
SEX = "sex"
ECOG = "ecog"
PRIMARY_SITE = "primary_site"
NODE_POSITIVE = "primary_node_positive"
T_STAGE = "primary_t_stage"
SYNCHRONOUS = "synchronous"
DFI_MONTHS = "disease_free_interval_months"
N_LESIONS = "n_liver_lesions"
MULTIPLE_LESIONS = "multiple_liver_lesions"
LARGEST_CM = "largest_lesion_cm"
BILOBAR = "bilobar"
CEA = "cea_ng_ml"
CA19_9 = "ca19_9_u_ml"
EXTRAHEPATIC = "extrahepatic_disease"
RAS = "ras_mutant"
BRAF = "braf_mutant"
MSI = "msi_high"
CHEMO_REGIMEN = "chemo_regimen"
CHEMO_CYCLES = "chemo_cycles"
PROGRESSION_ON_CHEMO = "progression_on_chemo"
MONTHS_TO_SURGERY = "months_primary_to_liver_surgery"
MARGIN_POSITIVE = "resection_margin_positive"
RECURRENCE_EVENT = "recurrence_event"
RECURRENCE_MONTHS = "recurrence_months"
RECIST = "recist_response"

SEXES = ("male", "female")
PRIMARY_SITES = ("right_colon", "left_colon", "rectum")
CHEMO_REGIMENS = (
    "none",
    "folfox",
    "capox",
    "folfiri",
    "folfoxiri",
    "folfox_bevacizumab",
    "folfiri_bevacizumab",
    "folfox_anti_egfr",
    "folfiri_anti_egfr",
    "other",
)
RECIST_CATEGORIES = ("CR", "PR", "SD", "PD")
RESPONDER_CATEGORIES = ("CR", "PR")

COLUMNS: tuple[Column, ...] = (
    Column(PATIENT_ID, "id", "unique patient identifier, passed through unchanged", role="id"),
    Column(IMAGE, "path", "CT volume, path relative to the cohort table", role="image"),
    Column(MASK, "path", "label map (liver, lesions), path relative to the cohort table", role="image"),
    Column(SITE, "text", "acquisition site or scanner group (optional; used for harmonisation)", role="context"),
    Column(AGE, "float", "age at liver surgery", "years", 18, 110),
    Column(SEX, "category", "sex", categories=SEXES),
    Column(ECOG, "int", "ECOG performance status", "", 0, 4),
    Column(PRIMARY_SITE, "category", "primary tumour site", categories=PRIMARY_SITES),
    Column(NODE_POSITIVE, "binary", "lymph-node-positive primary tumour"),
    Column(T_STAGE, "int", "primary tumour T stage (4 = serosal invasion)", "", 1, 4),
    Column(SYNCHRONOUS, "binary", "liver metastases found with or before the primary"),
    Column(DFI_MONTHS, "float", "primary resection to detection of liver metastases", "months", 0, 600),
    Column(N_LESIONS, "int", "number of liver metastases", "", 1, 200),
    Column(
        MULTIPLE_LESIONS,
        "binary",
        "more than one liver metastasis (0/1); a sheet without a lesion "
        "count often has this flag (e.g. TCIA multiple_metastases)",
    ),
    Column(LARGEST_CM, "float", "largest liver metastasis, maximum diameter", "cm", 0.1, 40),
    Column(BILOBAR, "binary", "metastases in both liver lobes"),
    Column(CEA, "float", "pre-operative carcinoembryonic antigen", "ng/mL", 0, 1e6),
    Column(CA19_9, "float", "pre-operative CA 19-9", "U/mL", 0, 1e6),
    Column(EXTRAHEPATIC, "binary", "extrahepatic disease at liver surgery"),
    Column(RAS, "binary", "KRAS or NRAS mutant"),
    Column(BRAF, "binary", "BRAF V600E mutant"),
    Column(MSI, "binary", "microsatellite instability high"),
    Column(CHEMO_REGIMEN, "category", "pre-operative chemotherapy regimen", categories=CHEMO_REGIMENS),
    Column(CHEMO_CYCLES, "int", "pre-operative chemotherapy cycles", "cycles", 0, 60, timing="preoperative"),
    Column(PROGRESSION_ON_CHEMO, "binary", "progressive disease on pre-operative chemotherapy", timing="preoperative"),
    Column(
        MONTHS_TO_SURGERY,
        "float",
        "primary resection (or diagnosis) to liver surgery",
        "months",
        0,
        600,
        timing="preoperative",
    ),
    Column(MARGIN_POSITIVE, "binary", "R1 liver resection margin", timing="postoperative"),
    Column(RECURRENCE_EVENT, "binary", "recurrence observed (0 = censored)", role="outcome"),
    Column(RECURRENCE_MONTHS, "float", "liver surgery to recurrence or censoring", "months", 0, 600, role="outcome"),
    Column(
        RECIST,
        "category",
        "RECIST 1.1 best response to pre-operative chemotherapy",
        categories=RECIST_CATEGORIES,
        role="outcome",
    ),
)

COLUMN_BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
CLINICAL_INPUTS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.role == "input")
OUTCOMES: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.role == "outcome")
# Inputs that stand in for another where a sheet lacks it (features.scores.ITEMS, docs/scores.md):
# a table that has the count need not have the flag (the synthetic cohorts do not).
STAND_IN_INPUTS: tuple[str, ...] = (MULTIPLE_LESIONS,)
BASELINE_INPUTS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.role == "input" and c.timing == "baseline")

# Per-case statuses of image extraction and `crlm validate --images` (features.imaging raises
# them as CaseError.reason; docs/imaging.md). "ok" is a usable case.
CASE_OK = "ok"
CASE_STATUSES: dict[str, str] = {
    CASE_OK: "extracted",
    "missing_file": "image or mask path does not exist",
    "unreadable": "the file cannot be read as what it claims to be (the reason says what was tried)",
    "unsupported_image": "not a 3-D scalar volume",
    "ambiguous_file": "a mask folder holding several DICOM-SEG files",
    "ambiguous_series": "an image folder holding several DICOM series and nothing saying which one",
    "series_mismatch": "the DICOM-SEG references a series that is not in the image folder",
    "missing_slices": "a gap of whole slice steps in a DICOM series",
    "uneven_spacing": "DICOM slice steps that differ by more than 1% of the median step",
    "mixed_orientation": "DICOM slices with different orientations in one series",
    "inconsistent_slices": "DICOM slices with different sizes or pixel spacings in one series",
    "duplicate_positions": "a DICOM slice position taken twice in one acquisition",
    "multiple_acquisitions": "several acquisitions sharing slice positions in one series",
    "seg_outside_image": "DICOM-SEG voxels outside the CT (series cut short or another series)",
    "not_hu": "CT values that cannot be HU (nothing below 0: no air)",
    "geometry_mismatch": "mask on another grid than the image (and resampling not allowed)",
    "nan_voxels": "NaN or infinite image voxels",
    "invalid_labels": "mask values that are not a uint8 label map",
    "empty_mask": "mask without any non-zero voxel",
    "no_liver_label": "liver required but absent",
    "missing_lesion_label": "no lesion label or lesion segment",
    "lesion_too_small": "a lesion below the minimum voxel count",
    "reference_tissue_too_small": "too few liver voxels left after erosion for reference-tissue normalisation",
    "radiomics_failed": "pyradiomics could not process a lesion",
}
NO_LIVER_LABEL = "no_liver_label"
REFERENCE_TISSUE_TOO_SMALL = "reference_tissue_too_small"
# Lesion-table provenance of reference-tissue normalisation (features.reference_tissue), only when enabled:
# the patient's reference median (HU of the image as loaded) and its voxel count after erosion.
REFERENCE_MEDIAN_HU = "reference_liver_median_hu"
REFERENCE_MAD_HU = "reference_liver_mad_hu"
REFERENCE_VOXELS = "reference_liver_voxels"

# Per-patient status vocabulary: every table that says whether a patient is usable (feature
# table, extraction report, predictions.csv, `crlm validate --images`) has a ``status`` column
# (``OK`` or a reason code: the codes of CASE_STATUSES, the validation codes of
# features.validation, and the ones below) and a ``reason`` column (what is wrong and the fix).
STATUS = "status"
REASON = "reason"
OK = CASE_OK
INVALID = "invalid"  # a clinical value rejected by validation (features.validation)
NOT_EXTRACTED = "not_extracted"  # a patient without a row in the extraction report
DUPLICATE_ID = "duplicate_patient_id"
MISSING_ID = "missing_patient_id"
EXTRACTION_ERROR = "extraction_error"  # extraction raised for this case (the reason names the exception)
# Perturbed re-extraction for feature robustness (issue 13; features/perturbation.py, docs/robustness.md).
PERTURBATION = "perturbation"  # column of perturbed.parquet: the perturbation's name, e.g. icc-1, site-1
ICC_CHAIN = "icc"  # Zwanenburg et al. 2019 / MIRP chain: the ICC(1,1) per feature is computed over it
SITE_CHAIN = "site"  # a simulated other scanner: rows to score candidates on the training site
PERTURBATION_CHAINS = (ICC_CHAIN, SITE_CHAIN)
PERTURBATION_FAILED = "perturbation_lesion_lost"  # a lesion vanished or became too small under a perturbation

# Truth columns of a synthetic cohort (truth.csv): the simulation's true predictors and times,
# never read by a model; evaluation uses them as the oracle (models.comparison).
TRUTH_RECURRENCE_LP = "true_recurrence_lp"
TRUTH_RECURRENCE_CLINICAL_LP = "true_recurrence_lp_clinical"
TRUTH_RECURRENCE_IMAGING_LP = "true_recurrence_lp_imaging"
TRUTH_RESPONSE_LP = "true_response_logit"
TRUTH_RESPONSE_PROBABILITY = "true_response_probability"
TRUTH_RECURRENCE_TIME = "true_recurrence_months_uncensored"
TRUTH_CENSORING_TIME = "censoring_months"

_FILE_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_FILE_STEM = 80  # characters of a sanitised identifier kept in a file name
FILE_STEM_HASH_CHARS = 8  # hex characters of SHA-256 appended when an identifier had to change


def patient_file_stem(patient_id: str) -> str:
    """The one file-name rule for a patient (or feature) identifier: ASCII letters, digits,
    ``.``, ``_`` and ``-``, at most ``MAX_FILE_STEM`` characters, never starting or ending with
    ``.`` or ``_``.

    An identifier that had to change (non-ASCII, ``/``, spaces, too long, empty) gets the first
    ``FILE_STEM_HASH_CHARS`` hex digits of the SHA-256 of its UTF-8 bytes appended, so two
    different identifiers (``Pätient`` and ``P_tient``) never share a file. Used by
    ``crlm explain`` (waterfall plots) and ``crlm predict`` (explanation files) alike.
    """
    text = str(patient_id)
    safe = _FILE_STEM_UNSAFE.sub("_", text).strip("._")[:MAX_FILE_STEM]
    if safe == text and safe:
        return safe
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:FILE_STEM_HASH_CHARS]
    return f"{safe or 'patient'}-{digest}"


def nearest_name(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to ``name`` (``difflib``, similarity at least ``cutoff``), else the
    one equal to it ignoring case, else None: the one "did you mean" rule of settings files,
    cohort mappings and model inputs."""
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=cutoff)
    if close:
        return close[0]
    lowered = {v.lower(): v for v in valid}
    return lowered.get(str(name).lower())
