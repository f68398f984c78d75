"""Evaluation metrics and bootstrap CIs against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.util import Surv

from models.evaluation import ResponsePrediction, SurvivalPrediction, evaluate_task, response_metrics, survival_metrics

TIMES = np.arange(1.0, 121.0)


def exponential_cohort(n: int, seed: int, beta: float = 1.0):
    """Exponential PH data with a known log hazard ``beta * x`` (monthly rate 1/30)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    rate = np.exp(beta * x) / 30.0
    event_time = rng.exponential(1 / rate)
    censor = rng.uniform(20, 100, n)
    y = Surv.from_arrays(event_time <= censor, np.minimum(event_time, censor))
    return x, rate, y


def true_prediction(x, rate, scale: float = 1.0) -> SurvivalPrediction:
    """The true model; ``scale`` > 1 exaggerates the log hazard (over-fitted predictions)."""
    rate_scaled = np.exp(scale * np.log(rate * 30.0)) / 30.0
    return SurvivalPrediction(scale * x, TIMES, np.exp(-np.outer(rate_scaled, TIMES)))


def test_harrell_c_index_on_a_hand_worked_example():
    # times 1..5, events at 1, 3, 4; risks 5, 4, 2, 3, 1.
    # Comparable pairs (earlier time is an event): (1,2) (1,3) (1,4) (1,5) (3,4) (3,5) (4,5) = 7.
    # Concordant (earlier has higher risk): (1,*) all 4; (3,4): 2 < 3 no; (3,5): 2 > 1 yes;
    # (4,5): 3 > 1 yes -> 6 / 7.
    y = Surv.from_arrays([True, False, True, True, False], [1.0, 2.0, 3.0, 4.0, 5.0])
    risk = np.array([5.0, 4.0, 2.0, 3.0, 1.0])
    pred = SurvivalPrediction(risk, TIMES, np.ones((5, len(TIMES))))
    assert survival_metrics(y, y, pred)["c_index"] == pytest.approx(6 / 7)


def test_perfect_risk_has_c_index_and_auc_one():
    _, _, y = exponential_cohort(300, 1)
    risk = -y["time"]
    pred = SurvivalPrediction(risk, TIMES, np.ones((300, len(TIMES))))
    metrics = survival_metrics(y, y, pred)
    assert metrics["c_index"] == pytest.approx(1.0)
    assert metrics["auc_24m"] == pytest.approx(1.0)


def test_true_model_is_calibrated_and_an_exaggerated_one_is_not():
    x, rate, y = exponential_cohort(3000, 2)
    calibrated = survival_metrics(y, y, true_prediction(x, rate))["calibration_slope_24m"]
    exaggerated = survival_metrics(y, y, true_prediction(x, rate, scale=2.0))["calibration_slope_24m"]
    assert calibrated == pytest.approx(1.0, abs=0.15)
    assert exaggerated == pytest.approx(0.5, abs=0.1)


def test_true_survival_has_a_lower_integrated_brier_score_than_an_uninformed_one():
    x, rate, y = exponential_cohort(1000, 3)
    uninformed = SurvivalPrediction(np.zeros(1000), TIMES, np.tile(np.exp(-TIMES / 30.0), (1000, 1)))
    assert survival_metrics(y, y, true_prediction(x, rate))["ibs"] < survival_metrics(y, y, uninformed)["ibs"] - 0.01


def test_response_metrics_known_values():
    rng = np.random.default_rng(4)
    logit = rng.normal(0, 1.5, 4000)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(4000) < p).astype(int)
    true = response_metrics(y, ResponsePrediction(p))
    sharp = response_metrics(y, ResponsePrediction(1 / (1 + np.exp(-2 * logit))))
    shifted = response_metrics(y, ResponsePrediction(1 / (1 + np.exp(-(logit + 1)))))
    assert true["calibration_slope"] == pytest.approx(1.0, abs=0.1)
    assert true["calibration_intercept"] == pytest.approx(0.0, abs=0.1)
    assert sharp["calibration_slope"] == pytest.approx(0.5, abs=0.07)
    assert shifted["calibration_intercept"] == pytest.approx(-1.0, abs=0.12)
    assert response_metrics(y, ResponsePrediction(np.full(4000, 0.5)))["brier"] == pytest.approx(0.25)
    assert response_metrics(y, ResponsePrediction(y.astype(float)))["roc_auc"] == 1.0


