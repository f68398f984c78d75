"""``crlm validate``: check a cohort's clinical table before anything is computed (thin script).

Reads the CSV (identifiers as text, so "007" stays "007"), applies a cohort mapping if one is
given (``configs/mappings/*.yaml``), validates against ``features.schema`` and prints the
report. Exit code 0 when the table is usable (even if some patients are invalid: they keep
their row with a status), 1 when a fatal problem makes the whole table unusable. A file that is
missing or cannot be read raises an error naming the file (``crlm`` prints it, exit code 2).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import pandas as pd

from features.mapping import CohortMapping, MappingError, apply_mapping, load_mapping, sheet_headers
from features.schema import PATIENT_ID
from features.validation import ValidationReport, validate_cohort


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
    return table, validate_cohort(table, extra_columns=spec.covariate_columns() if spec else (),
                                  ranges=spec.ranges if spec else None)


def run_validate(cohort: Path, mapping: Path | None = None, out: TextIO | None = None) -> int:
    """Validate ``cohort`` (after ``mapping``, if given) and print the report to ``out``.

    Returns 0 if there is no fatal problem, 1 otherwise.
    """
    out = out if out is not None else sys.stdout
    _, report = read_and_validate(Path(cohort), mapping)
    source = f"{cohort} (mapping {mapping})" if mapping is not None else f"{cohort}"
    print(f"validated {source}", file=out)
    print(report.format(), file=out)
    return 1 if report.fatal else 0
