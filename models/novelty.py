"""Per-patient novelty: how far a patient's model inputs lie from the training patients (docs/novelty.md).

The novelty score is the Mahalanobis distance of a patient's inputs *after* the fitted model's
pre-processing (its pipeline up to, not including, the estimator: imputation, scaling,
decorrelation, selection) from the training patients' mean, with a Ledoit-Wolf shrunk
covariance (Ledoit & Wolf, J Multivar Anal 2004; `sklearn.covariance.LedoitWolf`). It depends
on the patient's own inputs only, never on the other patients of a batch.

The threshold is set on the training split only, by cross-fitting: the novelty model is fitted
on k-1 folds and scores the held-out fold; the threshold is the `NOVELTY_QUANTILE` quantile of
these out-of-fold distances, so that about 5% of new patients from the training site are
flagged. The final novelty model is then fitted on every training patient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import binomtest
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sksurv.metrics import concordance_index_censored

from models.registry import RECURRENCE

NOVELTY_QUANTILE = 0.95  # share of out-of-fold training distances at or below the threshold
NOVELTY_FOLDS = 5  # cross-fitting folds of the threshold
MIN_NOVELTY_PATIENTS = 10  # fewer training patients: no novelty model (a covariance from 9 rows says little)


def mahalanobis(Z: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance sqrt((z - location)^T precision (z - location)) of each row of ``Z``
    (unitless: standard deviations along the covariance's axes). Row by row: a row's distance
    does not depend on the other rows."""
    centred = np.atleast_2d(np.asarray(Z, dtype=float)) - np.asarray(location, dtype=float)
    squared = np.einsum("ij,jk,ik->i", centred, np.asarray(precision, dtype=float), centred)
    return np.sqrt(np.clip(squared, 0.0, None))


