"""Honesty of model fitting: no leakage, a planted signal found, reproducible fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from features import schema as s
from features.patient_table import patient_feature_table
from models import outcomes, training
from pipeline import synthesis

FAST = {
    "seed": 3,
    "cv_folds": 3,
    "correlation_threshold": 0.95,
    "k_features": [8, 20],
    "grids": {
        "coxnet": {"alphas": [[0.02], [0.1]]},
        "xgb_cox": {"max_depth": [1]},
        "xgb_aft": {"max_depth": [1]},
        "logistic": {"C": [0.1, 1.0]},
        "xgb": {"max_depth": [1]},
    },
}
FAST_SETTINGS = training.TrainSettings(**FAST, test_fraction=0.3, jobs=1)  # the train block as fit_task takes it


def cohort_with_measured_traits(world, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A clinical-only synthetic cohort whose latent imaging traits are given as covariates
    (as if radiomics measured them perfectly), plus its truth table."""
    clinical, truth = synthesis.simulate_cohort(n, seed=seed, site="A", world=world)
    table = patient_feature_table(clinical, pd.Series("ok", index=clinical.index))
    for trait in synthesis.TRAITS:
        table[f"rad_{trait}"] = truth[trait].to_numpy()
    return table, truth


@pytest.fixture(scope="module")
def planted(world):
    table, truth = cohort_with_measured_traits(world, n=900, seed=11)
    train, test = training.split_patients(table, 0.3, seed=3)
    fitted = {task: training.fit_task(table, task, train, test, FAST_SETTINGS) for task in training.TASKS}
    return table, truth, train, test, fitted


def c_index(table: pd.DataFrame, risk) -> float:
    y = outcomes.recurrence_outcome(table)
    return concordance_index_censored(y["event"], y["time"], np.asarray(risk, float))[0]


def test_recurrence_models_recover_most_of_the_oracle_gain_and_beat_fong(planted):
    table, truth, _, test_index, fitted = planted
    test = table.iloc[test_index]
    oracle = c_index(test, truth[synthesis.TRUTH_RECURRENCE_LP].to_numpy()[test_index])
    fong = c_index(test, test["fong_score"].astype(float))
    task = fitted[training.RECURRENCE]
    best = max(c_index(test, m.predict(training.model_frame(test, task.features))) for m in task.models.values())
    assert best > fong + 0.03
    assert (best - 0.5) >= 0.80 * (oracle - 0.5), (best, oracle)


def test_response_models_recover_most_of_the_oracle_gain(planted):
    table, truth, _, test_index, fitted = planted
    test = table.iloc[test_index]
    y = outcomes.response_outcome(test)
    oracle = roc_auc_score(y, truth[synthesis.TRUTH_RESPONSE_LP].to_numpy()[test_index])
    task = fitted[training.RESPONSE]
    best = max(
        roc_auc_score(y, m.predict_proba(training.model_frame(test, task.features))[:, 1]) for m in task.models.values()
    )
    assert (best - 0.5) >= 0.80 * (oracle - 0.5), (best, oracle)


def test_nothing_is_fitted_on_test_patients(planted):
    table, _, train_index, _, fitted = planted
    task = fitted[training.RECURRENCE]
    pipeline = task.models["coxnet"]
    numeric = pipeline.named_steps["prepare"].named_transformers_["numeric"]
    columns = pipeline.named_steps["prepare"].transformers_[0][2]
    train_medians = training.model_frame(table.iloc[train_index], columns).median().to_numpy()
    all_medians = training.model_frame(table, columns).median().to_numpy()
    np.testing.assert_allclose(numeric.named_steps["impute"].statistics_, train_medians)
    assert not np.allclose(numeric.named_steps["impute"].statistics_, all_medians)


def test_the_response_model_never_sees_post_treatment_information(planted):
    *_, fitted = planted
    features = fitted[training.RESPONSE].features
    for leaked in (s.PROGRESSION_ON_CHEMO, s.MARGIN_POSITIVE, s.MONTHS_TO_SURGERY, s.CHEMO_CYCLES, "oslo_score"):
        assert leaked not in features
    assert s.PROGRESSION_ON_CHEMO in fitted[training.RECURRENCE].features
    assert not set(features) & set(s.OUTCOMES)


