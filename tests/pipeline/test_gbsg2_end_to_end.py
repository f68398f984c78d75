"""The README's worked example on a real cohort no one here made (issue 10, item 9).

GBSG2 (scikit-survival's German Breast Cancer Study Group 2; 686 patients, recurrence-free
survival, 8 covariates) through the commands a user types: validate, featurize --no-images,
train --task recurrence, predict, explain and report. Clinical only, recurrence only, no
RECIST, no lesions, no CRLM score computable: the report must say "real cohort", show no oracle
and no invented baseline, and every patient must be accounted for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from tests.conftest import SMALL_TRAIN
from tests.pipeline.test_validate import write_gbsg2_csv

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "configs" / "mappings" / "gbsg2.yaml"
PARAMS = {
    "train": SMALL_TRAIN,
    "evaluate": {"bootstrap": 10, "seed": 0, "reference": "fong", "baseline_min_coverage": 0.8},
    "explain": {"top_k": 3, "dependence_plots": 2, "waterfalls": 2, "background_size": 50, "seed": 0},
}


@pytest.fixture(scope="module")
def worked_example(tmp_path_factory):
    root = tmp_path_factory.mktemp("gbsg2_e2e")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.chdir(root)  # a store named by URI keeps artifacts under ./mlruns: not the repository's
    csv = write_gbsg2_csv(root / "gbsg2.csv")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    codes = {
        "validate": main(["validate", "--cohort", str(csv), "--mapping", str(MAPPING)]),
        "featurize": main(
            [
                "featurize",
                "--cohort",
                str(csv),
                "--mapping",
                str(MAPPING),
                "--no-images",
                "--out",
                str(root / "features.parquet"),
            ]
        ),
        "train": main(
            [
                "train",
                "--features",
                str(root / "features.parquet"),
                "--out",
                str(root / "train"),
                "--task",
                "recurrence",
                "--mapping",
                str(MAPPING),
                "--params",
                str(params),
            ]
        ),
        "predict": main(
            [
                "predict",
                "--cohort",
                str(csv),
                "--mapping",
                str(MAPPING),
                "--model",
                str(root / "train" / "models"),
                "--out",
                str(root / "predict"),
            ]
        ),
        "explain": main(
            [
                "explain",
                "--models",
                str(root / "train" / "models"),
                "--features",
                str(root / "features.parquet"),
                "--split",
                str(root / "train" / "split.csv"),
                "--out",
                str(root / "explain"),
                "--params",
                str(params),
            ]
        ),
        "report": main(
            [
                "report",
                "--train",
                str(root / "train"),
                "--explain",
                str(root / "explain"),
                "--features",
                str(root / "features.parquet"),
                "--out",
                str(root / "report.html"),
            ]
        ),
    }
    yield root, codes
    monkeypatch.undo()


def test_every_command_succeeds(worked_example):
    _, codes = worked_example
    assert codes == dict.fromkeys(codes, 0)


def test_the_model_is_registered_under_the_cohorts_name(worked_example):
    from mlflow import MlflowClient

    root, _ = worked_example
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    names = {m.name for m in client.search_registered_models()}
    assert names == {"gbsg2-recurrence"}


def test_metrics_hold_the_models_only_and_say_why_there_is_no_baseline(worked_example):
    root, _ = worked_example
    metrics = json.loads((root / "train" / "metrics.json").read_text())
    assert set(metrics) == {"recurrence", "notes"}
    assert set(metrics["recurrence"]) <= {"coxnet", "xgb_cox", "xgb_aft"}
    assert metrics["notes"]["data"] == "real cohort"
    for name in ("fong", "oslo", "game", "tbs"):
        status = metrics["notes"]["recurrence"]["baselines"][name]
        assert not status["available"] and "missing for" in status["reason"]


def test_every_patient_is_predicted_with_the_cohorts_identifiers(worked_example):
    root, _ = worked_example
    predicted = pd.read_csv(root / "predict" / "predictions.csv", dtype={"patient_id": str})
    sheet = pd.read_csv(root / "gbsg2.csv", dtype={"patient_id": str})
    assert predicted["patient_id"].tolist() == sheet["patient_id"].tolist()
    assert (predicted["status"] == "ok").all()
    assert predicted["risk"].notna().all()
    assert not any(c.startswith("response") for c in predicted.columns if predicted[c].notna().any())


def test_the_report_says_real_cohort_and_invents_nothing(worked_example):
    root, _ = worked_example
    html = (root / "report.html").read_text()
    text = re.sub(r"<[^>]+>", " ", html)
    assert "real cohort" in text and "synthetic cohort (simulated" not in text
    assert "oracle (true" not in text and "share of the oracle" not in text
    assert "baseline (clinical score)" not in text  # no row for an invented baseline
    assert "difference in" not in text  # no delta column against a missing score
    assert "fong: not available" in text  # but it says why there is none