def model_inputs(pipeline: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """What a fitted pipeline's estimator receives for ``frame``: its steps before the last, as a
    dense float array (one row per patient)."""
    Z = pipeline[:-1].transform(frame)
    if sparse.issparse(Z):
        Z = Z.toarray()
    return np.asarray(Z, dtype=float)


@dataclass
class NoveltyModel:
    """A fitted novelty model: the training mean and shrunk precision of the model inputs, and the
    flag threshold (a Mahalanobis distance) from the out-of-fold training distances."""

    location: np.ndarray
    precision: np.ndarray
    threshold: float
    shrinkage: float
    n_train: int
    quantile: float = NOVELTY_QUANTILE
    out_of_fold: np.ndarray | None = None  # the training patients' out-of-fold distances

    @property
    def n_inputs(self) -> int:
        return int(len(self.location))

    def score(self, Z: np.ndarray) -> np.ndarray:
        """Novelty per row of ``Z`` (model inputs after pre-processing); NaN where a row has a
        non-finite input (it cannot be scored)."""
        Z = np.atleast_2d(np.asarray(Z, dtype=float))
        if Z.shape[1] != self.n_inputs:
            raise ValueError(
                f"novelty model expects {self.n_inputs} model inputs after pre-processing, got {Z.shape[1]}"
            )
        finite = np.isfinite(Z).all(axis=1)
        out = np.full(len(Z), np.nan)
        if finite.any():
            out[finite] = mahalanobis(Z[finite], self.location, self.precision)
        return out

    def flag(self, novelty: np.ndarray) -> np.ndarray:
        """True above the threshold, False at or below, None where the novelty is NaN (object array)."""
        novelty = np.asarray(novelty, dtype=float)
        out = np.full(len(novelty), None, dtype=object)
        scored = np.isfinite(novelty)
        out[scored] = novelty[scored] > self.threshold
        return out


def _fit_covariance(Z: np.ndarray) -> LedoitWolf:
    return LedoitWolf(store_precision=True, assume_centered=False).fit(Z)


def fit_novelty(
    Z: np.ndarray, folds: int = NOVELTY_FOLDS, seed: int = 0, quantile: float = NOVELTY_QUANTILE
) -> NoveltyModel:
    """Fit a novelty model on the training patients' model inputs ``Z`` (rows: patients).

    The threshold is the ``quantile`` of out-of-fold distances (``folds``-fold cross-fitting,
    shuffled with ``seed``); the returned model is fitted on every row. ``ValueError`` with the
    numbers if there are fewer than `MIN_NOVELTY_PATIENTS` rows, non-finite inputs or fewer
    than 2 folds.
    """
    Z = np.atleast_2d(np.asarray(Z, dtype=float))
    n = len(Z)
    if n < MIN_NOVELTY_PATIENTS:
        raise ValueError(f"novelty: {n} training patients; at least {MIN_NOVELTY_PATIENTS} are needed for a covariance")
    if not np.isfinite(Z).all():
        rows = np.flatnonzero(~np.isfinite(Z).all(axis=1))
        raise ValueError(f"novelty: non-finite model inputs after pre-processing in training rows {rows[:5].tolist()}")
    if not 0 < quantile < 1:
        raise ValueError(f"novelty: quantile must lie in (0, 1), got {quantile}")
    folds = min(int(folds), n)
    if folds < 2:
        raise ValueError(f"novelty: cross-fitting needs at least 2 folds, got {folds}")
    out_of_fold = np.empty(n)
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(Z):
        fold = _fit_covariance(Z[fit_rows])
        out_of_fold[held_rows] = mahalanobis(Z[held_rows], fold.location_, fold.precision_)
    final = _fit_covariance(Z)
    return NoveltyModel(
        location=np.asarray(final.location_, float),
        precision=np.asarray(final.precision_, float),
        threshold=float(np.quantile(out_of_fold, quantile)),
        shrinkage=float(final.shrinkage_),
        n_train=n,
        quantile=quantile,
        out_of_fold=out_of_fold,
    )


MIN_FLAGGED_FOR_METRIC = 10  # fewer flagged (or unflagged) patients: "too few to estimate", no number


def flag_rate(flags: np.ndarray | pd.Series) -> dict[str, float | int | None]:
    """{"value", "ci_low", "ci_high", "n_flagged", "n_scored", "n_unscored"}: the share of scored
    patients flagged, with its exact (Clopper-Pearson) 95% interval; None when no patient is scored."""
    values = pd.Series(np.asarray(flags, dtype=object))
    scored = values.notna()
    n_scored = int(scored.sum())
    n_flagged = int(values[scored].astype(bool).sum())
    low = high = None
    if n_scored:
        interval = binomtest(n_flagged, n_scored).proportion_ci(confidence_level=0.95, method="exact")
        low, high = float(interval.low), float(interval.high)
    return {
        "value": n_flagged / n_scored if n_scored else None,
        "ci_low": low,
        "ci_high": high,
        "n_flagged": n_flagged,
        "n_scored": n_scored,
        "n_unscored": int((~scored).sum()),
    }


MIN_MINORITY_FOR_METRIC = 3  # and at least this many events (recurrence) or patients of the rarer class (response)


def _discrimination(task: str, prediction: np.ndarray, y) -> tuple[str, int, float]:
    """(metric, minority count, value) of one group: Harrell's C (recurrence) or the ROC AUC (response)."""
    if task == RECURRENCE:
        event = np.asarray(y["event"], dtype=bool)
        minority = int(event.sum())
        if minority < MIN_MINORITY_FOR_METRIC:
            return "c_index", minority, math.nan
        return (
            "c_index",
            minority,
            float(concordance_index_censored(event, np.asarray(y["time"], float), prediction)[0]),
        )
    labels = np.asarray(y, dtype=int)
    minority = int(min(labels.sum(), len(labels) - labels.sum()))
    if minority < MIN_MINORITY_FOR_METRIC:
        return "roc_auc", minority, math.nan
    return "roc_auc", minority, float(roc_auc_score(labels, prediction))


def discrimination_by_flag(task: str, flags: np.ndarray, prediction: np.ndarray, y) -> dict[str, dict[str, Any]]:
    """Discrimination of the flagged and the unflagged patients separately (a different case mix:
    the two numbers describe each group, they are not a paired comparison).

    ``flags`` from `NoveltyModel.flag` (None: not scored, left out), ``prediction`` the risk
    (recurrence) or probability (response), ``y`` the outcome (`models.outcomes`). A group with
    fewer than `MIN_FLAGGED_FOR_METRIC` patients or `MIN_MINORITY_FOR_METRIC` events / rarer-class
    patients gets ``value`` None and ``note`` "too few to estimate", never a number.
    """
    flags = np.asarray(flags, dtype=object)
    prediction = np.asarray(prediction, dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for group, wanted in (("flagged", True), ("unflagged", False)):
        rows = np.array([f is not None and bool(f) == wanted for f in flags], dtype=bool)
        n = int(rows.sum())
        metric, minority, value = _discrimination(task, prediction[rows], y[rows]) if n else ("", 0, math.nan)
        enough = n >= MIN_FLAGGED_FOR_METRIC and math.isfinite(value)
        out[group] = {
            "metric": metric or ("c_index" if task == RECURRENCE else "roc_auc"),
            "n": n,
            "n_minority": minority,
            "value": value if enough else None,
            "note": None
            if enough
            else (
                f"too few to estimate ({n} patients, {minority} "
                f"{'events' if task == RECURRENCE else 'in the rarer class'}; at least {MIN_FLAGGED_FOR_METRIC} "
                f"and {MIN_MINORITY_FOR_METRIC} needed)"
            ),
        }
    return out
