"""Cohort mappings: turn a user's clinical sheet into the canonical table (docs/design.md section 3).

A mapping is a YAML file (``configs/mappings/*.yaml``) loaded into ``CohortMapping`` by the
project's strict loader (``features.settings``): unknown keys, unknown canonical columns and
unknown derivation rules are errors that name the nearest valid name. Keys:

- ``rename: {their_column: output_column}``: the output is a canonical column
  (``features.schema``) or a declared covariate. Every other key below names *output* columns.
- ``missing_values: [-999, "NA"]`` (every column) and ``column_missing_values: {column: [...]}``.
  Blank cells are always missing. Codes match numerically ("-999", "-999.0" and -999 are one
  code) and text codes match case-insensitively.
- ``percent_columns: [...]``: "90%" -> 90.0; a bare number is taken as already in percent.
- ``recode: {column: {from: to}}``, e.g. ``sex: {1: male, 2: female}``, ``"yes": 1``; ``to``
  may be ``null`` (missing). Quote yes/no/true/false: YAML reads them unquoted as booleans.
- ``units: {column: factor}``: multiply by ``factor`` to reach the canonical unit (mm -> cm 0.1).
- ``derive: [{rule: name, ...args}]``: a closed set of named rules (``RULES``), run in order.
- ``covariates: {name: {kind: numeric | categorical, unit, minimum, maximum, description}}``:
  extra model inputs kept as they are (numeric ones parsed to numbers).
- ``keep_unmapped: false``: drop every column that is neither canonical nor a covariate.
- ``ranges: {column: [minimum, maximum]}``: the cohort's own plausibility range of a canonical
  numeric column, replacing the schema's default (e.g. ``age_years: [0, 120]`` for a cohort that
  is not adult CRLM); ``null`` leaves that side open.
- ``cohort: name``: the cohort's short name (lower-case letters, digits, ``-``, ``_``), e.g. for
  the name a trained model is registered under.

Headers are matched as people write them (``sheet_headers``): after trimming spaces and ignoring
case (`` AGE_YEARS `` is ``age_years``). Two headers that become one, or a header that is a near
miss of a canonical column that is absent (``age_yrs`` for ``age_years``), are errors naming both.

``apply_mapping`` is pure and never drops a patient. Values it cannot parse (e.g. "abc" in a
numeric column) are kept as given, so that ``features.validation`` reports them per patient.
Identifiers (``patient_id``) pass through untouched: no missing codes, no recoding, no parsing.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import field_validator

from features import settings
from features.schema import (
    COLUMN_BY_NAME,
    DFI_MONTHS,
    PATIENT_ID,
    RECURRENCE_EVENT,
    SYNCHRONOUS,
    Column,
)
from features.settings import SettingsError, settings_class
from features.validation import as_numbers, is_blank

COVARIATE_KINDS = ("numeric", "categorical")
COHORT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
NEAR_MISS_CUTOFF = 0.8  # difflib ratio above which an unknown header is taken for a canonical one
NUMERIC_KINDS = ("float", "int", "binary")
WHOLE_KINDS = ("int", "binary")


class MappingError(ValueError):
    """A clinical sheet does not match its mapping (e.g. a mapped column is absent)."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", text.strip().lower()).strip("_-") or "my_cohort"


_nearest = settings.nearest


