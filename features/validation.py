"""Validation of a canonical cohort table against ``features.schema`` (DESIGN.md 3).

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
messages are 1-based positions in the table (row 1 = first data row = line 2 of a CSV file
with a header).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.schema import COLUMNS, PATIENT_ID, Column

OK = "ok"
INVALID = "invalid"
NUMERIC_KINDS = ("float", "int", "binary")

# pandera check names: the key that turns a failure case into a message.
_NUMBER, _RANGE, _BINARY, _CATEGORY, _ID_BLANK = "number", "range", "binary", "category", "id_blank"
# Reason codes of row problems (a patient's status in batch inference), by failed check.
ROW_PROBLEM_CODES = {_NUMBER: "not_a_number", _RANGE: "out_of_range", _BINARY: "not_binary",
                     _CATEGORY: "unknown_category"}
_FATAL_CHECKS = ("column_in_dataframe", "field_uniqueness", "not_nullable", _ID_BLANK)


@dataclass(frozen=True)
class Problem:
    """One validation problem; ``message`` names the patient, column, value and what is allowed."""

    patient_id: str | None
    column: str | None
    value: Any
    allowed: str
    message: str
    code: str = ""   # row problems: not_a_number, out_of_range, not_binary, unknown_category


@dataclass
class ValidationReport:
    """Result of ``validate_cohort``.

    ``status`` is indexed like the input: ``"ok"`` or ``"invalid: <reasons joined by '; '>"``.
    ``valid_rows`` holds the rows with status ok, numeric columns typed (floats as ``float64``,
    integer and binary columns as ``Int64``).
    """

    fatal: list[Problem]
    problems: list[Problem]
    status: pd.Series
    valid_rows: pd.DataFrame = field(repr=False)

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


def cohort_schema(required: Sequence[str] = (PATIENT_ID,),
                  extra_columns: Sequence[Column] = ()) -> pa.DataFrameSchema:
    """The pandera schema of a canonical cohort table (``patient_id`` is always required)."""
    columns = {c.name: c for c in (*COLUMNS, *extra_columns)}
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


def _row_problem(columns: dict[str, Column], check: str, name: str, value: Any, row: int,
                 ids: pd.Series | None) -> Problem:
    column = columns[name]
    allowed = allowed_text(column)
    patient = _patient(ids, row)
    if patient is None or not patient.strip():
        who = f"row {row + 1}"
    elif bool(ids.duplicated(keep=False).iloc[row]):  # ids is not None here
        who = f"patient {patient} (row {row + 1})"
    else:
        who = f"patient {patient}"
    shown = _value_text(value)
    if check == _NUMBER:
        what = f"is not a number (allowed: {allowed})"
    elif check == _RANGE:
        what = f"is outside {allowed}" if column.kind == "float" else f"is not {allowed}"
    else:  # binary, category
        what = f"is not {allowed}"
    return Problem(patient, name, value, allowed, f"{who}: {name} = {shown} {what}", ROW_PROBLEM_CODES[check])


def _absent_columns(cases: pd.DataFrame) -> list[Problem]:
    absent = cases.loc[cases["check"] == "column_in_dataframe", "failure_case"]
    return [Problem(None, str(name), None, "a column in the table",
                    f"required column '{name}' is missing from the table") for name in absent]


def _id_problems(cases: pd.DataFrame, ids: pd.Series | None) -> list[Problem]:
    """Missing and duplicated identifiers; a duplicate lists every row that carries it."""
    allowed_id = allowed_text(Column(PATIENT_ID, "id", ""))
    problems: list[Problem] = []
    missing = cases.loc[cases["check"].isin(["not_nullable", _ID_BLANK]), "index"]
    missing_rows = sorted(int(i) for i in missing)
    if missing_rows:
        shown = ", ".join(str(r + 1) for r in missing_rows)
        problems.append(Problem(None, PATIENT_ID, None, allowed_id,
                                f"{PATIENT_ID} is missing in row(s) {shown}"))
    duplicated = cases.loc[cases["check"] == "field_uniqueness"]
    if ids is not None and not duplicated.empty:
        rows = duplicated["index"].astype(int)
        for value in pd.unique(ids.iloc[sorted(rows)]):
            where = [r + 1 for r in sorted(rows) if ids.iloc[r] == value]
            problems.append(Problem(str(value), PATIENT_ID, value, allowed_id,
                                    f"{PATIENT_ID} {_value_text(value)} appears {len(where)} times, "
                                    f"in rows {', '.join(map(str, where))}"))
    return problems


def _typed(df: pd.DataFrame, columns: dict[str, Column]) -> pd.DataFrame:
    """Numeric canonical columns as float64 / Int64 (call on valid rows only)."""
    out = df.copy()
    for name in out.columns:
        column = columns.get(name)
        if column is None or column.kind not in NUMERIC_KINDS:
            continue
        x = as_numbers(out[name])
        out[name] = x.astype("Int64") if column.kind in ("int", "binary") else x
    return out


def validate_cohort(df: pd.DataFrame, required: Sequence[str] = (PATIENT_ID,),
                    extra_columns: Sequence[Column] = ()) -> ValidationReport:
    """Validate a canonical cohort table; every problem is collected in one pass.

    ``required``: columns that must be present (``patient_id`` always is). ``extra_columns``:
    optional descriptions of user covariates (e.g. from a cohort mapping) to check as well.
    Never raises on bad data: everything is reported in the returned ``ValidationReport``.
    """
    columns = {c.name: c for c in (*COLUMNS, *extra_columns)}
    table = df.reset_index(drop=True)  # failure cases are then row positions
    ids = table[PATIENT_ID] if PATIENT_ID in table.columns else None
    try:
        cohort_schema(required, extra_columns).validate(table, lazy=True)
        cases = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    except SchemaErrors as err:
        cases = err.failure_cases
    is_fatal = cases["check"].isin(_FATAL_CHECKS)
    empty = [Problem(None, None, None, "at least one patient", "the table has no rows")] if table.empty else []
    fatal = empty + _absent_columns(cases)
    table_wide = [p.message for p in fatal]  # these make every row invalid
    fatal += _id_problems(cases.loc[is_fatal], ids)
    broken = cases.loc[~is_fatal & cases["index"].isna()]  # a check that raised: never swallowed
    fatal += [Problem(None, str(c.column), None, "", f"check '{c.check}' on column '{c.column}' could not "
                      f"run: {c.failure_case}") for c in broken.itertuples(index=False)]

    reasons: list[list[str]] = [list(table_wide) for _ in range(len(table))]
    for p in fatal:
        if p.column == PATIENT_ID and p.patient_id is not None:  # a duplicated id
            for row in np.flatnonzero((ids == p.value).to_numpy()):
                reasons[row].append(p.message)
    if ids is not None:
        for row in np.flatnonzero(is_blank(ids).to_numpy()):
            reasons[row].append(f"{PATIENT_ID} is missing")
    order = {name: i for i, name in enumerate(table.columns)}
    row_cases = cases.loc[~is_fatal].dropna(subset=["index"])
    row_cases = row_cases.assign(row=row_cases["index"].astype(int), position=row_cases["column"].map(order))
    problems: list[Problem] = []
    for case in row_cases.sort_values(["row", "position"], kind="stable").itertuples(index=False):
        problem = _row_problem(columns, str(case.check), str(case.column), case.failure_case, case.row, ids)
        problems.append(problem)
        reasons[case.row].append(problem.message.split(": ", 1)[1])

    status = pd.Series([f"{INVALID}: " + "; ".join(r) if r else OK for r in reasons],
                       index=df.index, name="status", dtype=object)
    valid = df.loc[(status == OK).to_numpy()]
    return ValidationReport(fatal, problems, status, _typed(valid, columns))
