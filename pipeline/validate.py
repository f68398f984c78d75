"""``crlm validate``: check a cohort's clinical table before anything is computed (thin script).

Reads the CSV (identifiers as text, so "007" stays "007"), applies a cohort mapping if one is
given (``configs/mappings/*.yaml``), validates against ``features.schema`` and prints the
report. Exit code 0 when the table is usable (even if some patients are invalid: they keep
their row with a status), 1 when a fatal problem makes the whole table unusable. A file that is
missing or cannot be read raises an error naming the file (``crlm`` prints it, exit code 2).

With ``--images`` every image/mask pair is checked from its headers too
(`features.imaging.check_case_headers`: the statuses extraction would give, without decoding
the voxels where it can), one status per patient, optionally written to a CSV.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import TextIO

import pandas as pd

from features import imaging
from features.schema import CASE_OK, IMAGE, MASK, PATIENT_ID, REASON, STATUS
from pipeline.inputs import read_and_validate


def _check_one(row: tuple, base: Path, labels: imaging.LabelRoles, resample_mask: bool) -> dict:
    pid, image, mask = row
    status, reason = CASE_OK, ""
    blank = [what for what, value in ((IMAGE, image), (MASK, mask)) if not isinstance(value, str) or not value.strip()]
    if blank:
        status = "missing_file"
        reason = f"patient {pid}: the {' and '.join(blank)} path is empty; fill in the path (relative to the table)"
    else:
        try:
            imaging.check_case_headers(
                str(pid), base / image.strip(), base / mask.strip(), labels, resample_mask=resample_mask
            )
        except imaging.CaseError as exc:
            status, reason = exc.reason, str(exc)
    return {PATIENT_ID: pid, IMAGE: image, MASK: mask, STATUS: status, REASON: reason}


def check_images(
    table: pd.DataFrame, base: Path, labels: imaging.LabelRoles, resample_mask: bool = False, jobs: int = 1
) -> pd.DataFrame:
    """One row per patient: ``patient_id``, ``image``, ``mask``, ``status`` (``ok`` or a case
    status of `features.schema.CASE_STATUSES`) and ``reason``, from file headers. Paths are
    relative to ``base`` (the cohort table's folder); ``jobs`` local processes (-1: all cores)."""
    from pipeline.execution import map_cases

    missing = [c for c in (IMAGE, MASK) if c not in table]
    if missing:
        raise ValueError(f"--images needs the column(s) {', '.join(missing)} (paths relative to the table)")
    rows = list(table[[PATIENT_ID, IMAGE, MASK]].itertuples(index=False, name=None))
    check = partial(_check_one, base=Path(base), labels=labels, resample_mask=resample_mask)
    results = map_cases(check, rows, jobs=jobs, scheduler="local", progress=False, desc="images")
    return pd.DataFrame(list(results), columns=[PATIENT_ID, IMAGE, MASK, STATUS, REASON])


def run_validate(
    cohort: Path,
    mapping: Path | None = None,
    out: TextIO | None = None,
    labels: imaging.LabelRoles | None = None,
    resample_mask: bool = False,
    images_out: Path | None = None,
    jobs: int = 1,
) -> int:
    """Validate ``cohort`` (after ``mapping``, if given) and print the report to ``out``.

    With ``labels`` the images and masks are checked too (`check_images`); their statuses are
    printed (and written to ``images_out``, a CSV, if given). Image problems are per-patient
    statuses, not fatal. Returns 0 if there is no fatal problem, 1 otherwise.
    """
    out = out if out is not None else sys.stdout
    table, report = read_and_validate(Path(cohort), mapping)
    source = f"{cohort} (mapping {mapping})" if mapping is not None else f"{cohort}"
    print(f"validated {source}", file=out)
    print(report.format(), file=out)
    if labels is not None:
        start = time.perf_counter()
        images = check_images(table, Path(cohort).parent, labels, resample_mask, jobs)
        seconds = time.perf_counter() - start
        counts = ", ".join(f"{k} {v}" for k, v in images[STATUS].value_counts().items())
        print(f"images: {len(images)} patient(s) checked from headers in {seconds:.1f} s: {counts}", file=out)
        for row in images[images[STATUS] != CASE_OK].itertuples(index=False):
            print(f"  {getattr(row, STATUS)}: {getattr(row, REASON)}", file=out)
        if images_out is not None:
            Path(images_out).parent.mkdir(parents=True, exist_ok=True)
            images.to_csv(images_out, index=False, encoding="utf-8")
            print(f"wrote {images_out}", file=out)
    return 1 if report.fatal else 0
