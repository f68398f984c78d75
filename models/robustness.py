"""Scanner robustness at training time (issue 13 items 1, 3): the ICC filter and perturbed copies.

Two inputs written by ``crlm perturb`` from the training cohort (docs/robustness.md):

- ``perturbed.parquet``: one row per (patient, perturbation), column ``perturbation`` (``icc-1``
  ... ``icc-K``: the Zwanenburg et al. 2019 / MIRP chain; ``site-1`` ... ``site-S``: simulated other
  scanners),
  then the columns of the training ``features.parquet`` for that patient under that perturbation.
- ``icc.csv``: per imaging feature its ICC(1,1) across the ``icc`` perturbations.

Both are read here only (`read_perturbed`, `read_icc`). The filter drops imaging columns whose
ICC is below ``train.robustness.icc_threshold`` (or undefined) before anything is fitted;
clinical columns are never filtered. Augmentation adds perturbed copies of *training* patients
as extra training rows: ``augment: icc`` (or ``true``) the ``icc-*`` rows (the Zwanenburg chain,
drawn for ``robustness.patients`` patients), ``augment: site`` the ``site-*`` rows (every training
patient as imaged by each simulated other scanner). Every CV split is by patient and its validation
rows are the original rows only (`splits_with_copies`), so a patient's copies are never on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import field_validator

# One owner each: the perturbation names in the schema, the ICC table's columns and minimum in
# features.robustness (which writes icc.csv); re-exported here for the training side.
from features import schema as s
from features.robustness import ICC_COLUMNS, MIN_ICC_PATIENTS
from features.schema import ICC_CHAIN, PERTURBATION, PERTURBATION_CHAINS, SITE_CHAIN
from features.settings import settings_class
from models.registry import IMAGING_PREFIXES, TASKS

PERTURB_FIX = "rebuild it with crlm perturb from the training cohort's extraction (docs/robustness.md)"


def augment_chain(value: object) -> str | None:
    """The perturbation chain an ``augment`` setting takes its copies from, or None (no copies):
    ``false`` / ``none`` -> None, ``true`` / ``icc`` -> ``icc`` (true is the older spelling),
    ``site`` -> ``site`` (also as text, any case, as a CSV gives them back). ``ValueError`` for
    anything else."""
    if value is None or isinstance(value, bool | np.bool_):
        return ICC_CHAIN if value else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("false", "none"):
            return None
        if text == "true":
            return ICC_CHAIN
        if text in PERTURBATION_CHAINS:
            return text
    raise ValueError(
        f"{value!r}; expected false (no copies), icc (the icc-* perturbed copies; true means the same) or "
        "site (the site-* copies: every training patient as imaged by each simulated scanner)"
    )


def _check_augment(value: object) -> bool | str:
    return augment_chain(value) or False


def _check_threshold(value: float | None) -> float | None:
    if value is not None and not 0 < value < 1:
        raise ValueError(f"{value!r}; expected null (no filter) or an ICC between 0 and 1, e.g. 0.75")
    return value


@settings_class
class TaskRobustness:
    """What one task's models get: ``icc_threshold``: null (no filter) or an ICC(1,1) in (0, 1);
    imaging columns whose ICC is below it or undefined are not model inputs (needs ``crlm train
    --icc``). ``augment``: false, or the chain whose perturbed copies of training patients are
    extra training rows (needs ``--perturbed``): ``icc`` (``true`` is the same) or ``site``
    (needs ``robustness.site_scanners`` > 0 in crlm perturb). Held as False, "icc" or "site"."""

    icc_threshold: float | None = None
    augment: bool | str = False

    @field_validator("icc_threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        return _check_threshold(value)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, value: object) -> bool | str:
        return _check_augment(value)

    @property
    def active(self) -> bool:
        return self.icc_threshold is not None or self.augment


@settings_class
class RobustnessSettings:
    """The ``train.robustness`` block of params.yaml (docs/robustness.md, section "choice").

    ``icc_threshold`` and ``augment`` (see `TaskRobustness`) apply to every task; ``tasks``
    overrides them per task (``{response: {icc_threshold: 0.5}}``), which is what ``crlm
    choose-robustness`` prints, since a filter that helps one task can cost the other. All off
    by default: the run is then exactly the run without this block.
    """

    icc_threshold: float | None = None
    augment: bool | str = False
    tasks: dict[str, TaskRobustness] = field(default_factory=dict)

    @field_validator("icc_threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        return _check_threshold(value)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, value: object) -> bool | str:
        return _check_augment(value)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"tasks: {unknown}; the tasks are {', '.join(TASKS)}")

    def for_task(self, task: str) -> TaskRobustness:
        """The setting ``task``'s models get: its own entry under ``tasks``, else the shared one."""
        if task in self.tasks:
            return self.tasks[task]
        return TaskRobustness(self.icc_threshold, self.augment)

    @property
    def active(self) -> bool:
        return any(self.for_task(task).active for task in TASKS)


# --------------------------------------------------------------------------- reading


def _bad(path: Path | str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}; {PERTURB_FIX}")


