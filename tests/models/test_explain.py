"""SHAP explanations: they add up to each model's margin, find a planted driver, keep the AFT sign
as risk, and split attribution between clinical and imaging features as planted."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from features import schema as s
from features.settings import SettingsError, build
from models import comparison, explain, training
from models.predictor import RecurrencePredictor

N_PATIENTS = 300
RECURRENCE_DRIVER = "rad_driver"  # imaging: log hazard ratio 1.5 per SD
RESPONSE_DRIVER = s.CEA  # clinical: log-odds 2.5 per unit of log CEA
FAST = {
    "seed": 3,
    "cv_folds": 3,
    "correlation_threshold": 0.95,
    "k_features": [8],
    "grids": {},
    "select_among": "imaging",
}  # as params.yaml
FAMILIES = [(training.RECURRENCE, name) for name in training.MODELS[training.RECURRENCE]] + [
    (training.RESPONSE, name) for name in training.MODELS[training.RESPONSE]
]
RELATIVE = 1e-6


def planted_table(n: int = N_PATIENTS, seed: int = 1) -> pd.DataFrame:
    """Noise clinical and imaging columns; recurrence driven by an imaging column, response by CEA."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            s.PATIENT_ID: [f"P{i:03d}" for i in range(n)],
            "status": "ok",
            s.AGE: rng.normal(62, 10, n).round(),
            s.SEX: rng.choice(list(s.SEXES), n).astype(object),
            s.CEA: np.exp(rng.normal(2.0, 1.0, n)),
            s.N_LESIONS: rng.integers(1, 6, n),
            RECURRENCE_DRIVER: rng.normal(size=n),
            "rad_noise": rng.normal(size=n),
            "patient_volume_ml": rng.lognormal(3.0, 1.0, n),
        }
    )
    log_hazard = 1.5 * table[RECURRENCE_DRIVER]
    event_time = rng.exponential(30.0 * np.exp(-log_hazard))
    censoring = rng.uniform(6.0, 60.0, n)
    table[s.RECURRENCE_EVENT] = (event_time <= censoring).astype(int)
    table[s.RECURRENCE_MONTHS] = np.minimum(event_time, censoring)
    log_odds = 2.5 * (np.log(table[s.CEA]) - 2.0)
    table[s.RECIST] = np.where(rng.random(n) < 1 / (1 + np.exp(-log_odds)), "PR", "SD")
    table.loc[rng.random(n) < 0.05, s.CEA] = np.nan  # some missing values, imputed by the models
    return table


@lru_cache(maxsize=1)
def fitted_planted() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """The planted table, its split and every model family fitted through models.training
    (cached: shared by the tests of this module and tests/pipeline/test_explain.py)."""
    table = planted_table()
    train, test = training.split_patients(table, 0.3, seed=3)
    predictors = {}
    for task in training.TASKS:
        fitted = training.fit_task(table, task, train, test, training.TrainSettings(**FAST, test_fraction=0.3, jobs=1))
        predictors.update({(task, name): p for name, p in comparison.build_predictors(fitted, table).items()})
    return table, train, test, predictors


@pytest.fixture(scope="module")
def planted():
    return fitted_planted()


@pytest.fixture(scope="module")
def results(planted):
    table, train, test, predictors = planted
    return {key: explain.explain(p, table.iloc[test], table.iloc[train]) for key, p in predictors.items()}


@pytest.mark.parametrize("key", FAMILIES, ids=["/".join(k) for k in FAMILIES])
def test_shap_values_plus_base_equal_the_margin_the_predictor_computes(planted, results, key):
    table, _, test, predictors = planted
    result, predictor = results[key], predictors[key]
    margin = explain.model_margin(predictor, table.iloc[test])
    # xgboost sums its trees in float32: the error is relative to the margins' scale
    error = np.abs(result.values.sum(axis=1) + result.base_values - margin).max()
    assert error <= RELATIVE * np.abs(margin).max(), (key, error)
    if key[0] == training.RECURRENCE:
        np.testing.assert_array_equal(margin, predictor.risk(table.iloc[test]))
    else:
        np.testing.assert_allclose(1 / (1 + np.exp(-margin)), predictor.probability(table.iloc[test]), rtol=1e-6)


@pytest.mark.parametrize("key", FAMILIES, ids=["/".join(k) for k in FAMILIES])
def test_planted_driver_ranks_first_and_carries_most_attribution(results, key):
    table = explain.importance(results[key])
    driver = RECURRENCE_DRIVER if key[0] == training.RECURRENCE else RESPONSE_DRIVER
    assert table["feature"].iloc[0] == driver, table.head(3)
    assert table["share"].iloc[0] > 0.4
    assert list(table["mean_abs_shap"]) == sorted(table["mean_abs_shap"], reverse=True)


