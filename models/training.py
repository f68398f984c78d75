"""Fitting the recurrence and response models on a patient-level split (DESIGN.md 7).

The split is by patient and stratified by outcome; every pre-processing step lives in the
model's `sklearn.pipeline.Pipeline`, and hyper-parameters are chosen by grid search with
cross-validation on the training split only. Baselines (clinical scores) and the oracle (the
simulation's true predictors) are scored on the same test patients.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sksurv.linear_model import CoxnetSurvivalAnalysis
from xgboost import XGBClassifier

from features import schema as s
from features import scores
from models import outcomes, preprocessing
from models.survival import XGBAFTSurvival, XGBCoxSurvival

RECURRENCE = "recurrence"
RESPONSE = "response"
TASKS = (RECURRENCE, RESPONSE)
BASELINES = ("fong", "oslo", "game", "tbs")
# Columns of the training split kept for calibrating baselines on another cohort later.
REFERENCE_COLUMNS = (s.LARGEST_CM, s.CEA, s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS, s.RECIST)
IMAGING_PREFIXES = ("patient_", "rad_")
_NOT_FEATURES = {s.PATIENT_ID, s.IMAGE, s.MASK, s.SITE, "status", "reason", *s.OUTCOMES}
_TIMING_ORDER = {"baseline": 0, "preoperative": 1, "postoperative": 2}
_SCORE_INPUTS = {"fong_score": scores.FONG_INPUTS, "oslo_score": scores.OSLO_INPUTS,
                 "game_score": scores.GAME_INPUTS, "nordlinger_score": scores.NORDLINGER_INPUTS,
                 "tbs": scores.TBS_INPUTS}


def _timing(column: str) -> str:
    """When a column is known; scores inherit the latest timing of their inputs."""
    if column in s.COLUMN_BY_NAME:
        return s.COLUMN_BY_NAME[column].timing
    if column in _SCORE_INPUTS:
        return max((s.COLUMN_BY_NAME[c].timing for c in _SCORE_INPUTS[column]), key=_TIMING_ORDER.get)
    return "baseline"   # imaging (pre-treatment CT) and user covariates


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


def baseline_scores(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Clinical scores used as risk scores (higher = worse), per task.

    For response the Oslo score keeps only its pre-treatment items (largest > 5.5 cm,
    CEA > 80 ng/mL): its other items (time to surgery, progression on chemotherapy) happen
    after the chemotherapy whose response is predicted.
    """
    out = pd.DataFrame({
        "fong": table["fong_score"].astype(float),
        "oslo": table["oslo_score"].astype(float),
        "game": table["game_score"].astype(float),
        "tbs": table["tbs"].astype(float),
    }, index=table.index)
    if task == RESPONSE:
        largest = pd.to_numeric(table[s.LARGEST_CM], errors="coerce")
        cea = pd.to_numeric(table[s.CEA], errors="coerce")
        out["oslo"] = ((largest > scores.OSLO_LARGEST_CM).astype(float)
                       + (cea > scores.OSLO_CEA_NG_ML).astype(float)).where(largest.notna() & cea.notna())
    return out


