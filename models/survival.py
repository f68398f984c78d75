"""Recurrence models with one small surface: ``fit(X, y)``, ``predict(X)`` (a risk score,
higher = earlier recurrence) and ``score(X, y)`` (Harrell's C-index), so they plug into
scikit-learn pipelines and grid search. ``y`` is the structured (event, time) array of
`models.outcomes.recurrence_outcome`.

- `CoxnetSurvivalAnalysis` (scikit-survival) is used as it is: its prediction is the linear
  predictor (log hazard ratio).
- `XGBCoxSurvival`: gradient boosting with xgboost's ``survival:cox``; the margin is a log
  hazard ratio.
- `XGBAFTSurvival`: xgboost's accelerated failure time model (``survival:aft``); its margin
  is a log survival time, so the risk is its negative (SHAP values must flip sign too).

`breslow_survival` turns any risk score into survival curves with scikit-survival's Breslow estimator.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.metrics import concordance_index_censored


def _harrell(y, risk) -> float:
    return concordance_index_censored(y["event"], y["time"], risk)[0]


class _XGBSurvival(BaseEstimator):
    """Shared parts of the xgboost survival models."""

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int = 2,
        learning_rate: float = 0.03,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 5.0,
        reg_lambda: float = 1.0,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state

    def _params(self) -> dict:
        return {
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.random_state,
            "nthread": 1,
            "tree_method": "hist",
            "verbosity": 0,
        }

    def _train(self, dmatrix: xgb.DMatrix, params: dict) -> None:
        self.booster_ = xgb.train({**self._params(), **params}, dmatrix, num_boost_round=self.n_estimators)
        self.n_features_in_ = dmatrix.num_col()

    def margin(self, X) -> np.ndarray:
        """xgboost's raw margin (log hazard ratio for Cox, log time for AFT)."""
        check_is_fitted(self, "booster_")
        return self.booster_.predict(xgb.DMatrix(np.asarray(X, dtype=float)), output_margin=True)

    def score(self, X, y) -> float:
        return _harrell(y, self.predict(X))


class XGBCoxSurvival(_XGBSurvival):
    """xgboost ``survival:cox``; ``predict`` returns the log hazard ratio."""

    def fit(self, X, y):
        label = np.where(y["event"], y["time"], -y["time"])  # xgboost: negative = censored
        self._train(xgb.DMatrix(np.asarray(X, dtype=float), label=label), {"objective": "survival:cox"})
        return self

    def predict(self, X) -> np.ndarray:
        return self.margin(X)


class XGBAFTSurvival(_XGBSurvival):
    """xgboost ``survival:aft`` (log-normal errors); ``predict`` returns minus log time."""

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int = 2,
        learning_rate: float = 0.03,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 5.0,
        reg_lambda: float = 1.0,
        random_state: int = 0,
        distribution_scale: float = 1.0,
    ):
        super().__init__(
            n_estimators,
            max_depth,
            learning_rate,
            subsample,
            colsample_bytree,
            min_child_weight,
            reg_lambda,
            random_state,
        )
        self.distribution_scale = distribution_scale

    def fit(self, X, y):
        dmatrix = xgb.DMatrix(np.asarray(X, dtype=float))
        time = np.asarray(y["time"], dtype=float)
        dmatrix.set_float_info("label_lower_bound", time)
        dmatrix.set_float_info("label_upper_bound", np.where(y["event"], time, np.inf))
        self._train(
            dmatrix,
            {
                "objective": "survival:aft",
                "aft_loss_distribution": "normal",
                "aft_loss_distribution_scale": self.distribution_scale,
            },
        )
        return self

    def predict(self, X) -> np.ndarray:
        return -self.margin(X)  # AFT margin is log time: longer time, lower risk


def breslow_survival(
    train_risk: np.ndarray, y_train, risk: np.ndarray, times: np.ndarray, recalibrate: bool = False
) -> np.ndarray:
    """S(t | risk) on ``times`` from the Breslow estimator fitted on the training risks.

    With ``recalibrate`` the risk is first rescaled by a univariate Cox model on the training
    split (for scores and AFT margins, whose scale is not a log hazard ratio).
    """
    train_risk = np.asarray(train_risk, dtype=float)
    risk = np.asarray(risk, dtype=float)
    if recalibrate:
        beta = univariate_cox_coefficient(train_risk, y_train)
        train_risk, risk = beta * train_risk, beta * risk
    centre = train_risk.mean()  # centred: exp() stays in range
    estimator = BreslowEstimator().fit(
        train_risk - centre, np.asarray(y_train["event"], dtype=bool), np.asarray(y_train["time"], dtype=float)
    )
    # H0 is a step function over the training times: 0 before the first, constant after the last
    # (scikit-survival's StepFunction refuses times beyond its domain, so it is looked up here)
    steps = estimator.cum_baseline_hazard_
    index = np.searchsorted(steps.x, np.asarray(times, dtype=float), side="right") - 1
    baseline = np.where(index >= 0, steps.y[np.clip(index, 0, None)], 0.0)
    return np.exp(-np.outer(np.exp(risk - centre), baseline))


def univariate_cox_coefficient(risk: np.ndarray, y) -> float:
    """The Cox regression coefficient of one score (a scale for risk scores)."""
    model = CoxPHSurvivalAnalysis(alpha=1e-6, ties="breslow")
    model.fit(np.asarray(risk, dtype=float).reshape(-1, 1), y)
    return float(model.coef_[0])
