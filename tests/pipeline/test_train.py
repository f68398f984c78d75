"""crlm train / evaluate end to end on a small clinical-only synthetic cohort, tracked in a
temporary MLflow store (the shared run of tests/conftest.py); permuted outcomes show no signal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import comparison, evaluation, outcomes, training
from pipeline.evaluate import run_evaluate
from tests.conftest import SMALL_TRAIN
from tests.models.test_training import cohort_with_measured_traits

# The permuted-outcome check fits every family on the fewest grid points: chance is chance.
PERMUTED_GRID = training.TrainSettings(**SMALL_TRAIN)  # the train block as fit_task takes it


def test_train_writes_metrics_plots_models_and_tracks_them(tracked_training, tmp_path, monkeypatch):
    """The shared tracked run (tests/conftest.py): files, metrics, registry and nested runs."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    root, metrics = tracked_training["root"], tracked_training["metrics"]
    out, models, params = root / "reports", root / "models", root / "params.yaml"
    written = json.loads((out / "metrics.json").read_text())
    assert set(written) == {"recurrence", "response", "notes"}
    assert written["notes"]["data"] == "synthetic" and written["notes"]["skipped_tasks"] == {}
    assert {"coxnet", "xgb_cox", "xgb_aft", "fong", "oslo", "game", "tbs", "oracle"} <= set(written["recurrence"])
    assert {"logistic", "xgb", "fong", "oslo", "game", "tbs", "oracle"} <= set(written["response"])
    for key in (
        "c_index",
        "uno_c_index",
        "auc_12m",
        "auc_24m",
        "auc_36m",
        "ibs",
        "calibration_slope_24m",
        "delta_c_vs_fong",
    ):
        assert set(written["recurrence"]["coxnet"][key]) == {"value", "ci_low", "ci_high"}
    for key in ("roc_auc", "pr_auc", "brier", "calibration_intercept", "calibration_slope", "delta_auc_vs_fong"):
        assert key in written["response"]["logistic"]
    assert metrics["recurrence"]["oracle"]["c_index"]["value"] > metrics["recurrence"]["fong"]["c_index"]["value"]
    for name in (
        "km_recurrence_model",
        "km_recurrence_fong",
        "calibration_recurrence",
        "td_auc_recurrence",
        "decision_recurrence",
        "roc_response",
        "calibration_response",
        "decision_response",
    ):
        assert (out / "plots" / f"{name}.png").stat().st_size > 5000
        assert (out / "plots" / f"{name}.csv").is_file()
    assert len(list(models.glob("*.joblib"))) == 5

    import mlflow
    from mlflow import MlflowClient

    from pipeline import tracking

    tracking.configure(root)
    client = MlflowClient()
    for name in ("crlm-recurrence", "crlm-response"):
        version = client.get_model_version_by_alias(name, "candidate")
        assert int(version.version) == 1
    parent = mlflow.search_runs(filter_string="tags.mlflow.runName = 'train'", output_format="list")[0]
    assert parent.data.tags["data.kind"] == "synthetic"
    assert parent.data.params["train.seed"] == "3"
    children = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
    )
    assert len(children) == 15  # 8 recurrence + 7 response entries
    coxnet = next(r for r in children if r.data.tags["mlflow.runName"] == "recurrence/coxnet")
    assert "c_index_ci_low" in coxnet.data.metrics

    external_features = root / "external.parquet"
    result = tracked_training["external"]
    assert set(result) == {"recurrence", "response", "notes"}
    assert json.loads((root / "external" / "metrics.json").read_text()).keys() == result.keys()
    via_registry = run_evaluate(
        "models:/crlm-response@candidate", external_features, tmp_path / "ext2", params, repo_root=root, track=False
    )
    best = next(iter(set(via_registry["response"]) & set(training.MODELS["response"])))
    assert via_registry["response"][best]["roc_auc"]["value"] == pytest.approx(
        result["response"][best]["roc_auc"]["value"]
    )


def test_permuted_outcomes_give_confidence_intervals_that_cover_chance(world):
    table, truth = cohort_with_measured_traits(world, n=400, seed=31)
    order = np.random.default_rng(0).permutation(len(table))
    outcome_columns = ["recurrence_event", "recurrence_months", "recist_response"]
    table[outcome_columns] = table[outcome_columns].to_numpy()[order]
    train, test = training.split_patients(table, 0.3, seed=3)
    for task, metric in ((training.RECURRENCE, "c_index"), (training.RESPONSE, "roc_auc")):
        fitted = training.fit_task(table, task, train, test, PERMUTED_GRID)
        predictors = comparison.build_predictors(fitted, table)
        predictions = comparison.task_predictions(task, predictors, table.iloc[train], table.iloc[test])
        build = outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome
        result = evaluation.evaluate_task(
            task, build(table.iloc[train]), build(table.iloc[test]), predictions, n_resamples=100
        )
        for name in training.MODELS[task]:
            ci = result[name][metric]
            assert ci["ci_low"] < 0.5 < ci["ci_high"], (task, name, ci)


def test_train_and_evaluate_report_the_novelty_flag_rate_and_the_served_model_gives_it(tracked_training):
    """Issue 13 item 5: held-out flag rate per task in metrics.json and on the MLflow run; the external
    evaluation's flag rate and flagged-vs-unflagged discrimination; the served pyfunc's novelty columns."""
    import mlflow

    from models.predictor import NOVELTY, OUT_OF_DISTRIBUTION
    from pipeline import tracking

    root = tracked_training["root"]
    written = json.loads((root / "reports" / "metrics.json").read_text())
    for task in ("recurrence", "response"):
        rate = written["notes"][task]["novelty_flag_rate"]
        assert rate["model"] == written["notes"][task]["chosen"] and rate["data"] == "held-out split"
        assert rate["n_scored"] == written["notes"][task]["n_test"] and rate["n_unscored"] == 0
        assert rate["value"] == pytest.approx(rate["n_flagged"] / rate["n_scored"])
        # ~72 held-out patients of the training site, true rate ~5%: 0-12 flagged covers 99.9% (binomial)
        assert rate["n_flagged"] <= 12
        assert tracked_training["parent"].data.metrics[f"{task}.novelty_flag_rate"] == pytest.approx(rate["value"])
        external = tracked_training["external"]["notes"][task]["novelty"]
        for entry in external.values():
            assert entry["n_scored"] == tracked_training["external"]["notes"][task]["n_patients"]
            for group in entry["by_flag"].values():
                assert (group["value"] is None) == (group["note"] is not None)
                if group["n"] < 10:
                    assert group["value"] is None and group["note"].startswith("too few to estimate")
    tracking.configure(root)
    served = mlflow.pyfunc.load_model("models:/crlm-response@candidate")
    table = pd.read_parquet(root / "external.parquet").head(4)
    columns = [c for c in served.metadata.get_input_schema().input_names() if c in table]
    out = served.predict(table[columns])
    assert {NOVELTY, OUT_OF_DISTRIBUTION} <= set(out.columns) and out[NOVELTY].notna().all()
