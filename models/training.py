"""Fitting the recurrence and response models on a patient-level split (docs/design.md section 7).

The split is by patient and stratified by outcome; every pre-processing step lives in the
model's `sklearn.pipeline.Pipeline`, and hyper-parameters are chosen by grid search with
cross-validation on the training split only. Baselines (clinical scores) and the oracle (the
simulation's true predictors) are scored on the same test patients.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import field_validator
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from features import schema as s
from features import scores
from features.settings import check_jobs, nearest, settings_class
from models import novelty, outcomes, preprocessing, registry, robustness
from models.registry import (  # their home
    BASELINES,
    IMAGING_PREFIXES,
    MODELS,
    RECURRENCE,
    RESPONSE,
    TASKS,
)

# Columns of the training split kept for calibrating baselines on another cohort later.
REFERENCE_COLUMNS = (s.LARGEST_CM, s.CEA, s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS, s.RECIST)
_NOT_FEATURES = {s.PATIENT_ID, s.IMAGE, s.MASK, s.SITE, s.STATUS, s.REASON, *s.OUTCOMES}
_TIMING_ORDER = {"baseline": 0, "preoperative": 1, "postoperative": 2}
_SCORE_INPUTS = scores.SCORE_INPUTS


def _timing(column: str) -> str:
    """When a column is known; scores inherit the latest timing of their inputs."""
    if column in s.COLUMN_BY_NAME:
        return s.COLUMN_BY_NAME[column].timing
    if column in _SCORE_INPUTS:
        return max((s.COLUMN_BY_NAME[c].timing for c in _SCORE_INPUTS[column]), key=_TIMING_ORDER.get)
    return "baseline"  # imaging (pre-treatment CT) and user covariates


def feature_columns(table: pd.DataFrame, task: str, covariates: Sequence[str] = ()) -> list[str]:
    """Model inputs for ``task``: clinical inputs, numeric scores, imaging and covariates.

    Response to chemotherapy may only use what is known before it (baseline timing); risk
    groups (text) are left out, their scores are in.
    """
    candidates = [c for c in s.CLINICAL_INPUTS if c in table]
    candidates += [c for c in _SCORE_INPUTS if c in table]
    candidates += [c for c in table.columns if c.startswith(scores.CRITERION_PREFIX)]
    candidates += [c for c in table.columns if c.startswith(IMAGING_PREFIXES)]
    candidates += [c for c in covariates if c in table and c not in candidates]
    if task == RESPONSE:
        candidates = [c for c in candidates if _timing(c) == "baseline"]
    usable = [c for c in candidates if c not in _NOT_FEATURES and table[c].notna().any()]
    return usable


SCORE_COLUMN = {name: scores.SCORE_COLUMNS[name] for name in BASELINES}  # baseline -> its score column


def baseline_scores(table: pd.DataFrame, task: str, names: Sequence[str] = BASELINES) -> pd.DataFrame:
    """Clinical scores used as risk scores (higher = worse), per task; missing stays missing.

    Only the scores in ``names`` whose column is in ``table`` are returned. For response the
    Oslo score keeps only its pre-treatment items (largest > 5.5 cm, CEA > 80 ng/mL): its other
    items (time to surgery, progression on chemotherapy) happen after the chemotherapy whose
    response is predicted.
    """
    out = pd.DataFrame(index=table.index)
    for name in names:
        column = SCORE_COLUMN[name]
        if column in table:
            out[name] = pd.to_numeric(table[column], errors="coerce").astype(float)
    if task == RESPONSE and "oslo" in out:
        largest = pd.to_numeric(table.get(s.LARGEST_CM), errors="coerce") if s.LARGEST_CM in table else None
        cea = pd.to_numeric(table.get(s.CEA), errors="coerce") if s.CEA in table else None
        if largest is None or cea is None:
            out["oslo"] = np.nan
        else:
            out["oslo"] = (
                (largest > scores.OSLO_LARGEST_CM).astype(float) + (cea > scores.OSLO_CEA_NG_ML).astype(float)
            ).where(largest.notna() & cea.notna())
    return out


@dataclass(frozen=True)
class BaselineStatus:
    """Whether a clinical score can serve as a baseline on a split, and why not."""

    name: str
    available: bool
    n_patients: int
    n_computable: int
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "n_patients": self.n_patients,
            "n_computable": self.n_computable,
            "reason": self.reason,
        }


def _missing_items_reason(table: pd.DataFrame, name: str, task: str) -> str:
    """Which of a score's items are unknown for how many patients (``features.scores.score_availability``)."""
    if task == RESPONSE and name == "oslo":  # the pre-treatment Oslo items only (baseline_scores)
        n = len(table)
        counts = {c: (n if c not in table else int(table[c].isna().sum())) for c in (s.LARGEST_CM, s.CEA)}
        return "; ".join(f"{k} missing for {v}/{n} patients" for k, v in counts.items() if v)
    return scores.score_availability(table)[name].reason


