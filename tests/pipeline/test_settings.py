"""Settings files: unknown keys are errors that name the nearest valid key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline import settings
from pipeline.world import World, load_world
from tests.conftest import REPO


@pytest.fixture()
def raw_world() -> dict:
    return yaml.safe_load((REPO / "configs" / "world.yaml").read_text())


def test_shipped_world_file_loads(world):
    assert set(world.sites) >= {"A", "B"}
    assert world.recurrence.weibull_shape > 0


def test_misspelt_key_names_the_nearest_valid_key(raw_world):
    bad = copy.deepcopy(raw_world)
    bad["recurrence"]["weibul_shape"] = bad["recurrence"].pop("weibull_shape")
    with pytest.raises(
        settings.SettingsError, match=r"recurrence: unknown key 'weibul_shape'; did you mean 'weibull_shape'"
    ):
        settings.build(World, bad, "world.yaml")


def test_nested_misspelt_key_names_its_path(raw_world):
    bad = copy.deepcopy(raw_world)
    bad["sites"]["A"]["noise_sd"] = bad["sites"]["A"].pop("noise_sd_hu")
    with pytest.raises(settings.SettingsError, match=r"sites\.A: unknown key 'noise_sd'; did you mean 'noise_sd_hu'"):
        settings.build(World, bad, "world.yaml")


def test_missing_key_is_named(raw_world):
    bad = copy.deepcopy(raw_world)
    del bad["clinical"]["cea_sigma"]
    with pytest.raises(settings.SettingsError, match="missing key.*cea_sigma"):
        settings.build(World, bad, "world.yaml")


def test_text_where_a_number_is_expected_is_rejected(raw_world):
    bad = copy.deepcopy(raw_world)
    bad["clinical"]["cea_sigma"] = "two"
    with pytest.raises(settings.SettingsError, match=r"clinical\.cea_sigma: expected a number, got 'two'"):
        settings.build(World, bad, "world.yaml")


def test_probabilities_must_sum_to_one(raw_world):
    bad = copy.deepcopy(raw_world)
    bad["clinical"]["ecog_probabilities"] = [0.5, 0.3, 0.1]
    with pytest.raises(settings.SettingsError, match="ecog_probabilities must be non-negative and sum to 1"):
        settings.build(World, bad, "world.yaml")


def test_unknown_site_lists_the_configured_ones(world):
    with pytest.raises(settings.SettingsError, match="unknown site 'C'; configured sites: A, B"):
        world.site("C")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(settings.SettingsError, match="settings file not found"):
        load_world(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- params.yaml

import subprocess  # noqa: E402
import sys  # noqa: E402

from pipeline.cli import build_parser, main  # noqa: E402
from pipeline.inputs import ExtractionConfig  # noqa: E402
from pipeline.settings import Params, load_params  # noqa: E402


@pytest.fixture()
def project_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _write(tmp_path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _train(tmp_path, params_path, capsys) -> tuple[int, str]:
    """crlm train up to the params check (the features file need not exist: params come first)."""
    code = main(
        [
            "train",
            "--features",
            str(tmp_path / "features.parquet"),
            "--out",
            str(tmp_path / "out"),
            "--params",
            str(params_path),
            "--no-tracking",
        ]
    )
    return code, capsys.readouterr().err


def test_every_block_of_the_project_params_file_is_validated(project_params):
    params = load_params(REPO / "params.yaml", "train", "evaluate", "explain")
    assert sorted(project_params) == sorted(f for f in Params.__pydantic_fields__)
    assert params.synthesize.train.n == project_params["synthesize"]["train"]["n"]
    assert params.extract.jobs == project_params["extract"]["jobs"]
    assert params.train.select_among == "imaging" and params.train.k_features == (20, 40, 80)
    assert params.evaluate.reference == "fong" and params.explain.top_k == 5


def test_a_misspelt_train_key_stops_crlm_train_naming_the_nearest(tmp_path, project_params, capsys):
    """The defect: `train: {sed: 3}` trained with another seed, silently (the block was a dict)."""
    project_params["train"]["sed"] = project_params["train"].pop("seed")
    path = _write(tmp_path, project_params)
    code, err = _train(tmp_path, path, capsys)
    assert code == 2
    assert f"crlm train: error: {path}: train: unknown key 'sed'; did you mean 'seed'?" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        (
            {"xgb_cox": {"max_dept": [1, 2]}},
            "train.grids: xgb_cox: unknown option 'max_dept' of XGBCoxSurvival; did you mean 'max_depth'?",
        ),
        ({"xgb_cx": {"max_depth": [1]}}, "train.grids: unknown model 'xgb_cx'; did you mean 'xgb_cox'?"),
        ({"logistic": {"C": []}}, "train.grids: logistic.C: an empty list"),
    ],
)
def test_a_misspelt_model_option_is_an_error_not_a_silently_dropped_model(
    tmp_path, project_params, capsys, grids, message
):
    project_params["train"]["grids"] = grids
    code, err = _train(tmp_path, _write(tmp_path, project_params), capsys)
    assert code == 2 and message in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["train"].pop("seed"), "train: missing key(s) seed; add it"),
        (lambda p: p["train"].update(cv_folds="five"), "train.cv_folds: expected a whole number, got 'five'"),
        (lambda p: p["train"].update(test_fraction=30), "train.test_fraction: 30.0; expected a share between 0 and 1"),
        (
            lambda p: p["train"].update(select_among="imagin"),
            "train.select_among: 'imagin' is not allowed; did you mean 'imaging'?",
        ),
        (lambda p: p["evaluate"].update(boostrap=1), "evaluate: unknown key 'boostrap'; did you mean 'bootstrap'?"),
        (
            lambda p: p["synthesize"]["train"].update(sede=1),
            "synthesize.train: unknown key 'sede'; did you mean 'seed'?",
        ),
        (lambda p: p["explain"].update(topk=1), "explain: unknown key 'topk'; did you mean 'top_k'?"),
        (lambda p: p.pop("evaluate"), "no 'evaluate' block; copy it from the project's params.yaml"),
        (lambda p: p.update(trian=p.pop("train")), "unknown key 'trian'; did you mean 'train'?"),
    ],
)
def test_a_bad_params_file_is_a_clean_cli_error_naming_file_and_key(tmp_path, project_params, capsys, change, message):
    change(project_params)
    path = _write(tmp_path, project_params)
    code, err = _train(tmp_path, path, capsys)
    assert code == 2, err
    assert err.startswith(f"crlm train: error: {path}") and message in err
    assert "Traceback" not in err and "KeyError" not in err


def test_a_missing_key_is_no_traceback_in_a_fresh_crlm_process(tmp_path, project_params):
    del project_params["evaluate"]["seed"]
    path = _write(tmp_path, project_params)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "evaluate",
            "--model",
            str(tmp_path),
            "--features",
            str(tmp_path / "f.parquet"),
            "--out",
            str(tmp_path / "o"),
            "--params",
            str(path),
            "--no-tracking",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"crlm evaluate: error: {path}: evaluate: missing key(s) seed; add it (see docs/settings.md)"
    )


def test_explain_reads_its_block_through_the_same_check(tmp_path, project_params, capsys):
    project_params["explain"]["waterfall"] = project_params["explain"].pop("waterfalls")
    path = _write(tmp_path, project_params)
    code = main(
        [
            "explain",
            "--models",
            str(tmp_path),
            "--features",
            str(tmp_path / "f.parquet"),
            "--split",
            str(tmp_path / "split.csv"),
            "--out",
            str(tmp_path / "x"),
            "--params",
            str(path),
        ]
    )
    assert code == 2
    assert f"{path}: explain: unknown key 'waterfall'; did you mean 'waterfalls'?" in capsys.readouterr().err


def test_a_params_file_without_an_explain_block_takes_the_documented_defaults(tmp_path, project_params):
    del project_params["explain"]
    assert load_params(_write(tmp_path, project_params), "explain").explain.waterfalls == 4


# --------------------------------------------------------------------------- command-line names


@pytest.mark.parametrize("command", ["extract", "predict"])
def test_radiomics_names_the_pyradiomics_file_and_params_is_a_deprecated_alias(command, capsys):
    base = [command, "--cohort", "c.csv", "--out", "o"] + (["--model", "m"] if command == "predict" else [])
    new = build_parser().parse_args([*base, "--radiomics", "r.yaml"])
    assert new.radiomics == Path("r.yaml") and capsys.readouterr().err == ""
    old = build_parser().parse_args([*base, "--params", "r.yaml"])
    assert old.radiomics == Path("r.yaml")
    assert "warning: --params is deprecated here; use --radiomics" in capsys.readouterr().err


def test_the_deprecated_alias_still_reaches_the_extraction(tmp_path, capsys):
    bad = tmp_path / "not_radiomics.yaml"
    bad.write_text("setting: {binWidth: -5}\nfeatureClass: {nonsense: null}\n")
    code = main(["extract", "--cohort", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"), "--params", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--params is deprecated here; use --radiomics" in err
    assert f"{bad}: not a valid pyradiomics parameter file" in err


def test_params_on_train_evaluate_explain_report_is_params_yaml_in_the_working_directory():
    parser = build_parser()
    for argv in (
        ["train", "--features", "f", "--out", "o"],
        ["evaluate", "--model", "m", "--features", "f", "--out", "o"],
        ["explain", "--features", "f", "--split", "s", "--out", "o"],
        ["report"],
    ):
        assert parser.parse_args(argv).params == Path("params.yaml")  # relative: the working directory's


def test_every_dvc_yaml_command_parses_with_the_current_names(capsys):
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    import re

    for name, stage in dvc["stages"].items():
        command = re.sub(r"\$\{[^}]+\}", "1", stage["cmd"]).split()
        assert command[0] == "crlm", name
        args = build_parser().parse_args(command[1:])
        assert capsys.readouterr().err == "", f"{name}: {stage['cmd']}"  # no deprecated alias
        if getattr(args, "params", None) is not None and args.command in ("train", "evaluate", "explain", "report"):
            assert args.params == Path("params.yaml"), name
            assert "--params params.yaml" in stage["cmd"], f"{name}: pass the params file explicitly"


# --------------------------------------------------------------------------- relative paths


def test_cache_dir_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    config = ExtractionConfig(
        crop_margin_mm=25.0,
        cache_dir="data/cache/radiomics",
        resample_mask=False,
        min_lesion_voxels=2,
        aggregation=("largest",),
    )
    monkeypatch.chdir(tmp_path)
    assert config.cache_location() == tmp_path / "data" / "cache" / "radiomics"
    assert config.cache_location("elsewhere") == tmp_path / "elsewhere"
    assert config.cache_location("s3://bucket/cache") == "s3://bucket/cache"


# --------------------------------------------------------------------------- the report's params


def test_the_report_shows_the_params_file_it_was_given_not_the_workspace_one(tmp_path, capsys):
    """The defect: under `dvc exp run --temp` the report showed the workspace's params.yaml."""
    train = tmp_path / "train"
    train.mkdir()
    (train / "metrics.json").write_text("{}")
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["seed"] = 987654321
    (experiment / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "report.html"
    code = main(
        [
            "report",
            "--train",
            str(train),
            "--out",
            str(out),
            "--params",
            str(experiment / "params.yaml"),
            "--no-tracking",
        ]
    )
    assert code == 0, capsys.readouterr().err
    html = out.read_text(encoding="utf-8")
    assert "987654321" in html and str(experiment / "params.yaml") in html


def test_a_label_override_is_checked_like_the_labels_file(tmp_path, capsys):
    cohort = tmp_path / "c.csv"
    cohort.write_text("patient_id,image,mask\n")
    code = main(["validate", "--cohort", str(cohort), "--images", "--liver-label", "2"])
    assert code == 2
    assert (
        "--liver-label/--lesion-label: liver and lesion labels must be distinct positive integers"
        in capsys.readouterr().err
    )
