"""Settings files: unknown keys are errors that name the nearest valid key."""

from __future__ import annotations

import copy

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
    with pytest.raises(settings.SettingsError, match=r"recurrence: unknown key 'weibul_shape'; did you mean 'weibull_shape'"):
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
