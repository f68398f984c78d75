"""One owner per contract (issue 12 item 1): model families, the models folder and its loader,
the file-name rule, the logit and the calibration horizon."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.special import logit as scipy_logit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sksurv.util import Surv

from features.extraction import map_in_process
from features.schema import nearest_name, patient_file_stem
from models import evaluation, explain, registry, training
from models.evaluation import SurvivalPrediction
from models.predictor import ResponsePredictor
from pipeline.explain import safe_file_stem
from pipeline.predict import explanation_file

NON_ASCII_ID = "Pätient-ü1"


def test_every_task_has_families_in_preference_order_and_training_uses_them():
    assert registry.MODELS == {"recurrence": ("coxnet", "xgb_cox", "xgb_aft"), "response": ("logistic", "xgb")}
    assert training.MODELS is registry.MODELS and training.TASKS == registry.TASKS
    assert registry.preferred("recurrence", ["xgb_aft", "xgb_cox"]) == "xgb_cox"
    assert registry.preferred("response", ["mystery", "xgb"]) == "xgb"


@pytest.mark.parametrize("family", registry.FAMILIES, ids=lambda f: f"{f.task}/{f.name}")
def test_each_family_builds_its_estimator_and_declares_the_shap_kind_explain_uses(family):
    estimator = family.estimator(3)
    assert hasattr(estimator, "fit")
    assert (family.shap == "linear") == explain.is_linear(estimator)
    explain.explained_quantity(estimator)  # models.explain supports it


def test_only_the_aft_family_is_recalibrated_and_an_unknown_family_is_named():
    assert [f.name for f in registry.FAMILIES if f.recalibrate] == ["xgb_aft"]
    with pytest.raises(ValueError, match="unknown response model 'svm'; known: logistic, xgb"):
        registry.family("response", "svm")


def test_primary_metric_and_baselines_have_one_home():
    assert evaluation.PRIMARY_METRIC is registry.PRIMARY_METRIC
    assert evaluation.BASELINE_NAMES is registry.BASELINES is training.BASELINES
    assert registry.DEFAULT_REFERENCE in registry.BASELINES
    assert set(training.SCORE_COLUMN) == set(registry.BASELINES)


def test_the_calibration_slope_key_follows_the_horizon():
    assert evaluation.CALIBRATION_SLOPE == "calibration_slope_24m"
    rng = np.random.default_rng(0)
    time = rng.uniform(1, 60, 80)
    event = rng.uniform(size=80) < 0.7
    y = Surv.from_arrays(event, time)
    risk = -time + rng.normal(0, 5, 80)
    times = np.arange(1.0, 60.0)
    survival = np.exp(-np.outer(np.exp(risk / 20), times / 40))
    metrics = evaluation.survival_metrics(y, y, SurvivalPrediction(risk, times, survival), calibration_horizon=12.0)
    assert "calibration_slope_12m" in metrics and "calibration_slope_24m" not in metrics


def test_the_one_logit_clips_saturated_probabilities_and_is_exact_inside():
    p = np.linspace(0.01, 0.99, 99)
    np.testing.assert_allclose(evaluation.logit(p), scipy_logit(p), rtol=1e-12)
    bound = scipy_logit(1 - evaluation.PROBABILITY_CLIP)
    np.testing.assert_allclose(evaluation.logit([0.0, 1.0]), [-bound, bound], rtol=1e-9)
    x = np.array([-13.0, -2.0, 0.0, 3.5, 13.0])
    np.testing.assert_allclose(evaluation.logit(expit(x)), x, atol=1e-6)
    # a margin beyond the clip reads the same on both sides of crlm predict's agreement check
    assert evaluation.logit(expit(40.0)) == evaluation.logit(np.float32(1.0))


@pytest.mark.parametrize("patient", ["B5-0001", NON_ASCII_ID, "a/b", "a_b", "site/A 7", "..", "", "x" * 200])
def test_explain_and_predict_give_one_patient_one_file_name(patient):
    stem = patient_file_stem(patient)
    assert safe_file_stem(patient) == stem
    assert explanation_file(patient) == f"{stem}.json"
    assert stem.isascii() and "/" not in stem and not stem.startswith(".") and len(stem) <= 80 + 9


def test_file_names_of_different_ids_differ_and_safe_ids_stay_as_they_are():
    ids = ["B5-0001", NON_ASCII_ID, "P_tient-_1", "a/b", "a_b", "..", "", "x" * 200, "x" * 201]
    assert len({patient_file_stem(i) for i in ids}) == len(ids)
    assert patient_file_stem("CRLM-001_a") == "CRLM-001_a"
    assert (
        patient_file_stem(NON_ASCII_ID)
        == "P_tient-_1-" + __import__("hashlib").sha256(NON_ASCII_ID.encode()).hexdigest()[:8]
    )


def test_nearest_name_is_one_rule():
    assert nearest_name("weibul_shape", ["weibull_shape", "scale"]) == "weibull_shape"
    assert nearest_name("AGE", ["age"]) == "age"
    assert nearest_name("zzz", ["age", "sex"]) is None


def test_extraction_without_an_executor_runs_in_process_and_refuses_parallel_work():
    assert list(map_in_process(abs, [-1, 2])) == [1, 2]
    with pytest.raises(ValueError, match="pass map_cases=pipeline.execution.map_cases"):
        map_in_process(abs, [1], jobs=2)


def _response_predictor(name: str) -> ResponsePredictor:
    X = pd.DataFrame({"cea_ng_ml": np.arange(12.0)})
    y = np.arange(12) % 2
    return ResponsePredictor(name, Pipeline([("model", LogisticRegression())]).fit(X, y), ["cea_ng_ml"])


@pytest.fixture()
def folder(tmp_path):
    for name in ("logistic", "xgb"):
        joblib.dump(_response_predictor(name), tmp_path / registry.predictor_file("response", name))
    return tmp_path


def test_the_loader_takes_best_json_else_the_preference_or_every_model(folder):
    (loaded,) = registry.load_models(folder)
    assert (loaded.task, loaded.name) == ("response", "logistic")  # no best.json: the preference
    (folder / registry.BEST_FILE).write_text(json.dumps({"response": "xgb"}))
    (loaded,) = registry.load_models(folder)
    assert loaded.name == "xgb" and loaded.version.startswith("sha256:")
    assert [m.name for m in registry.load_models(folder, every=True, one_per_task=False)] == ["logistic", "xgb"]
    with pytest.raises(ValueError, match="more than one response model"):
        registry.load_models([folder, folder / registry.predictor_file("response", "xgb")])


def test_the_loader_names_a_file_whose_predictor_is_of_another_task(folder):
    (folder / registry.predictor_file("response", "xgb")).rename(
        folder / registry.predictor_file("recurrence", "coxnet")
    )
    with pytest.raises(ValueError, match=r"recurrence_coxnet\.joblib: expected a RecurrencePredictor, found Resp"):
        registry.load_models(folder, every=True, one_per_task=False)


def test_the_loader_says_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained predictors in .* recurrence_coxnet.joblib"):
        registry.load_models(tmp_path)
    with pytest.raises(ValueError, match="needs the tracking store"):
        registry.load_models("models:/crlm-recurrence@champion")


def test_the_score_columns_predict_writes_are_what_clinical_scores_returns(world):
    from features.scores import SCORE_OUTPUTS, clinical_scores
    from pipeline import synthesis
    from pipeline.predict import SCORE_COLUMNS

    clinical, _ = synthesis.simulate_cohort(5, seed=1, site="A", world=world)
    assert tuple(clinical_scores(clinical).columns) == SCORE_OUTPUTS == SCORE_COLUMNS
