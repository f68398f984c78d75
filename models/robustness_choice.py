"""Choosing ``train.robustness`` on the training site only (issue 13 item 4; docs/robustness.md, "choice").

Each candidate (an ICC threshold or none, augmentation or not) runs the same patient-grouped,
stratified CV of the training split with one fixed small model per task; every validation fold
is scored twice: on its patients' original rows (same site) and on their ``site-1`` rows (the
simulated other scanner of ``crlm perturb``). Site B and any external cohort are never read.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sksurv.metrics import concordance_index_censored

from features import schema as s
from models import outcomes, preprocessing, registry, robustness, training
from models.registry import IMAGING_PREFIXES, RECURRENCE, TASKS

TOLERANCE = 0.01  # same-site CV score a candidate may give up for a better site-shift score
RESULT_COLUMNS = (
    "candidate",
    "icc_threshold",
    "augment",
    "task",
    "metric",
    "n_imaging_inputs",
    "same_site_mean",
    "same_site_sd",
    "site_shift_mean",
    "site_shift_sd",
    "n_folds",
    "n_site_patients",
    "seconds",
)


@dataclass(frozen=True)
class Candidate:
    """One setting of ``train.robustness``."""

    icc_threshold: float | None
    augment: bool

    @property
    def name(self) -> str:
        icc = "none" if self.icc_threshold is None else f"{self.icc_threshold:g}"
        return f"icc={icc},augment={str(self.augment).lower()}"

    @property
    def complexity(self) -> tuple[int, float]:
        """Simpler first: no filter before a filter (a lower threshold drops less), no augmentation before it."""
        return (int(self.augment) + int(self.icc_threshold is not None), self.icc_threshold or 0.0)


def candidates(thresholds: Sequence[float | None]) -> list[Candidate]:
    """Every threshold (None: no filter, always included) with and without augmentation."""
    levels = [None, *sorted({t for t in thresholds if t is not None})]
    return [Candidate(t, a) for t in levels for a in (False, True)]


def _score(task: str, model: Pipeline, X: pd.DataFrame, y) -> float:
    """C-index (recurrence; Harrell's) or ROC AUC (response); NaN if the fold cannot give one."""
    try:
        if task == RECURRENCE:
            if not np.asarray(y["event"]).any():
                return math.nan
            return float(concordance_index_censored(y["event"], y["time"], np.asarray(model.predict(X), float))[0])
        if len(np.unique(y)) < 2:
            return math.nan
        return float(roc_auc_score(y, model.predict_proba(X)[:, 1]))
    except ValueError:
        return math.nan


def _model(task: str, table: pd.DataFrame, columns: list[str], settings: training.TrainSettings, n_fit: int):
    """The fixed small model of a task: its preferred family at the first point of its grid,
    ``k`` = the smallest of ``k_features`` (capped at half the fold's training patients)."""
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    imaging = [c for c in numeric if c.startswith(IMAGING_PREFIXES)]
    select_among = settings.select_among if imaging else "all"
    k = max(1, min(min(settings.k_features), n_fit // 2))
    steps = preprocessing.feature_pipeline(
        numeric, categorical, settings.correlation_threshold, k, imaging=imaging, select_among=select_among
    )
    name = registry.MODELS[task][0]
    model = Pipeline([*steps, ("model", registry.family(task, name).estimator(settings.seed))])
    first = {f"model__{key}": values[0] for key, values in settings.grids.get(name, {}).items()}
    return model.set_params(**first), numeric, categorical


def site_shift_cv(
    table: pd.DataFrame,
    perturbed: pd.DataFrame,
    icc: pd.DataFrame | None,
    options: Sequence[Candidate],
    settings: training.TrainSettings,
    train_index: np.ndarray,
    tasks: Sequence[str] = TASKS,
) -> pd.DataFrame:
    """Per candidate and task: mean and SD over CV folds of the training split of the same-site
    score and the site-shift score (the validation patients' ``site-1`` rows); `RESULT_COLUMNS`.

    ``train_index``: positions in ``table`` of the training split; nothing else is read. Folds are
    by patient, stratified by the outcome as in `training.fit_task`, the same for every
    candidate; copies (``augment``) join the training side with their patient only. A validation
    patient without an ok ``site-1`` row counts for the same-site score only.
    """
    rows = []
    train_ids = table.iloc[train_index][s.PATIENT_ID].astype(str)
    for task in tasks:
        known = training.has_outcome(table, task).to_numpy()
        positions = np.asarray(train_index)[known[np.asarray(train_index)]]
        train = table.iloc[positions].reset_index(drop=True)
        ids = train[s.PATIENT_ID].astype(str).to_numpy()
        build = outcomes.recurrence_outcome if task == RECURRENCE else outcomes.response_outcome
        y = build(train)
        strata = y["event"] if task == RECURRENCE else y
        folds = StratifiedKFold(n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            splits = list(folds.split(np.zeros(len(y)), strata))
        site = robustness.perturbed_rows(train, perturbed, ids, chain=robustness.SITE_CHAIN)
        site = site.drop_duplicates(s.PATIENT_ID)  # one simulated other scanner per patient (site-1)
        copies = robustness.perturbed_rows(train, perturbed, train_ids, chain=robustness.ICC_CHAIN)
        owner = pd.Series(np.arange(len(train)), index=ids)
        base_columns = training.feature_columns(train, task)
        for option in options:
            start = time.perf_counter()
            columns = base_columns
            if option.icc_threshold is not None:
                if icc is None:
                    raise ValueError(f"candidate {option.name} needs the ICC table (crlm perturb's icc.csv)")
                applied = robustness.icc_filter(icc, option.icc_threshold, base_columns)
                columns = [c for c in base_columns if c not in applied.dropped]
            same, shifted = [], []
            for fit_rows, val_rows in splits:
                X = training.model_frame(train.iloc[fit_rows], columns)
                y_fit = y[fit_rows]
                if option.augment and len(copies):
                    mine = copies.loc[copies[s.PATIENT_ID].isin(set(ids[fit_rows]))]
                    X = pd.concat([X, training.model_frame(mine, columns)], ignore_index=True)
                    y_fit = np.concatenate([y_fit, y[owner.loc[mine[s.PATIENT_ID]].to_numpy()]])
                model, _, _ = _model(task, train, columns, settings, len(fit_rows))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(X, y_fit)
                validation = train.iloc[val_rows]
                same.append(_score(task, model, training.model_frame(validation, columns), y[val_rows]))
                other = site.loc[site[s.PATIENT_ID].isin(set(ids[val_rows]))]
                if len(other):
                    y_other = y[owner.loc[other[s.PATIENT_ID]].to_numpy()]
                    shifted.append(_score(task, model, training.model_frame(other, columns), y_other))
            rows.append(
                {
                    "candidate": option.name,
                    "icc_threshold": option.icc_threshold,
                    "augment": option.augment,
                    "task": task,
                    "metric": registry.PRIMARY_METRIC[task],
                    "n_imaging_inputs": sum(c.startswith(IMAGING_PREFIXES) for c in columns),
                    "same_site_mean": float(np.nanmean(same)) if np.isfinite(same).any() else math.nan,
                    "same_site_sd": float(np.nanstd(same, ddof=1)) if np.isfinite(same).sum() > 1 else math.nan,
                    "site_shift_mean": float(np.nanmean(shifted)) if np.isfinite(shifted).any() else math.nan,
                    "site_shift_sd": float(np.nanstd(shifted, ddof=1)) if np.isfinite(shifted).sum() > 1 else math.nan,
                    "n_folds": len(splits),
                    "n_site_patients": int(site[s.PATIENT_ID].nunique()),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def choose(results: pd.DataFrame, tolerance: float = TOLERANCE) -> tuple[Candidate, str]:
    """The rule of docs/robustness.md ("choice"). Eligible: the candidates whose same-site score
    is, in EVERY task, within ``tolerance`` of the no-robustness candidate's (robustness must not
    cost the training site on any task; without that candidate in ``results``, of the best one
    per task). Among them the best site-shift score averaged over tasks (rounded to 3 decimals);
    ties go to the simpler candidate (`Candidate.complexity`). The no-robustness candidate is
    always eligible. Returns the candidate and a sentence that says why."""
    if results.empty:
        raise ValueError("no candidate was scored")
    if results["site_shift_mean"].isna().all():
        raise ValueError(
            "no validation patient has a site-1 row in the perturbed features: the site-shift score "
            "cannot be computed; rebuild them with crlm perturb (the site chain)"
        )
    frame = results if "task" in results else results.assign(task="all")
    frame = frame.dropna(subset=["same_site_mean", "site_shift_mean"])
    if frame.empty:
        raise ValueError("no candidate has both a same-site and a site-shift CV score")
    same = frame.groupby(["candidate", "task"], sort=False)["same_site_mean"].mean().unstack("task")
    baseline = Candidate(None, False).name
    reference = same.loc[baseline] if baseline in same.index else same.max()
    costs = (reference - same).max(axis=1)  # the largest same-site loss over tasks
    per = frame.groupby("candidate", sort=False).agg(
        icc_threshold=("icc_threshold", "first"),
        augment=("augment", "first"),
        same=("same_site_mean", "mean"),
        shifted=("site_shift_mean", "mean"),
    )
    eligible = per.loc[costs.reindex(per.index).le(tolerance + 1e-12) & same.notna().all(axis=1).reindex(per.index)]
    eligible = eligible.assign(rounded=eligible["shifted"].round(3))
    top = eligible.loc[eligible["rounded"] == eligible["rounded"].max()]
    options = [
        Candidate(None if pd.isna(r.icc_threshold) else float(r.icc_threshold), bool(r.augment))
        for r in top.itertuples()
    ]
    chosen = min(options, key=lambda c: c.complexity)
    row = per.loc[chosen.name]
    against = "the no-robustness candidate's" if baseline in same.index else "the best"
    why = (
        f"{chosen.name}: site-shift CV score {row['shifted']:.3f} (best among the {len(eligible)} of {len(per)} "
        f"candidates whose same-site CV score is within {tolerance:g} of {against} in every task); "
        f"same-site {row['same']:.3f}" + (f"; {len(options)} tied, the simplest taken" if len(options) > 1 else "")
    )
    excluded = [f"{name} (same-site {cost:.3f} below)" for name, cost in costs.items() if cost > tolerance + 1e-12]
    if excluded:
        why += "; not eligible: " + ", ".join(excluded)
    return chosen, why
