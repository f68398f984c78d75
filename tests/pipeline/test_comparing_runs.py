"""Comparing runs (issue 15): what the MLflow runs table and `dvc metrics show` / `dvc exp show` get."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.train import SUMMARY_FILE

TERMINAL = 120


@pytest.fixture()
def tracked(tracked_training):
    """One tracked training run and its external evaluation, in a temporary SQLite store
    (tests/conftest.py, shared with tests/pipeline/test_train.py), as the current store."""
    tracking.configure(tracked_training["root"])
    return tracked_training


def test_the_experiment_opens_on_the_runs_table(tracked):
    experiment = MlflowClient().get_experiment(tracked["parent"].info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND


def test_the_parent_run_lasts_the_whole_training_and_carries_the_headline(tracked):
    parent, metrics = tracked["parent"], tracked["metrics"]
    cv = json.loads((tracked["root"] / "reports" / "cv.json").read_text())
    fitting = sum(task["seconds"] for task in cv.values())
    assert parent.info.start_time >= tracked["started"]
    assert (parent.info.end_time - parent.info.start_time) / 1000 >= fitting  # opened before the fits
    data = parent.data
    for task, primary in (("recurrence", "c_index"), ("response", "roc_auc")):
        best = metrics["notes"][task]["chosen"]
        assert data.tags[f"{task}.model"] == best
        assert data.metrics[f"{task}.{primary}"] == pytest.approx(metrics[task][best][primary]["value"])
        assert f"{task}.{primary}_ci_low" in data.metrics and f"{task}.{primary}_ci_high" in data.metrics
        delta = "delta_c_vs_fong" if task == "recurrence" else "delta_auc_vs_fong"
        assert data.metrics[f"{task}.{delta}"] == pytest.approx(metrics[task][best][delta]["value"])
        assert 0 < data.metrics[f"{task}.oracle_gain_share"] < 1.5  # synthetic: the oracle is known
        # the external site's figures are on the same row
        external_best = tracked["external"][task][best][primary]["value"]
        assert data.metrics[f"external.{task}.{best}.{primary}"] == pytest.approx(external_best)


def test_datasets_are_logged_as_inputs_with_patients_and_site(tracked):
    run = MlflowClient().get_run(tracked["parent"].info.run_id)
    inputs = {d.tags[0].value if d.tags else "": d for d in run.inputs.dataset_inputs}
    contexts = {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training", "evaluation", "external"}
    for entry in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in entry.tags}
        assert int(tags["n_patients"]) > 0
        assert entry.dataset.digest and entry.dataset.source
    training_input = next(
        d for d in run.inputs.dataset_inputs if {t.key: t.value for t in d.tags}["mlflow.data.context"] == "training"
    )
    assert {t.key: t.value for t in training_input.tags}["site"] == "A"
    assert inputs


def test_the_registered_models_belong_to_the_parent_run(tracked):
    """The Models column of the runs table shows the models logged by that run."""
    parent = tracked["parent"]
    client = MlflowClient()
    logged = client.search_logged_models(
        experiment_ids=[parent.info.experiment_id], filter_string=f"source_run_id = '{parent.info.run_id}'"
    )
    assert len(logged) == 2
    for name in ("crlm-recurrence", "crlm-response"):
        version = client.get_model_version_by_alias(name, "candidate")
        assert version.run_id == parent.info.run_id
        assert version.source.removeprefix("models:/") in {m.model_id for m in logged}


def test_summary_file_has_the_headline_keys(tracked):
    summary = json.loads((tracked["root"] / "reports" / SUMMARY_FILE).read_text())
    assert set(summary) == {"rec_model", "rec_c", "rec_dc", "resp_model", "resp_auc", "resp_dauc"}
    metrics = tracked["metrics"]
    best = metrics["notes"]["recurrence"]["chosen"]
    assert summary["rec_c"] == round(metrics["recurrence"][best]["c_index"]["value"], 3)
    external = json.loads((tracked["root"] / "external" / SUMMARY_FILE).read_text())
    assert set(external) == {"ext_c", "ext_auc"}


def test_dvc_metrics_show_on_the_summaries_fits_a_terminal(tracked, tmp_path):
    shutil.copy(tracked["root"] / "reports" / SUMMARY_FILE, tmp_path / "train_summary.json")
    shutil.copy(tracked["root"] / "external" / SUMMARY_FILE, tmp_path / "external_summary.json")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": str(TERMINAL)}
    dvc = [sys.executable, "-m", "dvc"]  # make test does not put .venv/bin on PATH
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    for name in ("train_summary.json", "external_summary.json"):
        shown = subprocess.run(
            [*dvc, "metrics", "show", name], cwd=tmp_path, check=True, env=env, capture_output=True, text=True
        ).stdout
        width = max(len(line) for line in shown.splitlines())
        assert width <= TERMINAL, shown
        assert "…" not in shown


def test_a_dvc_lock_rewritten_by_repro_does_not_make_the_run_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "dvc.lock").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    commit = tracking.git_revision(tmp_path)
    (tmp_path / "dvc.lock").write_text("b\n")  # other bytes of the same data on another CPU
    assert tracking.git_revision(tmp_path) == commit
    (tmp_path / "code.py").write_text("x = 2\n")  # a user's change
    assert tracking.git_revision(tmp_path) == f"{commit}-dirty"


def test_evaluate_finds_a_registered_model_in_a_fresh_process(tracked, tmp_path):
    """`crlm evaluate --model models:/...` configures the project's store itself (it used to look in ./mlflow.db)."""
    root = tracked["root"]
    code = (
        "from pathlib import Path; from pipeline.evaluate import run_evaluate; "
        f"run_evaluate('models:/crlm-response@candidate', Path({str(root / 'external.parquet')!r}), "
        f"Path({str(tmp_path / 'out')!r}), Path({str(root / 'params.yaml')!r}), repo_root=Path({str(root)!r}), "
        "track=False)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["response"]
    assert not (tmp_path / "mlflow.db").exists()


def test_crlm_evaluate_finds_the_champion_in_a_fresh_process_from_another_folder(tracked, tmp_path):
    """Issue 12: `crlm evaluate --model models:/crlm-recurrence@champion` (as the README says),
    with tracking on, run from a folder that is not the project: the model is looked up in the
    project's store (here the fixture's), and nothing is created where the command runs (it used
    to report the model not found and leave an empty ./mlflow.db)."""
    root = tracked["root"]
    tracking.configure(root)
    tracking.promote("crlm-recurrence", 1)
    out = tmp_path / "elsewhere"
    out.mkdir()
    code = (
        "import sys; from pathlib import Path; import pipeline.cli as cli; "
        f"cli.REPO_ROOT = Path({str(root)!r}); "
        "sys.exit(cli.main(['evaluate', '--model', 'models:/crlm-recurrence@champion', "
        f"'--features', {str(root / 'external.parquet')!r}, '--out', 'external', "
        f"'--params', {str(root / 'params.yaml')!r}]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "external metrics logged to MLflow run" in done.stdout
    assert set(json.loads((out / "external" / "metrics.json").read_text())) == {"recurrence", "notes"}
    assert sorted(p.name for p in out.iterdir()) == ["external"]  # no ./mlflow.db, no ./mlruns


def test_explain_takes_a_registered_model_through_the_same_loader(tracked, tmp_path):
    from pipeline.explain import run_explain

    root = tracked["root"]
    summary = run_explain(
        "models:/crlm-response@candidate",
        root / "train.parquet",
        root / "reports" / "split.csv",
        tmp_path / "explain",
        {"waterfalls": 1, "dependence_plots": 1},
        repo_root=root,
    )
    assert list(summary) == ["response"]
    assert list(summary["response"]) == [tracked["metrics"]["notes"]["response"]["chosen"]]
