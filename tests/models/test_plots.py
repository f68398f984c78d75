"""Evaluation plots (models.plots): the numbers behind each figure, and the figures' honesty."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from sksurv.util import Surv

from models import plots

SOURCE = "synthetic cohort, site A, held-out test split"
HAZARDS = np.array([0.01, 0.03, 0.08])  # per month, low / intermediate / high


def _three_level_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponential event times with three hazard levels, uniform censoring; risk = level + noise."""
    rng = np.random.default_rng(seed)
    level = rng.integers(0, 3, n)
    event_time = rng.exponential(1 / HAZARDS[level])
    censor = rng.uniform(6, 90, n)
    risk = level + rng.normal(0, 0.3, n)
    return np.minimum(event_time, censor), event_time <= censor, risk


def _km_at(data: pd.DataFrame, group: str, month: float) -> float:
    sub = data[data["group"] == group]
    return float(sub.loc[sub["time"] <= month, "survival"].iloc[-1])


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


# --- net benefit ----------------------------------------------------------------------------------
Y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 0])
P = np.array([0.9, 0.6, 0.7, 0.2, 0.4, 0.1, 0.55, 0.3, 0.8, 0.05])


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # pt 0.5: treated p >= 0.5 are #0,1,2,6,8 -> TP 3 (#0,1,8), FP 2 (#2,6); 3/10 - 2/10 * 0.5/0.5 = 0.1
        (0.5, 0.1),
        # pt 0.25: treated #0,1,2,4,6,7,8 -> TP 4, FP 3; 4/10 - 3/10 * 0.25/0.75 = 0.4 - 0.1 = 0.3
        (0.25, 0.3),
        # pt 0.4 (p == pt is treated): #0,1,2,4,6,8 -> TP 4, FP 2; 0.4 - 0.2 * 0.4/0.6 = 0.26667
        (0.4, 0.4 - 0.2 * 0.4 / 0.6),
        # pt 0.95: nobody treated -> 0
        (0.95, 0.0),
    ],
)
def test_net_benefit_matches_hand_computation(threshold, expected):
    assert plots.net_benefit(Y, P, threshold) == pytest.approx(expected, abs=1e-12)


def test_treat_all_net_benefit_is_prevalence_minus_weighted_complement():
    fig, data = plots.decision_curve(Y, {"model": P}, source=SOURCE)
    prevalence = Y.mean()  # 0.4
    treat_all = data[data["model"] == plots.TREAT_ALL]
    expected = prevalence - (1 - prevalence) * treat_all["threshold"] / (1 - treat_all["threshold"])
    np.testing.assert_allclose(treat_all["net_benefit"], expected, atol=1e-12)
    assert (data.loc[data["model"] == plots.TREAT_NONE, "net_benefit"] == 0).all()
    assert list(data.columns) == ["model", "threshold", "net_benefit"]
    assert len(data) == 3 * len(plots.DEFAULT_THRESHOLDS)


def test_decision_curve_rejects_reserved_model_name_and_bad_threshold():
    with pytest.raises(ValueError, match="reserved"):
        plots.decision_curve(Y, {plots.TREAT_ALL: P})
    with pytest.raises(ValueError, match="thresholds"):
        plots.net_benefit(Y, P, 1.0)
    with pytest.raises(ValueError, match=r"probability must lie in \[0, 1\]"):
        plots.net_benefit(Y, P * 2, 0.5)


def test_survival_net_benefit_equals_binary_net_benefit_without_censoring():
    # Without censoring before h, KM risk among the treated is their observed event fraction by h.
    rng = np.random.default_rng(3)
    time = rng.exponential(30, 400)
    event = np.ones(400, dtype=bool)
    risk = np.clip(1 - np.exp(-time / 30) + rng.normal(0, 0.2, 400), 0, 1)
    for pt in (0.2, 0.5, 0.7):
        by_h = (time <= 24).astype(int)
        assert plots.survival_net_benefit(time, event, risk, 24.0, pt) == pytest.approx(
            plots.net_benefit(by_h, risk, pt), abs=1e-12
        )


def test_survival_decision_curve_treat_all_uses_overall_kaplan_meier():
    time, event, risk = _three_level_cohort(400, seed=4)
    risk_24 = 1 - np.exp(-HAZARDS[np.rint(risk).clip(0, 2).astype(int)] * 24)
    fig, data = plots.survival_decision_curve(time, event, risk_24, 24.0, plots.DEFAULT_THRESHOLDS, source=SOURCE)
    _, data_km = plots.kaplan_meier_by_risk_group(time, event, np.zeros(400), [1.0], source=SOURCE)
    s = _km_at(data_km, "low", 24.0)  # everyone in one group: overall KM
    treat_all = data[data["model"] == plots.TREAT_ALL]
    pt = treat_all["threshold"]
    np.testing.assert_allclose(treat_all["net_benefit"], (1 - s) - s * pt / (1 - pt), atol=1e-12)
    assert set(data["model"]) == {"model", plots.TREAT_ALL, plots.TREAT_NONE}


