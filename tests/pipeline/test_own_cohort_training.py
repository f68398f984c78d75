"""crlm train on cohorts that are not the synthetic one: only some outcomes, no clinical score,
very few patients, no censoring (issue 10). Each case ends with a result or a message that names
the number and the fix, never a traceback from inside a library."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sksurv.datasets import load_gbsg2

from features import schema as s
from features.patient_table import patient_feature_table
from models import evaluation, training
from models.evaluation import ResponsePrediction, SurvivalPrediction
from pipeline import synthesis
from pipeline.cli import main
from pipeline.train import run_train
from tests.conftest import SMALL_TRAIN

PARAMS = {
    "train": SMALL_TRAIN,
    "evaluate": {"bootstrap": 10, "seed": 0, "reference": "fong", "baseline_min_coverage": 0.8},
}
GBSG2_COVARIATES = ("tsize", "pnodes", "progrec", "estrec", "tgrade", "menostat", "horTh")


def gbsg2_table(n: int = 300) -> pd.DataFrame:
    """The first ``n`` patients of GBSG2 (scikit-survival, n = 686) as a featurized clinical-only
    table: no RECIST, no score item (a subset keeps the suite fast)."""
    X, y = load_gbsg2()
    X, y = X.iloc[:n].reset_index(drop=True), y[:n]
    table = pd.DataFrame(
        {
            s.PATIENT_ID: [f"gbsg2-{i:03d}" for i in range(len(X))],
            "status": "ok",
            "reason": "",
            s.AGE: X["age"].to_numpy(float),
            s.RECURRENCE_EVENT: pd.array(y["cens"].astype(int), dtype="Int64"),
            s.RECURRENCE_MONTHS: y["time"] / 30.4375,
        }
    )
    for column in GBSG2_COVARIATES:
        table[column] = X[column].astype(str).to_numpy() if X[column].dtype.name == "category" else X[column].to_numpy()
    return table


@pytest.fixture()
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(PARAMS))
    return path


def synthetic_clinical(
    world, n: int, seed: int, drop: tuple[str, ...] = (), blank: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A synthetic clinical-only table, featurized after dropping or blanking columns."""
    clinical, _ = synthesis.simulate_cohort(n, seed=seed, site="A", world=world)
    clinical = clinical.drop(columns=list(drop))
    for column in blank:
        clinical[column] = np.nan
    return patient_feature_table(clinical, pd.Series("ok", index=clinical.index))


def test_recurrence_only_cohort_trains_recurrence_and_says_why_response_was_skipped(tmp_path, params):
    features = tmp_path / "gbsg2.parquet"
    gbsg2_table().to_parquet(features)
    metrics = run_train(
        features, tmp_path / "out", None, params, training.TASKS, track=False, covariates=GBSG2_COVARIATES
    )
    assert set(metrics) == {"recurrence", "notes"}
    assert s.RECIST in metrics["notes"]["skipped_tasks"]["response"]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(written["recurrence"]) <= set(training.MODELS["recurrence"])  # no invented baseline, no oracle
    assert not any(key.startswith("delta_") for model in written["recurrence"].values() for key in model)
    fong = written["notes"]["recurrence"]["baselines"]["fong"]
    assert not fong["available"] and "missing for 210/210 patients" in fong["reason"]
    assert "no paired difference" in written["notes"]["recurrence"]["reference_note"]
    assert written["notes"]["data"] == "real cohort"
    assert sorted(p.name for p in (tmp_path / "out" / "models").glob("*.joblib")) == [
        f"recurrence_{m}.joblib" for m in sorted(training.MODELS["recurrence"]) if m in metrics["recurrence"]
    ]


