"""crlm explain end to end on fitted planted models: files, unchanged patient ids, safe file
names, settings errors and MLflow logging into the training runs."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest

from features.schema import PATIENT_ID
from models import explain, training
from pipeline.explain import run_explain, safe_file_stem
from pipeline.settings import SettingsError
from tests.models.test_explain import RECURRENCE_DRIVER, fitted_planted

SETTINGS = {"top_k": 3, "dependence_plots": 2, "waterfalls": 2, "background_size": 100, "seed": 1}
HIGHEST_ID = "Pätient-ü1"  # the test patient with the highest response log-odds (logistic)
LOWEST_ID = "site/A 7"  # and the lowest: a path separator and a space in an id


@pytest.fixture()
def stage_inputs(tmp_path):
    """features.parquet, split.csv and a models folder (with a baseline file that must be skipped)."""
    table, train, test, predictors = fitted_planted()
    table = table.copy()
    margin = explain.model_margin(predictors[(training.RESPONSE, "logistic")], table.iloc[test])
    table.loc[test[np.argmax(margin)], PATIENT_ID] = HIGHEST_ID
    table.loc[test[np.argmin(margin)], PATIENT_ID] = LOWEST_ID
    failed = table.iloc[[0]].assign(**{PATIENT_ID: "failed-case", "status": "failed"})
    pd.concat([table, failed], ignore_index=True).to_parquet(tmp_path / "features.parquet")
    split = pd.DataFrame({PATIENT_ID: table[PATIENT_ID], "split": "train"})
    split.loc[test, "split"] = "test"
    split.to_csv(tmp_path / "split.csv", index=False)
    models = tmp_path / "models"
    models.mkdir()
    for (task, name), predictor in predictors.items():
        joblib.dump(predictor, models / f"{task}_{name}.joblib")
    joblib.dump({"not": "a model"}, models / "recurrence_fong.joblib")
    return tmp_path / "features.parquet", tmp_path / "split.csv", models, len(test)


def test_explain_writes_every_model_and_keeps_patient_ids(tmp_path, stage_inputs, capsys):
    features, split, models, n_test = stage_inputs
    out = tmp_path / "explain"
    summary = run_explain(models, features, split, out, SETTINGS, track=True)
    assert "tracking skipped" in capsys.readouterr().out  # no mlflow_runs.json in the models folder
    assert {t: set(m) for t, m in summary.items()} == {t: set(training.MODELS[t]) for t in training.TASKS}
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    assert summary["recurrence"]["xgb_aft"]["quantity"] == explain.QUANTITY_AFT_RISK
    assert summary["recurrence"]["coxnet"]["top_features"][0]["feature"] == RECURRENCE_DRIVER
    for task in training.TASKS:
        for name in training.MODELS[task]:
            folder = out / task / name
            values = pd.read_csv(folder / "shap_values.csv", dtype={PATIENT_ID: str}, keep_default_na=False)
            assert len(values) == n_test and "failed-case" not in set(values[PATIENT_ID])
            assert {HIGHEST_ID, LOWEST_ID} <= set(values[PATIENT_ID])
            importance = pd.read_csv(folder / "importance.csv")
            assert set(values.columns[1:]) == set(importance["feature"])
            top = pd.read_csv(folder / "top_contributions.csv", dtype={PATIENT_ID: str}, keep_default_na=False)
            assert list(top.columns[:4]) == [PATIENT_ID, "feature_1", "value_1", "shap_1"] and top.shape[1] == 10
            share = json.loads((folder / "attribution_share.json").read_text())
            assert sum(share.values()) == pytest.approx(1.0)
            for png in ("beeswarm.png", "bar.png"):
                assert (folder / png).stat().st_size > 5000
            assert len(list(folder.glob("dependence_*.png"))) == 2
            index = pd.read_csv(folder / "waterfalls" / "index.csv", dtype=str, keep_default_na=False)
            assert len(index) == 2
            for file in index["file"]:
                assert file.isascii() and "/" not in file and (folder / "waterfalls" / file).stat().st_size > 5000
    index = pd.read_csv(out / "response" / "logistic" / "waterfalls" / "index.csv", dtype=str, keep_default_na=False)
    assert list(index[PATIENT_ID]) == [HIGHEST_ID, LOWEST_ID]
    assert list(index["file"]) == [f"{safe_file_stem(HIGHEST_ID)}.png", f"{safe_file_stem(LOWEST_ID)}.png"]
    assert summary["response"]["logistic"]["waterfall_patients"] == [HIGHEST_ID, LOWEST_ID]


def test_safe_file_stems_are_ascii_and_distinct():
    assert safe_file_stem("CRLM-001_a") == "CRLM-001_a"
    stems = {safe_file_stem(x) for x in ("Pätient-ü1", "P_tient-_1", "site/A 7", "site_A_7", "..", "")}
    assert len(stems) == 6 and all(
        stem and stem.isascii() and "/" not in stem and stem not in (".", "..") for stem in stems
    )


def test_explain_logs_each_model_into_its_training_run(tmp_path, stage_inputs, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import mlflow
    from mlflow import MlflowClient

    from pipeline import tracking

    features, split, all_models, _ = stage_inputs
    models = tmp_path / "one_model"  # a single model keeps the test short
    models.mkdir()
    (models / "recurrence_coxnet.joblib").write_bytes((all_models / "recurrence_coxnet.joblib").read_bytes())
    tracking.configure(tmp_path)
    with mlflow.start_run(run_name="recurrence/coxnet") as run:
        pass
    (models / "mlflow_runs.json").write_text(json.dumps({"recurrence/coxnet": run.info.run_id}))
    settings = {**SETTINGS, "waterfalls": 0, "dependence_plots": 0}
    summary = run_explain(models, features, split, tmp_path / "explain", settings, repo_root=tmp_path)
    assert list(summary) == ["recurrence"] and list(summary["recurrence"]) == ["coxnet"]
    logged = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "shap")}
    assert {"shap/shap_values.csv", "shap/importance.csv", "shap/beeswarm.png", "shap/attribution_share.json"} <= logged
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_bad_settings_and_mismatched_split_are_named(tmp_path, stage_inputs):
    features, split, models, _ = stage_inputs
    with pytest.raises(SettingsError, match="unknown key 'waterfall'; did you mean 'waterfalls'"):
        run_explain(models, features, split, tmp_path / "x", {"waterfall": 2}, track=False)
    frame = pd.read_csv(split, dtype=str, keep_default_na=False)
    frame.loc[0, PATIENT_ID] = "ghost-17"
    frame.to_csv(tmp_path / "other_split.csv", index=False)
    with pytest.raises(ValueError, match="ghost-17"):
        run_explain(models, features, tmp_path / "other_split.csv", tmp_path / "x", SETTINGS, track=False)
    with pytest.raises(FileNotFoundError, match="run crlm train first"):
        run_explain(tmp_path / "nothing", features, split, tmp_path / "x", SETTINGS, track=False)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    joblib.dump({"not": "a model"}, wrong / "response_xgb.joblib")
    with pytest.raises(ValueError, match="response_xgb.joblib: expected a ResponsePredictor"):
        run_explain(wrong, features, split, tmp_path / "x", SETTINGS, track=False)
    table = pd.read_parquet(features).drop(columns=[RECURRENCE_DRIVER])
    table.to_parquet(tmp_path / "old_features.parquet")
    with pytest.raises(ValueError, match=f"recurrence_coxnet.joblib: .*{RECURRENCE_DRIVER}.*crlm featurize"):
        run_explain(models, tmp_path / "old_features.parquet", split, tmp_path / "x", SETTINGS, track=False)