def test_aft_shap_is_signed_as_risk_higher_value_higher_risk(planted, results):
    table, train, test, predictors = planted
    predictor = predictors[(training.RECURRENCE, "xgb_aft")]
    result = explain.explain(predictor, table.iloc[test], table.iloc[train], background_size=len(train))
    prepare, estimator = predictor.pipeline[:-1], predictor.pipeline.steps[-1][1]
    X = prepare.transform(training.model_frame(table.iloc[test], predictor.feature_columns))
    np.testing.assert_allclose(result.output, -estimator.margin(X), rtol=0, atol=RELATIVE * 10)
    assert "minus log survival time" in result.quantity
    # base value = mean risk of the background (training split), not mean log time
    assert result.base_values[0] == pytest.approx(predictor.risk(table.iloc[train]).mean(), abs=1e-5)
    j = result.feature_names.index(RECURRENCE_DRIVER)
    for key in ((training.RECURRENCE, "xgb_aft"), (training.RECURRENCE, "xgb_cox"), (training.RECURRENCE, "coxnet")):
        r = results[key]
        i = r.feature_names.index(RECURRENCE_DRIVER)
        assert np.corrcoef(r.display_data[:, i], r.values[:, i])[0, 1] > 0.8, key  # planted: higher = more hazard
    risk = predictor.risk(table.iloc[test])
    assert np.corrcoef(result.values[:, j], risk)[0, 1] > 0.5


def test_linear_shap_is_coefficient_times_distance_from_training_mean(planted, results):
    table, train, test, predictors = planted
    predictor = predictors[(training.RECURRENCE, "coxnet")]
    result = explain.explain(predictor, table.iloc[test], table.iloc[train], background_size=len(train))
    prepare, model = predictor.pipeline[:-1], predictor.pipeline.steps[-1][1]
    X_train = prepare.transform(training.model_frame(table.iloc[train], predictor.feature_columns))
    coef = model.coef_[:, -1]
    np.testing.assert_allclose(result.values, coef * (result.data - X_train.mean(axis=0)), atol=1e-12)
    assert result.base_values[0] == pytest.approx(predictor.risk(table.iloc[train]).mean(), abs=1e-12)
    assert result.quantity == explain.QUANTITY_LOG_HR


def test_attribution_share_sums_to_one_and_follows_the_planted_side(results):
    for key, result in results.items():
        share = explain.attribution_share(result)
        assert share[explain.CLINICAL] + share[explain.IMAGING] == pytest.approx(1.0)
        driver_share = explain.importance(result).set_index("feature")["share"]
        if key[0] == training.RECURRENCE:
            assert share[explain.IMAGING] >= driver_share[RECURRENCE_DRIVER] > 0.4, key
        else:
            assert share[explain.CLINICAL] >= driver_share[RESPONSE_DRIVER] > 0.4, key


def handmade(values, display=None) -> explain.ShapResult:
    values = np.asarray(values, dtype=float)
    names = ["rad_glcm_contrast", "patient_volume_ml", "fong_score", "sex_male"]
    sources = ["rad_glcm_contrast", "patient_volume_ml", "fong_score", "sex"]
    display = np.arange(values.size, dtype=float).reshape(values.shape) if display is None else display
    return explain.ShapResult(
        "toy",
        training.RECURRENCE,
        explain.QUANTITY_LOG_HR,
        names,
        sources,
        values,
        np.zeros(len(values)),
        values.copy(),
        display,
        [f"id-{i}" for i in range(len(values))],
        10,
    )


def test_attribution_share_counts_scores_and_one_hot_as_clinical_and_prefixes_as_imaging():
    result = handmade([[0.3, -0.1, 0.4, -0.2], [-0.1, 0.1, 0.0, 0.0]])  # mean |SHAP|: .2 .1 .2 .1
    share = explain.attribution_share(result)
    assert share == pytest.approx({explain.CLINICAL: 0.5, explain.IMAGING: 0.5})
    assert list(explain.importance(result)["group"]) == ["imaging", "clinical", "imaging", "clinical"]
    silent = explain.attribution_share(handmade(np.zeros((2, 4))))
    assert all(np.isnan(v) for v in silent.values())


def test_top_contributions_orders_each_patient_by_absolute_shap():
    result = handmade([[0.1, -0.5, 0.3, 0.0], [0.0, 0.2, -0.05, -0.9]])
    top = explain.top_contributions(result, 3)
    assert list(top.columns) == [
        s.PATIENT_ID,
        "feature_1",
        "value_1",
        "shap_1",
        "feature_2",
        "value_2",
        "shap_2",
        "feature_3",
        "value_3",
        "shap_3",
    ]
    assert list(top.iloc[0][["feature_1", "feature_2", "feature_3"]]) == [
        "patient_volume_ml",
        "fong_score",
        "rad_glcm_contrast",
    ]
    assert list(top.iloc[1][["shap_1", "shap_2", "shap_3"]]) == [-0.9, 0.2, -0.05]
    assert list(top.iloc[1][["value_1", "value_2", "value_3"]]) == [7.0, 5.0, 6.0]  # original-unit values
    assert list(top[s.PATIENT_ID]) == ["id-0", "id-1"]
    assert explain.top_contributions(result, 10).shape[1] == 1 + 3 * 4  # k capped at the number of features
    with pytest.raises(ValueError, match="k must be"):
        explain.top_contributions(result, 0)


