"""The project's own wiring: DVC stages, parameters, privacy settings."""

from __future__ import annotations

import configparser
import re

import yaml

from tests.conftest import REPO


def _lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def test_every_parameter_used_in_dvc_yaml_exists_in_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    dvc = (REPO / "dvc.yaml").read_text()
    used = set(re.findall(r"\$\{([^}]+)\}", dvc))
    assert used, "dvc.yaml interpolates no parameters"
    for name in used:
        if not name.startswith("item."):  # matrix variables of the stage itself
            _lookup(params, name.strip())
    for stage in yaml.safe_load(dvc)["stages"].values():
        for name in stage.get("params", []):
            _lookup(params, name)


def test_the_train_stage_passes_what_the_default_train_robustness_reads():
    """2026-12-06: params.yaml set augment: site and the train stage had no --perturbed: dvc repro
    stopped at train (with a clear message). The stage must pass, and depend on, every input the
    default setting reads, and crlm perturb must write the site rows it trains on."""
    from models.robustness import augment_chain
    from pipeline.settings import load_params

    params = load_params(REPO / "params.yaml", "train", "robustness")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    settings = [params.train.robustness.for_task(task) for task in ("recurrence", "response")]
    if any(s.icc_threshold is not None for s in settings):
        assert "--icc data/features/train/icc.csv" in stage["cmd"]
        assert "data/features/train/icc.csv" in stage["deps"]
    chains = {augment_chain(s.augment) for s in settings} - {None}
    if chains:
        assert "--perturbed data/features/train/perturbed.parquet" in stage["cmd"]
        assert "data/features/train/perturbed.parquet" in stage["deps"]
    if "site" in chains:
        assert params.robustness.site_scanners > 0


def test_dvc_analytics_is_off():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config["core"]["analytics"] == "false"


def test_generated_data_and_mlruns_contents_are_ignored():
    ignore = (REPO / ".gitignore").read_text()
    for pattern in ("/data/synthetic/*", "/mlruns/*", ".venv/"):
        assert pattern in ignore
