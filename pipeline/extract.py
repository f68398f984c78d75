"""``crlm extract``: per-lesion morphology and radiomics for a cohort (thin stage script)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from features import extraction, radiomics
from pipeline import settings
from features.imaging import LabelRoles
from pipeline.world import load_labels


@dataclass(frozen=True)
class ExtractionConfig:
    """``configs/extraction.yaml``: how lesions are cropped, cached and aggregated."""

    crop_margin_mm: float
    cache_dir: str
    resample_mask: bool
    min_lesion_voxels: int
    aggregation: tuple[str, ...]


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
        labels = replace(labels, liver=liver_label if liver_label is not None else labels.liver,
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
    cache_dir = cache if cache is not None else cfg.cache_dir
    if not extraction.is_url(cache_dir):
        cache_dir = Path(cache_dir)
    start = time.perf_counter()
    lesions, report = extraction.extract_cohort(cases, options, cache_dir, jobs=jobs, progress=progress,
                                                scheduler=scheduler)
    extraction.write_extraction(out, lesions, report, extraction.settings_record(options, cfg.aggregation))
    failed = report.loc[report[extraction.STATUS] != extraction.OK]
    print(f"extracted {len(lesions)} lesions from {len(cases)} cases in {time.perf_counter() - start:.1f} s "
          f"({int(report[extraction.CACHED].sum())} rows from cache); {failed[extraction.PATIENT_ID].nunique()} "
          f"case(s) with failures, see {str(out).rstrip('/')}/extraction_report.csv")
    return len(cases), len(lesions)
