"""Strict settings: YAML files and params.yaml blocks validated by pydantic (docs/settings.md).

A settings class is a frozen pydantic dataclass declared with `settings_class`; its defaults are
the project's defaults (in one place). `build` validates parsed YAML against it in pydantic's
strict JSON mode (YAML's data model): no text read as a number, no number read as true/false,
lists become tuples. Every problem becomes one `SettingsError` whose message names where it was
found (file, block, key path), what was wrong and, for an unknown key, the nearest valid key:

    configs/world.yaml: recurrence: unknown key 'weibul_shape'; did you mean 'weibull_shape'?

This module sits below ``pipeline/`` so that ``features/`` and ``models/`` can declare their own
settings; entry points read the files and pass the validated objects down (STYLE.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from features.schema import nearest_name

T = TypeVar("T")

# Unknown keys are errors; classes built in code are validated too (lax: 1 for 1.0).
CONFIG = pydantic.ConfigDict(extra="forbid")


class SettingsError(ValueError):
    """A settings file or mapping does not match what the code expects."""


def settings_class(cls: type[T]) -> type[T]:
    """Declare ``cls`` (annotated fields, defaults, an optional ``__post_init__`` check that
    raises ``ValueError``) as a frozen, strictly validated settings class."""
    return _pydantic_dataclass(frozen=True, config=CONFIG)(cls)


def check_jobs(value: int) -> int:
    """A ``jobs`` setting: a positive number of parallel workers, or -1 for all cores."""
    if value == 0 or value < -1:
        raise ValueError(f"{value}; expected a positive number or -1 (all cores)")
    return value


def nearest(key: str, valid: Iterable[str], what: str = "valid keys") -> str:
    """``did you mean 'x'?`` for the closest of ``valid``, else the list of ``valid``."""
    valid = sorted(str(v) for v in valid)
    close = nearest_name(str(key), valid, cutoff=0.5)
    if close:
        return f"did you mean '{close}'?"
    return f"{what}: {', '.join(valid)}"


# --------------------------------------------------------------------------- error messages

_EXPECTED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "text",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "dataclass_exact_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
}
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden", "unexpected_positional_argument")
_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument")


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _field_types(tp: Any) -> dict[str, Any] | None:
    fields = getattr(tp, "__pydantic_fields__", None)
    if fields is None:
        return None
    return {name: info.annotation for name, info in fields.items()}


def _type_at(cls: Any, loc: tuple[Any, ...]) -> Any:
    """The declared type at ``loc`` (a pydantic error location) below ``cls``, or None."""
    tp: Any = cls
    for part in loc:
        tp = _unwrap(tp)
        fields = _field_types(tp)
        origin = typing.get_origin(tp)
        if fields is not None:
            if part not in fields:
                return None
            tp = fields[part]
        elif origin in (dict, Mapping) or tp is dict:
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
        elif origin in (tuple, list):
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                tp = args[0]
            elif isinstance(part, int) and part < len(args):
                tp = args[part]
            else:
                return None
        else:
            return None
    return _unwrap(tp)


def _path(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _at(loc: Iterable[Any], text: str) -> str:
    path = _path(loc)
    return f"{path}: {text}" if path else text


def _message(cls: type, error: Mapping[str, Any]) -> str:
    """One pydantic error as ``key.path: problem`` (the file is named once, by `_error`)."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind in _UNKNOWN:
        parent, key = loc[:-1], loc[-1]
        fields = _field_types(_type_at(cls, parent)) or {}
        return _at(parent, f"unknown key '{key}'; {nearest(str(key), fields)}")
    if kind in _MISSING and isinstance(loc[-1], int) and isinstance(value, (list, tuple)):
        args = typing.get_args(_type_at(cls, loc[:-1]))
        return _at(loc[:-1], f"expected {len(args)} values, got {len(value)}: {list(value)!r}")
    if kind in _MISSING:
        return _at(loc[:-1], f"missing key(s) {loc[-1]}; add it (see docs/settings.md)")
    if kind == "literal_error":
        tp = _type_at(cls, loc)
        allowed = [str(a) for a in typing.get_args(tp)] if typing.get_origin(tp) is Literal else []
        hint = nearest(str(value), allowed, "allowed") if allowed else error["msg"]
        return _at(loc, f"{value!r} is not allowed; {hint}")
    if kind in ("value_error", "assertion_error"):
        return _at(loc, str(error.get("ctx", {}).get("error", error["msg"])))
    if kind in ("too_short", "too_long") and isinstance(value, (list, tuple)):
        tp = _type_at(cls, loc)
        args = typing.get_args(tp)
        if typing.get_origin(tp) is tuple and args and args[-1] is not Ellipsis:
            return _at(loc, f"expected {len(args)} values, got {len(value)}: {list(value)!r}")
    if kind in _EXPECTED:
        return _at(loc, f"expected {_EXPECTED[kind]}, got {value!r}")
    return _at(loc, f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {value!r}")


# --------------------------------------------------------------------------- building


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


YAML_BOOLEAN_HINT = 'YAML reads unquoted yes/no/true/false/on/off as true/false; quote the value, e.g. "yes"'


def _plain(value: Any, where: str, loc: tuple[Any, ...] = ()) -> Any:
    """Parsed YAML as JSON: keys as text (YAML ``1:`` is the key "1"); a true/false key (an
    unquoted ``yes:``) or a value JSON does not have (an unquoted date) is an error."""
    if isinstance(value, Mapping):
        for key in value:
            if isinstance(key, bool):
                raise SettingsError(f"{where}: " + _at(loc, f"key {key!r}: {YAML_BOOLEAN_HINT}"))
        return {str(k): _plain(v, where, (*loc, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, (*loc, i)) for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise SettingsError(
        f"{where}: "
        + _at(
            loc,
            f"{value!r} is a {type(value).__name__} (YAML reads some unquoted values, e.g. dates, as such); quote it",
        )
    )


def build(cls: type[T], data: Any, where: str = "settings") -> T:
    """Validate ``data`` (parsed YAML) into the settings class ``cls``; errors name ``where``,
    the key path and, for unknown keys, the nearest valid key."""
    if dataclasses.is_dataclass(cls) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {data!r}")
    text = json.dumps(_plain(data, where), allow_nan=True)
    try:
        return _adapter(cls).validate_json(text, strict=True)
    except pydantic.ValidationError as exc:
        raise _error(cls, where, exc) from None


def _error(cls: type, where: str, exc: pydantic.ValidationError) -> SettingsError:
    """One error for all problems: ``where: path: problem; path: problem``. A missing key that an
    unknown key of the same block is a near miss of (``sed`` for ``seed``) is said once."""
    errors = exc.errors()
    suggested = set()
    for e in errors:
        if e["type"] in _UNKNOWN:
            parent = tuple(e["loc"][:-1])
            fields = _field_types(_type_at(cls, parent)) or {}
            suggested |= {(parent, c) for c in difflib.get_close_matches(str(e["loc"][-1]), sorted(fields), 1, 0.5)}
    parts = [
        _message(cls, e)
        for e in errors
        if not (e["type"] in _MISSING and (tuple(e["loc"][:-1]), e["loc"][-1]) in suggested)
    ]
    return SettingsError(f"{where}: " + "; ".join(parts))


def replace(obj: T, where: str, **changes: Any) -> T:
    """``dataclasses.replace`` on a settings object (e.g. a command-line override), with the
    errors of `build`."""
    try:
        return dataclasses.replace(obj, **changes)
    except pydantic.ValidationError as exc:
        raise _error(type(obj), where, exc) from None


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file, with an error naming the file when it cannot be parsed."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"settings file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc


def load(cls: type[T], path: str | Path) -> T:
    """Load ``path`` (YAML) into the settings class ``cls``; errors name the file and the key."""
    return build(cls, load_yaml(path), where=str(path))