def test_asking_for_a_task_whose_outcome_is_absent_is_an_error_naming_the_column(tmp_path, params, capsys):
    features = tmp_path / "gbsg2.parquet"
    gbsg2_table().to_parquet(features)
    code = main(
        [
            "train",
            "--features",
            str(features),
            "--out",
            str(tmp_path / "out"),
            "--task",
            "response",
            "--params",
            str(params),
            "--no-tracking",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--task response" in err and s.RECIST in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("recist, expected", [(np.nan, "blank"), ("PR", "one class")])
def test_blank_or_constant_response_is_skipped_before_any_model_is_written(
    tmp_path, params, world, recist, expected, capsys
):
    table = synthetic_clinical(world, 120, seed=5)
    table[s.RECIST] = recist
    features = tmp_path / "cohort.parquet"
    table.to_parquet(features)
    code = main(
        [
            "train",
            "--features",
            str(features),
            "--out",
            str(tmp_path / "explicit"),
            "--task",
            "response",
            "--params",
            str(params),
            "--no-tracking",
        ]
    )
    assert code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "explicit").exists()
    metrics = run_train(features, tmp_path / "out", None, params, training.TASKS, track=False)
    assert set(metrics) == {"recurrence", "notes"}
    assert expected in metrics["notes"]["skipped_tasks"]["response"]


@pytest.mark.parametrize(
    "drop, blank, unavailable",
    [
        ((s.CEA,), (), {"fong", "oslo", "game"}),
        ((), (s.CEA,), {"fong", "oslo", "game"}),
        ((s.MONTHS_TO_SURGERY,), (), {"oslo"}),
    ],
)
def test_a_score_with_a_missing_item_is_left_out_with_the_reason(tmp_path, params, world, drop, blank, unavailable):
    table = synthetic_clinical(world, 150, seed=6, drop=drop, blank=blank)
    features = tmp_path / "cohort.parquet"
    table.to_parquet(features)
    metrics = run_train(features, tmp_path / "out", None, params, ("recurrence",), track=False)
    baselines = metrics["notes"]["recurrence"]["baselines"]
    assert {b for b, status in baselines.items() if not status["available"]} == unavailable
    for name in unavailable:
        assert name not in metrics["recurrence"]
        missing = drop[0] if drop else blank[0]
        assert f"{missing} missing for" in baselines[name]["reason"]
    assert "tbs" in metrics["recurrence"]
    if "fong" in unavailable:
        assert not any(k.startswith("delta_") for k in metrics["recurrence"]["coxnet"])


def test_ten_patients_stop_before_fitting_with_the_numbers_and_the_fix(tmp_path, params, world, capsys):
    features = tmp_path / "cohort.parquet"
    synthetic_clinical(world, 10, seed=8).to_parquet(features)
    code = main(
        ["train", "--features", str(features), "--out", str(tmp_path / "out"), "--params", str(params), "--no-tracking"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "Fix:" in err and "patients" in err
    assert not (tmp_path / "out").exists()


def test_a_small_cohort_with_many_imaging_columns_trains_with_adapted_settings(tmp_path, params, world):
    table = synthetic_clinical(world, 40, seed=9)
    rng = np.random.default_rng(0)
    noise = pd.DataFrame(rng.normal(size=(len(table), 300)), columns=[f"rad_noise_{i}" for i in range(300)])
    features = tmp_path / "cohort.parquet"
    pd.concat([table, noise], axis=1).to_parquet(features)
    settings = {
        **PARAMS,
        "train": {**PARAMS["train"], "cv_folds": 5, "k_features": [20, 40, 80], "select_among": "imaging"},
    }
    params.write_text(yaml.safe_dump(settings))
    try:
        metrics = run_train(features, tmp_path / "out", None, params, training.TASKS, track=False)
    except ValueError as err:  # a clear stop is acceptable; it must name the number and the fix
        assert "Fix:" in str(err)
        return
    for task in set(metrics) - {"notes"}:
        notes = metrics["notes"][task]
        assert notes["adaptations"], "a 40-patient cohort cannot run the default grid unchanged"
        assert notes["chosen"] in metrics[task]


def test_a_cohort_where_everyone_recurred_trains_and_says_what_it_could_not_draw(tmp_path, params, world):
    table = synthetic_clinical(world, 120, seed=10)
    table[s.RECURRENCE_EVENT] = 1
    features = tmp_path / "cohort.parquet"
    table.to_parquet(features)
    metrics = run_train(features, tmp_path / "out", None, params, ("recurrence",), track=False)
    assert np.isfinite(metrics["recurrence"][metrics["notes"]["recurrence"]["chosen"]]["c_index"]["value"])


def test_calibration_warning_flags_a_survival_of_almost_zero_and_passes_a_calibrated_one():
    rng = np.random.default_rng(0)
    time = rng.exponential(40.0, 300)
    y = np.array(list(zip(time < 60, np.minimum(time, 60.0), strict=True)), dtype=[("event", bool), ("time", float)])
    times = np.arange(1.0, 61.0)
    risk = rng.normal(size=300)
    truth = np.exp(-times / 40.0)[None, :].repeat(300, axis=0)
    good = SurvivalPrediction(risk, times, truth)
    absurd = SurvivalPrediction(risk, times, np.full((300, 60), 5.5e-13))
    assert evaluation.calibration_warning("recurrence", {"calibration_slope_24m": {"value": 1.0}}, good, y) is None
    warning = evaluation.calibration_warning("recurrence", {"calibration_slope_24m": {"value": 0.09}}, absurd, y)
    assert "slope 0.09" in warning and "5.5e-13" in warning
    p = ResponsePrediction(np.full(100, 0.95))
    assert "0.95" in evaluation.calibration_warning(
        "response", {"calibration_slope": {"value": 1.0}}, p, np.r_[np.ones(30), np.zeros(70)]
    )


def test_train_cli_needs_a_name_to_register_and_writes_models_under_out(tmp_path, params, capsys):
    features = tmp_path / "gbsg2.parquet"
    gbsg2_table().to_parquet(features)
    code = main(["train", "--features", str(features), "--out", str(tmp_path / "out"), "--params", str(params)])
    assert code == 2 and "--name" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--features",
            str(features),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(params),
            "--no-tracking",
            "--jobs",
            "1",
        ]
    )
    assert code == 0
    assert (tmp_path / "out" / "models" / "best.json").is_file()


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("reference", "fnog", "allowed: fong"),
        ("baseline_min_coverage", 80, "between 0 and 1"),
        ("jobs", 0, "a positive number or -1"),
    ],
)
def test_a_misspelt_evaluate_setting_stops_before_any_fit(tmp_path, params, key, value, expected, capsys):
    settings = {**PARAMS, "evaluate": {**PARAMS["evaluate"], key: value}}
    params.write_text(yaml.safe_dump(settings))
    features = tmp_path / "gbsg2.parquet"
    gbsg2_table(60).to_parquet(features)
    code = main(
        ["train", "--features", str(features), "--out", str(tmp_path / "out"), "--params", str(params), "--no-tracking"]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"evaluate.{key}" in err and expected in err
    assert not (tmp_path / "out").exists()
