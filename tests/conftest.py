"""Shared fixtures: the repository's own configuration files, and the expensive set-up built once
per test run (session scope) and shared by the modules that need it:

- ``synthetic_cohort``: one small synthetic cohort (CT phantoms, masks, clinical and truth tables).
- ``tracked_training``: one tracked ``crlm train`` run on a clinical-only synthetic cohort and its
  external evaluation, in a temporary MLflow store (metrics, plots, models folder, registry).

These folders are read-only for tests: a test that changes files copies the folder first
(``shutil.copytree`` into its ``tmp_path``). A test whose meaning needs another cohort (bad
inputs, tiny or real cohorts) builds its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from features.imaging import LabelRoles
from pipeline.world import World, load_labels, load_world

REPO = Path(__file__).resolve().parent.parent

# The fewest hyper-parameter candidates that still run every model family through the grid
# search (one point per grid, one k, three folds): for tests of the pipeline's plumbing, not of
# model quality (tests/models/test_training.py keeps its own grid for that).
SMALL_TRAIN = {
    "seed": 3,
    "cv_folds": 3,
    "correlation_threshold": 0.95,
    "k_features": [8],
    "test_fraction": 0.3,
    "jobs": 1,
    "grids": {
        "coxnet": {"alphas": [[0.05]]},
        "xgb_cox": {"max_depth": [1]},
        "xgb_aft": {"max_depth": [1]},
        "logistic": {"C": [0.1]},
        "xgb": {"max_depth": [1]},
    },
}
# Light radiomics settings (pyradiomics' format) for tests that extract: original image, three classes.
LIGHT_RADIOMICS = {
    "setting": {
        "binWidth": 25,
        "resampledPixelSpacing": [2.0, 2.0, 2.0],
        "interpolator": "sitkBSpline",
        "padDistance": 5,
        "label": 1,
    },
    "imageType": {"Original": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None},
}
# Phantom cohort: site B's scanner grid, the same four patients test_predict.py was written for.
COHORT = {"n": 4, "seed": 5, "site": "B"}


@pytest.fixture(scope="session")
def world() -> World:
    return load_world(REPO / "configs" / "world.yaml")


@pytest.fixture(scope="session")
def labels() -> LabelRoles:
    return load_labels(REPO / "configs" / "labels.yaml")


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory, world, labels) -> Path:
    """One synthetic cohort written by ``crlm synthesize``'s code (``COHORT``); read-only."""
    from pipeline import cohort

    out = tmp_path_factory.mktemp("synthetic_cohort")
    cohort.write_cohort(out, **COHORT, world=world, labels=labels, jobs=1, progress=False)
    return out


TRACKED_PARAMS = {
    "train": SMALL_TRAIN,
    "evaluate": {"bootstrap": 20, "seed": 0, "reference": "fong", "baseline_min_coverage": 0.8},
}


@pytest.fixture(scope="session")
def tracked_training(tmp_path_factory, world) -> dict:
    """One tracked training run (site A, 240 patients) and its external evaluation (site B, 120),
    in a temporary SQLite store under ``root``; read-only (copy ``root`` to change files)."""
    import mlflow

    from models import training
    from pipeline import tracking
    from pipeline.evaluate import run_evaluate
    from pipeline.train import run_train
    from tests.models.test_training import cohort_with_measured_traits

    root = tmp_path_factory.mktemp("tracked_training")
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    for name, seed, n in (("train", 31, 240), ("external", 32, 120)):
        table, truth = cohort_with_measured_traits(world, n=n, seed=seed)
        table["site"] = "A" if name == "train" else "B"
        table.to_parquet(root / f"{name}.parquet")
        truth.to_csv(root / f"{name}_truth.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(TRACKED_PARAMS))
    started = time.time() * 1000
    metrics = run_train(
        root / "train.parquet",
        root / "reports",
        root / "models",
        root / "params.yaml",
        training.TASKS,
        truth=root / "train_truth.csv",
        repo_root=root,
    )
    external = run_evaluate(
        str(root / "models"),
        root / "external.parquet",
        root / "external",
        root / "params.yaml",
        truth=root / "external_truth.csv",
        repo_root=root,
    )
    tracking.configure(root)
    parent = mlflow.search_runs(filter_string="tags.mlflow.runName = 'train'", output_format="list")[0]
    yield {"root": root, "metrics": metrics, "external": external, "parent": parent, "started": started}
    if previous is not None:
        os.environ["MLFLOW_TRACKING_URI"] = previous
