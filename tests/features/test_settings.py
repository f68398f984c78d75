"""The one settings mechanism (pydantic, strict): messages name the place, the key and the fix."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import field

import pytest

from features import settings
from features.settings import SettingsError, settings_class
from tests.conftest import REPO


@settings_class
class Scanner:
    spacing_mm: tuple[float, float, float]
    noise_sd_hu: float
    name: str = "ct"

    def __post_init__(self) -> None:
        if self.noise_sd_hu < 0:
            raise ValueError(f"noise_sd_hu must not be negative, got {self.noise_sd_hu}")


@settings_class
class Site:
    scanners: dict[str, Scanner]
    enabled: bool = True
    jobs: int = 1
    codes: tuple[str, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)


GOOD = {"scanners": {"A": {"spacing_mm": [1, 1, 2.5], "noise_sd_hu": 12}}}


def test_valid_settings_get_their_defaults_and_lists_become_tuples():
    site = settings.build(Site, GOOD, "site.yaml")
    assert site.scanners["A"] == Scanner(spacing_mm=(1.0, 1.0, 2.5), noise_sd_hu=12.0, name="ct")
    assert (site.enabled, site.jobs, site.codes, site.roles) == (True, 1, (), {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**GOOD, "enabeld": False}, r"^site\.yaml: unknown key 'enabeld'; did you mean 'enabled'\?$"),
        (
            {"scanners": {"A": {"spacing_mm": [1, 1, 2], "noise_sd": 3}}},
            r"site\.yaml: scanners\.A: unknown key 'noise_sd'; did you mean 'noise_sd_hu'\?",
        ),
        ({"scanners": {"A": {"spacing_mm": [1, 1, 2]}}}, r"site\.yaml: scanners\.A: missing key\(s\) noise_sd_hu"),
        (
            {"scanners": {"A": {"spacing_mm": [1, 1, 2], "noise_sd_hu": "12"}}},
            r"scanners\.A\.noise_sd_hu: expected a number, got '12'",
        ),  # no text read as a number
        (
            {"scanners": {"A": {"spacing_mm": [1, 1, 2], "noise_sd_hu": True}}},
            r"scanners\.A\.noise_sd_hu: expected a number, got True",
        ),  # nor a yes/no
        ({**GOOD, "jobs": 2.5}, r"site\.yaml: jobs: expected a whole number, got 2\.5"),
        ({**GOOD, "enabled": "yes"}, r"enabled: expected true or false, got 'yes'"),
        ({**GOOD, "codes": "A"}, r"codes: expected a list, got 'A'"),
        (
            {"scanners": {"A": {"spacing_mm": [1, 1], "noise_sd_hu": 1}}},
            r"scanners\.A\.spacing_mm: expected 3 values, got 2: \[1, 1\]",
        ),
        (
            {"scanners": {"A": {"spacing_mm": [1, 1, 1], "noise_sd_hu": -1}}},
            r"scanners\.A: noise_sd_hu must not be negative, got -1",
        ),
        ({**GOOD, "roles": {True: "liver"}}, r"site\.yaml: roles: key True: YAML reads unquoted yes/no.*quote"),
        ({**GOOD, "codes": [dt.date(2024, 1, 1)]}, r"codes\[0\]: datetime\.date\(2024, 1, 1\) is a date.*quote it"),
        ([1, 2], r"site\.yaml: expected a mapping, got \[1, 2\]"),
    ],
)
def test_every_problem_names_the_file_the_key_path_and_the_fix(data, message):
    with pytest.raises(SettingsError, match=message):
        settings.build(Site, data, "site.yaml")


def test_all_problems_of_a_file_are_reported_at_once():
    with pytest.raises(SettingsError) as info:
        settings.build(Site, {**GOOD, "jobs": "two", "enabeld": True}, "site.yaml")
    assert "jobs: expected a whole number" in str(info.value)
    assert "unknown key 'enabeld'" in str(info.value)


def test_a_key_far_from_every_valid_one_lists_them():
    with pytest.raises(SettingsError, match="unknown key 'zzz'; valid keys: codes, enabled, jobs, roles, scanners"):
        settings.build(Site, {**GOOD, "zzz": 1}, "site.yaml")


def test_an_override_is_checked_like_the_file():
    site = settings.build(Site, GOOD, "site.yaml")
    scanner = settings.replace(site.scanners["A"], "--noise", noise_sd_hu=3.0)
    assert scanner.noise_sd_hu == 3.0 and scanner.spacing_mm == (1.0, 1.0, 2.5)
    with pytest.raises(SettingsError, match="--noise: noise_sd_hu must not be negative"):
        settings.replace(site.scanners["A"], "--noise", noise_sd_hu=-3.0)


def test_files_that_are_missing_or_not_yaml_are_named(tmp_path):
    with pytest.raises(SettingsError, match="settings file not found: .*nope.yaml"):
        settings.load(Site, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scanners: [unclosed\n")
    with pytest.raises(SettingsError, match="bad.yaml: not valid YAML"):
        settings.load(Site, bad)


def test_features_use_the_mechanism_without_importing_pipeline():
    code = (
        "import sys, features.mapping, features.imaging, models.training, models.evaluation, models.explain\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pipeline'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"