def _key(value: Any) -> str | None:
    """Matching key of a cell or code: numbers by value (1, 1.0, "1" -> "1"), text case-folded."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text.casefold()
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


# --- derivation rules: a closed set, each a function plus its arguments ----------------------


def dfi_from_synchronous(df: pd.DataFrame) -> pd.Series:
    """Disease-free interval (months): 0 where ``synchronous`` == 1, by definition (docs/design.md section 3).

    Elsewhere the provided ``disease_free_interval_months`` is kept, or missing if none is
    given (metachronous patients without a recorded interval). A provided non-zero interval of
    a synchronous patient is replaced by 0.
    """
    if SYNCHRONOUS not in df.columns:
        raise MappingError(f"rule dfi_from_synchronous needs column '{SYNCHRONOUS}'; map it under rename")
    provided = df[DFI_MONTHS] if DFI_MONTHS in df.columns else pd.Series(np.nan, index=df.index)
    return provided.mask(as_numbers(df[SYNCHRONOUS]) == 1, 0.0)


def recurrence_event_from(
    df: pd.DataFrame, column: str, event: Iterable[Any] = (1,), censored: Iterable[Any] = (0,)
) -> pd.Series:
    """``recurrence_event``: 1 where ``column`` is one of ``event``, 0 where one of ``censored``.

    Missing stays missing; any other value is kept as given, so validation reports it.
    """
    codes = {**{_key(v): 0 for v in censored}, **{_key(v): 1 for v in event}}
    keys = df[column].map(_key)
    hit = keys.notna() & keys.isin(codes.keys())
    return df[column].astype(object).where(~hit, keys.map(codes)).mask(keys.isna())


@settings_class
class DfiFromSynchronous:
    """``{rule: dfi_from_synchronous}``: see ``dfi_from_synchronous``. No arguments."""

    target: ClassVar[str] = DFI_MONTHS
    keeps_provided: ClassVar[bool] = True  # may be combined with a renamed DFI column

    def sources(self) -> tuple[str, ...]:
        return ()

    def __call__(self, df: pd.DataFrame) -> pd.Series:
        return dfi_from_synchronous(df)


@settings_class
class RecurrenceEventFrom:
    """``{rule: recurrence_event_from, column: ..., event: [1], censored: [0]}``."""

    column: str
    event: tuple[Any, ...] = (1,)
    censored: tuple[Any, ...] = (0,)

    target: ClassVar[str] = RECURRENCE_EVENT
    keeps_provided: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.event:
            raise ValueError("event: list at least one value that means 'recurrence observed'")
        both = {_key(v) for v in self.event} & {_key(v) for v in self.censored}
        if both:
            raise ValueError(f"values {sorted(both)} are listed both as event and as censored")

    def sources(self) -> tuple[str, ...]:
        return (self.column,)

    def __call__(self, df: pd.DataFrame) -> pd.Series:
        return recurrence_event_from(df, self.column, self.event, self.censored)


Derivation = DfiFromSynchronous | RecurrenceEventFrom
RULES: dict[str, type[DfiFromSynchronous] | type[RecurrenceEventFrom]] = {
    "dfi_from_synchronous": DfiFromSynchronous,
    "recurrence_event_from": RecurrenceEventFrom,
}


# --- the mapping -----------------------------------------------------------------------------


@settings_class
class Covariate:
    """An extra model input kept beside the canonical columns."""

    kind: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COVARIATE_KINDS:
            raise ValueError(
                f"kind '{self.kind}' is not one of {', '.join(COVARIATE_KINDS)}; "
                f"{_nearest(self.kind, COVARIATE_KINDS, 'kinds')}"
            )
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")

    def column(self, name: str) -> Column:
        """As a schema column, so that ``validate_cohort(extra_columns=...)`` checks it."""
        if self.kind == "numeric":
            return Column(name, "float", self.description, self.unit, self.minimum, self.maximum)
        return Column(name, "text", self.description)


@settings_class
class CohortMapping:
    """How one cohort's sheet becomes canonical columns (keys: see the module docstring)."""

    description: str = ""
    rename: dict[str, str] = field(default_factory=dict)
    missing_values: tuple[Any, ...] = ()
    column_missing_values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    percent_columns: tuple[str, ...] = ()
    recode: dict[str, dict[str, Any]] = field(default_factory=dict)
    units: dict[str, float] = field(default_factory=dict)
    derive: tuple[Derivation, ...] = ()
    covariates: dict[str, Covariate] = field(default_factory=dict)
    keep_unmapped: bool = False
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    cohort: str = ""

    @field_validator("missing_values", mode="before")
    @classmethod
    def _no_booleans(cls, values: Any) -> Any:
        for i, value in enumerate(values if isinstance(values, (list, tuple)) else ()):
            if isinstance(value, bool):
                raise ValueError(f"[{i}]: {value!r}: {settings.YAML_BOOLEAN_HINT}")
        return tuple(values) if isinstance(values, list) else values  # strict: a tuple after this hook

    def __post_init__(self) -> None:
        if self.cohort and not COHORT_NAME.match(self.cohort):
            raise ValueError(
                f"cohort: '{self.cohort}' must be lower-case letters, digits, '-' or '_' "
                f"(it names the cohort's models), e.g. '{_slug(self.cohort)}'"
            )
        ranged = sorted(c.name for c in COLUMN_BY_NAME.values() if c.kind in ("float", "int"))
        for name, (low, high) in self.ranges.items():
            if name in self.covariates:
                raise ValueError(
                    f"ranges: '{name}' is a covariate; give its minimum and maximum under covariates.{name}"
                )
            if name not in ranged:
                what = "has no range (binary or category)" if name in COLUMN_BY_NAME else "is not a canonical column"
                raise ValueError(f"ranges: '{name}' {what}; {_nearest(name, ranged, 'numeric canonical columns')}")
            for bound in (low, high):
                if bound is not None and not math.isfinite(bound):
                    raise ValueError(f"ranges: '{name}': bounds must be finite numbers or null, got {bound}")
            if low is not None and high is not None and low > high:
                raise ValueError(
                    f"ranges: '{name}': minimum {low:g} is above maximum {high:g}; write [minimum, maximum]"
                )
        for name in self.covariates:
            if name in COLUMN_BY_NAME:
                raise ValueError(f"covariates: '{name}' is a canonical column; map it under rename instead")
        outputs = self.outputs()
        targets = list(self.rename.values())
        for source, target in self.rename.items():
            if target not in outputs:
                raise ValueError(
                    f"rename: '{source}' -> '{target}': '{target}' is not a canonical column; "
                    f"{_nearest(target, COLUMN_BY_NAME, 'canonical columns')} (to keep it as an extra "
                    f"model input, declare it under covariates)"
                )
            if targets.count(target) > 1:
                sources = [s for s, t in self.rename.items() if t == target]
                raise ValueError(f"rename: {sources} all map to '{target}'; keep one")
        for key, names in (
            ("column_missing_values", self.column_missing_values),
            ("percent_columns", self.percent_columns),
            ("recode", self.recode),
            ("units", self.units),
        ):
            for name in names:
                if name == PATIENT_ID:
                    raise ValueError(f"{key}: '{PATIENT_ID}' is passed through unchanged; it cannot be transformed")
                if name not in outputs:
                    raise ValueError(
                        f"{key}: '{name}' is neither a canonical column nor a covariate; "
                        f"{_nearest(name, outputs, 'output columns')} (keys after rename "
                        f"name output columns)"
                    )
        for key, names in (("percent_columns", self.percent_columns), ("units", self.units)):
            for name in names:
                if not self._numeric(name):
                    raise ValueError(f"{key}: '{name}' is not a numeric column")
        for name, factor in self.units.items():
            if not (math.isfinite(factor) and factor > 0):
                raise ValueError(f"units: factor of '{name}' must be a positive number, got {factor}")
        for name, table in self.recode.items():
            for source, to in table.items():
                if isinstance(to, bool) or not (to is None or isinstance(to, (str, int, float))):
                    raise ValueError(
                        f"recode.{name}: '{source}' -> {to!r}: write text, a number (1/0 for yes/no) or null"
                    )
        for rule in self.derive:
            if not rule.keeps_provided and rule.target in targets:
                raise ValueError(f"derive: {type(rule).__name__} and rename both produce '{rule.target}'")

    def outputs(self) -> set[str]:
        """Names a mapping may produce: canonical columns and declared covariates."""
        return set(COLUMN_BY_NAME) | set(self.covariates)

    def _numeric(self, name: str) -> bool:
        if name in self.covariates:
            return self.covariates[name].kind == "numeric"
        return COLUMN_BY_NAME[name].kind in NUMERIC_KINDS

    @property
    def id_column(self) -> str:
        """The sheet's identifier column (the one renamed to ``patient_id``)."""
        return next((s for s, t in self.rename.items() if t == PATIENT_ID), PATIENT_ID)

    def covariate_columns(self) -> tuple[Column, ...]:
        """Covariates as schema columns (for ``validate_cohort(extra_columns=...)``)."""
        return tuple(c.column(name) for name, c in self.covariates.items())