def baseline_availability(
    splits: Mapping[str, pd.DataFrame], task: str, min_coverage: float, names: Sequence[str] = BASELINES
) -> dict[str, BaselineStatus]:
    """Each baseline score's availability over the named ``splits`` (e.g. train and test).

    A score is a baseline only where it can be computed for at least ``min_coverage`` of the
    patients of every split; the patients it misses are then scored with the training median
    (said in the status). Below that it is left out, with the items that are missing.
    """
    result: dict[str, BaselineStatus] = {}
    for name in names:
        n_total = n_ok = 0
        worst = ""
        available = True
        for split_name, frame in splits.items():
            values = baseline_scores(frame, task, (name,))
            known = int(values[name].notna().sum()) if name in values else 0
            n_total += len(frame)
            n_ok += known
            constant = known > 0 and values[name].nunique(dropna=True) == 1
            if constant and available:
                available = False
                worst = (
                    f"{name}: not available, the same value ({values[name].dropna().iloc[0]:g}) for every "
                    f"{split_name} patient who has it: it cannot rank patients"
                )
            elif len(frame) == 0 or known < min_coverage * len(frame):
                available = False
                why = _missing_items_reason(frame, name, task) or f"{SCORE_COLUMN[name]} missing"
                worst = worst or (
                    f"{name}: not available, computable for {known}/{len(frame)} {split_name} "
                    f"patients (needs {min_coverage:.0%}): {why}"
                )
        reason = (
            worst
            if not available
            else (
                f"{name}: {n_total - n_ok}/{n_total} patients without a score take the training median"
                if n_ok < n_total
                else ""
            )
        )
        result[name] = BaselineStatus(name, available, n_total, n_ok, reason)
    return result


def outcome_strata(table: pd.DataFrame, tasks: Sequence[str] = TASKS) -> pd.Series:
    """Stratum per patient from the outcomes of ``tasks`` that the table has.

    Recurrence: the event (unknown as ``<NA>``); response: responder or not (unknown as
    ``na``). With both outcomes known for everyone this is ``"event|responder"``, as before.
    """
    parts = []
    if RECURRENCE in tasks and s.RECURRENCE_EVENT in table:
        parts.append(pd.to_numeric(table[s.RECURRENCE_EVENT], errors="coerce").astype("Int64").astype(str))
    if RESPONSE in tasks and s.RECIST in table:
        known = table[s.RECIST].isin(s.RECIST_CATEGORIES)
        responder = table[s.RECIST].isin(s.RESPONDER_CATEGORIES).astype(int).astype(str)
        parts.append(responder.where(known, "na"))
    if not parts:
        return pd.Series("all", index=table.index)
    strata = parts[0]
    for part in parts[1:]:
        strata = strata + "|" + part
    return strata