# --- Kaplan-Meier by risk group ---------------------------------------------------------------------
def test_cutpoints_are_training_tertiles():
    rng = np.random.default_rng(1)
    train = rng.normal(size=301)
    assert plots.risk_group_cutpoints(train) == pytest.approx(np.quantile(train, [1 / 3, 2 / 3]).tolist())
    assert plots.risk_group_cutpoints(train, (0.5,)) == pytest.approx([np.median(train)])
    with pytest.raises(ValueError, match="quantiles"):
        plots.risk_group_cutpoints(train, (0.6, 0.3))


def test_km_groups_are_ordered_monotone_and_separated():
    time, event, risk = _three_level_cohort(600, seed=7)
    cut = plots.risk_group_cutpoints(risk[:300])  # training half
    fig, data = plots.kaplan_meier_by_risk_group(time[300:], event[300:], risk[300:], cut, source=SOURCE)
    assert list(data.columns) == ["group", "time", "survival", "ci_low", "ci_high"]
    assert _km_at(data, "high", 24) < _km_at(data, "intermediate", 24) < _km_at(data, "low", 24)
    for _, sub in data.groupby("group"):
        assert sub["time"].iloc[0] == 0 and sub["survival"].iloc[0] == 1
        assert (np.diff(sub["survival"]) <= 1e-12).all()
        assert (np.diff(sub["time"]) > 0).all()
        assert ((sub["ci_low"] <= sub["survival"] + 1e-12) & (sub["survival"] <= sub["ci_high"] + 1e-12)).all()
    assert data.attrs["logrank_p"] < 0.001
    # numbers at risk at 0 months are the group sizes under the training cut-points
    sizes = np.bincount(np.searchsorted(cut, risk[300:], side="right"), minlength=3)
    assert [data.attrs["at_risk"][g][0] for g in ("low", "intermediate", "high")] == sizes.tolist()
    assert data.attrs["at_risk_times"] == [0, 12, 24, 36, 48, 60]
    texts = _texts(fig)
    assert "Number at risk" in texts and "log-rank p < 0.001" in texts


def test_km_random_risk_gives_no_separation():
    time, event, _ = _three_level_cohort(600, seed=7)
    noise = np.random.default_rng(11).normal(size=600)
    cut = plots.risk_group_cutpoints(noise[:300])
    _, data = plots.kaplan_meier_by_risk_group(time[300:], event[300:], noise[300:], cut, source=SOURCE)
    assert data.attrs["logrank_p"] > 0.01


def test_km_tied_cutpoints_leave_an_empty_group_without_failing():
    time, event, _ = _three_level_cohort(200, seed=2)
    score = np.random.default_rng(2).integers(0, 2, 200).astype(float)  # a 0/1 score: tertiles tie
    cut = [1.0, 1.0]
    fig, data = plots.kaplan_meier_by_risk_group(time, event, score, cut, source=SOURCE)
    assert set(data["group"]) == {"low", "high"}
    assert data.attrs["at_risk"]["intermediate"] == [0] * 6
    assert any(t.startswith("intermediate (n=0") for t in _texts(fig))


def test_km_rejects_decreasing_cutpoints_and_wrong_names():
    time, event, risk = _three_level_cohort(50, seed=0)
    with pytest.raises(ValueError, match="non-decreasing"):
        plots.kaplan_meier_by_risk_group(time, event, risk, [2.0, 1.0])
    with pytest.raises(ValueError, match="group_names"):
        plots.kaplan_meier_by_risk_group(time, event, risk, [1.0], group_names=["a", "b", "c"])


# --- calibration ------------------------------------------------------------------------------------
def _within(data: pd.DataFrame) -> int:
    return int(((data["ci_low"] <= data["predicted"]) & (data["predicted"] <= data["ci_high"])).sum())


def test_binary_calibration_of_true_probabilities_lies_within_ci():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.98, 4000)
    y = rng.binomial(1, p)
    _, data = plots.binary_calibration(y, p, bins=10, source=SOURCE)
    assert list(data.columns) == ["bin", "predicted", "observed", "ci_low", "ci_high", "n"]
    assert len(data) == 10 and data["n"].sum() == 4000
    assert _within(data) >= 8
    _, skewed = plots.binary_calibration(y, p**3, bins=10, source=SOURCE)  # miscalibrated
    assert _within(skewed) <= 3


def test_wilson_interval_matches_published_value():
    # 8 of 10: Wilson 95% interval 0.490 to 0.943 (Newcombe, Stat Med 1998;17:857, table I method 3)
    low, high = plots.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_edges_are_analytic():
    # 0 of n: [0, z^2 / (n + z^2)]; n of n mirrors it; an empty bin has no interval
    z2 = plots.Z**2
    assert plots.wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    assert plots.wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0), abs=1e-12)
    assert all(np.isnan(plots.wilson_interval(0, 0)))