def _build_rules(entries: Any, where: str) -> tuple[Derivation, ...]:
    if not isinstance(entries, (list, tuple)):
        raise SettingsError(f"{where}.derive: expected a list of {{rule: name, ...}}, got {entries!r}")
    rules = []
    for i, entry in enumerate(entries):
        here = f"{where}.derive[{i}]"
        if not isinstance(entry, Mapping) or "rule" not in entry:
            raise SettingsError(f"{here}: expected {{rule: name, ...arguments}}, got {entry!r}")
        name = str(entry["rule"])
        if name not in RULES:
            raise SettingsError(f"{here}: unknown rule '{name}'; {_nearest(name, RULES, 'rules')}")
        rules.append(settings.build(RULES[name], {k: v for k, v in entry.items() if k != "rule"}, here))
    return tuple(rules)


def mapping_from_dict(data: Any, where: str = "mapping") -> CohortMapping:
    """Build a ``CohortMapping`` from parsed YAML; errors name ``where`` and the nearest key."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data)
    rules = _build_rules(data.pop("derive", []) or [], where)
    mapping = settings.build(CohortMapping, data, where)
    return settings.replace(mapping, where, derive=rules)


def load_mapping(path: str | Path) -> CohortMapping:
    """Read a cohort mapping YAML (e.g. ``configs/mappings/tcia_crlm.yaml``)."""
    return mapping_from_dict(settings.load_yaml(path), where=str(path))


# --- headers as people write them ------------------------------------------------------------


def _header_key(name: Any) -> str:
    return str(name).strip().casefold()


def sheet_headers(header: Sequence[Any], mapping: CohortMapping | None = None) -> dict[str, str]:
    """How to rename a sheet's headers so they match the names expected (raw -> expected).

    Expected names are the canonical columns and, with a mapping, the columns it reads (rename
    sources, rule sources, covariates). A header matches one after trimming spaces and ignoring
    case. Raises ``MappingError`` naming both headers when two headers become the same name, and
    naming both the header and the canonical column when a header that matches nothing is a near
    miss (difflib) of a canonical column that no header gives: a near miss is never silently
    ignored.
    """
    expected: dict[str, str] = {}
    if mapping is not None:
        reads = [*mapping.rename, *(s for r in mapping.derive for s in r.sources()), *mapping.covariates]
        for name in reads:
            expected.setdefault(_header_key(name), name)
    for name in COLUMN_BY_NAME:
        expected.setdefault(_header_key(name), name)
    names = [str(h) for h in header]
    renames: dict[str, str] = {}
    taken: dict[str, str] = {}
    for raw in names:
        key = _header_key(raw)
        target = expected.get(key)
        if key in taken:
            raise MappingError(
                f"columns '{taken[key]}' and '{raw}' are the same name once spaces and case are "
                f"ignored; keep one of them (or rename one in the sheet)"
            )
        taken[key] = raw
        if target is not None and raw != target:
            renames[raw] = target
    produced = {renames.get(n, n) for n in names}
    if mapping is not None:
        produced |= {mapping.rename.get(n, n) for n in produced} | {r.target for r in mapping.derive}
    absent = {_header_key(c): c for c in COLUMN_BY_NAME if c not in produced}
    consumed = set(expected.values())
    for raw in names:
        if renames.get(raw, raw) in consumed:
            continue
        close = difflib.get_close_matches(_header_key(raw), list(absent), n=1, cutoff=NEAR_MISS_CUTOFF)
        if close:
            canonical = absent[close[0]]
            raise MappingError(
                f"column '{raw}' is not a canonical column, but looks like '{canonical}', which the table "
                f"does not have; if it is {canonical} ({COLUMN_BY_NAME[canonical].description}), rename it "
                f"(in the sheet, or in a mapping: rename: {{{raw}: {canonical}}}); if it is something else, "
                f"declare it under covariates in a mapping"
            )
    return renames


# --- applying a mapping ----------------------------------------------------------------------


def _check_sheet(df: pd.DataFrame, mapping: CohortMapping) -> None:
    """Every column the mapping reads is in the sheet, and no two columns share an output name."""
    columns = [str(c) for c in df.columns]
    needed = [("rename", s) for s in mapping.rename]
    needed += [(f"derive ({type(r).__name__})", s) for r in mapping.derive for s in r.sources()]
    for where, name in needed:
        if name not in columns and name not in mapping.rename.values():
            raise MappingError(f"{where}: the sheet has no column '{name}'; {_nearest(name, columns, 'sheet columns')}")
    for source, target in mapping.rename.items():
        if target != source and target in columns and target not in mapping.rename:
            raise MappingError(
                f"rename: '{source}' -> '{target}', but the sheet already has a column "
                f"'{target}'; rename or drop one of them"
            )
    produced = set(mapping.rename.values()) | set(columns)
    for name in mapping.covariates:
        if name not in produced:
            raise MappingError(
                f"covariates: '{name}' is neither a sheet column nor a rename target; "
                f"{_nearest(name, columns, 'sheet columns')}"
            )


def _missing(s: pd.Series, codes: Iterable[Any]) -> pd.Series:
    keys = {_key(c) for c in codes}
    return s.mask(is_blank(s) | s.map(_key).isin(keys))


def _percent(value: Any) -> Any:
    """'90%' -> 90.0, '12.5 %' -> 12.5, 90 -> 90.0; anything else is returned unchanged."""
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            return float(text)
        except ValueError:
            return value
    return value


def _recode(s: pd.Series, table: Mapping[str, Any]) -> pd.Series:
    codes = {_key(k): v for k, v in table.items()}
    keys = s.map(_key)
    hit = keys.isin(codes.keys()) & keys.notna()
    return s.astype(object).where(~hit, keys.map(codes))


def _to_numbers(s: pd.Series, whole: bool) -> pd.Series:
    """Parse numbers; ``float64`` (``Int64`` if ``whole`` and all whole), unparseable values kept."""
    x = as_numbers(s)
    bad = x.isna() & ~is_blank(s)
    if bad.any():
        return s.astype(object).where(bad, x.astype(object))
    if whole and bool((x.dropna() % 1 == 0).all()):
        return x.astype("Int64")
    return x


def _scale(s: pd.Series, factor: float) -> pd.Series:
    x = as_numbers(s)
    bad = x.isna() & ~is_blank(s)
    if bad.any():
        return s.astype(object).where(bad, (x * factor).astype(object))
    return x * factor


def _typed_names(mapping: CohortMapping, columns: Iterable[str]) -> dict[str, bool]:
    """Numeric output columns present in the table -> whether they hold whole numbers."""
    out = {}
    for name in columns:
        if name in COLUMN_BY_NAME and COLUMN_BY_NAME[name].kind in NUMERIC_KINDS:
            out[name] = COLUMN_BY_NAME[name].kind in WHOLE_KINDS
        elif name in mapping.covariates and mapping.covariates[name].kind == "numeric":
            out[name] = False
    return out


def apply_mapping(df: pd.DataFrame, mapping: CohortMapping) -> pd.DataFrame:
    """A canonical cohort table from a user's sheet; ``df`` is not modified.

    Steps, in order: rename; missing codes and blanks -> missing; percent strings; recode;
    numbers parsed; unit factors; derivation rules. Output columns: canonical (schema order),
    then covariates (declared order), then, with ``keep_unmapped``, the remaining sheet columns.
    Raises ``MappingError`` when a column the mapping reads is absent from the sheet.
    """
    _check_sheet(df, mapping)
    table = df.rename(columns=mapping.rename).copy()
    for name in table.columns:
        if name == PATIENT_ID:
            continue  # identifiers pass through unchanged
        codes = (*mapping.missing_values, *mapping.column_missing_values.get(name, ()))
        table[name] = _missing(table[name], codes)
    for name in mapping.percent_columns:
        if name in table.columns:
            table[name] = table[name].map(_percent)
    for name, codes in mapping.recode.items():
        if name in table.columns:
            table[name] = _recode(table[name], codes)
    for name, whole in _typed_names(mapping, table.columns).items():
        table[name] = _to_numbers(table[name], whole)
    for name, factor in mapping.units.items():
        if name in table.columns:
            table[name] = _scale(table[name], factor)
    for rule in mapping.derive:
        resolved = (
            dataclasses.replace(rule, column=mapping.rename.get(rule.column, rule.column))
            if isinstance(rule, RecurrenceEventFrom)
            else rule
        )
        table[rule.target] = resolved(table)
    for name, whole in _typed_names(mapping, table.columns).items():
        table[name] = _to_numbers(table[name], whole)
    canonical = [c for c in COLUMN_BY_NAME if c in table.columns]
    covariates = [c for c in mapping.covariates if c in table.columns]
    rest = [c for c in table.columns if c not in canonical + covariates] if mapping.keep_unmapped else []
    return table[canonical + covariates + rest]