def test_bootstrap_separates_a_planted_signal_from_noise():
    x, rate, y = exponential_cohort(400, 5, beta=0.8)
    noise = np.random.default_rng(6).standard_normal(400)
    predictions = {
        "fong": SurvivalPrediction(noise, TIMES, np.tile(np.exp(-TIMES / 30), (400, 1))),
        "model": true_prediction(x, rate),
    }
    result = evaluate_task("recurrence", y, y, predictions, n_resamples=100, seed=1)
    assert result["model"]["c_index"]["ci_low"] > 0.55
    assert result["fong"]["c_index"]["ci_low"] < 0.5 < result["fong"]["c_index"]["ci_high"]
    assert result["model"]["delta_c_vs_fong"]["ci_low"] > 0
    assert "delta_c_vs_fong" not in result["fong"]
    for metric in result["model"].values():
        assert set(metric) == {"value", "ci_low", "ci_high"}
    model = result["model"]["c_index"]
    assert model["ci_low"] <= model["value"] <= model["ci_high"]
    assert evaluate_task("recurrence", y, y, predictions, n_resamples=100, seed=1) == result


@pytest.mark.parametrize("task", ["recurrence", "response"])
def test_parallel_bootstrap_gives_exactly_the_serial_result(task):
    """``jobs`` only splits the pre-drawn resamples across processes: every value and CI is equal
    bit for bit (NaN where undefined in both), whatever the number of workers."""
    x, rate, y = exponential_cohort(150, 8, beta=0.8)
    rng = np.random.default_rng(9)
    if task == "recurrence":
        predictions = {
            "fong": SurvivalPrediction(rng.standard_normal(150), TIMES, np.tile(np.exp(-TIMES / 30), (150, 1))),
            "model": true_prediction(x, rate),
        }
        y_train = y_test = y
    else:
        p = 1 / (1 + np.exp(-x))
        predictions = {"fong": ResponsePrediction(rng.random(150)), "logistic": ResponsePrediction(p)}
        y_train, y_test = None, (rng.random(150) < p).astype(int)
    serial = evaluate_task(task, y_train, y_test, predictions, n_resamples=120, seed=3, jobs=1)
    for jobs in (2, -1):
        parallel = evaluate_task(task, y_train, y_test, predictions, n_resamples=120, seed=3, jobs=jobs)
        assert parallel.keys() == serial.keys()
        for name in serial:
            assert parallel[name].keys() == serial[name].keys()
            for metric in serial[name]:
                np.testing.assert_equal(parallel[name][metric], serial[name][metric], err_msg=f"{name} {metric}")


def test_response_task_reports_every_metric_with_a_paired_delta():
    rng = np.random.default_rng(7)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    result = evaluate_task(
        "response",
        None,
        y,
        {"fong": ResponsePrediction(np.full(300, 0.5) + 1e-3 * rng.random(300)), "logistic": ResponsePrediction(p)},
        n_resamples=100,
    )
    assert set(result["logistic"]) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "calibration_intercept",
        "calibration_slope",
        "delta_auc_vs_fong",
    }
    assert result["logistic"]["delta_auc_vs_fong"]["ci_low"] > 0


def test_wrong_shapes_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="SurvivalPrediction.survival"):
        SurvivalPrediction(np.zeros(3), TIMES, np.ones((2, len(TIMES))))


@pytest.mark.parametrize("seed, n, decimals", [(0, 40, 0), (1, 150, 0), (2, 300, 2)])
def test_hand_written_cox_slope_matches_scikit_survival(seed, n, decimals):
    # _cox_slope stays hand-written for speed (once per model and bootstrap resample); it must be
    # the Breslow-ties partial-likelihood estimate scikit-survival computes. Rounded times give ties.
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from models.evaluation import _cox_slope

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    time = np.round(rng.exponential(30 * np.exp(-0.8 * x)), decimals) + 0.5
    event = rng.random(n) < 0.7
    library = CoxPHSurvivalAnalysis(alpha=0, ties="breslow").fit(x.reshape(-1, 1), Surv.from_arrays(event, time))
    assert decimals > 0 or len(np.unique(time[event])) < event.sum()  # tied event times
    assert _cox_slope(x, time, event) == pytest.approx(float(library.coef_[0]), abs=1e-6)


def test_cox_slope_of_a_constant_covariate_is_undefined():
    from models.evaluation import _cox_slope

    assert np.isnan(_cox_slope(np.ones(5), np.arange(1.0, 6.0), np.ones(5, bool)))
