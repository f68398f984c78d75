"""Fitted predictors that take a feature table and return per-patient predictions.

A predictor carries everything needed at inference: the fitted pipeline, its input columns,
the Breslow baseline (recurrence) and the training risk-group cut-points. `models.serving`
wraps one as an MLflow pyfunc model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.pipeline import Pipeline

from features.schema import PATIENT_ID
from models import input_slice, training
from models.evaluation import HORIZONS
from models.novelty import NoveltyModel, model_inputs
from models.survival import breslow_survival

RISK = "risk"
RISK_GROUP = "risk_group"
RESPONSE_PROBABILITY = "response_probability"
GROUP_NAMES = ("low", "intermediate", "high")
# Novelty of a patient's model inputs (models.novelty, docs/novelty.md): the Mahalanobis distance from the
# training patients and whether it exceeds the training threshold. Empty where the patient cannot be scored
# or the predictor has no novelty model (fitted before it existed).
NOVELTY = "novelty"
OUT_OF_DISTRIBUTION = "out_of_distribution"
NOVELTY_COLUMNS = (NOVELTY, OUT_OF_DISTRIBUTION)
NO_NOVELTY_MODEL = "the model has no novelty model (trained before novelty existed); retrain with crlm train"


def novelty_column(task: str, column: str) -> str:
    """A novelty column of ``task`` in predictions.csv, where both tasks share a row (``recurrence_novelty``)."""
    return f"{task}_{column}"


@dataclass(frozen=True)
class ModelInputs:
    """One model frame and what the fitted pipeline's steps before the estimator make of it,
    computed once and shared by the prediction, the novelty score and the explanation of a batch
    (issue 14: each used to transform the ~2,300 input columns again)."""

    frame: pd.DataFrame  # the model frame (`training.model_frame`), one row per patient
    transformed: Any  # ``pipeline[:-1].transform(frame)``, exactly as the estimator receives it
    dense: np.ndarray  # the same as a dense float array (`models.novelty.model_inputs`)


def prepare_inputs(pipeline: Pipeline, frame: pd.DataFrame) -> ModelInputs:
    """`ModelInputs` of ``frame`` (a model frame with the pipeline's input columns). The
    pre-processing runs on the columns the estimator uses only (`models.input_slice.prepare`:
    the same values, bit for bit, checked on the first batch of every model)."""
    transformed = input_slice.prepare(pipeline, frame)
    dense = transformed.toarray() if sparse.issparse(transformed) else transformed
    return ModelInputs(frame, transformed, np.asarray(dense, dtype=float))


def _estimator_output(pipeline: Pipeline, inputs: ModelInputs, method: str) -> np.ndarray:
    """``pipeline.<method>(frame)`` from the already transformed inputs (what sklearn's Pipeline
    does after its transforms: the last step's method on them)."""
    return getattr(pipeline.steps[-1][1], method)(inputs.transformed)


def novelty_frame(predictor: Any, frame: pd.DataFrame, inputs: ModelInputs | None = None) -> pd.DataFrame:
    """``novelty`` and ``out_of_distribution`` of each row of ``frame`` (the model frame), row by row.
    ``inputs``: `prepare_inputs` of ``frame``, when already computed."""
    model: NoveltyModel | None = getattr(predictor, "novelty", None)
    if model is None:
        novelty = np.full(len(frame), np.nan)
        flags = np.full(len(frame), None, dtype=object)
    else:
        novelty = model.score(inputs.dense if inputs is not None else model_inputs(predictor.pipeline, frame))
        flags = model.flag(novelty)
    return pd.DataFrame({NOVELTY: novelty, OUT_OF_DISTRIBUTION: flags}, index=frame.index)


def used_columns(pipeline: Pipeline, feature_columns: Sequence[str]) -> list[str]:
    """The input columns whose values can change a fitted pipeline's predictions (issue 14): those
    feeding what its estimator receives once near-constant removal, decorrelation and univariate
    selection have dropped the rest, read from the fitted steps (`models.input_slice`), one-hot
    encoded inputs included. Every input column when the pre-processing cannot be traced column
    by column (e.g. a KNN imputer mixes columns)."""
    try:
        kept = set(input_slice.slice_preprocessing(pipeline).columns)
    except (input_slice.NotSliceable, AttributeError, IndexError, KeyError, TypeError, ValueError):
        return list(feature_columns)
    return [c for c in feature_columns if c in kept]


def survival_column(horizon: float) -> str:
    return f"survival_{horizon:g}m"


def risk_groups(risk: np.ndarray, cutpoints: Sequence[float]) -> np.ndarray:
    """'low' / 'intermediate' / 'high' by training cut-points (tertiles by default)."""
    index = np.searchsorted(np.asarray(cutpoints, dtype=float), np.asarray(risk, dtype=float), side="right")
    return np.asarray(GROUP_NAMES, dtype=object)[np.clip(index, 0, len(GROUP_NAMES) - 1)]


@dataclass
class RecurrencePredictor:
    """Risk (log hazard ratio scale), survival at horizons and risk group per patient."""

    name: str
    pipeline: Pipeline
    feature_columns: list[str]
    train_risk: np.ndarray
    y_train: np.ndarray
    cutpoints: list[float]
    horizons: tuple[float, ...] = HORIZONS
    recalibrate: bool = False
    reference: pd.DataFrame | None = None  # training split's scores and outcomes (baselines)
    novelty: NoveltyModel | None = None  # None: a predictor pickled before novelty existed

    def risk(self, table: pd.DataFrame, inputs: ModelInputs | None = None) -> np.ndarray:
        if inputs is not None:
            return np.asarray(_estimator_output(self.pipeline, inputs, "predict"), dtype=float)
        return np.asarray(self.pipeline.predict(training.model_frame(table, self.feature_columns)), dtype=float)

    def survival(self, risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        return breslow_survival(self.train_risk, self.y_train, risk, times, recalibrate=self.recalibrate)

    def predict_frame(self, table: pd.DataFrame, inputs: ModelInputs | None = None) -> pd.DataFrame:
        """Predictions of each row of ``table``. ``inputs``: `prepare_inputs` of the model frame of
        ``table``, when the caller already has it (the same numbers, computed once)."""
        risk = self.risk(table, inputs)
        survival = self.survival(risk, np.asarray(self.horizons))
        out = pd.DataFrame({RISK: risk}, index=table.index)
        for j, horizon in enumerate(self.horizons):
            out[survival_column(horizon)] = survival[:, j]
        out[RISK_GROUP] = risk_groups(risk, self.cutpoints)
        frame = inputs.frame if inputs is not None else training.model_frame(table, self.feature_columns)
        out = pd.concat([out, novelty_frame(self, frame, inputs)], axis=1)
        if PATIENT_ID in table:
            out.insert(0, PATIENT_ID, table[PATIENT_ID].to_numpy())
        return out


@dataclass
class ResponsePredictor:
    """Probability of response (CR or PR) to pre-operative chemotherapy per patient."""

    name: str
    pipeline: Pipeline
    feature_columns: list[str]
    reference: pd.DataFrame | None = None  # training split's scores and outcomes (baselines)
    novelty: NoveltyModel | None = None  # None: a predictor pickled before novelty existed

    def probability(self, table: pd.DataFrame, inputs: ModelInputs | None = None) -> np.ndarray:
        if inputs is not None:
            return np.asarray(_estimator_output(self.pipeline, inputs, "predict_proba")[:, 1], dtype=float)
        frame = training.model_frame(table, self.feature_columns)
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=float)

    def predict_frame(self, table: pd.DataFrame, inputs: ModelInputs | None = None) -> pd.DataFrame:
        """Predictions of each row of ``table``; ``inputs`` as in `RecurrencePredictor.predict_frame`."""
        out = pd.DataFrame({RESPONSE_PROBABILITY: self.probability(table, inputs)}, index=table.index)
        frame = inputs.frame if inputs is not None else training.model_frame(table, self.feature_columns)
        out = pd.concat([out, novelty_frame(self, frame, inputs)], axis=1)
        if PATIENT_ID in table:
            out.insert(0, PATIENT_ID, table[PATIENT_ID].to_numpy())
        return out