def split_patients(table: pd.DataFrame, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level train/test split stratified by recurrence event and response."""
    strata = (table[s.RECURRENCE_EVENT].astype("Int64").astype(str) + "|"
              + table[s.RECIST].isin(s.RESPONDER_CATEGORIES).astype(int).astype(str))
    counts = strata.value_counts()
    strata = strata.where(strata.map(counts) >= 2, "rare")
    index = np.arange(len(table))
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(test)


def _estimator(name: str, seed: int):
    if name == "coxnet":
        return CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=[0.05], fit_baseline_model=False, max_iter=100000)
    if name == "xgb_cox":
        return XGBCoxSurvival(random_state=seed)
    if name == "xgb_aft":
        return XGBAFTSurvival(random_state=seed)
    if name == "logistic":
        return LogisticRegression(C=0.1, max_iter=5000)
    if name == "xgb":
        return XGBClassifier(n_estimators=300, max_depth=2, learning_rate=0.03, subsample=0.8,
                             colsample_bytree=0.8, min_child_weight=5, n_jobs=1, random_state=seed,
                             eval_metric="logloss", verbosity=0)
    raise ValueError(f"unknown model '{name}'")


MODELS = {RECURRENCE: ("coxnet", "xgb_cox", "xgb_aft"), RESPONSE: ("logistic", "xgb")}


@dataclass
class FittedTask:
    """One task's fitted models and the data they were fitted and tested on."""

    task: str
    features: list[str]
    train_index: np.ndarray
    test_index: np.ndarray
    models: dict[str, Pipeline] = field(default_factory=dict)
    best_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    cv_scores: dict[str, float] = field(default_factory=dict)


def _grid(name: str, grids: Mapping[str, Mapping[str, Sequence[Any]]], k_features: Sequence[int],
          select_key: str | None) -> dict:
    grid = {f"model__{key}": list(values) for key, values in grids.get(name, {}).items()}
    if select_key is not None:
        grid[select_key] = list(k_features)
    return grid


def fit_task(table: pd.DataFrame, task: str, train_index: np.ndarray, test_index: np.ndarray,
             settings: Mapping[str, Any], covariates: Sequence[str] = (), jobs: int = 1) -> FittedTask:
    """Fit every model of ``task`` on the training rows, tuned by cross-validation there.

    ``settings`` is the ``train`` block of params.yaml: ``seed``, ``cv_folds``,
    ``correlation_threshold``, ``k_features`` (list), and per-model grids under ``grids``.
    """
    columns = feature_columns(table, task, covariates)
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    imaging = [c for c in numeric if c.startswith(IMAGING_PREFIXES)]
    select_among = str(settings.get("select_among", "all"))
    select_key = (None if select_among == "imaging" and not imaging
                  else preprocessing.SELECT_K.get(select_among))
    X = _model_frame(table, numeric, categorical)
    train = table.iloc[train_index]
    if task == RECURRENCE:
        y = outcomes.recurrence_outcome(train)
        strata = y["event"]
    else:
        y = outcomes.response_outcome(train)
        strata = y
    folds = StratifiedKFold(n_splits=int(settings["cv_folds"]), shuffle=True, random_state=int(settings["seed"]))
    splits = list(folds.split(np.zeros(len(y)), strata))
    fitted = FittedTask(task, columns, train_index, test_index)
    with tempfile.TemporaryDirectory(prefix="crlm-cv-") as cache:
        for name in MODELS[task]:
            steps = preprocessing.feature_pipeline(numeric, categorical, float(settings["correlation_threshold"]),
                                                   int(settings["k_features"][0]), imaging=imaging,
                                                   select_among=select_among)
            # The shared pre-processing of a fold is fitted once and reused across the grid.
            pipeline = Pipeline([*steps, ("model", _estimator(name, int(settings["seed"])))], memory=cache)
            search = GridSearchCV(pipeline, _grid(name, settings.get("grids", {}), settings["k_features"], select_key),
                                  cv=splits, n_jobs=jobs, refit=True, error_score="raise",
                                  scoring=None if task == RECURRENCE else "roc_auc")
            search.fit(X.iloc[train_index], y)
            best = search.best_estimator_
            best.memory = None   # the cache folder does not outlive this call
            fitted.models[name] = best
            fitted.best_params[name] = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
            fitted.cv_scores[name] = float(search.best_score_)
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
        raise KeyError(f"feature table lacks model input column(s) {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}; rebuild it with crlm featurize")
    numeric, categorical = preprocessing.split_feature_types(table, columns)
    return _model_frame(table, numeric, categorical)[list(columns)]


def refit_clone(pipeline: Pipeline, X: pd.DataFrame, y) -> Pipeline:
    """A fresh copy of ``pipeline`` fitted on ``X``, ``y`` (for permutation tests)."""
    return clone(pipeline).fit(X, y)
