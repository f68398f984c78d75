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


def test_dvc_analytics_is_off():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert config["core"]["analytics"] == "false"


def test_generated_data_and_mlruns_contents_are_ignored():
    ignore = (REPO / ".gitignore").read_text()
    for pattern in ("/data/synthetic/*", "/mlruns/*", ".venv/"):
        assert pattern in ignore
