"""Choosing ``train.robustness`` on the training site only (issue 13 item 4; docs/robustness.md, "choice").

Each candidate (an ICC threshold or none, augmentation or not) runs the same patient-grouped,
stratified CV of the training split with one fixed small model per task; every validation fold
is scored on its patients' original rows (same site) and on their ``site-k`` rows, one score per
simulated other scanner of ``crlm perturb`` (``robustness.site_scanners``), averaged over the
scanners (site shift). The choice is made per task (`choose`): a filter that helps one task can
cost the other. Site B and any external cohort are never read.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    "site_shift_worst",
    "n_folds",
    "n_site_scanners",
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
    score and of the site-shift score (per fold, the mean over the simulated scanners ``site-k``
    of the score on the validation patients' rows from that scanner), and the worst scanner's
    mean over folds; `RESULT_COLUMNS`.

    ``train_index``: positions in ``table`` of the training split; nothing else is read. Folds are
    by patient, stratified by the outcome as in `training.fit_task`, the same for every
    candidate; copies (``augment``) join the training side with their patient only. A validation
    patient without an ok ``site-k`` row counts for the other scores only.
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
        scanners = sorted(site[s.PERTURBATION].unique(), key=lambda name: int(name.rsplit("-", 1)[1]))
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
            by_scanner: dict[str, list[float]] = {name: [] for name in scanners}
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
                val_ids = set(ids[val_rows])
                fold_scores = []
                for name in scanners:
                    other = site.loc[(site[s.PERTURBATION] == name) & site[s.PATIENT_ID].isin(val_ids)]
                    score = math.nan
                    if len(other):
                        y_other = y[owner.loc[other[s.PATIENT_ID]].to_numpy()]
                        score = _score(task, model, training.model_frame(other, columns), y_other)
                    by_scanner[name].append(score)
                    fold_scores.append(score)
                if np.isfinite(fold_scores).any():
                    shifted.append(float(np.nanmean(fold_scores)))
            worst = [float(np.nanmean(v)) for v in by_scanner.values() if np.isfinite(v).any()]
            rows.append(
                {
                    "candidate": option.name,
                    "icc_threshold": option.icc_threshold,
                    "augment": option.augment,
                    "task": task,
                    "metric": registry.PRIMARY_METRIC[task],
                    "n_imaging_inputs": sum(c.startswith(IMAGING_PREFIXES) for c in columns),
                    "same_site_mean": _mean(same),
                    "same_site_sd": _sd(same),
                    "site_shift_mean": _mean(shifted),
                    "site_shift_sd": _sd(shifted),
                    "site_shift_worst": min(worst) if worst else math.nan,
                    "n_folds": len(splits),
                    "n_site_scanners": len(scanners),
                    "n_site_patients": int(site[s.PATIENT_ID].nunique()),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def _mean(values: Sequence[float]) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _sd(values: Sequence[float]) -> float:
    return float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan


@dataclass(frozen=True)
class Choice:
    """What `choose` picked per task, and why, in one sentence per task."""

    tasks: dict[str, Candidate]
    why: dict[str, str]

    def params(self) -> dict[str, Any]:
        """The ``train.robustness`` block that applies the choice (`models.robustness.RobustnessSettings`)."""
        return {
            "tasks": {
                task: {"icc_threshold": option.icc_threshold, "augment": option.augment}
                for task, option in self.tasks.items()
            }
        }

    def sentence(self) -> str:
        return "; ".join(self.why[task] for task in self.tasks)


def choose(results: pd.DataFrame, tolerance: float = TOLERANCE) -> Choice:
    """The rule of docs/robustness.md ("Choice"), per task. Eligible: the candidates whose
    same-site CV score is within ``tolerance`` of the no-robustness candidate's (robustness must
    not cost the training site; without that candidate in ``results``, of the best one). Among
    them the one-standard-error rule (Hastie, Tibshirani & Friedman, The Elements of Statistical
    Learning, 2nd ed., section 7.10): take the simplest candidate (`Candidate.complexity`) whose
    site-shift CV score is within one standard error (over folds) of the best site-shift score.
    The no-robustness candidate is always eligible, so a filter is chosen only when the simulated
    scanners say it helps by more than the folds' noise."""
    if results.empty:
        raise ValueError("no candidate was scored")
    if results["site_shift_mean"].isna().all():
        raise ValueError(
            "no validation patient has a site-k row in the perturbed features: the site-shift score "
            "cannot be computed; rebuild them with crlm perturb (robustness.site_scanners > 0)"
        )
    frame = results if "task" in results else results.assign(task="all")
    chosen: dict[str, Candidate] = {}
    why: dict[str, str] = {}
    for task, rows in frame.groupby("task", sort=False):
        rows = rows.dropna(subset=["same_site_mean", "site_shift_mean"]).set_index("candidate")
        if rows.empty:
            raise ValueError(f"{task}: no candidate has both a same-site and a site-shift CV score")
        baseline = Candidate(None, False).name
        reference = rows.loc[baseline, "same_site_mean"] if baseline in rows.index else rows["same_site_mean"].max()
        costs = reference - rows["same_site_mean"]
        eligible = rows.loc[costs <= tolerance + 1e-12]
        best_name = eligible["site_shift_mean"].idxmax()
        best = eligible.loc[best_name]
        folds = int(best.get("n_folds", 1) or 1)
        se = float(best["site_shift_sd"]) / math.sqrt(folds) if np.isfinite(best["site_shift_sd"]) else 0.0
        within = eligible.loc[eligible["site_shift_mean"] >= best["site_shift_mean"] - se - 1e-12]
        options = {
            name: Candidate(None if pd.isna(r.icc_threshold) else float(r.icc_threshold), bool(r.augment))
            for name, r in within.iterrows()
        }
        name, option = min(options.items(), key=lambda item: item[1].complexity)
        row = rows.loc[name]
        scanners = int(row["n_site_scanners"]) if "n_site_scanners" in row and pd.notna(row["n_site_scanners"]) else 1
        sentence = (
            f"{task}: {name}: site-shift CV score {row['site_shift_mean']:.3f} over {scanners} simulated "
            f"scanner(s), same-site {row['same_site_mean']:.3f}"
        )
        if name == best_name:
            sentence += f" (the best of the {len(eligible)} eligible candidates)"
        else:
            sentence += (
                f" (the simplest within one standard error of the best eligible, {best_name}: "
                f"{best['site_shift_mean']:.3f}, SE {se:.3f} over {folds} folds)"
            )
        excluded = [f"{n} (same-site {c:.3f} below)" for n, c in costs.items() if c > tolerance + 1e-12]
        if excluded:
            sentence += "; not eligible: " + ", ".join(excluded)
        chosen[str(task)], why[str(task)] = option, sentence
    return Choice(chosen, why)