def test_same_seed_gives_the_same_models(world):
    table, _ = cohort_with_measured_traits(world, n=200, seed=5)
    train, test = training.split_patients(table, 0.3, seed=1)
    assert np.array_equal(train, training.split_patients(table, 0.3, seed=1)[0])
    first = training.fit_task(table, training.RECURRENCE, train, test, FAST_SETTINGS)
    again = training.fit_task(table, training.RECURRENCE, train, test, FAST_SETTINGS)
    frame = training.model_frame(table.iloc[test], first.features)
    for name in first.models:
        np.testing.assert_array_equal(first.models[name].predict(frame), again.models[name].predict(frame))


def test_split_is_by_patient_and_stratified(world):
    table, _ = cohort_with_measured_traits(world, n=300, seed=2)
    train, test = training.split_patients(table, 0.3, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == len(table)
    assert abs(table.iloc[test][s.RECURRENCE_EVENT].mean() - table.iloc[train][s.RECURRENCE_EVENT].mean()) < 0.05


def test_declared_covariates_are_model_inputs_and_carry_their_signal(world):
    clinical, truth = synthesis.simulate_cohort(500, seed=8, site="A", world=world)
    table = patient_feature_table(clinical, pd.Series("ok", index=clinical.index))
    rng = np.random.default_rng(0)
    table["lab_marker"] = truth[synthesis.TRUTH_RECURRENCE_IMAGING_LP].to_numpy() + rng.normal(0, 0.1, 500)
    train, test = training.split_patients(table, 0.3, seed=3)
    without = training.fit_task(table, training.RECURRENCE, train, test, FAST_SETTINGS)
    with_marker = training.fit_task(table, training.RECURRENCE, train, test, FAST_SETTINGS, covariates=["lab_marker"])
    assert "lab_marker" not in without.features and "lab_marker" in with_marker.features
    frame = lambda fitted: training.model_frame(table.iloc[test], fitted.features)  # noqa: E731
    gain = c_index(table.iloc[test], with_marker.models["coxnet"].predict(frame(with_marker)))
    base = c_index(table.iloc[test], without.models["coxnet"].predict(frame(without)))
    assert gain > base + 0.03


def test_selection_among_imaging_keeps_every_clinical_input(world):
    """With select_among='imaging', clinical inputs are never dropped, whatever their univariate
    strength; the k imaging places go to the imaging columns most associated with the outcome."""
    table, truth = cohort_with_measured_traits(world, n=300, seed=5)
    rng = np.random.default_rng(0)
    for j in range(60):  # noise imaging features that crowd the ranking
        table[f"rad_noise_{j}"] = rng.normal(size=len(table))
    train, test = training.split_patients(table, 0.3, seed=3)
    settings = training.TrainSettings(
        **{**FAST, "k_features": [1], "select_among": "imaging", "grids": {"coxnet": {"alphas": [[0.1]]}}},
        test_fraction=0.3,
        jobs=1,
    )
    models = training.MODELS
    training.MODELS = {**models, training.RECURRENCE: ("coxnet",)}
    try:
        fitted = training.fit_task(table, training.RECURRENCE, train, test, settings)
    finally:
        training.MODELS = models
    pipeline = fitted.models["coxnet"]
    kept = set(pipeline[:-1].get_feature_names_out())
    clinical = [
        c
        for c in fitted.features
        if not c.startswith(training.IMAGING_PREFIXES) and pd.api.types.is_numeric_dtype(table[c])
    ]
    assert set(clinical) <= kept
    imaging_kept = sorted(c for c in kept if c.startswith(training.IMAGING_PREFIXES))
    # the trait with the largest log hazard ratio (0.42 per SD), not noise
    assert imaging_kept == ["rad_trait_heterogeneity"]
    assert fitted.best_params["coxnet"]["prepare__imaging__select__k"] == 1


def test_select_among_rejects_an_unknown_scope():
    from models import preprocessing

    with pytest.raises(ValueError, match="select_among"):
        preprocessing.feature_pipeline(["a"], [], 0.9, 3, imaging=["rad_a"], select_among="clinical")
