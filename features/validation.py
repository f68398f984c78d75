"""Validation of a canonical cohort table against ``features.schema`` (docs/design.md section 3).

One pandera ``DataFrameSchema`` is built from ``schema.COLUMNS`` and run once with
``lazy=True``, so every problem of every patient is reported in one call. Problems come in two
tiers:

- **fatal** (the table cannot be used at all): empty table, a required column absent, a patient
  without an identifier, a duplicated ``patient_id``. For a duplicate, *every* row that carries
  the id is listed (not only the second and later ones): which row is right is the user's call.
- **row problems** (only that patient is unusable): a value outside its range, an unknown
  category, a binary value other than 0/1, a non-numeric string in a numeric column.

Missing values are allowed in every clinical column (the scores turn them into a missing
score); a blank or whitespace-only cell counts as missing. Columns that are not canonical are
kept and not checked (user covariates), unless described by ``extra_columns``. Row numbers in
messages are 1-based data rows of the input file (row 1 = first data row = line 2 of a CSV file
with a header); a caller validating part of a file passes the rows' numbers (``rows``).

A cohort mapping may widen or narrow a column's plausibility range for its cohort (``ranges``,
e.g. ``{"age_years": (0, 120)}`` for a paediatric or non-CRLM cohort); the schema's ranges are the
defaults. Every caller (validate, featurize, predict) takes its patients' statuses from
``validate_cohort``, so they agree on who is usable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.schema import (
    COLUMNS,
    INVALID,
    MULTIPLE_LESIONS,
    N_LESIONS,
    OK,
    PATIENT_ID,
    STATUS,
    Column,
)

NUMERIC_KINDS = ("float", "int", "binary")

# pandera check names: the key that turns a failure case into a message.
_NUMBER, _RANGE, _BINARY, _CATEGORY, _ID_BLANK = "number", "range", "binary", "category", "id_blank"
# Reason codes of row problems (a patient's status in batch inference), by failed check.
ROW_PROBLEM_CODES = {
    _NUMBER: "not_a_number",
    _RANGE: "out_of_range",
    _BINARY: "not_binary",
    _CATEGORY: "unknown_category",
}
INCONSISTENT = "inconsistent"  # two columns that contradict each other (count vs flag)
_FATAL_CHECKS = ("column_in_dataframe", "field_uniqueness", "not_nullable", _ID_BLANK)


@dataclass(frozen=True)
class Problem:
    """One validation problem; ``message`` names the patient, column, value and what is allowed."""

    patient_id: str | None
    column: str | None
    value: Any
    allowed: str
    message: str
    code: str = ""  # row problems: not_a_number, out_of_range, not_binary, unknown_category, inconsistent
    row: int | None = None  # 1-based data row of the input file (row problems)


@dataclass
class ValidationReport:
    """Result of ``validate_cohort``.

    ``status`` is indexed like the input: ``"ok"`` or ``"invalid: <reasons joined by '; '>"``,
    each reason naming the patient, its row, the column and the value.
    ``valid_rows`` holds the rows with status ok, numeric columns typed (floats as ``float64``,
    integer and binary columns as ``Int64``). ``table`` holds every row, typed the same way, with
    each rejected cell missing (its value is in the status): it can be written and scored.
    """

    fatal: list[Problem]
    problems: list[Problem]
    status: pd.Series
    valid_rows: pd.DataFrame = field(repr=False)
    table: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing at all was found."""
        return not self.fatal and not self.problems

    def format(self) -> str:
        """A readable text report: counts first, then one line per problem."""
        n = len(self.status)
        n_ok = int((self.status == OK).sum())
        lines = [
            f"{n} patients: {n_ok} ok, {n - n_ok} invalid; "
            f"{len(self.fatal)} fatal problem(s), {len(self.problems)} row problem(s)"
        ]
        if self.fatal:
            lines.append("fatal (the table cannot be used until these are fixed):")
            lines += [f"  {p.message}" for p in self.fatal]
        if self.problems:
            lines.append("row problems (these patients are marked invalid):")
            lines += [f"  {p.message}" for p in self.problems]
        return "\n".join(lines)


# --- value helpers ---------------------------------------------------------------------------


def is_blank(s: pd.Series) -> pd.Series:
    """True where a value is missing or a blank / whitespace-only string."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        return s.isna()
    return s.isna() | s.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)


def as_numbers(s: pd.Series) -> pd.Series:
    """float64 values; NaN where missing, blank or not a number."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64")
    return pd.to_numeric(s.mask(is_blank(s)), errors="coerce").astype("float64")


