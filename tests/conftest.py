"""Shared fixtures: the repository's own configuration files."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.imaging import LabelRoles
from pipeline.world import World, load_labels, load_world

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def world() -> World:
    return load_world(REPO / "configs" / "world.yaml")


@pytest.fixture(scope="session")
def labels() -> LabelRoles:
    return load_labels(REPO / "configs" / "labels.yaml")
