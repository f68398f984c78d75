"""Reading a user's inputs, shared by several stages: the clinical table (with its cohort
mapping) and the extraction settings (``configs/extraction.yaml``, the radiomics parameter
file, the label roles).

Not a stage: ``validate``, ``featurize``, ``extract`` and ``predict`` import it, so that no
stage imports another.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features import extraction, radiomics, settings
from features.imaging import LabelRoles
from features.mapping import (
    CohortMapping,
    MappingError,
    apply_mapping,
    load_mapping,
    sheet_headers,
)
from features.reference_tissue import ReferenceTissue
from features.schema import PATIENT_ID
from features.settings import settings_class
from features.validation import ValidationReport, validate_cohort
from pipeline.world import load_labels

# --------------------------------------------------------------------------- clinical table


def read_cohort_csv(path: Path, id_column: str = PATIENT_ID, mapping: CohortMapping | None = None) -> pd.DataFrame:
    """Read a clinical CSV as pandas would, but ``id_column`` as text (never as numbers).

    Headers are matched as people write them (``features.mapping.sheet_headers``: spaces and case
    ignored, near misses of canonical columns are errors). ``utf-8-sig`` also reads files saved
    by spreadsheet programs with a byte-order mark.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cohort table not found: {path}")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
        renames = sheet_headers(header, mapping)
        raw_id = next((raw for raw in header if renames.get(raw, raw) == id_column), id_column)
        table = pd.read_csv(path, dtype={raw_id: str}, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a CSV table: {exc}") from exc
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from exc
    return table.rename(columns=renames)


def read_and_validate(cohort: Path, mapping: Path | None = None) -> tuple[pd.DataFrame, ValidationReport]:
    """The cohort's table in canonical form (after ``mapping``) and its validation report.

    The report's ``table`` holds every row (rejected cells missing, their values in ``status``).
    """
    spec = load_mapping(mapping) if mapping is not None else None
    raw = read_cohort_csv(cohort, spec.id_column if spec else PATIENT_ID, spec)
    table = apply_mapping(raw, spec) if spec else raw
    return table, validate_cohort(
        table, extra_columns=spec.covariate_columns() if spec else (), ranges=spec.ranges if spec else None
    )


# --------------------------------------------------------------------------- extraction settings


@settings_class
class ExtractionConfig:
    """``configs/extraction.yaml``: how lesions are cropped, cached and aggregated."""

    crop_margin_mm: float
    cache_dir: str
    resample_mask: bool
    min_lesion_voxels: int
    aggregation: tuple[str, ...]
    reference_tissue: ReferenceTissue = ReferenceTissue()  # off unless ``enabled: true`` (docs/reference_tissue.md)

    def cache_location(self, override: str | Path | None = None) -> str | Path:
        """The per-case cache: ``override`` (``--cache``) else ``cache_dir``. A URL stays text; a
        relative path is relative to the working directory (where ``crlm`` or ``dvc`` runs), the
        one rule for every relative path of the command line and the settings (docs/settings.md)."""
        location = override if override is not None else self.cache_dir
        if extraction.is_url(location):
            return str(location)
        return Path.cwd() / location


def load_extraction_config(path: str | Path) -> ExtractionConfig:
    return settings.load(ExtractionConfig, path)


def case_options(
    params: Path,
    config: Path,
    labels_path: Path,
    liver_label: int | None = None,
    lesion_label: int | None = None,
    resample_mask: bool | None = None,
) -> tuple[extraction.CaseOptions, ExtractionConfig]:
    """The per-case extraction settings from the radiomics parameter file, the extraction config
    and the label roles; command-line label values and ``resample_mask`` override the files."""
    cfg = load_extraction_config(config)
    labels: LabelRoles = load_labels(labels_path)
    if liver_label is not None or lesion_label is not None:
        labels = settings.replace(
            labels,
            "--liver-label/--lesion-label",
            liver=liver_label if liver_label is not None else labels.liver,
            lesion=lesion_label if lesion_label is not None else labels.lesion,
        )
    options = extraction.CaseOptions(
        settings=radiomics.ExtractionSettings(radiomics.load_radiomics_params(params), cfg.crop_margin_mm),
        labels=labels,
        resample_mask=cfg.resample_mask if resample_mask is None else resample_mask,
        min_lesion_voxels=cfg.min_lesion_voxels,
        reference_tissue=cfg.reference_tissue if cfg.reference_tissue.enabled else None,
    )
    return options, cfg