def _number_text(x: float) -> str:
    """1000000.0 -> '1000000', 0.1 -> '0.1' (no scientific notation for bounds)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def allowed_text(column: Column) -> str:
    """What a column accepts, in words: '18 to 110 years', 'one of male, female', '0 or 1'."""
    unit = f" {column.unit}" if column.unit else ""
    if column.kind == "binary":
        return "0 or 1"
    if column.kind == "category":
        return "one of " + ", ".join(column.categories) if column.categories else "any text"
    if column.kind == "id":
        return "a unique, non-empty identifier"
    if column.kind in ("float", "int"):
        whole = "a whole number " if column.kind == "int" else ""
        lo, hi = column.minimum, column.maximum
        if lo is not None and hi is not None:
            span = f"{_number_text(lo)} to {_number_text(hi)}"
        elif lo is not None:
            span = f"at least {_number_text(lo)}"
        elif hi is not None:
            span = f"at most {_number_text(hi)}"
        else:
            return f"{whole or 'a number'}{unit}".strip()
        return f"{whole}{'from ' if whole else ''}{span}{unit}"
    return "any value"


# --- the pandera schema ----------------------------------------------------------------------


def _checks(column: Column) -> list[pa.Check]:
    """Per-kind checks; each value fails at most one of them (number, then range/binary)."""

    def value_is_number(s: pd.Series) -> pd.Series:
        return is_blank(s) | as_numbers(s).notna()

    def value_within_bounds(s: pd.Series) -> pd.Series:
        x = as_numbers(s)
        ok = x.isna()  # missing or not a number: the 'number' check speaks for it
        good = pd.Series(True, index=s.index)
        if column.minimum is not None:
            good &= x >= column.minimum
        if column.maximum is not None:
            good &= x <= column.maximum
        if column.kind == "int":
            good &= np.isfinite(x) & (x == np.floor(x))
        return ok | good

    def value_is_zero_or_one(s: pd.Series) -> pd.Series:
        x = as_numbers(s)
        return x.isna() | x.isin([0.0, 1.0])

    def value_is_known_category(s: pd.Series) -> pd.Series:
        return is_blank(s) | s.isin(column.categories)

    if column.kind in NUMERIC_KINDS:
        if column.kind == "binary":
            return [pa.Check(value_is_number, name=_NUMBER), pa.Check(value_is_zero_or_one, name=_BINARY)]
        return [pa.Check(value_is_number, name=_NUMBER), pa.Check(value_within_bounds, name=_RANGE)]
    if column.kind == "category" and column.categories:
        return [pa.Check(value_is_known_category, name=_CATEGORY)]
    return []


def cohort_schema(
    required: Sequence[str] = (PATIENT_ID,), extra_columns: Sequence[Column] = (), canonical: Sequence[Column] = COLUMNS
) -> pa.DataFrameSchema:
    """The pandera schema of a canonical cohort table (``patient_id`` is always required).

    ``canonical``: the schema's columns, possibly with a cohort's own ranges (``with_ranges``).
    """
    columns = {c.name: c for c in (*canonical, *extra_columns)}
    needed = {PATIENT_ID, *required}
    specs: dict[str, pa.Column] = {}
    for name, column in columns.items():
        if name == PATIENT_ID:
            blank = pa.Check(lambda s: ~is_blank(s) | s.isna(), name=_ID_BLANK)
            specs[name] = pa.Column(nullable=False, unique=True, required=True, checks=[blank])
        else:
            specs[name] = pa.Column(nullable=True, required=name in needed, checks=_checks(column))
    for name in needed - set(specs):
        specs[name] = pa.Column(nullable=True, required=True)
    return pa.DataFrameSchema(specs, strict=False, name="canonical cohort table")


# --- from failure cases to problems ----------------------------------------------------------


def _value_text(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _patient(ids: pd.Series | None, row: int) -> str | None:
    if ids is None:
        return None
    value = ids.iloc[row]
    return None if pd.isna(value) else str(value)


def _row_problem(
    columns: dict[str, Column], check: str, name: str, value: Any, row: int, ids: pd.Series | None, rows: Sequence[int]
) -> Problem:
    column = columns[name]
    allowed = allowed_text(column)
    patient = _patient(ids, row)
    who = _who(patient, rows[row])
    shown = _value_text(value)
    if check == _NUMBER:
        what = f"is not a number (allowed: {allowed})"
    elif check == _RANGE:
        what = f"is outside {allowed}" if column.kind == "float" else f"is not {allowed}"
    else:  # binary, category
        what = f"is not {allowed}"
    return Problem(
        patient, name, value, allowed, f"{who}: {name} = {shown} {what}", ROW_PROBLEM_CODES[check], rows[row]
    )


def _who(patient: str | None, row: int) -> str:
    """'patient p7 (row 12)', or 'row 12' without an identifier."""
    if patient is None or not patient.strip():
        return f"row {row}"
    return f"patient {patient} (row {row})"


def _count_contradicts_flag(
    table: pd.DataFrame, ids: pd.Series | None, rows: Sequence[int], bad_rows: set[int]
) -> list[Problem]:
    """A lesion count that contradicts the more-than-one-lesion flag (n = 1 with flag 1, or
    n > 1 with flag 0): which one is right is the user's call."""
    if N_LESIONS not in table.columns or MULTIPLE_LESIONS not in table.columns:
        return []
    n, flag = as_numbers(table[N_LESIONS]), as_numbers(table[MULTIPLE_LESIONS])
    contradicts = n.notna() & flag.isin([0.0, 1.0]) & ((n > 1) != (flag == 1))
    problems = []
    for row in np.flatnonzero(contradicts.to_numpy()):
        if row in bad_rows:
            continue
        patient = _patient(ids, row)
        problems.append(
            Problem(
                patient,
                MULTIPLE_LESIONS,
                flag.iloc[row],
                f"consistent with {N_LESIONS}",
                f"{_who(patient, rows[row])}: {N_LESIONS} = {_number_text(n.iloc[row])} contradicts "
                f"{MULTIPLE_LESIONS} = {_number_text(flag.iloc[row])}; correct one of them or leave one blank",
                INCONSISTENT,
                rows[row],
            )
        )
    return problems


