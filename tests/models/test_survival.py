"""models.survival: Breslow survival curves from a risk score, against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from models.survival import breslow_survival


def test_breslow_survival_on_a_hand_worked_example():
    # times 1, 2, 3 with events at 1 and 2; risks log 2, 0, 0.
    # H0(1) = 1 / (2 + 1 + 1) = 1/4; H0(2) = 1/4 + 1 / (1 + 1) = 3/4; flat after the last event.
    y = Surv.from_arrays([True, True, False], [1.0, 2.0, 3.0])
    train_risk = np.array([math.log(2.0), 0.0, 0.0])
    times = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 50.0])
    h0 = np.array([0.0, 0.25, 0.25, 0.75, 0.75, 0.75])
    survival = breslow_survival(train_risk, y, np.array([0.0, math.log(2.0)]), times)
    np.testing.assert_allclose(survival[0], np.exp(-h0), rtol=1e-12)
    np.testing.assert_allclose(survival[1], np.exp(-2.0 * h0), rtol=1e-12)


def test_breslow_survival_matches_a_scikit_survival_cox_fit():
    # With the Cox model's own linear predictor the curves are the Cox model's survival functions.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 2))
    time = np.round(rng.exponential(30 * np.exp(-x @ [0.7, -0.4])), 1) + 0.1
    y = Surv.from_arrays(rng.random(120) < 0.7, time)
    cox = CoxPHSurvivalAnalysis(alpha=0, ties="breslow").fit(x, y)
    grid = np.linspace(time.min(), time.max(), 40)
    expected = np.vstack([fn(grid) for fn in cox.predict_survival_function(x[:10])])
    survival = breslow_survival(cox.predict(x), y, cox.predict(x[:10]), grid)
    np.testing.assert_allclose(survival, expected, atol=1e-6)


def test_recalibrated_score_is_scaled_by_its_cox_coefficient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(200)
    y = Surv.from_arrays(rng.random(200) < 0.8, rng.exponential(30 * np.exp(-x)))
    grid = np.array([6.0, 12.0, 24.0])
    beta = CoxPHSurvivalAnalysis(alpha=1e-6, ties="breslow").fit(x.reshape(-1, 1), y).coef_[0]
    np.testing.assert_allclose(
        breslow_survival(5 * x, y, 5 * x[:5], grid, recalibrate=True),
        breslow_survival(beta * x, y, beta * x[:5], grid),
        rtol=1e-6,
    )
    assert beta == pytest.approx(1.0, abs=0.25)
