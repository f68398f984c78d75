"""Held-out predictions of every model, baseline score and the oracle, on the same patients.

Scores and the oracle are risk scores; to give them survival curves (recurrence) or
probabilities (response) each is calibrated on the training split only: a univariate Cox
model with the Breslow baseline, or a univariate logistic regression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.schema import PATIENT_ID, TRUTH_RECURRENCE_LP, TRUTH_RESPONSE_PROBABILITY
from models import outcomes, registry, training
from models.evaluation import ResponsePrediction, SurvivalPrediction
from models.predictor import RecurrencePredictor, ResponsePredictor
from models.survival import breslow_survival

ORACLE = registry.ORACLE
RISK_GROUP_QUANTILES = (1 / 3, 2 / 3)


def survival_grid(y_train, step_months: float = 1.0) -> np.ndarray:
    """Monthly time grid up to the last training follow-up."""
    return np.arange(step_months, float(np.max(y_train["time"])) + step_months, step_months)


def build_predictors(fitted: training.FittedTask, table: pd.DataFrame) -> dict[str, object]:
    """One deployable predictor per fitted model of the task."""
    train = table.iloc[fitted.train_index]
    reference = reference_table(train)
    predictors: dict[str, object] = {}
    for name, pipeline in fitted.models.items():
        if fitted.task == training.RECURRENCE:
            y_train = outcomes.recurrence_outcome(train)
            train_risk = np.asarray(pipeline.predict(training.model_frame(train, fitted.features)), dtype=float)
            cutpoints = np.quantile(train_risk, RISK_GROUP_QUANTILES).tolist()
            predictors[name] = RecurrencePredictor(
                name,
                pipeline,
                fitted.features,
                train_risk,
                y_train,
                cutpoints,
                recalibrate=registry.family(fitted.task, name).recalibrate,
                reference=reference,
                novelty=fitted.novelty.get(name),
            )
        else:
            predictors[name] = ResponsePredictor(
                name, pipeline, fitted.features, reference=reference, novelty=fitted.novelty.get(name)
            )
    return predictors


def _filled(values: pd.Series, train_values: pd.Series) -> np.ndarray:
    """Missing scores take the training median (documented: a missing score is rare)."""
    return values.fillna(train_values.median()).to_numpy(float)


def reference_table(train: pd.DataFrame) -> pd.DataFrame:
    """What evaluation needs of the training split later: patient ids, baseline score inputs
    and outcomes (no other clinical data); saved with the models for external validation."""
    keep = [PATIENT_ID, *training.SCORE_COLUMN.values(), *training.REFERENCE_COLUMNS]
    return train[[c for c in keep if c in train]].reset_index(drop=True)


def task_predictions(
    task: str,
    predictors: dict[str, object],
    train: pd.DataFrame,
    test: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    baselines: tuple[str, ...] | list[str] = training.BASELINES,
) -> dict[str, SurvivalPrediction | ResponsePrediction]:
    """Predictions on ``test`` of the task's models, the ``baselines`` and the oracle.

    ``train`` (the training split, or its `reference_table`) calibrates the scores and the
    oracle; the models carry their own training baseline. ``baselines`` are the scores that
    :func:`models.training.baseline_availability` found computable; a patient without one
    takes the training median (the availability status says how many).
    """
    baselines = [b for b in baselines if b in training.BASELINES]
    baselines_train = training.baseline_scores(train, task, baselines)
    baselines_test = training.baseline_scores(test, task, baselines)
    for name in baselines:
        if name not in baselines_train or baselines_train[name].notna().sum() == 0:
            raise ValueError(
                f"baseline {name!r} cannot be calibrated: no training patient has the score; "
                "check models.training.baseline_availability first"
            )
    oracle = _oracle(truth, train, test, task)
    out: dict[str, SurvivalPrediction | ResponsePrediction] = {}
    if task == training.RECURRENCE:
        y_train = outcomes.recurrence_outcome(train)
        times = survival_grid(y_train)
        for name, predictor in predictors.items():
            risk = predictor.risk(test)
            out[name] = SurvivalPrediction(risk, times, predictor.survival(risk, times))
        scores = {
            name: (
                _filled(baselines_train[name], baselines_train[name]),
                _filled(baselines_test[name], baselines_train[name]),
            )
            for name in baselines
        }
        if oracle is not None:
            scores[ORACLE] = oracle
        for name, (train_risk, test_risk) in scores.items():
            y_fit = y_train if len(train_risk) == len(train) else outcomes.recurrence_outcome(test)
            survival = breslow_survival(train_risk, y_fit, test_risk, times, recalibrate=(name != ORACLE))
            out[name] = SurvivalPrediction(test_risk, times, survival)
    else:
        y_train = outcomes.response_outcome(train)
        for name, predictor in predictors.items():
            out[name] = ResponsePrediction(predictor.probability(test))
        for name in baselines:
            model = LogisticRegression(C=1e6, max_iter=1000)
            x_train = _filled(baselines_train[name], baselines_train[name]).reshape(-1, 1)
            x_test = _filled(baselines_test[name], baselines_train[name]).reshape(-1, 1)
            model.fit(x_train, y_train)
            out[name] = ResponsePrediction(model.predict_proba(x_test)[:, 1])
        if oracle is not None:
            out[ORACLE] = ResponsePrediction(oracle[1])
    return out


def _oracle(
    truth: pd.DataFrame | None, train: pd.DataFrame, test: pd.DataFrame, task: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The simulation's true predictors for the train and test patients, if known.

    On an external cohort the training patients are not in its truth table: the oracle is
    then calibrated on the external patients themselves (it is an upper bound, not a model).
    """
    if truth is None:
        return None
    column = TRUTH_RECURRENCE_LP if task == training.RECURRENCE else TRUTH_RESPONSE_PROBABILITY
    indexed = truth.set_index(PATIENT_ID)[column]
    test_values = indexed.reindex(test[PATIENT_ID]).to_numpy(float)
    if np.isnan(test_values).any():
        return None
    train_values = indexed.reindex(train[PATIENT_ID]).to_numpy(float)
    if np.isnan(train_values).any():
        return test_values, test_values
    return train_values, test_values
