"""Held-out evaluation with bootstrap confidence intervals (docs/design.md section 7).

Recurrence: Harrell's and Uno's C-index, time-dependent AUC at 12/24/36 months, integrated
Brier score, calibration slope at 24 months. Response: ROC AUC, PR AUC, Brier score,
calibration intercept and slope. Every metric gets a percentile bootstrap 95% CI over test
patients; the same resamples are used for every model, so the difference to the reference
score (Fong) is a paired bootstrap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import field_validator
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from features.settings import check_jobs, nearest, settings_class
from models.registry import BASELINES as BASELINE_NAMES  # their home: models.registry
from models.registry import DEFAULT_MIN_COVERAGE, DEFAULT_REFERENCE, PRIMARY_METRIC

HORIZONS = (12.0, 24.0, 36.0)  # months: time-dependent AUC, survival columns of crlm predict
CALIBRATION_HORIZON = 24.0  # months: calibration slope and calibration-in-the-large of recurrence


def calibration_slope_key(horizon: float = CALIBRATION_HORIZON) -> str:
    """The metric key of the recurrence calibration slope at ``horizon`` months (``calibration_slope_24m``)."""
    return f"calibration_slope_{horizon:g}m"


CALIBRATION_SLOPE = calibration_slope_key()
PROBABILITY_CLIP = 1e-6
_MIN_VALID_FRACTION = 0.5
# Fewer resamples than this per worker are not worth a process (start-up ~1 s; a resample of
# every model of a task takes ~0.05-0.1 s).
_MIN_RESAMPLES_PER_JOB = 50


@dataclass(frozen=True)
class SurvivalPrediction:
    """Risk (higher = earlier recurrence) and S(t | x) on a time grid (months)."""

    risk: np.ndarray
    times: np.ndarray
    survival: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.risk)
        if self.survival.shape != (n, len(self.times)):
            raise ValueError(
                f"SurvivalPrediction.survival: expected shape {(n, len(self.times))}, got {self.survival.shape}"
            )

    def take(self, index: np.ndarray) -> SurvivalPrediction:
        return SurvivalPrediction(self.risk[index], self.times, self.survival[index])

    def at(self, horizon: float) -> np.ndarray:
        """S(horizon | x) from the step function on the grid."""
        j = np.searchsorted(self.times, horizon, side="right") - 1
        return np.ones(len(self.risk)) if j < 0 else self.survival[:, j]


@dataclass(frozen=True)
class ResponsePrediction:
    """Probability of response (CR or PR)."""

    probability: np.ndarray

    def take(self, index: np.ndarray) -> ResponsePrediction:
        return ResponsePrediction(self.probability[index])


def _safe(function, *args) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(function(*args))
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _cox_slope(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Coefficient of a one-covariate Cox model (Breslow ties), by Newton-Raphson; NaN if the
    likelihood is flat.

    Kept by hand because it runs once per model and bootstrap resample (about 4,000 times per
    ``crlm train``): ``CoxPHSurvivalAnalysis(alpha=0, ties="breslow")`` gives the same coefficient
    (tests/models/test_evaluation.py checks it to 1e-6) but takes about 30 times as long per fit.
    """
    order = np.argsort(-time, kind="mergesort")
    x, time, event = x[order], time[order], event[order]
    beta = 0.0
    for _ in range(50):
        w = np.exp(beta * x - np.max(beta * x))
        s0, s1, s2 = np.cumsum(w), np.cumsum(w * x), np.cumsum(w * x * x)
        # at each event: risk set = everyone with time >= t = prefix up to the last tie
        last = np.searchsorted(-time, -time, side="right") - 1
        mean = s1[last] / s0[last]
        grad = np.sum(event * (x - mean))
        hess = -np.sum(event * (s2[last] / s0[last] - mean**2))
        if hess >= 0:
            return math.nan
        step = grad / hess
        beta -= step
        if abs(step) < 1e-9:
            return beta
    return beta