def test_survival_calibration_of_true_survival_lies_within_ci():
    rng = np.random.default_rng(6)
    n = 3000
    hazard = rng.lognormal(np.log(0.03), 0.7, n)
    event_time = rng.exponential(1 / hazard)
    censor = rng.uniform(0, 120, n)
    time, event = np.minimum(event_time, censor), event_time <= censor
    predicted = np.exp(-hazard * 24)
    _, data = plots.survival_calibration(time, event, predicted, 24.0, bins=5, source=SOURCE)
    assert list(data.columns) == ["bin", "predicted", "observed", "ci_low", "ci_high", "n"]
    assert len(data) == 5
    assert _within(data) >= 4
    _, shifted = plots.survival_calibration(time, event, np.sqrt(predicted), 24.0, bins=5, source=SOURCE)
    assert _within(shifted) <= 1


# --- discrimination ---------------------------------------------------------------------------------
def test_roc_curves_are_monotone_from_origin_to_corner():
    rng = np.random.default_rng(8)
    y = rng.binomial(1, 0.4, 300)
    scores = {"good": y + rng.normal(0, 0.8, 300), "noise": rng.normal(size=300)}
    fig, data = plots.roc_curves(y, scores, source=SOURCE)
    assert list(data.columns) == ["model", "fpr", "tpr"]
    for _, sub in data.groupby("model"):
        assert (np.diff(sub["fpr"]) >= 0).all() and (np.diff(sub["tpr"]) >= 0).all()
        assert (sub["fpr"].iloc[0], sub["tpr"].iloc[0]) == (0, 0)
        assert (sub["fpr"].iloc[-1], sub["tpr"].iloc[-1]) == (1, 1)
    assert data.attrs["auc"]["good"] > 0.7 > data.attrs["auc"]["noise"]
    assert any(t.startswith("good (AUC ") for t in _texts(fig))


def test_time_dependent_auc_keeps_times_inside_test_follow_up():
    time, event, risk = _three_level_cohort(600, seed=9)
    y = Surv.from_arrays(event=event, time=time)
    noise = np.random.default_rng(9).normal(size=300)
    grid = [0.0, 12.0, 24.0, 36.0, 500.0]
    _, data = plots.time_dependent_auc(y[:300], y[300:], {"true": risk[300:], "noise": noise}, grid, source=SOURCE)
    assert list(data.columns) == ["model", "time", "auc"]
    assert data.attrs["dropped_times"] == [0.0, 500.0]
    assert sorted(set(data["time"])) == [12.0, 24.0, 36.0]
    by_model = data.groupby("model")["auc"].mean()
    assert by_model["true"] > 0.7 and abs(by_model["noise"] - 0.5) < 0.1


# --- output and honesty -----------------------------------------------------------------------------
def _all_figures() -> dict[str, tuple[Figure, pd.DataFrame]]:
    time, event, risk = _three_level_cohort(300, seed=10)
    rng = np.random.default_rng(10)
    p = rng.uniform(0.05, 0.95, 300)
    y = rng.binomial(1, p)
    s24 = np.exp(-HAZARDS[np.rint(risk).clip(0, 2).astype(int)] * 24)
    surv = Surv.from_arrays(event=event, time=time)
    return {
        "km": plots.kaplan_meier_by_risk_group(time, event, risk, plots.risk_group_cutpoints(risk), source=SOURCE),
        "survival_calibration": plots.survival_calibration(time, event, s24, 24.0, source=SOURCE),
        "binary_calibration": plots.binary_calibration(y, p, source=SOURCE),
        "roc": plots.roc_curves(y, {"m": p}, source=SOURCE),
        "td_auc": plots.time_dependent_auc(surv[:150], surv[150:], {"m": risk[150:]}, [12.0, 24.0], source=SOURCE),
        "decision": plots.decision_curve(y, {"m": p}, source=SOURCE),
        "survival_decision": plots.survival_decision_curve(time, event, 1 - s24, 24.0, source=SOURCE),
    }


def test_every_figure_names_its_data_source():
    for name, (fig, _) in _all_figures().items():
        assert f"Data: {SOURCE}" in _texts(fig), name
    fig, _ = plots.roc_curves(Y, {"m": P})
    assert "Data: source not stated" in _texts(fig)


def test_save_plot_writes_png_and_round_tripping_csv(tmp_path):
    time, event, risk = _three_level_cohort(300, seed=12)
    fig, data = plots.kaplan_meier_by_risk_group(time, event, risk, plots.risk_group_cutpoints(risk), source=SOURCE)
    png, csv = plots.save_plot(fig, data, tmp_path / "plots", "km_recurrence")
    assert (png.name, csv.name) == ("km_recurrence.png", "km_recurrence.csv")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000
    pd.testing.assert_frame_equal(pd.read_csv(csv), data, check_dtype=False)
    assert not fig.axes  # closed: the figure is released
    with pytest.raises(ValueError, match="plain file stem"):
        plots.save_plot(Figure(), data, tmp_path, "../escape")