def test_top_contributions_of_a_fitted_model_match_its_shap_values(results):
    result = results[(training.RESPONSE, "xgb")]
    top = explain.top_contributions(result, 4)
    magnitudes = np.abs(top[[f"shap_{i}" for i in range(1, 5)]].to_numpy(float))
    assert (np.diff(magnitudes, axis=1) <= 0).all()
    row = top.iloc[7]
    j = result.feature_names.index(row["feature_1"])
    assert row["shap_1"] == result.values[7, j]
    assert row["value_1"] == result.display_data[7, j] or np.isnan(result.display_data[7, j])


def test_display_data_is_in_original_units_and_one_hot_is_an_indicator(planted, results):
    table, _, test, _ = planted
    result = results[(training.RESPONSE, "logistic")]
    j = result.feature_names.index(s.CEA)
    np.testing.assert_array_equal(result.display_data[:, j], table.iloc[test][s.CEA].to_numpy(float))
    one_hot = [n for n, c in zip(result.feature_names, result.source_columns, strict=True) if c == s.SEX]
    assert one_hot, result.feature_names
    k = result.feature_names.index(one_hot[0])
    expected = (table.iloc[test][s.SEX] == one_hot[0].removeprefix(f"{s.SEX}_")).to_numpy(float)
    np.testing.assert_array_equal(result.display_data[:, k], expected)


def test_plots_name_the_quantity_and_the_data_source(results):
    result = results[(training.RECURRENCE, "xgb_aft")]
    source = "planted test cohort"
    figures = [
        explain.beeswarm_plot(result, source),
        explain.bar_plot(result, source),
        explain.dependence_plot(result, RECURRENCE_DRIVER, source),
        explain.waterfall_plot(result, result.patient_ids[0], source),
    ]
    for fig, data in figures:
        ax = fig.axes[0]
        text = " ".join([ax.get_title(), ax.get_xlabel(), ax.get_ylabel()])
        assert result.quantity in text
        assert f"Data: {source}" in fig.get_supxlabel()
        assert not data.empty
    _, waterfall = figures[3]
    assert waterfall["end"].iloc[0] == pytest.approx(result.output[0])  # top row ends at the patient's value
    assert waterfall["shap"].sum() == pytest.approx(result.output[0] - result.base_values[0])
    with pytest.raises(ValueError, match="not among"):
        explain.waterfall_plot(result, "nobody")


def test_extreme_patients_alternate_highest_and_lowest():
    result = handmade([[0.1, 0, 0, 0], [0.9, 0, 0, 0], [-0.7, 0, 0, 0], [0.2, 0, 0, 0]])
    assert explain.extreme_patients(result, 3) == ["id-1", "id-2", "id-3"]
    assert explain.extreme_patients(result, 10) == ["id-1", "id-2", "id-3", "id-0"]


def test_an_unsupported_estimator_is_refused_with_the_supported_list(planted):
    table, train, test, predictors = planted
    template = predictors[(training.RECURRENCE, "coxnet")]
    forest = Pipeline([("scale", StandardScaler()), ("model", RandomForestRegressor(n_estimators=3))])
    frame = training.model_frame(table.iloc[train], [s.AGE, RECURRENCE_DRIVER])
    forest.fit(frame, frame[RECURRENCE_DRIVER])
    predictor = RecurrencePredictor(
        "forest", forest, [s.AGE, RECURRENCE_DRIVER], template.train_risk, template.y_train, template.cutpoints
    )
    with pytest.raises(TypeError, match="supported: CoxnetSurvivalAnalysis"):
        explain.explain(predictor, table.iloc[test], table.iloc[train])


def test_settings_are_validated_with_the_key_and_the_nearest_name():
    assert build(explain.ExplainSettings, {}) == explain.ExplainSettings()
    with pytest.raises(SettingsError, match="did you mean 'top_k'"):
        build(explain.ExplainSettings, {"topk": 3}, where="explain")
    with pytest.raises(SettingsError, match="waterfalls must be a whole number >= 0"):
        build(explain.ExplainSettings, {"waterfalls": -1}, where="explain")
    with pytest.raises(SettingsError, match="expected a whole number"):
        build(explain.ExplainSettings, {"background_size": 2.5}, where="explain")