def survival_metrics(
    y_train, y_test, pred: SurvivalPrediction, horizons=HORIZONS, calibration_horizon: float = CALIBRATION_HORIZON
) -> dict[str, float]:
    """Discrimination and calibration of one recurrence prediction on the test patients."""
    event, time = np.asarray(y_test["event"], bool), np.asarray(y_test["time"], float)
    out = {"c_index": _safe(lambda: concordance_index_censored(event, time, pred.risk)[0])}
    follow_up = min(time[event].max() if event.any() else 0.0, float(np.max(y_train["time"])))
    tau = min(max(horizons), follow_up - 1e-9)
    out["uno_c_index"] = _safe(lambda: concordance_index_ipcw(y_train, y_test, pred.risk, tau=tau)[0])
    inside = [h for h in horizons if time.min() < h < time.max() and h < float(np.max(y_train["time"]))]
    try:  # one call for all horizons: the censoring weights are computed once
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aucs = (
                dict(zip(inside, cumulative_dynamic_auc(y_train, y_test, pred.risk, inside)[0], strict=True))
                if inside
                else {}
            )
    except ValueError:
        aucs = {}
    for horizon in horizons:
        value = float(aucs.get(horizon, math.nan))
        out[f"auc_{horizon:g}m"] = value if math.isfinite(value) else math.nan
    grid = (pred.times > time.min()) & (pred.times < time.max()) & (pred.times < float(np.max(y_train["time"])))
    out["ibs"] = (
        _safe(lambda: integrated_brier_score(y_train, y_test, pred.survival[:, grid], pred.times[grid]))
        if grid.sum() >= 2
        else math.nan
    )
    survival = np.clip(pred.at(calibration_horizon), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    cloglog = np.log(-np.log(survival))
    censored_at = np.minimum(time, calibration_horizon)
    event_by = event & (time <= calibration_horizon)
    out[calibration_slope_key(calibration_horizon)] = (
        _safe(_cox_slope, cloglog, censored_at, event_by) if event_by.any() and np.ptp(cloglog) > 0 else math.nan
    )
    return out


def logit(p) -> np.ndarray:
    """Log-odds of probabilities, clipped to [``PROBABILITY_CLIP``, 1 - ``PROBABILITY_CLIP``] first.

    The project's one logit (decision, issue 12): a probability of exactly 0 or 1 (a float32
    sigmoid saturates beyond a margin of about 17) has no finite log-odds, and an infinite value
    would break a calibration fit or an agreement check; 1e-6 is about +/-13.8 log-odds, far
    beyond what a model of these data predicts. Within that range it is exact.
    """
    p = np.clip(np.asarray(p, dtype=float), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return np.log(p) - np.log1p(-p)


def _logistic_fit(y: np.ndarray, x: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (a, b) of logit P(y) = a + b x + offset (b fixed at 0 if x is None)."""

    def loss(theta):
        eta = theta[0] + (theta[1] * x if x is not None else 0.0) + offset
        return np.sum(np.logaddexp(0.0, eta) - y * eta)

    start = np.zeros(2 if x is not None else 1)
    return minimize(loss, start, method="BFGS").x


def response_metrics(y_true, pred: ResponsePrediction) -> dict[str, float]:
    """Discrimination and calibration of one response prediction."""
    y = np.asarray(y_true, int)
    p = np.asarray(pred.probability, float)
    two_classes = 0 < y.sum() < len(y)
    lp = logit(p)
    return {
        "roc_auc": _safe(roc_auc_score, y, p) if two_classes else math.nan,
        "pr_auc": _safe(average_precision_score, y, p) if two_classes else math.nan,
        "brier": _safe(brier_score_loss, y, p),
        "calibration_intercept": _safe(lambda: _logistic_fit(y, None, lp)[0]) if two_classes else math.nan,
        "calibration_slope": _safe(lambda: _logistic_fit(y, lp, np.zeros_like(lp))[1]) if two_classes else math.nan,
    }


def _delta_name(task: str, reference: str) -> str:
    return f"delta_c_vs_{reference}" if task == "recurrence" else f"delta_auc_vs_{reference}"


def _task_metrics(task: str, y_train, y, pred) -> dict[str, float]:
    return survival_metrics(y_train, y, pred) if task == "recurrence" else response_metrics(y, pred)


def _bootstrap_metrics(
    task: str, y_train, y_test, predictions: Mapping[str, SurvivalPrediction | ResponsePrediction], samples
) -> list[dict[str, dict[str, float]]]:
    """Every model's metrics on each resample of ``samples`` (index arrays into the test patients)."""
    return [
        {name: _task_metrics(task, y_train, y_test[index], pred.take(index)) for name, pred in predictions.items()}
        for index in samples
    ]


def evaluate_task(
    task: str,
    y_train,
    y_test,
    predictions: Mapping[str, SurvivalPrediction | ResponsePrediction],
    reference: str = DEFAULT_REFERENCE,
    n_resamples: int = 500,
    seed: int = 0,
    confidence: float = 0.95,
    jobs: int = 1,
) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {metric: {"value", "ci_low", "ci_high"}}} with paired bootstrap CIs.

    The bootstrap resamples test patients with replacement (``np.random.default_rng(seed)``),
    the same resamples for every model; a metric undefined in a resample is left out of that
    metric's percentiles, and its CI is NaN if fewer than half the resamples define it.
    ``jobs`` (-1: all cores) splits the resamples into contiguous chunks computed in parallel
    processes; the resamples are drawn before the split and the chunks joined in order, so the
    result is identical for every ``jobs`` (tests/models/test_evaluation.py).
    """
    primary = PRIMARY_METRIC[task]
    n = len(y_test)
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, n, n) for _ in range(n_resamples)]
    values = {name: _task_metrics(task, y_train, y_test, pred) for name, pred in predictions.items()}
    from joblib import Parallel, delayed, effective_n_jobs

    workers = min(effective_n_jobs(jobs), max(n_resamples // _MIN_RESAMPLES_PER_JOB, 1))
    if workers > 1:
        chunks = [list(chunk) for chunk in np.array_split(np.arange(n_resamples), workers)]
        parts = Parallel(n_jobs=workers)(
            delayed(_bootstrap_metrics)(task, y_train, y_test, predictions, [samples[i] for i in chunk])
            for chunk in chunks
        )
        per_resample = [row for part in parts for row in part]
    else:
        per_resample = _bootstrap_metrics(task, y_train, y_test, predictions, samples)
    boot: dict[str, dict[str, list[float]]] = {name: {} for name in predictions}
    for row in per_resample:
        for name in predictions:
            for metric, value in row[name].items():
                boot[name].setdefault(metric, []).append(value)
    if reference in predictions:
        delta = _delta_name(task, reference)
        for name in predictions:
            if name == reference:
                continue
            values[name][delta] = values[name][primary] - values[reference][primary]
            boot[name][delta] = list(np.subtract(boot[name][primary], boot[reference][primary]))
    alpha = (1 - confidence) / 2
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name in predictions:
        result[name] = {}
        for metric, value in values[name].items():
            draws = np.asarray(boot[name].get(metric, []), float)
            valid = draws[np.isfinite(draws)]
            if len(valid) >= _MIN_VALID_FRACTION * max(n_resamples, 1) and len(valid) > 0:
                low, high = np.quantile(valid, [alpha, 1 - alpha])
            else:
                low = high = math.nan
            result[name][metric] = {"value": float(value), "ci_low": float(low), "ci_high": float(high)}
    return result


# A chosen model's held-out calibration outside these bounds is flagged (docs/own_cohort_training.md).
CALIBRATION_SLOPE_RANGE = (0.5, 2.0)
CALIBRATION_IN_THE_LARGE_MAX = 0.2  # |mean predicted - observed| probability (or survival at 24 months)


def calibration_warning(
    task: str,
    model_metrics: Mapping[str, Mapping[str, float]],
    prediction: SurvivalPrediction | ResponsePrediction,
    y_test,
    horizon: float = CALIBRATION_HORIZON,
) -> str | None:
    """A sentence when a model's held-out calibration is too poor to use its absolute risks, else None.

    Flags a calibration slope outside ``CALIBRATION_SLOPE_RANGE`` and a mean predicted
    survival at ``horizon`` (recurrence; observed: Kaplan-Meier) or mean predicted probability
    (response; observed: the response rate) more than ``CALIBRATION_IN_THE_LARGE_MAX`` away
    from what was observed. Ranking (C-index, AUC) is unaffected by either.
    """
    low, high = CALIBRATION_SLOPE_RANGE
    problems = []
    slope_key = calibration_slope_key(horizon) if task == "recurrence" else "calibration_slope"
    slope = model_metrics.get(slope_key, {}).get("value")
    if slope is not None and math.isfinite(slope) and not low <= slope <= high:
        problems.append(f"calibration slope {slope:.2f} (outside {low:g}-{high:g})")
    if task == "recurrence":
        from sksurv.nonparametric import kaplan_meier_estimator

        event, time = np.asarray(y_test["event"], bool), np.asarray(y_test["time"], float)
        km_times, km_survival = kaplan_meier_estimator(event, time)
        j = np.searchsorted(km_times, horizon, side="right") - 1
        observed = 1.0 if j < 0 else float(km_survival[j])
        predicted = prediction.at(horizon)
        if abs(float(np.mean(predicted)) - observed) > CALIBRATION_IN_THE_LARGE_MAX:
            problems.append(
                f"mean predicted {horizon:g}-month recurrence-free survival {np.mean(predicted):.3g} "
                f"(median {np.median(predicted):.2g}) against {observed:.2f} observed (Kaplan-Meier)"
            )
    else:
        observed = float(np.mean(np.asarray(y_test, float)))
        predicted = float(np.mean(prediction.probability))
        if abs(predicted - observed) > CALIBRATION_IN_THE_LARGE_MAX:
            problems.append(f"mean predicted response probability {predicted:.2f} against {observed:.2f} observed")
    if not problems:
        return None
    return (
        "poorly calibrated on the held-out split: "
        + "; ".join(problems)
        + ". Its ranking may still be useful; do not use its absolute risks"
    )


@settings_class
class EvaluateSettings:
    """The ``evaluate`` block of params.yaml: ``bootstrap`` resamples (>= 1) and their ``seed``;
    ``reference``, the baseline score the paired differences are against; a score is a baseline
    only where computable for ``baseline_min_coverage`` (a share in [0, 1]) of a split's patients;
    ``jobs`` parallel processes for the resamples (-1: all cores; identical results)."""

    bootstrap: int
    seed: int
    reference: str = DEFAULT_REFERENCE
    baseline_min_coverage: float = DEFAULT_MIN_COVERAGE
    jobs: int = 1

    @field_validator("bootstrap")
    @classmethod
    def _resamples(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"{value} resamples; expected at least 1 (e.g. 500)")
        return value

    @field_validator("reference")
    @classmethod
    def _baseline(cls, value: str) -> str:
        if value not in BASELINE_NAMES:
            raise ValueError(
                f"{value!r} is not a baseline score; {nearest(value, BASELINE_NAMES, 'allowed')} "
                f"(allowed: {', '.join(BASELINE_NAMES)})"
            )
        return value

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, value: int) -> int:
        return check_jobs(value)

    @field_validator("baseline_min_coverage")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"{value!r}; expected a share between 0 and 1 (e.g. 0.8)")
        return value
