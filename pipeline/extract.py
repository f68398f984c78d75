"""``crlm extract``: per-lesion morphology and radiomics for a cohort (thin stage script)."""

from __future__ import annotations

import time
from pathlib import Path

from features import extraction, radiomics
from features import settings
from features.settings import settings_class
from features.imaging import LabelRoles
from pipeline.world import load_labels


@settings_class
class ExtractionConfig:
    """``configs/extraction.yaml``: how lesions are cropped, cached and aggregated."""

    crop_margin_mm: float
    cache_dir: str
    resample_mask: bool
    min_lesion_voxels: int
    aggregation: tuple[str, ...]

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


def case_options(params: Path, config: Path, labels_path: Path, liver_label: int | None = None,
                 lesion_label: int | None = None, resample_mask: bool | None = None
                 ) -> tuple[extraction.CaseOptions, ExtractionConfig]:
    """The per-case extraction settings from the radiomics parameter file, the extraction config
    and the label roles; command-line label values and ``resample_mask`` override the files."""
    cfg = load_extraction_config(config)
    labels: LabelRoles = load_labels(labels_path)
    if liver_label is not None or lesion_label is not None:
        labels = settings.replace(labels, "--liver-label/--lesion-label",
                                  liver=liver_label if liver_label is not None else labels.liver,
                                  lesion=lesion_label if lesion_label is not None else labels.lesion)
    options = extraction.CaseOptions(
        settings=radiomics.ExtractionSettings(radiomics.load_radiomics_params(params), cfg.crop_margin_mm),
        labels=labels,
        resample_mask=cfg.resample_mask if resample_mask is None else resample_mask,
        min_lesion_voxels=cfg.min_lesion_voxels,
    )
    return options, cfg


def run_extract(cohort: str | Path, out: str | Path, params: Path, config: Path, labels_path: Path,
                jobs: int, cache: str | Path | None = None, liver_label: int | None = None,
                lesion_label: int | None = None, resample_mask: bool | None = None,
                progress: bool = True, scheduler: str | None = None) -> tuple[int, int]:
    """Extract every case of ``cohort``; return (cases, lesions extracted).

    ``cohort``, ``cache`` and ``out`` are local paths or fsspec URLs; ``out`` is written by this process.
    ``scheduler``: a Dask scheduler address, else ``DASK_SCHEDULER_ADDRESS``, else local processes.
    """
    options, cfg = case_options(params, config, labels_path, liver_label, lesion_label, resample_mask)
    cases = extraction.read_manifest(cohort)
    cache_dir = cfg.cache_location(cache)
    start = time.perf_counter()
    lesions, report = extraction.extract_cohort(cases, options, cache_dir, jobs=jobs, progress=progress,
                                                scheduler=scheduler)
    extraction.write_extraction(out, lesions, report, extraction.settings_record(options, cfg.aggregation))
    failed = report.loc[report[extraction.STATUS] != extraction.OK]
    print(f"extracted {len(lesions)} lesions from {len(cases)} cases in {time.perf_counter() - start:.1f} s "
          f"({int(report[extraction.CACHED].sum())} rows from cache); {failed[extraction.PATIENT_ID].nunique()} "
          f"case(s) with failures, see {str(out).rstrip('/')}/extraction_report.csv")
    return len(cases), len(lesions)