def read_perturbed(path: str | Path) -> pd.DataFrame:
    """``perturbed.parquet``, checked: ``patient_id`` (text) and ``perturbation`` present and
    filled, no (patient, perturbation) twice. ``ValueError`` naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perturbed features not found: {path}; {PERTURB_FIX}")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise _bad(path, f"cannot be read as a parquet table ({exc})") from exc
    return check_perturbed(table, path)


def check_perturbed(table: pd.DataFrame, source: str | Path = "perturbed features") -> pd.DataFrame:
    """The checks of `read_perturbed` on a table already in memory."""
    missing = [c for c in (s.PATIENT_ID, PERTURBATION) if c not in table]
    if missing:
        raise _bad(source, f"no {' or '.join(repr(c) for c in missing)} column")
    blank = table[s.PATIENT_ID].isna() | table[PERTURBATION].isna()
    if blank.any():
        raise _bad(source, f"{int(blank.sum())} row(s) without {s.PATIENT_ID} or {PERTURBATION}")
    table = table.assign(
        **{s.PATIENT_ID: table[s.PATIENT_ID].astype(str), PERTURBATION: table[PERTURBATION].astype(str)}
    )
    known = table[PERTURBATION].str.match(rf"^({ICC_CHAIN}|{SITE_CHAIN})-\d+$")
    if not known.all():
        odd = sorted(table.loc[~known, PERTURBATION].unique())[:3]
        raise _bad(source, f"perturbation values {odd} are neither {ICC_CHAIN}-<k> nor {SITE_CHAIN}-<k>")
    twice = table.duplicated([s.PATIENT_ID, PERTURBATION])
    if twice.any():
        row = table.loc[twice].iloc[0]
        raise _bad(source, f"patient {row[s.PATIENT_ID]} has perturbation {row[PERTURBATION]} twice")
    if not any(c.startswith(IMAGING_PREFIXES) for c in table.columns):
        raise _bad(source, f"no imaging column (names starting with {', '.join(IMAGING_PREFIXES)})")
    return table


def read_icc(path: str | Path) -> pd.DataFrame:
    """``icc.csv``, checked: the contract's columns (`ICC_COLUMNS`), one row per feature, ICC in
    [-1, 1] or blank. ``ValueError`` naming the file, the column and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ICC table not found: {path}; {PERTURB_FIX}")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise _bad(path, f"cannot be read as a CSV table ({exc})") from exc
    return check_icc(table, path)


def check_icc(table: pd.DataFrame, source: str | Path = "ICC table") -> pd.DataFrame:
    """The checks of `read_icc` on a table already in memory."""
    missing = [c for c in ICC_COLUMNS if c not in table]
    if missing:
        raise _bad(source, f"missing column(s) {missing} (expected {list(ICC_COLUMNS)})")
    table = table.copy()
    table["feature"] = table["feature"].astype(str)
    for column in ("icc", "n_patients", "n_perturbations"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            raise _bad(source, f"column {column!r} is not a number in row(s) {list(np.flatnonzero(bad)[:3])}")
        table[column] = values.astype(float)
    out_of_range = table["icc"].notna() & ~table["icc"].between(-1, 1)
    if out_of_range.any():
        row = table.loc[out_of_range].iloc[0]
        raise _bad(source, f"ICC of {row['feature']} is {row['icc']}, outside [-1, 1]")
    twice = table["feature"].duplicated()
    if twice.any():
        raise _bad(source, f"feature {table.loc[twice, 'feature'].iloc[0]} listed twice")
    return table


# --------------------------------------------------------------------------- ICC filter


@dataclass(frozen=True)
class IccFilter:
    """Which imaging columns the ICC filter drops, with counts per image type and why.

    ``applied`` is False when the ICC cannot be trusted (fewer than `MIN_ICC_PATIENTS` patients,
    or undefined for every feature): then nothing is dropped and ``note`` says so.
    """

    threshold: float
    applied: bool
    dropped: frozenset[str] = frozenset()
    kept_by_type: dict[str, int] = field(default_factory=dict)
    dropped_by_type: dict[str, int] = field(default_factory=dict)
    not_in_icc: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "applied": self.applied,
            "kept": dict(self.kept_by_type),
            "dropped": dict(self.dropped_by_type),
            "not_in_icc_table": self.not_in_icc,
            "note": self.note,
        }


def imaging_columns(columns: Iterable[str]) -> list[str]:
    """The imaging columns (registry's `IMAGING_PREFIXES`) among ``columns``, in order
    (``patient_id`` shares the ``patient_`` prefix of the patient-level morphology: not imaging)."""
    return [c for c in columns if str(c).startswith(IMAGING_PREFIXES) and c != s.PATIENT_ID]


