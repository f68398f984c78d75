"""MLflow tracking and registry, always against a temporary store (never the repo's mlruns/)."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["cea_ng_ml", "n_lesions", "largest_diameter_mm"]
MODEL = "crlm-response-test"


class LogisticPredictor:
    """A fitted predictor in miniature (module level, so cloudpickle stores it by reference)."""

    def __init__(self, frame: pd.DataFrame, outcome: np.ndarray, c: float) -> None:
        self.feature_columns = list(FEATURES)
        self.model = LogisticRegression(C=c).fit(frame[FEATURES], outcome)

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        probability = self.model.predict_proba(features[self.feature_columns])[:, 1]
        return pd.DataFrame({"response_probability": probability})


def _isolate_environment(monkeypatch) -> None:
    # MLflow decides on telemetry when it is first imported: switch it off before that.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    # MLflow exports these when configured; set-then-delete makes monkeypatch remove them after.
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


@pytest.fixture
def tracking(monkeypatch):
    _isolate_environment(monkeypatch)
    return importlib.import_module("pipeline.tracking")


@pytest.fixture
def store(tracking, tmp_path, monkeypatch):
    """A configured temporary store: sqlite:///<tmp>/mlruns/mlflow.db, artifacts under <tmp>."""
    import mlflow

    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(tmp_path)  # anything MLflow resolves against the working directory lands here
    experiment_id = tracking.configure(root)
    yield root, experiment_id
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_tracking_uri_honours_mlflow_tracking_uri(tracking, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.invalid:5000")
    assert tracking.tracking_uri(tmp_path) == "http://tracking.invalid:5000"


def test_tracking_uri_defaults_to_absolute_sqlite_under_repo_root(tracking, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    relative = tracking.tracking_uri(Path("somewhere"))
    assert relative == f"sqlite:///{tmp_path.resolve()}/somewhere/mlruns/mlflow.db"
    assert relative.startswith("sqlite:////")


def test_configure_is_idempotent_and_keeps_artifacts_under_the_repo(tracking, store):
    from mlflow import MlflowClient

    root, experiment_id = store
    assert (root / "mlruns" / "mlflow.db").is_file()
    assert tracking.configure(root) == experiment_id
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.name == "crlm-prognosis"
    assert experiment.artifact_location == (root / "mlruns" / "artifacts" / "crlm-prognosis").as_uri()


def test_pipeline_run_tags_params_and_nested_model_runs_with_ci_metrics(tracking, store):
    from mlflow import MlflowClient

    root, experiment_id = store
    params = {"synthesize": {"train": {"n": 400, "seed": 7, "site": "A"}, "jobs": -1}}
    with tracking.pipeline_run("train", params=params, tags={"data.train": "abc123"}) as parent:
        child_ids = []
        for name, c_index in (("coxnet", 0.71), ("xgboost", 0.69)):
            with tracking.model_run(name) as child:
                child_ids.append(child.info.run_id)
                tracking.log_metrics_with_ci(
                    {
                        "c_index": {"value": c_index, "ci_low": c_index - 0.05, "ci_high": c_index + 0.05},
                        "calibration_slope": {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan},
                        "brier_12m": {"value": 0.18, "ci_low": math.nan, "ci_high": 0.2},
                    }
                )

    client = MlflowClient()
    run = client.get_run(parent.info.run_id)
    assert run.info.experiment_id == experiment_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["data.train"] == "abc123"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run.data.tags["git_revision"])
    assert run.data.params == {
        "synthesize.train.n": "400",
        "synthesize.train.seed": "7",
        "synthesize.train.site": "A",
        "synthesize.jobs": "-1",
    }

    children = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(child_ids)
    coxnet = client.get_run(child_ids[0])
    assert coxnet.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert coxnet.data.metrics == pytest.approx(
        {"c_index": 0.71, "c_index_ci_low": 0.66, "c_index_ci_high": 0.76, "brier_12m": 0.18, "brier_12m_ci_high": 0.2}
    )
    assert coxnet.data.params["undefined_metrics"] == (
        "calibration_slope,calibration_slope_ci_low,calibration_slope_ci_high,brier_12m_ci_low"
    )


def test_log_metrics_with_ci_rejects_an_unknown_key_naming_the_nearest(tracking):
    with pytest.raises(ValueError, match=r"unknown key 'ci_hi'.*did you mean 'ci_high'"):
        tracking.log_metrics_with_ci({"c_index": {"value": 0.7, "ci_hi": 0.8}})


def test_logging_outside_a_pipeline_run_raises_instead_of_starting_a_run(tracking):
    import mlflow

    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="pipeline_run"):
        with tracking.model_run("coxnet"):
            pass
    with pytest.raises(RuntimeError, match="pipeline_run"):
        tracking.log_metrics_with_ci({"c_index": {"value": 0.7}})


def test_flatten_params_respects_mlflow_value_limit(tracking):
    flat = tracking.flatten_params({"a": {"b": [1, 2], "c": {}}, "long": "x" * 7000}, prefix="p")
    assert flat["p.a.b"] == "[1, 2]"
    assert flat["p.a.c"] == "{}"
    assert len(flat["p.long"]) == 6000 and flat["p.long"].endswith("...")


