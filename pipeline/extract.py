"""``crlm extract``: per-lesion morphology and radiomics for a cohort (thin stage script)."""

from __future__ import annotations

import time
from pathlib import Path

from features import extraction
from pipeline.execution import map_cases
from pipeline.inputs import case_options


def run_extract(
    cohort: str | Path,
    out: str | Path,
    params: Path,
    config: Path,
    labels_path: Path,
    jobs: int,
    cache: str | Path | None = None,
    liver_label: int | None = None,
    lesion_label: int | None = None,
    resample_mask: bool | None = None,
    progress: bool = True,
    scheduler: str | None = None,
) -> tuple[int, int]:
    """Extract every case of ``cohort``; return (cases, lesions extracted).

    ``cohort``, ``cache`` and ``out`` are local paths or fsspec URLs; ``out`` is written by this process.
    ``scheduler``: a Dask scheduler address, else ``DASK_SCHEDULER_ADDRESS``, else local processes.
    """
    options, cfg = case_options(params, config, labels_path, liver_label, lesion_label, resample_mask)
    cases = extraction.read_manifest(cohort)
    cache_dir = cfg.cache_location(cache)
    start = time.perf_counter()
    lesions, report = extraction.extract_cohort(
        cases, options, cache_dir, jobs=jobs, progress=progress, scheduler=scheduler, map_cases=map_cases
    )
    extraction.write_extraction(out, lesions, report, extraction.settings_record(options, cfg.aggregation))
    failed = report.loc[report[extraction.STATUS] != extraction.OK]
    print(
        f"extracted {len(lesions)} lesions from {len(cases)} cases in {time.perf_counter() - start:.1f} s "
        f"({int(report[extraction.CACHED].sum())} rows from cache); {failed[extraction.PATIENT_ID].nunique()} "
        f"case(s) with failures, see {str(out).rstrip('/')}/extraction_report.csv"
    )
    return len(cases), len(lesions)
