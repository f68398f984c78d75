"""``crlm train`` with ``train.robustness`` (ICC filter, augmentation) and ``crlm choose-robustness``."""

from __future__ import annotations

import json

import joblib
import pandas as pd
import pytest
import yaml

from models import registry, robustness, training
from pipeline.cli import main
from pipeline.train import run_train
from tests.conftest import REPO, SMALL_TRAIN
from tests.models.test_robustness import K_ICC, NOISE, SITE_SCANNERS, planted_cohort

EVALUATE = {"bootstrap": 20, "seed": 0, "reference": "fong", "baseline_min_coverage": 0.8}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, world):
    """The planted cohort's features.parquet, perturbed.parquet and icc.csv as crlm perturb writes them."""
    root = tmp_path_factory.mktemp("robust_inputs")
    table, perturbed, icc = planted_cohort(world, n=160)
    table.to_parquet(root / "features.parquet")
    perturbed.to_parquet(root / "perturbed.parquet")
    icc.to_csv(root / "icc.csv", index=False)
    return root


def _params(folder, robustness: dict) -> object:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {**SMALL_TRAIN, "robustness": robustness}, "evaluate": EVALUATE}))
    return path


def test_train_drops_unstable_columns_and_adds_training_copies(tmp_path, inputs, capsys):
    params = _params(tmp_path, {"icc_threshold": 0.75, "augment": True})
    metrics = run_train(
        inputs / "features.parquet",
        tmp_path / "out",
        None,
        params,
        training.TASKS,
        track=False,
        perturbed=inputs / "perturbed.parquet",
        icc=inputs / "icc.csv",
    )
    split = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"patient_id": str})
    n_train = int((split["split"] == "train").sum())
    assert set(metrics["notes"]["robustness"]) == set(training.TASKS)
    for task in training.TASKS:
        notes = metrics["notes"]["robustness"][task]
        assert notes["icc_filter"]["applied"]
        assert notes["icc_filter"]["kept"] == {"original": 2 + NOISE}
        assert notes["icc_filter"]["dropped"] == {"original": 2}
        fitted = notes["augmentation"]["fitted"]
        assert fitted["rows"] == K_ICC * fitted["of_training_patients"] and fitted["of_training_patients"] <= n_train
        held_out_rows = K_ICC * (len(split) - n_train)  # the icc-k rows of held-out patients
        assert notes["augmentation"]["rows_of_held_out_patients_not_used"] == held_out_rows
        assert notes["augmentation"]["chain"] == "icc"
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"]["robustness"]
    assert on_disk["response"]["icc_filter"]["dropped"] == {"original": 2}
    predictor = joblib.load(tmp_path / "out" / "models" / registry.predictor_file("response", "logistic"))
    assert not {"rad_unstable_rec", "rad_unstable_resp"} & set(predictor.feature_columns)
    assert "kept 8 of 10 imaging columns" in capsys.readouterr().out


def test_site_augmentation_adds_every_training_patients_site_copies(tmp_path, inputs, capsys):
    """augment: site takes the site-k rows: one copy per simulated scanner of every training
    patient whose outcome is known, none of a held-out patient."""
    params = _params(tmp_path, {"tasks": {"response": {"augment": "site"}}})
    metrics = run_train(
        inputs / "features.parquet", tmp_path / "out", None, params, ("response",), track=False,
        perturbed=inputs / "perturbed.parquet",
    )  # fmt: skip
    split = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"patient_id": str})
    notes = metrics["notes"]["robustness"]["response"]
    assert notes["augment"] == "site" and notes["augmentation"]["chain"] == "site"
    fitted = notes["augmentation"]["fitted"]
    assert fitted["rows"] == SITE_SCANNERS * fitted["of_training_patients"]
    n_held_out = int((split["split"] == "test").sum())
    assert notes["augmentation"]["rows_of_held_out_patients_not_used"] == SITE_SCANNERS * n_held_out
    assert "perturbed site-k copies" in capsys.readouterr().out


