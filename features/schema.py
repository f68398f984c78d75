"""Canonical clinical columns: names, types, units and allowed values.

This module is the one place that states what a canonical cohort table holds (DESIGN.md 3).
Every other module refers to columns through the constants below, never by retyping the
string. Binary columns are stored as 0/1 (pandas nullable ``Int64``), categorical columns as
lower-case strings, continuous columns as floats in the unit given here.
"""

from __future__ import annotations

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
    Column(SITE, "text", "acquisition site or scanner group (optional; used for harmonisation)",
           role="context"),
    Column(AGE, "float", "age at liver surgery", "years", 18, 110),
    Column(SEX, "category", "sex", categories=SEXES),
    Column(ECOG, "int", "ECOG performance status", "", 0, 4),
    Column(PRIMARY_SITE, "category", "primary tumour site", categories=PRIMARY_SITES),
    Column(NODE_POSITIVE, "binary", "lymph-node-positive primary tumour"),
    Column(T_STAGE, "int", "primary tumour T stage (4 = serosal invasion)", "", 1, 4),
    Column(SYNCHRONOUS, "binary", "liver metastases found with or before the primary"),
    Column(DFI_MONTHS, "float", "primary resection to detection of liver metastases", "months", 0, 600),
    Column(N_LESIONS, "int", "number of liver metastases", "", 1, 200),
    Column(MULTIPLE_LESIONS, "binary", "more than one liver metastasis (0/1); a sheet without a lesion "
           "count often has this flag (e.g. TCIA multiple_metastases)"),
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
    Column(PROGRESSION_ON_CHEMO, "binary", "progressive disease on pre-operative chemotherapy",
           timing="preoperative"),
    Column(MONTHS_TO_SURGERY, "float", "primary resection (or diagnosis) to liver surgery", "months", 0, 600,
           timing="preoperative"),
    Column(MARGIN_POSITIVE, "binary", "R1 liver resection margin", timing="postoperative"),
    Column(RECURRENCE_EVENT, "binary", "recurrence observed (0 = censored)", role="outcome"),
    Column(RECURRENCE_MONTHS, "float", "liver surgery to recurrence or censoring", "months", 0, 600, role="outcome"),
    Column(RECIST, "category", "RECIST 1.1 best response to pre-operative chemotherapy",
           categories=RECIST_CATEGORIES, role="outcome"),
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
    "radiomics_failed": "pyradiomics could not process a lesion",
}