def icc_filter(icc: pd.DataFrame, threshold: float, columns: Sequence[str], source: str = "icc.csv") -> IccFilter:
    """The imaging columns of ``columns`` to drop: ICC(1,1) below ``threshold``, or undefined.

    An imaging column absent from the ICC table cannot be vouched for and is dropped (counted in
    ``not_in_icc``); if most are absent the table belongs to another extraction: ``ValueError``.
    Too few patients (max ``n_patients`` < `MIN_ICC_PATIENTS`) or no defined ICC at all: the
    filter is not applied (``applied=False``) and ``note`` says why.
    """
    imaging = imaging_columns(columns)
    if not imaging:
        return IccFilter(threshold, False, note="no imaging column in the feature table: nothing to filter")
    n_patients = int(icc["n_patients"].max()) if len(icc) and icc["n_patients"].notna().any() else 0
    if n_patients < MIN_ICC_PATIENTS or icc["icc"].isna().all():
        why = (
            f"the ICC rests on {n_patients} training patients with lesions (at least {MIN_ICC_PATIENTS} needed)"
            if n_patients < MIN_ICC_PATIENTS
            else "the ICC is undefined for every feature"
        )
        return IccFilter(threshold, False, note=f"ICC filter not applied: {why} ({source}); trained without it")
    by_feature = icc.set_index("feature")
    absent = [c for c in imaging if c not in by_feature.index]
    if len(absent) > len(imaging) / 2:
        raise _bad(
            source,
            f"{len(absent)} of the feature table's {len(imaging)} imaging columns are not in it (e.g. "
            f"{absent[:3]}): it was computed from another extraction",
        )
    values = by_feature["icc"].reindex(imaging)
    keep = values >= threshold  # NaN (undefined or absent) compares False: dropped
    types = by_feature["image_type"].reindex(imaging).fillna("not in icc table").astype(str)
    kept = types[keep.to_numpy()].value_counts().sort_index()
    dropped = types[~keep.to_numpy()].value_counts().sort_index()
    note = (
        f"ICC filter (ICC(1,1) >= {threshold:g}, {n_patients} patients): kept {int(keep.sum())} "
        f"of {len(imaging)} imaging columns" + (f"; {len(absent)} not in {source} were dropped" if absent else "")
    )
    return IccFilter(
        threshold,
        True,
        frozenset(values.index[~keep.to_numpy()]),
        {str(k): int(v) for k, v in kept.items()},
        {str(k): int(v) for k, v in dropped.items()},
        len(absent),
        note,
    )


# --------------------------------------------------------------------------- perturbed rows


def perturbed_rows(
    table: pd.DataFrame, perturbed: pd.DataFrame, patients: Iterable[str], chain: str = ICC_CHAIN
) -> pd.DataFrame:
    """Copies of ``patients``' rows of ``table`` whose imaging columns come from their ``chain``
    perturbations (``icc``: augmentation; ``site``: the simulated other scanner).

    Everything else (clinical inputs, outcomes) is the original patient's; a perturbed row whose
    status is not ok is left out. Columns: those of ``table`` plus ``perturbation``. Only the
    named patients' rows are returned, so a held-out patient's copies cannot enter.
    """
    absent = [c for c in imaging_columns(table.columns) if c not in perturbed]
    if absent:
        raise ValueError(
            f"the perturbed features lack {len(absent)} imaging column(s) of the feature table (e.g. "
            f"{absent[:3]}): they were extracted with other settings; {PERTURB_FIX}"
        )
    wanted = set(map(str, patients))
    rows = perturbed.loc[
        perturbed[PERTURBATION].str.startswith(f"{chain}-") & perturbed[s.PATIENT_ID].astype(str).isin(wanted)
    ]
    if s.STATUS in rows:
        rows = rows.loc[rows[s.STATUS] == s.OK]
    ids = table[s.PATIENT_ID].astype(str)
    rows = rows.loc[rows[s.PATIENT_ID].isin(set(ids))]
    position = pd.Series(np.arange(len(table)), index=ids.to_numpy())
    imaging = imaging_columns(table.columns)
    originals = table.iloc[position.loc[rows[s.PATIENT_ID]].to_numpy()].reset_index(drop=True)
    copies = pd.concat(
        [originals.drop(columns=imaging), rows[[*imaging, PERTURBATION]].reset_index(drop=True)], axis=1
    )  # one concatenation: thousands of radiomics columns assigned one by one fragment the frame
    return copies[[*table.columns, PERTURBATION]]


def splits_with_copies(
    splits: Sequence[tuple[np.ndarray, np.ndarray]], train_ids: Sequence[str], copy_ids: Sequence[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """CV splits over ``train_ids`` (original rows, positions 0..n-1) extended to the rows
    ``train_ids + copy_ids``: a copy joins the training side of a fold exactly when its patient
    is on that side; validation rows stay the original rows only.

    ``ValueError`` if a copy's patient is not among ``train_ids`` (a held-out patient's copy: a leak).
    """
    train_ids = np.asarray(train_ids, dtype=str)
    copy_ids = np.asarray(copy_ids, dtype=str)
    stranger = ~np.isin(copy_ids, train_ids)
    if stranger.any():
        raise ValueError(
            f"{int(stranger.sum())} perturbed row(s) of patients outside the training split "
            f"(e.g. {sorted(set(copy_ids[stranger]))[:3]}): they would leak into training"
        )
    n = len(train_ids)
    out = []
    for train, test in splits:
        on_train_side = np.isin(copy_ids, train_ids[train])
        out.append((np.concatenate([train, n + np.flatnonzero(on_train_side)]), np.asarray(test)))
    return out