def test_site_augmentation_without_site_rows_names_the_fix(tmp_path, inputs, capsys):
    rows = pd.read_parquet(inputs / "perturbed.parquet")
    rows.loc[rows["perturbation"].str.startswith("icc-")].to_parquet(tmp_path / "perturbed.parquet")
    params = _params(tmp_path, {"augment": "site"})
    argv = ["train", "--features", str(inputs / "features.parquet"), "--out", str(tmp_path / "out")]
    argv += ["--params", str(params), "--no-tracking", "--perturbed", str(tmp_path / "perturbed.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "augment is site but" in err and "robustness.site_scanners" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_too_few_icc_patients_trains_without_the_filter_and_says_so(tmp_path, inputs, capsys):
    icc = pd.read_csv(inputs / "icc.csv").assign(n_patients=8)
    icc.to_csv(tmp_path / "icc.csv", index=False)
    params = _params(tmp_path, {"icc_threshold": 0.75, "augment": False})
    metrics = run_train(
        inputs / "features.parquet",
        tmp_path / "out",
        None,
        params,
        ("response",),
        track=False,
        icc=tmp_path / "icc.csv",
    )
    notes = metrics["notes"]["robustness"]["response"]
    assert not notes["icc_filter"]["applied"] and "augmentation" not in notes
    assert "8 training patients with lesions (at least 10 needed)" in notes["icc_filter"]["note"]
    assert "ICC filter not applied" in capsys.readouterr().out
    predictor = joblib.load(tmp_path / "out" / "models" / registry.predictor_file("response", "logistic"))
    assert "rad_unstable_resp" in predictor.feature_columns  # nothing was filtered


def test_robustness_without_its_input_is_a_clear_error(tmp_path, inputs, capsys):
    params = _params(tmp_path, {"icc_threshold": 0.75})
    argv = ["train", "--features", str(inputs / "features.parquet"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--params", str(params), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "icc_threshold is 0.75 but no ICC table" in err and "--icc" in err and "Traceback" not in err
    params = _params(tmp_path, {"augment": True})
    assert main([*argv, "--params", str(params), "--no-tracking", "--perturbed", str(tmp_path / "none.parquet")]) == 2
    assert "perturbed features not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_choose_robustness_writes_the_table_and_the_choice(tmp_path, inputs, capsys):
    params = _params(tmp_path, {})
    argv = ["choose-robustness", "--features", str(inputs / "features.parquet"), "--out", str(tmp_path / "choice")]
    argv += ["--perturbed", str(inputs / "perturbed.parquet"), "--icc", str(inputs / "icc.csv")]
    argv += ["--params", str(params), "--thresholds", "0.75", "--task", "response"]
    assert main([*argv, "--repeats", "0"]) == 2
    assert "--repeats: 0; expected at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's usage error
        main([*argv, "--jobs", "0"])
    assert "--jobs must be a positive number or -1" in capsys.readouterr().err
    assert main([*argv, "--tolerance", "0.05", "--jobs", "2"]) == 0
    table = pd.read_csv(tmp_path / "choice" / "robustness_choice.csv")
    assert len(table) == 6 and set(table["task"]) == {"response"}  # none / 0.75, each without, icc, site copies
    assert set(table["augment"].astype(str)) == {"False", "icc", "site"}
    assert set(table["family"]) <= set(registry.MODELS["response"])
    folds = pd.read_csv(tmp_path / "choice" / "robustness_choice_folds.csv")  # every score the summary comes from
    assert set(folds["family"]) == set(registry.MODELS["response"]) and len(folds) == 6 * 2 * 3 * (1 + SITE_SCANNERS)
    record = json.loads((tmp_path / "choice" / "robustness_choice.json").read_text())
    assert list(record["chosen"]["tasks"]) == ["response"]
    assert record["chosen"]["tasks"]["response"] != {"icc_threshold": None, "augment": False}, record["why"]
    assert "no external cohort" in record["data"] and "one standard error" in record["rule"]
    assert (table["n_site_scanners"] == SITE_SCANNERS).all()
    said = capsys.readouterr().out
    assert "      tasks:\n        response: {icc_threshold: " in said, said


def test_clinical_only_cohort_with_the_default_icc_threshold_trains_without_an_icc_table(tmp_path, inputs, capsys):
    """The default params.yaml sets an ICC threshold; a cohort without imaging columns (e.g. a
    clinical-only user cohort) has nothing to filter: it trains, and the note says why."""
    table = pd.read_parquet(inputs / "features.parquet")
    clinical = table.drop(columns=robustness.imaging_columns(table.columns))
    assert len(clinical.columns) < len(table.columns)
    clinical.to_parquet(tmp_path / "clinical.parquet")
    params = _params(tmp_path, {"icc_threshold": 0.5, "augment": False})
    metrics = run_train(tmp_path / "clinical.parquet", tmp_path / "out", None, params, ("response",), track=False)
    notes = metrics["notes"]["robustness"]["response"]
    assert notes["icc_filter"] is None and "no imaging columns" in notes["icc_filter_note"]
    assert "the ICC filter does not apply" in capsys.readouterr().out


def test_clinical_only_cohort_trains_under_the_default_params_robustness_without_perturbed_rows(
    tmp_path, inputs, capsys
):
    """params.yaml trains on the site copies since 2026-12-06; a clinical-only cohort has no
    imaging column to copy: it trains without --perturbed and --icc, and each task's note says why."""
    default = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["robustness"]
    assert any(entry.get("augment") for entry in default.get("tasks", {}).values()) or default.get("augment")
    table = pd.read_parquet(inputs / "features.parquet")
    table.drop(columns=robustness.imaging_columns(table.columns)).to_parquet(tmp_path / "clinical.parquet")
    params = _params(tmp_path, default)
    metrics = run_train(tmp_path / "clinical.parquet", tmp_path / "out", None, params, training.TASKS, track=False)
    for task in training.TASKS:
        note = metrics["notes"]["robustness"][task]["augmentation"]["note"]
        assert "no imaging columns in the feature table" in note and "no copies" in note
    assert "train.robustness.augment is site: no imaging columns" in capsys.readouterr().out


def test_imaging_cohort_with_the_default_site_copies_and_no_perturbed_rows_stops_with_the_fix(tmp_path, inputs):
    default = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["robustness"]
    params = _params(
        tmp_path, {**default, "tasks": {t: {**v, "icc_threshold": None} for t, v in default["tasks"].items()}}
    )
    with pytest.raises(ValueError, match=r"recurrence: .*augment is site.*--perturbed.*tasks\.recurrence\.augment"):
        run_train(inputs / "features.parquet", tmp_path / "out", None, params, training.TASKS, track=False)


def test_imaging_cohort_with_an_icc_threshold_and_no_icc_table_stops_with_the_fix(tmp_path, inputs):
    params = _params(tmp_path, {"icc_threshold": 0.5, "augment": False})
    with pytest.raises(ValueError, match="pass --icc data/features/train/icc.csv"):
        run_train(inputs / "features.parquet", tmp_path / "out", None, params, ("response",), track=False)
    # the default params.yaml sets it per task (recurrence): the message names that key too
    params = _params(tmp_path, {"tasks": {"recurrence": {"icc_threshold": 0.5}}})
    with pytest.raises(ValueError, match=r"recurrence: .*train\.robustness\.tasks\.recurrence\.icc_threshold"):
        run_train(inputs / "features.parquet", tmp_path / "out", None, params, ("recurrence",), track=False)


def test_a_per_task_setting_filters_that_task_only(tmp_path, inputs, capsys):
    """What crlm choose-robustness prints (``tasks:``) trains as it says: the response models
    lose the unstable columns, the recurrence models keep them."""
    params = _params(tmp_path, {"tasks": {"response": {"icc_threshold": 0.75}}})
    metrics = run_train(
        inputs / "features.parquet", tmp_path / "out", None, params, training.TASKS, track=False, icc=inputs / "icc.csv"
    )
    assert set(metrics["notes"]["robustness"]) == {"response"}
    said = capsys.readouterr().out
    assert "response: ICC filter" in said and "kept 8 of 10 imaging columns" in said and "recurrence: ICC" not in said
    for task, name in [("response", "logistic"), ("recurrence", registry.MODELS["recurrence"][0])]:
        columns = set(joblib.load(tmp_path / "out" / "models" / registry.predictor_file(task, name)).feature_columns)
        unstable = {"rad_unstable_rec", "rad_unstable_resp"} & columns
        assert unstable == (set() if task == "response" else {"rad_unstable_rec", "rad_unstable_resp"}), (task, columns)
