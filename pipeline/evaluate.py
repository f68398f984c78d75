"""``crlm evaluate``: validate trained models on another cohort (thin stage script).

``--model`` is a folder written by ``crlm train --models`` (every predictor in it is
evaluated) or an MLflow model URI such as ``models:/crlm-recurrence@champion``. The metrics
file has the same shape as the training run's: {task: {model: {metric: {value, ci_low, ci_high}}}}.
Baseline scores are calibrated on the training split the models carry (never on this cohort).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import yaml

from features.schema import PATIENT_ID
from models import comparison, evaluation, outcomes, training
from models.predictor import RecurrencePredictor
from pipeline.train import usable_patients


def load_predictors(model: str) -> dict[str, dict[str, Any]]:
    """{task: {name: predictor}} from a models folder or an MLflow model URI."""
    found: dict[str, dict[str, Any]] = {}
    if "://" in model or model.startswith("models:/") or model.startswith("runs:/"):
        import mlflow

        predictor = mlflow.pyfunc.load_model(model).unwrap_python_model().predictor
        task = training.RECURRENCE if isinstance(predictor, RecurrencePredictor) else training.RESPONSE
        return {task: {predictor.name: predictor}}
    folder = Path(model)
    files = sorted(folder.glob("*.joblib"))
    if not files:
        raise FileNotFoundError(f"no trained predictors (*.joblib) in {folder}; run crlm train --models {folder}")
    for path in files:
        task, _, name = path.stem.partition("_")
        found.setdefault(task, {})[name] = joblib.load(path)
    return found


def run_evaluate(model: str, features: Path, out: Path, params_path: Path, truth: Path | None = None) -> dict:
    """Evaluate every predictor of ``model`` on the cohort in ``features``; write metrics.json."""
    params = yaml.safe_load(Path(params_path).read_text())["evaluate"]
    table = usable_patients(pd.read_parquet(features))
    truth_table = pd.read_csv(truth, dtype={PATIENT_ID: str}) if truth is not None else None
    metrics: dict[str, Any] = {}
    for task, predictors in load_predictors(model).items():
        reference = next(iter(predictors.values())).reference
        predictions = comparison.task_predictions(task, predictors, reference, table, truth_table)
        build = outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome
        metrics[task] = evaluation.evaluate_task(task, build(reference), build(table), predictions, reference="fong",
                                                 n_resamples=int(params["bootstrap"]), seed=int(params["seed"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True))
    print(f"evaluated {', '.join(metrics)} on {len(table)} patients of {features}; wrote {out / 'metrics.json'}")
    return metrics