def _absent_columns(cases: pd.DataFrame) -> list[Problem]:
    absent = cases.loc[cases["check"] == "column_in_dataframe", "failure_case"]
    return [
        Problem(None, str(name), None, "a column in the table", f"required column '{name}' is missing from the table")
        for name in absent
    ]


def _id_problems(cases: pd.DataFrame, ids: pd.Series | None, rows: Sequence[int]) -> list[Problem]:
    """Missing and duplicated identifiers; a duplicate lists every row that carries it."""
    allowed_id = allowed_text(Column(PATIENT_ID, "id", ""))
    problems: list[Problem] = []
    missing = cases.loc[cases["check"].isin(["not_nullable", _ID_BLANK]), "index"]
    missing_rows = sorted(int(i) for i in missing)
    if missing_rows:
        shown = ", ".join(str(rows[r]) for r in missing_rows)
        problems.append(Problem(None, PATIENT_ID, None, allowed_id, f"{PATIENT_ID} is missing in row(s) {shown}"))
    duplicated = cases.loc[cases["check"] == "field_uniqueness"]
    if ids is not None and not duplicated.empty:
        positions, numbers = duplicated["index"].astype(int), rows
        for value in pd.unique(ids.iloc[sorted(positions)]):
            where = [numbers[r] for r in sorted(positions) if ids.iloc[r] == value]
            problems.append(
                Problem(
                    str(value),
                    PATIENT_ID,
                    value,
                    allowed_id,
                    f"{PATIENT_ID} {_value_text(value)} appears {len(where)} times, "
                    f"in rows {', '.join(map(str, where))}",
                )
            )
    return problems


def _typed(df: pd.DataFrame, columns: dict[str, Column]) -> pd.DataFrame:
    """Numeric canonical columns as float64 / Int64 (values that are not numbers become missing)."""
    out = df.copy()
    for name in out.columns:
        column = columns.get(name)
        if column is None or column.kind not in NUMERIC_KINDS:
            continue
        x = as_numbers(out[name])
        if column.kind in ("int", "binary"):
            x = x.where(x.isna() | (x == np.floor(x)))
        out[name] = x.astype("Int64") if column.kind in ("int", "binary") else x
    return out


def with_ranges(
    columns: Sequence[Column], ranges: Mapping[str, tuple[float | None, float | None]]
) -> tuple[Column, ...]:
    """``columns`` with the plausibility ranges of ``ranges`` (name -> (minimum, maximum))."""
    return tuple(
        dataclasses.replace(c, minimum=ranges[c.name][0], maximum=ranges[c.name][1]) if c.name in ranges else c
        for c in columns
    )