def split_patients(
    table: pd.DataFrame, test_fraction: float, seed: int, tasks: Sequence[str] = TASKS
) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level train/test split stratified by the outcomes of ``tasks`` that exist.

    Strata with fewer than two patients are pooled (``rare``); if the pooled strata still
    cannot be split (a very small cohort), the recurrence event alone, then no stratification.
    """
    index = np.arange(len(table))
    candidates = [outcome_strata(table, tasks)]
    if len(tasks) > 1:
        candidates += [outcome_strata(table, (t,)) for t in tasks]
    for strata in candidates:
        counts = strata.value_counts()
        strata = strata.where(strata.map(counts) >= 2, "rare")
        counts = strata.value_counts()
        n_test = math.ceil(test_fraction * len(table))
        if counts.min() < 2 or n_test < len(counts) or len(table) - n_test < len(counts):
            continue
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=strata)
        return np.sort(train), np.sort(test)
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed)
    return np.sort(train), np.sort(test)


def has_outcome(table: pd.DataFrame, task: str) -> pd.Series:
    """Patients whose outcome for ``task`` is known (False for every patient if the column is absent)."""
    if task == RECURRENCE:
        if s.RECURRENCE_EVENT not in table or s.RECURRENCE_MONTHS not in table:
            return pd.Series(False, index=table.index)
        return outcomes.has_recurrence_outcome(table)
    if s.RECIST not in table:
        return pd.Series(False, index=table.index)
    return outcomes.has_response_outcome(table)


def usable_patients(table: pd.DataFrame, tasks: Sequence[str] = TASKS) -> pd.DataFrame:
    """Patients with status ok and the outcome of at least one of ``tasks`` known."""
    if s.STATUS not in table:
        raise ValueError(f"the feature table has no '{s.STATUS}' column; build it with crlm featurize")
    ok = table[s.STATUS] == s.OK
    known = pd.Series(False, index=table.index)
    for task in tasks:
        known |= has_outcome(table, task)
    return table.loc[ok & known].reset_index(drop=True)


def outcome_missing_reason(table: pd.DataFrame, task: str) -> str | None:
    """Why ``task`` cannot be trained on ``table`` from its outcome alone, or None if it can be tried."""
    if task == RECURRENCE:
        absent = [c for c in (s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS) if c not in table]
        if absent:
            return f"the cohort has no {' or '.join(absent)} column (map them in the cohort mapping)"
        known = has_outcome(table, task)
        if not known.any():
            return f"{s.RECURRENCE_EVENT} / {s.RECURRENCE_MONTHS} are blank for all {len(table)} usable patients"
        events = int(pd.to_numeric(table.loc[known, s.RECURRENCE_EVENT], errors="coerce").sum())
        if events == 0:
            return f"no recurrence event among the {int(known.sum())} patients with follow-up"
        return None
    if s.RECIST not in table:
        return f"the cohort has no {s.RECIST} column (RECIST CR/PR/SD/PD; map it in the cohort mapping)"
    known = has_outcome(table, task)
    if not known.any():
        return f"{s.RECIST} is blank (or not CR/PR/SD/PD) for all {len(table)} usable patients"
    responders = table.loc[known, s.RECIST].isin(s.RESPONDER_CATEGORIES)
    if responders.all() or not responders.any():
        only = "responders (CR/PR)" if responders.all() else "non-responders (SD/PD)"
        return f"all {int(known.sum())} patients with a RECIST response are {only}: one class, nothing to learn"
    return None


# Smallest numbers a task needs (docs/own_cohort_training.md): per CV validation fold and on the held-out split.
MIN_MINORITY_PER_FOLD = 2
MIN_CV_FOLDS = 2
MIN_TEST_MINORITY = 2


@dataclass(frozen=True)
class TaskPlan:
    """What the data of one task allows: the CV folds and the selection grid, with the reasons."""

    task: str
    n_train: int
    n_test: int
    minority_train: int  # events (recurrence) or the rarer class (response) in the training split
    minority_test: int
    cv_folds: int
    k_features: tuple[int, ...]
    notes: tuple[str, ...] = ()


def _minority(table: pd.DataFrame, task: str) -> int:
    """Recurrence: the number of events (censoring may be absent); response: the rarer class."""
    if task == RECURRENCE:
        return int(pd.to_numeric(table[s.RECURRENCE_EVENT], errors="coerce").fillna(0).astype(bool).sum())
    responder = table[s.RECIST].isin(s.RESPONDER_CATEGORIES)
    return int(min(responder.sum(), (~responder).sum()))


def plan_task(
    table: pd.DataFrame, task: str, train_index: np.ndarray, test_index: np.ndarray, settings: TrainSettings
) -> TaskPlan:
    """Check what the training and held-out patients of ``task`` allow before anything is fitted.

    Adapts where it can (fewer CV folds, a smaller feature-selection grid) and says so in
    ``notes``; raises ``ValueError`` naming the number and the fix where it cannot.
    """
    train, test = table.iloc[train_index], table.iloc[test_index]
    unit = "recurrence events" if task == RECURRENCE else "patients in the rarer response class"
    minority_train, minority_test = _minority(train, task), _minority(test, task)
    if minority_test < MIN_TEST_MINORITY:
        raise ValueError(
            f"{task}: the held-out split has {len(test)} patients with {minority_test} {unit}; "
            f"at least {MIN_TEST_MINORITY} are needed for any held-out metric. Fix: more patients, "
            f"or a larger train.test_fraction (now {settings.test_fraction})"
        )
    wanted = settings.cv_folds
    folds = min(wanted, minority_train // MIN_MINORITY_PER_FOLD)
    notes: list[str] = []
    if folds < MIN_CV_FOLDS:
        raise ValueError(
            f"{task}: the training split has {len(train)} patients with {minority_train} {unit}; "
            f"cross-validation needs at least {MIN_CV_FOLDS * MIN_MINORITY_PER_FOLD} "
            f"({MIN_MINORITY_PER_FOLD} per fold, {MIN_CV_FOLDS} folds). Fix: more patients "
            f"(or events), or a smaller train.test_fraction (now {settings.test_fraction})"
        )
    if folds < wanted:
        notes.append(
            f"{folds} CV folds instead of {wanted}: {minority_train} {unit} in the training split "
            f"allow {MIN_MINORITY_PER_FOLD} per fold"
        )
    # Univariate selection is fitted inside each fold: keep k below the fold's training patients.
    fold_train = len(train) - math.ceil(len(train) / folds)
    cap = max(1, fold_train // 2)
    requested = settings.k_features
    k_features = tuple(sorted({min(k, cap) for k in requested}))
    if k_features != tuple(sorted(set(requested))):
        notes.append(
            f"feature-selection grid {list(k_features)} instead of {list(requested)}: "
            f"{fold_train} training patients per fold allow at most {cap} selected features"
        )
    return TaskPlan(task, len(train), len(test), minority_train, minority_test, folds, k_features, tuple(notes))


@settings_class
class TrainSettings:
    """The ``train`` block of params.yaml.

    ``seed`` of the split and the CV folds; ``test_fraction`` of held-out patients (0-1);
    ``cv_folds`` (>= 2); ``jobs``, parallel fits (-1: all cores); ``correlation_threshold``
    (0-1] above which a feature is dropped; ``k_features``, the univariate-selection grid;
    ``select_among`` (``preprocessing.SELECT_K``: imaging or all); ``grids``, per model family
    (``MODELS``) its estimator's hyper-parameter grid (sklearn names, checked against the
    estimator's ``get_params``: a misspelt option is an error, not a silently dropped model); a
    family without a grid keeps its estimator's settings; ``robustness`` (`models.robustness.
    RobustnessSettings`): the ICC filter and augmentation by perturbed copies, off by default.
    """

    seed: int
    test_fraction: float
    cv_folds: int
    jobs: int
    correlation_threshold: float
    k_features: tuple[int, ...]
    select_among: str = "all"
    grids: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    robustness: robustness.RobustnessSettings = field(default_factory=robustness.RobustnessSettings)

    @field_validator("test_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"{value!r}; expected a share between 0 and 1, e.g. 0.3")
        return value

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value < MIN_CV_FOLDS:
            raise ValueError(f"{value}; expected at least {MIN_CV_FOLDS} folds")
        return value

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, value: int) -> int:
        return check_jobs(value)

    @field_validator("correlation_threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"{value!r}; expected a correlation in (0, 1], e.g. 0.9")
        return value

    @field_validator("k_features")
    @classmethod
    def _k(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 1:
            raise ValueError(f"{list(value)}; expected a list of positive numbers of features, e.g. [20, 40]")
        return value

    @field_validator("select_among")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value not in preprocessing.SELECT_K:
            raise ValueError(f"{value!r} is not allowed; {nearest(value, preprocessing.SELECT_K, 'allowed')}")
        return value

    @field_validator("grids")
    @classmethod
    def _grids(cls, value: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, dict[str, tuple[Any, ...]]]:
        families = {f.name: f for f in registry.FAMILIES}
        for name, grid in value.items():
            if name not in families:
                raise ValueError(f"unknown model '{name}'; {nearest(name, families, 'models')}")
            estimator = families[name].estimator(0)
            options = estimator.get_params(deep=False)
            for option, values in grid.items():
                if option not in options:
                    raise ValueError(
                        f"{name}: unknown option '{option}' of {type(estimator).__name__}; "
                        f"{nearest(option, options, 'options')}"
                    )
                if not values:
                    raise ValueError(f"{name}.{option}: an empty list; give at least one value")
        return {**{name: {} for name in families}, **value}  # a family without a grid: its estimator's defaults


@dataclass
class FittedTask:
    """One task's fitted models and the data they were fitted and tested on.

    ``failed`` names the model families that could not be fitted on these data, with why.
    """

    task: str
    features: list[str]
    train_index: np.ndarray
    test_index: np.ndarray
    models: dict[str, Pipeline] = field(default_factory=dict)
    best_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    cv_scores: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    novelty: dict[str, novelty.NoveltyModel] = field(default_factory=dict)  # per model (docs/novelty.md)


def _grid(
    name: str, grids: Mapping[str, Mapping[str, Sequence[Any]]], k_features: Sequence[int], select_key: str | None
) -> dict:
    grid = {f"model__{key}": list(values) for key, values in grids[name].items()}
    if select_key is not None:
        grid[select_key] = list(k_features)
    return grid


def _failure(exc: BaseException) -> str:
    """The useful last line of a fit failure (GridSearchCV folds every traceback into one message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if ":" in last else f"{type(exc).__name__}: {last}"


# What a model fit raises when it cannot be fitted on these data (e.g. the Cox net's
# ArithmeticError on a tiny cohort, a singular matrix): the model is then left out, not the run.
FIT_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError, FloatingPointError)


def fit_task(
    table: pd.DataFrame,
    task: str,
    train_index: np.ndarray,
    test_index: np.ndarray,
    settings: TrainSettings,
    covariates: Sequence[str] = (),
    jobs: int = 1,
    plan: TaskPlan | None = None,
    drop_columns: Collection[str] = (),
    copies: pd.DataFrame | None = None,
) -> FittedTask:
    """Fit every model of ``task`` on the training rows, tuned by cross-validation there.

    ``settings`` is the ``train`` block of params.yaml (`TrainSettings`): ``seed``, ``cv_folds``,
    ``correlation_threshold``, ``k_features``, ``select_among`` and per-model grids under ``grids``.
    ``plan`` (from :func:`plan_task`) overrides the folds and the selection grid for a small
    cohort. A model family whose every fit fails on these data (e.g. the Cox net's
    ``ArithmeticError`` on a tiny cohort) is left out and named in ``failed``; grid points
    that fail are skipped and counted in ``notes``. ``ValueError`` if no family can be fitted.

    Scanner robustness (`models.robustness`, docs/robustness.md): ``drop_columns`` (the ICC
    filter's) are never model inputs; ``copies`` (rows like ``table``'s, perturbed copies of
    training patients, each with its patient's outcome) are extra training rows: each joins the
    training side of a CV fold with its patient, validation folds score original rows only, and
    a copy of a patient outside ``train_index`` is a ``ValueError``. The novelty model is fitted
    on the original rows.
    """
    columns = feature_columns(table, task, covariates)
    if drop_columns:
        dropped = set(drop_columns)
        columns = [c for c in columns if c not in dropped]
    if not columns:
        raise ValueError(f"{task}: no usable model input: every candidate column is missing for all patients")
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    imaging = [c for c in numeric if c.startswith(IMAGING_PREFIXES)]
    select_among = settings.select_among
    select_key = None if select_among == "imaging" and not imaging else preprocessing.SELECT_K.get(select_among)
    folds_n = plan.cv_folds if plan is not None else settings.cv_folds
    k_features = list(plan.k_features) if plan is not None else list(settings.k_features)
    X = _model_frame(table, numeric, categorical)
    train = table.iloc[train_index]
    if task == RECURRENCE:
        y = outcomes.recurrence_outcome(train)
        strata = y["event"]
    else:
        y = outcomes.response_outcome(train)
        strata = y
    folds = StratifiedKFold(n_splits=folds_n, shuffle=True, random_state=settings.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(folds.split(np.zeros(len(y)), strata))
    X_fit, y_fit = X.iloc[train_index], y
    if copies is not None and len(copies):
        copy_ids = copies[s.PATIENT_ID].astype(str).to_numpy()
        splits = robustness.splits_with_copies(splits, train[s.PATIENT_ID].astype(str).to_numpy(), copy_ids)
        owner = pd.Series(np.arange(len(train)), index=train[s.PATIENT_ID].astype(str).to_numpy())
        X_fit = pd.concat([X_fit, _model_frame(copies, numeric, categorical)], ignore_index=True)
        y_fit = np.concatenate([np.asarray(y), np.asarray(y)[owner.loc[copy_ids].to_numpy()]])
    fitted = FittedTask(task, columns, train_index, test_index)
    with tempfile.TemporaryDirectory(prefix="crlm-cv-") as cache:
        for name in MODELS[task]:
            steps = preprocessing.feature_pipeline(
                numeric,
                categorical,
                settings.correlation_threshold,
                int(k_features[0]),
                imaging=imaging,
                select_among=select_among,
            )
            # The shared pre-processing of a fold is fitted once and reused across the grid.
            pipeline = Pipeline([*steps, ("model", registry.family(task, name).estimator(settings.seed))], memory=cache)
            search = GridSearchCV(
                pipeline,
                _grid(name, settings.grids, k_features, select_key),
                cv=splits,
                n_jobs=jobs,
                refit=True,
                error_score=np.nan,
                scoring=None if task == RECURRENCE else "roc_auc",
            )
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", category=UserWarning, message=".*fits failed.*")
                    warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
                    search.fit(X_fit, y_fit)
            except FIT_ERRORS as exc:
                fitted.failed[name] = _failure(exc)
                continue
            scores_ = np.asarray(search.cv_results_["mean_test_score"], float)
            if not np.isfinite(search.best_score_):
                fitted.failed[name] = "no grid point gave a finite cross-validated score"
                continue
            if (~np.isfinite(scores_)).any():
                fitted.notes.append(
                    f"{name}: {int((~np.isfinite(scores_)).sum())}/{len(scores_)} grid points "
                    "failed to fit on these data and were skipped"
                )
            best = search.best_estimator_
            best.memory = None  # the cache folder does not outlive this call
            fitted.models[name] = best
            fitted.best_params[name] = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
            fitted.cv_scores[name] = float(search.best_score_)
            try:  # on the inputs this model's estimator receives (docs/novelty.md)
                inputs = novelty.model_inputs(best, X.iloc[train_index])
                fitted.novelty[name] = novelty.fit_novelty(inputs, folds=novelty.NOVELTY_FOLDS, seed=settings.seed)
            except (ValueError, np.linalg.LinAlgError) as exc:
                fitted.notes.append(f"{name}: no novelty model: {exc}")
    if not fitted.models:
        raise ValueError(
            f"{task}: no model could be fitted on these {len(train_index)} training patients: "
            + "; ".join(f"{m}: {why}" for m, why in fitted.failed.items())
            + ". Fix: more patients, or stronger shrinkage in params.yaml train.grids"
        )
    return fitted


def _model_frame(table: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """Numeric columns as float (missing = NaN), categorical as text (missing = NaN)."""
    columns = {c: pd.to_numeric(table[c], errors="coerce").astype(float) for c in numeric}
    columns.update({c: table[c].astype(object).where(table[c].notna(), np.nan) for c in categorical})
    return pd.DataFrame(columns, index=table.index)


def model_frame(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The frame a fitted model expects, from a feature table with at least ``columns``."""
    missing = [c for c in columns if c not in table]
    if missing:
        raise KeyError(
            f"feature table lacks model input column(s) {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}; rebuild it with crlm featurize"
        )
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    return _model_frame(table, numeric, categorical)[list(columns)]


def refit_clone(pipeline: Pipeline, X: pd.DataFrame, y) -> Pipeline:
    """A fresh copy of ``pipeline`` fitted on ``X``, ``y`` (for permutation tests)."""
    return clone(pipeline).fit(X, y)
