"""Choosing ``train.robustness`` on the training site only (issue 13 item 4; docs/robustness.md, "choice").

Each candidate (an ICC threshold or none; no augmentation, ``icc`` or ``site`` copies) runs the
same patient-grouped, stratified CV of the training split with every model family of the task at
one grid point, and is summarised by the family ``crlm train`` would pick under it; every
validation fold is scored on its patients' original rows (same site) and on their ``site-k``
rows, one score per simulated other scanner of ``crlm perturb`` (``robustness.site_scanners``),
averaged over the scanners (site shift). A candidate trained on ``site`` copies is scored on
scanner k by a model that never saw scanner k: leave one scanner out (docs/robustness.md). The
choice is made per task (`choose`): a filter that helps one task can cost the other. Site B and
any external cohort are never read.
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
from joblib import Parallel, delayed, parallel_config
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
    "family",
    "n_imaging_inputs",
    "same_site_mean",
    "same_site_sd",
    "same_site_cost",
    "same_site_cost_se",
    "site_shift_mean",
    "site_shift_sd",
    "site_shift_worst",
    "n_folds",
    "n_site_scanners",
    "n_site_patients",
    "seconds",
)


AUGMENT_OPTIONS = (False, *s.PERTURBATION_CHAINS)  # simplest first: no copies, icc, site (the schema's order)


@dataclass(frozen=True)
class Candidate:
    """One setting of ``train.robustness``: ``augment`` False, ``"icc"`` or ``"site"`` (``True``
    is read as ``"icc"``, `models.robustness.augment_chain`)."""

    icc_threshold: float | None
    augment: bool | str

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", robustness.augment_chain(self.augment) or False)

    @property
    def name(self) -> str:
        icc = "none" if self.icc_threshold is None else f"{self.icc_threshold:g}"
        return f"icc={icc},augment={self.augment or 'false'}"

    @property
    def complexity(self) -> tuple[int, float, int]:
        """Simpler first: fewer methods (a filter, copies); a lower threshold (drops less); no
        copies, then the ``icc`` copies (a few patients), then the ``site`` copies (every patient
        once per simulated scanner)."""
        methods = int(bool(self.augment)) + int(self.icc_threshold is not None)
        return (methods, self.icc_threshold or 0.0, AUGMENT_OPTIONS.index(self.augment))


def candidates(thresholds: Sequence[float | None], augment: Sequence[bool | str] = AUGMENT_OPTIONS) -> list[Candidate]:
    """Every threshold (None: no filter, always included) with every ``augment`` option (no
    copies always included)."""
    levels = [None, *sorted({t for t in thresholds if t is not None})]
    chains = [False, *dict.fromkeys(c for c in map(robustness.augment_chain, augment) if c)]
    return [Candidate(t, a) for t in levels for a in chains]


def _score(task: str, model: Any, X: Any, y) -> float:
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


def _preprocessing(table: pd.DataFrame, columns: list[str], settings: training.TrainSettings, n_fit: int) -> Pipeline:
    """The pre-processing and selection every family of a task shares, as ``crlm train`` builds it
    (`models.preprocessing.feature_pipeline`), with ``k`` = the smallest of ``k_features`` (capped at
    half the fold's training patients): fitted once per fold, then each family on its output."""
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    imaging = [c for c in numeric if c.startswith(IMAGING_PREFIXES)]
    select_among = settings.select_among if imaging else "all"
    k = max(1, min(min(settings.k_features), n_fit // 2))
    steps = preprocessing.feature_pipeline(
        numeric, categorical, settings.correlation_threshold, k, imaging=imaging, select_among=select_among
    )
    return Pipeline(steps)


def _estimator(task: str, name: str, settings: training.TrainSettings):
    """The fixed small model of family ``name``: the first point of its grid (params.yaml ``train.grids``)."""
    first = {key: values[0] for key, values in settings.grids.get(name, {}).items()}
    return registry.family(task, name).estimator(settings.seed).set_params(**first)


FOLD_COLUMNS = (
    "candidate",
    "icc_threshold",
    "augment",
    "task",
    "metric",
    "family",
    "n_imaging_inputs",
    "n_site_patients",
    "repeat",
    "fold",
    "scanner",
    "score",
    "seconds",
)
SAME_SITE = "same-site"  # the ``scanner`` of a fold's score on its patients' original rows


def site_shift_scores(
    table: pd.DataFrame,
    perturbed: pd.DataFrame,
    icc: pd.DataFrame | None,
    options: Sequence[Candidate],
    settings: training.TrainSettings,
    train_index: np.ndarray,
    tasks: Sequence[str] = TASKS,
    repeats: int = 1,
    jobs: int = 1,
) -> pd.DataFrame:
    """Every validation score of the site-shift CV, one row per candidate, task, repeat, fold and
    scanner (`FOLD_COLUMNS`): ``scanner`` is `SAME_SITE` for the fold's patients' original rows, or
    ``site-k`` for their rows from that simulated other scanner of ``crlm perturb``
    (``robustness.site_scanners``). ``seconds``: the candidate's time for the task, on each row.

    ``train_index``: positions in ``table`` of the training split; nothing else is read. Folds are
    by patient, stratified by the outcome as in `training.fit_task`, the same for every candidate
    (repeat ``r`` shuffles with ``settings.seed + r``, so repeat 0 is the single CV's folds); copies
    (``augment``) join the training side with their patient only. Under ``augment: site`` the
    same-site score is of a model fitted with every scanner's copies, the score on scanner k of a model
    fitted without scanner k's copies (leave one scanner out: S + 1 fits per fold). A validation
    patient without an ok ``site-k`` row counts for the other scores only. Every family of the task
    (`models.registry.MODELS`) is scored (`summarise` picks one per candidate). ``jobs``: candidates
    scored in parallel processes (-1: all cores; the same scores for any value).
    """
    if repeats < 1:
        raise ValueError(
            f"repeats: {repeats}; expected at least 1 (each repeat is one more {settings.cv_folds}-fold CV)"
        )
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
        splits = []
        for repeat in range(repeats):
            folds = StratifiedKFold(n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed + repeat)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The least populated class")
                splits += [(repeat, fold, *pair) for fold, pair in enumerate(folds.split(np.zeros(len(y)), strata))]
        site = robustness.perturbed_rows(train, perturbed, ids, chain=robustness.SITE_CHAIN)
        scanners = sorted(site[s.PERTURBATION].unique(), key=lambda name: int(name.rsplit("-", 1)[1]))
        copies = robustness.perturbed_rows(train, perturbed, train_ids, chain=robustness.ICC_CHAIN)
        base_columns = training.feature_columns(train, task)
        work = {
            "task": task, "train": train, "y": y, "splits": splits, "site": site, "scanners": scanners,
            "copies": copies, "base_columns": base_columns, "icc": icc, "settings": settings,
        }  # fmt: skip
        for option in options:
            if option.icc_threshold is not None and icc is None:
                raise ValueError(f"candidate {option.name} needs the ICC table (crlm perturb's icc.csv)")
        with parallel_config(backend="loky", inner_max_num_threads=1):
            done = Parallel(n_jobs=jobs)(delayed(_candidate_scores)(option, **work) for option in options)
        rows += [row for part in done for row in part]
    return pd.DataFrame(rows, columns=list(FOLD_COLUMNS))


def _candidate_scores(
    option: Candidate,
    task: str,
    train: pd.DataFrame,
    y,
    splits: list,
    site: pd.DataFrame,
    scanners: list[str],
    copies: pd.DataFrame,
    base_columns: list[str],
    icc: pd.DataFrame | None,
    settings: training.TrainSettings,
) -> list[dict[str, Any]]:
    """`site_shift_scores`' rows of one candidate and task."""
    start = time.perf_counter()
    ids = train[s.PATIENT_ID].astype(str).to_numpy()
    owner = pd.Series(np.arange(len(train)), index=ids)
    columns = base_columns
    if option.icc_threshold is not None:
        applied = robustness.icc_filter(icc, option.icc_threshold, base_columns)
        columns = [c for c in base_columns if c not in applied.dropped]
    pool = {robustness.ICC_CHAIN: copies, robustness.SITE_CHAIN: site}.get(option.augment)
    rows = []
    for repeat, fold, fit_rows, val_rows in splits:
        validation = training.model_frame(train.iloc[val_rows], columns)
        val_ids = set(ids[val_rows])
        targets = {SAME_SITE: (validation, y[val_rows])}
        for name in scanners:
            other = site.loc[(site[s.PERTURBATION] == name) & site[s.PATIENT_ID].isin(val_ids)]
            if len(other):
                targets[name] = (training.model_frame(other, columns), y[owner.loc[other[s.PATIENT_ID]].to_numpy()])
        mine = None if pool is None else pool.loc[pool[s.PATIENT_ID].isin(set(ids[fit_rows]))]
        if option.augment == robustness.SITE_CHAIN:  # leave one scanner out (docs/robustness.md)
            fits = [(mine, [SAME_SITE])] + [(mine.loc[mine[s.PERTURBATION] != k], [k]) for k in scanners]
        else:
            fits = [(mine, [SAME_SITE, *scanners])]
        scores: dict[str, dict[str, float]] = {family: {} for family in registry.MODELS[task]}
        for extra, scored in fits:
            shared, models = _fit_fold(
                task, train.iloc[fit_rows], y[fit_rows], extra, owner, y, columns, settings, train
            )
            try:
                inputs = {n: (shared.transform(targets[n][0]), targets[n][1]) for n in scored if n in targets}
            except training.FIT_ERRORS:
                inputs = {}  # the shared pre-processing cannot be applied on this fold: no score
            for family, model in models.items():
                for name in scored:
                    fine = model is not None and name in inputs
                    scores[family][name] = _score(task, model, *inputs[name]) if fine else math.nan
        rows += [
            {
                "family": family,
                "repeat": repeat,
                "fold": fold,
                "scanner": name,
                "score": mine_scores.get(name, math.nan),
            }
            for family, mine_scores in scores.items()
            for name in [SAME_SITE, *scanners]
        ]
    described = {
        "candidate": option.name,
        "icc_threshold": option.icc_threshold,
        "augment": option.augment,
        "task": task,
        "metric": registry.PRIMARY_METRIC[task],
        "n_imaging_inputs": sum(c.startswith(IMAGING_PREFIXES) for c in columns),
        "n_site_patients": int(site[s.PATIENT_ID].nunique()),
        "seconds": round(time.perf_counter() - start, 2),
    }
    return [{**described, **row} for row in rows]


def _fit_fold(
    task: str,
    fit: pd.DataFrame,
    y_fit,
    extra: pd.DataFrame | None,
    owner: pd.Series,
    y,
    columns: list[str],
    settings: training.TrainSettings,
    train: pd.DataFrame,
) -> tuple[Pipeline, dict[str, Any]]:
    """The shared pre-processing and every family of ``task`` fitted on a fold's training rows
    ``fit`` plus the copies ``extra`` (their outcome is their patient's, found through ``owner``
    in ``y``): (pre-processing, {family: model or None where it cannot be fitted})."""
    X = training.model_frame(fit, columns)
    if extra is not None and len(extra):
        X = pd.concat([X, training.model_frame(extra, columns)], ignore_index=True)
        y_fit = np.concatenate([y_fit, y[owner.loc[extra[s.PATIENT_ID].astype(str)].to_numpy()]])
    shared = _preprocessing(train, columns, settings, len(fit))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X_fit = shared.fit_transform(X, y_fit)
    except training.FIT_ERRORS:
        return shared, dict.fromkeys(registry.MODELS[task])  # the pre-processing cannot be fitted: no score
    models: dict[str, Any] = {}
    for family in registry.MODELS[task]:
        model = _estimator(task, family, settings)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X_fit, y_fit)
        except training.FIT_ERRORS:
            model = None  # this family cannot be fitted on this fold: no score
        models[family] = model
    return shared, models


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Per candidate and task (`RESULT_COLUMNS`), the scores of the family ``crlm train`` would
    pick under that candidate: the best mean same-site score (ties: the registry's preference
    order, as `pipeline.train.best_model`). Its mean and SD over folds (all repeats) of the
    same-site score and of the site-shift score (per fold, the mean over the simulated scanners),
    and the worst scanner's mean over folds. ``same_site_cost``: the no-robustness candidate's
    same-site score minus this one's, paired by fold (each with its own picked family; NaN without
    that candidate), and ``same_site_cost_se`` its standard error over the folds (SD of the paired
    differences / sqrt(folds)): how much of a cost the folds' noise alone could explain. A
    diagnostic printed by `choose`; the rule does not use it."""
    rows = []
    same_by_fold: dict[tuple[str, str], pd.Series] = {}
    for (task, name), mine in scores.groupby(["task", "candidate"], sort=False):
        per_family = []
        for family in registry.MODELS[task]:
            theirs = mine.loc[mine["family"] == family]
            if theirs.empty:
                continue
            same = theirs.loc[theirs["scanner"] == SAME_SITE, "score"].to_numpy(float)
            other = theirs.loc[theirs["scanner"] != SAME_SITE]
            shifted = other.groupby(["repeat", "fold"])["score"].mean().dropna().to_numpy(float)
            per_scanner = other.groupby("scanner")["score"].mean().dropna()
            per_family.append(
                {
                    "family": family,
                    "same_site_mean": _mean(same),
                    "same_site_sd": _sd(same),
                    "site_shift_mean": _mean(shifted),
                    "site_shift_sd": _sd(shifted),
                    "site_shift_worst": float(per_scanner.min()) if len(per_scanner) else math.nan,
                    "n_folds": len(same),
                    "n_site_scanners": int(other["scanner"].nunique()),
                }
            )
        fitted = [f for f in per_family if np.isfinite(f["same_site_mean"])] or per_family
        picked = max(fitted, key=lambda f: f["same_site_mean"] if np.isfinite(f["same_site_mean"]) else -math.inf)
        theirs = mine.loc[(mine["family"] == picked["family"]) & (mine["scanner"] == SAME_SITE)]
        same_by_fold[(task, name)] = theirs.set_index(["repeat", "fold"])["score"].astype(float)
        first = mine.iloc[0]
        rows.append(
            {
                "candidate": name,
                "icc_threshold": first["icc_threshold"],
                "augment": first["augment"],
                "task": task,
                "metric": first["metric"],
                **picked,
                "n_imaging_inputs": first["n_imaging_inputs"],
                "n_site_patients": first["n_site_patients"],
                "seconds": first["seconds"],
            }
        )
    summary = pd.DataFrame(rows)
    baseline = Candidate(None, False).name
    costs, errors = [], []
    for row in rows:
        reference = same_by_fold.get((row["task"], baseline))
        if reference is None or row["candidate"] == baseline:
            costs.append(math.nan if reference is None else 0.0)
            errors.append(math.nan)
            continue
        paired = (reference - same_by_fold[(row["task"], row["candidate"])]).dropna()
        costs.append(_mean(paired.to_numpy(float)) if len(paired) else math.nan)
        errors.append(_sd(paired.to_numpy(float)) / math.sqrt(len(paired)) if len(paired) > 1 else math.nan)
    return summary.assign(same_site_cost=costs, same_site_cost_se=errors).reindex(columns=list(RESULT_COLUMNS))


def site_shift_cv(
    table: pd.DataFrame,
    perturbed: pd.DataFrame,
    icc: pd.DataFrame | None,
    options: Sequence[Candidate],
    settings: training.TrainSettings,
    train_index: np.ndarray,
    tasks: Sequence[str] = TASKS,
    repeats: int = 1,
    jobs: int = 1,
) -> pd.DataFrame:
    """`summarise` of `site_shift_scores` (`RESULT_COLUMNS`)."""
    return summarise(site_shift_scores(table, perturbed, icc, options, settings, train_index, tasks, repeats, jobs))


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
            name: Candidate(None if pd.isna(r.icc_threshold) else float(r.icc_threshold), r.augment)
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
        paired_se = rows["same_site_cost_se"] if "same_site_cost_se" in rows else pd.Series(dtype=float)
        excluded = [
            f"{n} (same-site {c:.3f} below"
            + (f", paired SE {paired_se[n]:.3f}" if n in paired_se and np.isfinite(paired_se[n]) else "")
            + ")"
            for n, c in costs.items()
            if c > tolerance + 1e-12
        ]
        if excluded:
            sentence += "; not eligible: " + ", ".join(excluded)
        chosen[str(task)], why[str(task)] = option, sentence
    return Choice(chosen, why)