def validate_cohort(
    df: pd.DataFrame,
    required: Sequence[str] = (PATIENT_ID,),
    extra_columns: Sequence[Column] = (),
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    rows: Sequence[int] | None = None,
) -> ValidationReport:
    """Validate a canonical cohort table; every problem is collected in one pass.

    ``required``: columns that must be present (``patient_id`` always is). ``extra_columns``:
    optional descriptions of user covariates (e.g. from a cohort mapping) to check as well.
    ``ranges``: per-cohort plausibility ranges that replace the schema's (from a mapping).
    ``rows``: the 1-based data-row numbers of ``df``'s rows in the input file (default 1..n).
    Never raises on bad data: everything is reported in the returned ``ValidationReport``.
    """
    all_columns = with_ranges((*COLUMNS, *extra_columns), ranges or {})
    columns = {c.name: c for c in all_columns}
    canonical = tuple(c for c in all_columns if c.name in {k.name for k in COLUMNS})
    extra = tuple(c for c in all_columns if c.name not in {k.name for k in COLUMNS})
    table = df.reset_index(drop=True)  # failure cases are then row positions
    rows = list(range(1, len(table) + 1)) if rows is None else [int(r) for r in rows]
    if len(rows) != len(table):
        raise ValueError(f"rows: {len(rows)} row numbers for a table of {len(table)} rows")
    ids = table[PATIENT_ID] if PATIENT_ID in table.columns else None
    try:
        cohort_schema(required, extra, canonical).validate(table, lazy=True)
        cases = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    except SchemaErrors as err:
        cases = err.failure_cases
    is_fatal = cases["check"].isin(_FATAL_CHECKS)
    empty = [Problem(None, None, None, "at least one patient", "the table has no rows")] if table.empty else []
    fatal = empty + _absent_columns(cases)
    table_wide = [p.message for p in fatal]  # these make every row invalid
    fatal += _id_problems(cases.loc[is_fatal], ids, rows)
    broken = cases.loc[~is_fatal & cases["index"].isna()]  # a check that raised: never swallowed
    fatal += [
        Problem(
            None, str(c.column), None, "", f"check '{c.check}' on column '{c.column}' could not run: {c.failure_case}"
        )
        for c in broken.itertuples(index=False)
    ]

    reasons: list[list[str]] = [list(table_wide) for _ in range(len(table))]
    for p in fatal:
        if p.column == PATIENT_ID and p.patient_id is not None:  # a duplicated id
            for row in np.flatnonzero((ids == p.value).to_numpy()):
                reasons[row].append(p.message)
    if ids is not None:
        for row in np.flatnonzero(is_blank(ids).to_numpy()):
            reasons[row].append(f"row {rows[row]}: {PATIENT_ID} is missing")
    order = {name: i for i, name in enumerate(table.columns)}
    row_cases = cases.loc[~is_fatal].dropna(subset=["index"])
    row_cases = row_cases.assign(row=row_cases["index"].astype(int), position=row_cases["column"].map(order))
    problems: list[Problem] = []
    rejected: list[tuple[int, str]] = []
    for case in row_cases.sort_values(["row", "position"], kind="stable").itertuples(index=False):
        problem = _row_problem(columns, str(case.check), str(case.column), case.failure_case, case.row, ids, rows)
        problems.append(problem)
        rejected.append((case.row, str(case.column)))
        reasons[case.row].append(problem.message)
    position = {number: i for i, number in enumerate(rows)}
    for problem in _count_contradicts_flag(table, ids, rows, {r for r, _ in rejected}):
        problems.append(problem)
        reasons[position[problem.row]].append(problem.message)
    problems.sort(key=lambda p: position[p.row])

    status = pd.Series(
        [f"{INVALID}: " + "; ".join(r) if r else OK for r in reasons], index=df.index, name=STATUS, dtype=object
    )
    valid = df.loc[(status == OK).to_numpy()]
    cleaned = df.copy()
    for row, name in rejected:
        if cleaned[name].dtype != object:
            cleaned[name] = cleaned[name].astype(object)
        cleaned.iloc[row, cleaned.columns.get_loc(name)] = None
    return ValidationReport(fatal, problems, status, _typed(valid, columns), _typed(cleaned, columns))
