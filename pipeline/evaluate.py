"""``crlm evaluate``: validate trained models on another cohort (thin stage script).

``--model`` is a folder written by ``crlm train --models`` (every predictor in it is
evaluated) or an MLflow model URI such as ``models:/crlm-recurrence@champion``. The metrics
file has the same shape as the training run's: {task: {model: {metric: {value, ci_low, ci_high}}}}.
Baseline scores are calibrated on the training split the models carry (never on this cohort).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from features.schema import OK, PATIENT_ID, STATUS
from models import comparison, evaluation, novelty, outcomes, registry, training
from models.predictor import OUT_OF_DISTRIBUTION, novelty_frame
from models.registry import (  # their home
    NOTES,
    PRIMARY_METRIC,
    RUNS_FILE,
    is_model_uri,
    training_run_id,
)
from pipeline.settings import load_params

SUMMARY_FILE = "summary.json"


def load_predictors(model: str, tracking_uri: str | None = None) -> dict[str, dict[str, Any]]:
    """{task: {name: predictor}}: every predictor of a models folder, or the one of an MLflow
    model URI (looked up in ``tracking_uri``; `models.registry.load_models`)."""
    found: dict[str, dict[str, Any]] = {}
    for loaded in registry.load_models(model, tracking_uri, every=True, one_per_task=False):
        found.setdefault(loaded.task, {})[loaded.name] = loaded.predictor
    return found


def run_evaluate(
    model: str,
    features: Path,
    out: Path,
    params_path: Path,
    truth: Path | None = None,
    repo_root: Path | None = None,
    track: bool = True,
) -> dict:
    """Evaluate every predictor of ``model`` on the cohort in ``features``; write metrics.json.

    Each task is evaluated on the status-ok patients whose outcome for it is known; a task
    whose outcome the cohort lacks is skipped and listed under ``notes`` with the reason. A
    baseline score is evaluated only where it is computable (``evaluate.baseline_min_coverage``)
    in the training reference and in this cohort.
    """
    from pipeline import tracking
    from pipeline.paths import REPO_ROOT

    params = load_params(params_path, "evaluate").evaluate
    uri = tracking.tracking_uri(repo_root if repo_root is not None else REPO_ROOT)
    reference_name, min_coverage = params.reference, params.baseline_min_coverage
    full = pd.read_parquet(features)
    truth_table = pd.read_csv(truth, dtype={PATIENT_ID: str}) if truth is not None else None
    metrics: dict[str, Any] = {}
    notes: dict[str, Any] = {"data": "synthetic" if truth_table is not None else "real cohort", "skipped_tasks": {}}
    loaded = load_predictors(model, uri)  # a models:/ URI is looked up in the project's store
    if track:
        tracking.use_store(repo_root if repo_root is not None else REPO_ROOT)
    for task, predictors in loaded.items():
        ok = full.loc[full[STATUS] == OK] if STATUS in full else full
        reason = training.outcome_missing_reason(ok, task)
        if reason is not None:
            notes["skipped_tasks"][task] = reason
            print(f"{task}: not evaluated: {reason}")
            continue
        table = training.usable_patients(full, (task,))
        table = table.loc[training.has_outcome(table, task)].reset_index(drop=True)
        reference = next(iter(predictors.values())).reference
        availability = training.baseline_availability(
            {"training": reference, "this cohort's": table}, task, min_coverage
        )
        baselines = [b for b, status in availability.items() if status.available]
        delta_reference = reference_name if reference_name in baselines else ""
        predictions = comparison.task_predictions(task, predictors, reference, table, truth_table, baselines=baselines)
        build = outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome
        metrics[task] = evaluation.evaluate_task(
            task,
            build(reference),
            build(table),
            predictions,
            reference=delta_reference,
            n_resamples=params.bootstrap,
            seed=params.seed,
            jobs=params.jobs,
        )
        notes[task] = {
            "novelty": novelty_on_cohort(task, predictors, table, predictions, build(table)),
            "n_patients": len(table),
            "reference": delta_reference or None,
            "baselines": {b: status.as_dict() for b, status in availability.items()},
        }
        for status in availability.values():
            if status.reason:
                print(f"{task}: {status.reason}")
        for name, entry in notes[task]["novelty"].items():
            if entry.get("value") is not None:
                groups = "; ".join(
                    f"{g} {e['metric']} " + (f"{e['value']:.3f}" if e["value"] is not None else e["note"])
                    for g, e in entry["by_flag"].items()
                )
                print(
                    f"{task}/{name}: novelty flags {entry['n_flagged']}/{entry['n_scored']} ({entry['value']:.1%}); {groups}"
                )
    if not metrics:
        raise ValueError(
            f"{features}: no task of {model} can be evaluated on this cohort: "
            + "; ".join(f"{t}: {r}" for t, r in notes["skipped_tasks"].items())
        )
    metrics[NOTES] = notes
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True))
    summary = _summary(metrics, model)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, allow_nan=True))
    if track:
        _log_to_training_run(model, metrics, summary, features, notes)
    counts = ", ".join(f"{t} on {notes[t]['n_patients']} patients" for t in metrics if t != NOTES)
    print(f"evaluated {counts} of {features}; wrote {out / 'metrics.json'}")
    return metrics


def novelty_on_cohort(
    task: str, predictors: dict[str, Any], table: pd.DataFrame, predictions: dict[str, Any], y
) -> dict[str, Any]:
    """Per model: the share of this cohort's patients its novelty model flags, and the model's
    discrimination among the flagged and the unflagged patients (docs/novelty.md)."""
    out: dict[str, Any] = {}
    for name, predictor in predictors.items():
        if getattr(predictor, "novelty", None) is None:
            out[name] = {"value": None, "note": "no novelty model (trained before novelty existed); retrain"}
            continue
        flags = novelty_frame(predictor, training.model_frame(table, predictor.feature_columns))[OUT_OF_DISTRIBUTION]
        pred = predictions[name]
        score = pred.risk if task == training.RECURRENCE else pred.probability
        out[name] = {
            **novelty.flag_rate(flags),
            "threshold": predictor.novelty.threshold,
            "by_flag": novelty.discrimination_by_flag(task, flags.to_numpy(object), score, y),
        }
    return out


def _summary(metrics: dict[str, Any], model: str) -> dict[str, Any]:
    """Flat keys: the chosen model's primary metric per task (``ext_c``, ``ext_auc``), 3 decimals.

    The chosen model is the one ``crlm train`` chose (``best.json`` in a models folder), or the
    registered model's.
    """
    chosen = registry.read_best(Path(model)) if not is_model_uri(model) else {}
    summary: dict[str, Any] = {}
    for task, task_metrics in metrics.items():
        if task == NOTES:
            continue
        fitted = [m for m in registry.MODELS[task] if m in task_metrics]
        best = chosen.get(task) if chosen.get(task) in task_metrics else (fitted[0] if len(fitted) == 1 else None)
        if best is None:
            continue
        primary = PRIMARY_METRIC[task]
        key = f"ext_{'c' if primary == 'c_index' else 'auc'}"  # short: dvc exp show fits 120 columns
        value = task_metrics[best][primary]["value"]
        summary[key] = round(value, 3) if isinstance(value, float) and math.isfinite(value) else value
    return summary


def _log_to_training_run(
    model: str, metrics: dict[str, Any], summary: dict[str, Any], features: Path, notes: dict[str, Any]
) -> None:
    """The external figures as ``external.*`` metrics of the run that trained the models (one row in the UI)."""
    from mlflow import MlflowClient

    from pipeline import tracking

    run_id = training_run_id(model)
    if run_id is None:
        print(
            "external metrics not logged to MLflow: the training run is not recorded "
            f"({RUNS_FILE} missing in {model}, or the model has no run)"
        )
        return
    client = MlflowClient()
    for task, task_metrics in metrics.items():
        if task == NOTES:
            continue
        primary = PRIMARY_METRIC[task]
        for name, entry in task_metrics.items():
            for key in (primary, *(k for k in entry if k.startswith("delta_"))):
                for part in ("value", "ci_low", "ci_high"):
                    value = entry[key][part]
                    if isinstance(value, float) and math.isfinite(value):
                        suffix = "" if part == "value" else f"_{part}"
                        client.log_metric(run_id, f"external.{task}.{name}.{key}{suffix}", value)
        client.set_tag(run_id, f"external.{task}.n_patients", str(notes[task]["n_patients"]))
        for name, entry in notes[task].get("novelty", {}).items():
            if entry.get("value") is not None:
                client.log_metric(run_id, f"external.{task}.{name}.novelty_flag_rate", entry["value"])
                client.log_metric(run_id, f"external.{task}.{name}.novelty_flag_rate_n_flagged", entry["n_flagged"])
    for key, value in summary.items():
        if isinstance(value, float) and math.isfinite(value):
            client.log_metric(run_id, key, value)
    n = max((notes[t]["n_patients"] for t in metrics if t != NOTES), default=0)
    tracking.log_dataset(
        features, f"{Path(features).parent.name}/{Path(features).name} (external)", "external", n, run_id=run_id
    )
    print(f"external metrics logged to MLflow run {run_id}")