def test_registry_versions_aliases_and_champion_round_trip(tracking, store, capsys):
    import mlflow
    from mlflow import MlflowClient

    from models.serving import PrognosisModel

    root, _ = store
    rng = np.random.default_rng(3)
    train = pd.DataFrame(
        {
            "cea_ng_ml": rng.lognormal(3, 1, 60),
            "n_lesions": rng.integers(1, 8, 60),
            "largest_diameter_mm": rng.normal(40, 12, 60),
        }
    )
    outcome = (train["n_lesions"] + rng.normal(0, 1.5, 60) > 4).astype(int).to_numpy()
    example = pd.DataFrame(
        {
            "patient_id": ["Zoë-01", "P-002", "P-003"],
            "cea_ng_ml": [250.0, 3.5, 40.0],
            "n_lesions": [4.0, 1.0, 2.0],
            "largest_diameter_mm": [62.0, 18.0, 35.0],
        }
    )
    first = PrognosisModel(LogisticPredictor(train, outcome, c=1.0))
    second = PrognosisModel(LogisticPredictor(train, outcome, c=0.01))

    client = MlflowClient()
    with tracking.pipeline_run("train", params={}, tags={}):
        with tracking.model_run("logistic"):
            info1 = tracking.log_pyfunc_model(first, "model", example, MODEL)
        assert int(info1.registered_model_version) == 1
        assert client.get_model_version_by_alias(MODEL, "candidate").version == 1
        with tracking.model_run("logistic-strong-penalty"):
            info2 = tracking.log_pyfunc_model(second, "model", example, MODEL)
    assert int(info2.registered_model_version) == 2
    assert client.get_model_version_by_alias(MODEL, "candidate").version == 2
    assert mlflow.get_logged_model(info1.model_id).artifact_location.startswith(root.as_uri())

    tracking.promote(MODEL, 1)
    assert client.get_model_version_by_alias(MODEL, "champion").version == 1
    assert client.get_model_version_by_alias(MODEL, "candidate").version == 2

    uri = f"models:/{MODEL}@champion"
    loaded = mlflow.pyfunc.load_model(uri)
    served = loaded.predict(example)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), first.predict(None, example).reset_index(drop=True))
    assert served["patient_id"].tolist() == ["Zoë-01", "P-002", "P-003"]
    assert not np.allclose(served["response_probability"], second.predict(None, example)["response_probability"])
    # patient_id is optional: the served model scores a table without it
    assert list(loaded.predict(example.drop(columns="patient_id")).columns) == ["response_probability"]

    model_info = mlflow.models.get_model_info(uri)
    inputs = {spec.name: spec for spec in model_info.signature.inputs.inputs}
    assert set(inputs) == {"patient_id", *FEATURES} and not inputs["patient_id"].required
    assert model_info.signature.outputs.input_names() == ["patient_id", "response_probability"]
    assert model_info.saved_input_example_info is not None
    # a table as `mlflow models predict -t csv` reads it: whole numbers come as int64; the served
    # model accepts them (a `double` signature refused int64) and gives the same numbers
    as_csv = example.copy()
    integer_like = [c for c in FEATURES if pd.api.types.is_numeric_dtype(as_csv[c])][:1]
    as_csv[integer_like] = as_csv[integer_like].round().astype("int64")
    expected = first.predict(None, as_csv.astype({c: float for c in integer_like}))
    pd.testing.assert_frame_equal(loaded.predict(as_csv).reset_index(drop=True), expected.reset_index(drop=True))

    assert tracking.run_promote(MODEL, 2, root) == 0
    assert "alias 'champion' moved from version 1 to version 2" in capsys.readouterr().out
    assert client.get_model_version_by_alias(MODEL, "champion").version == 2


def test_promote_missing_version_lists_existing_versions(tracking, store):
    from mlflow import MlflowClient

    client = MlflowClient()
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source="file:///nowhere", run_id=None)
    with pytest.raises(ValueError, match=rf"'{MODEL}' has no version 7; existing versions: 1, 2"):
        tracking.promote(MODEL, 7)
    with pytest.raises(ValueError, match=rf"no registered model named 'crlm-respons'.*'{MODEL}'"):
        tracking.promote("crlm-respons", 1)


def test_run_promote_without_a_store_says_so(tracking, tmp_path):
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        tracking.run_promote(MODEL, 1, tmp_path)


def test_git_revision_is_a_commit_hash_in_this_repo_and_unknown_outside(tracking, tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tracking.git_revision(REPO))
    assert tracking.git_revision(tmp_path) == "unknown"


def test_file_digest_is_short_and_follows_content(tracking, tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"one")
    digest = tracking.file_digest(folder / "a.dcm")
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    before = tracking.file_digest(folder)
    (folder / "b.dcm").write_bytes(b"two")
    assert tracking.file_digest(folder) != before
    with pytest.raises(FileNotFoundError):
        tracking.file_digest(tmp_path / "missing.csv")
