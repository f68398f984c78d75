"""``crlm train``: fit, evaluate on the held-out split, plot and track (thin stage script).

Writes under ``--out``: ``metrics.json`` ({task: {model: {metric: {value, ci_low, ci_high}}}}),
``plots/*.png`` with their data as ``plots/*.csv`` (DVC plots), ``predictions_test.csv``,
``cv.json`` (chosen hyper-parameters); fitted predictors under ``--models``. Every run is an
MLflow parent run with one nested run per model; the best model of each task is logged as a
pyfunc model and registered (alias ``candidate``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml

from features.schema import PATIENT_ID
from models import comparison, evaluation, outcomes, plots, training

REGISTERED = {training.RECURRENCE: "crlm-recurrence", training.RESPONSE: "crlm-response"}
BEST_FILE = "best.json"            # in the models folder: {task: best model name}
RUNS_FILE = "mlflow_runs.json"     # in the models folder: {"task/model": MLflow run id}
PRIMARY_METRIC = {training.RECURRENCE: "c_index", training.RESPONSE: "roc_auc"}


def usable_patients(table: pd.DataFrame) -> pd.DataFrame:
    """Patients with status ok and both outcomes known."""
    ok = table["status"] == "ok"
    ok &= outcomes.has_recurrence_outcome(table) & outcomes.has_response_outcome(table)
    return table.loc[ok].reset_index(drop=True)


def best_model(cv_scores: dict[str, float], task: str) -> str:
    """The fitted model with the best cross-validated score on the training split.

    Chosen without looking at the held-out patients, so the held-out metrics of the chosen
    model stay an honest estimate (picking the best test score would be optimistic).
    """
    fitted = [m for m in training.MODELS[task] if m in cv_scores]
    return max(fitted, key=lambda m: cv_scores[m])


def _source(table: pd.DataFrame, truth: pd.DataFrame | None) -> str:
    kind = "synthetic cohort" if truth is not None else "cohort"
    sites = ", ".join(sorted(map(str, table["site"].dropna().unique()))) if "site" in table else ""
    return f"{kind}{', site ' + sites if sites else ''}, held-out test split"


def _plots(task: str, fitted: training.FittedTask, table: pd.DataFrame, predictions: dict, out: Path,
           source: str, best: str) -> None:
    train, test = table.iloc[fitted.train_index], table.iloc[fitted.test_index]
    folder = out / "plots"
    if task == training.RECURRENCE:
        y_train, y_test = outcomes.recurrence_outcome(train), outcomes.recurrence_outcome(test)
        for name in (best, "fong"):
            pred = predictions[name]
            cut = plots.risk_group_cutpoints(_train_risk(name, fitted, table))
            fig, data = plots.kaplan_meier_by_risk_group(y_test["time"], y_test["event"], pred.risk, cut,
                                                         source=f"{source}; {name}")
            plots.save_plot(fig, data, folder, f"km_{task}_{'fong' if name == 'fong' else 'model'}")
        at24 = {n: p.survival[:, np.searchsorted(p.times, 24.0, side="right") - 1] for n, p in predictions.items()}
        fig, data = plots.survival_calibration(y_test["time"], y_test["event"], at24[best], 24.0,
                                               source=f"{source}; {best}")
        plots.save_plot(fig, data, folder, f"calibration_{task}")
        fig, data = plots.time_dependent_auc(y_train, y_test, {n: p.risk for n, p in predictions.items()},
                                             np.arange(6.0, 49.0, 3.0), source=source)
        plots.save_plot(fig, data, folder, f"td_auc_{task}")
        fig, data = plots.survival_decision_curve(y_test["time"], y_test["event"], 1 - at24[best], 24.0,
                                                  np.linspace(0.05, 0.95, 19), source=f"{source}; {best}")
        plots.save_plot(fig, data, folder, f"decision_{task}")
    else:
        y_test = outcomes.response_outcome(test)
        probabilities = {n: p.probability for n, p in predictions.items()}
        fig, data = plots.roc_curves(y_test, probabilities, source=source)
        plots.save_plot(fig, data, folder, f"roc_{task}")
        fig, data = plots.binary_calibration(y_test, probabilities[best], bins=5, source=f"{source}; {best}")
        plots.save_plot(fig, data, folder, f"calibration_{task}")
        fig, data = plots.decision_curve(y_test, {n: probabilities[n] for n in (best, "fong", "oracle")
                                                  if n in probabilities}, source=source)
        plots.save_plot(fig, data, folder, f"decision_{task}")


def _train_risk(name: str, fitted: training.FittedTask, table: pd.DataFrame) -> np.ndarray:
    train = table.iloc[fitted.train_index]
    if name in fitted.models:
        return np.asarray(fitted.models[name].predict(training.model_frame(train, fitted.features)), dtype=float)
    return training.baseline_scores(train, fitted.task)[name].fillna(0).to_numpy(float)


def _track(repo_root: Path, params: dict, features: Path, truth: Path | None, out: Path,
           metrics: dict, chosen: dict, fitted_tasks: dict, table: pd.DataFrame) -> dict[str, str]:
    """One MLflow parent run, a nested run per model, the best model per task registered."""
    from models.serving import PrognosisModel
    from pipeline import tracking

    tracking.configure(repo_root)
    run_ids: dict[str, str] = {}
    tags = {"data.features": tracking.file_digest(features), "data.source": _source(table, None)}
    if truth is not None:
        tags["data.truth"] = tracking.file_digest(truth)
        tags["data.kind"] = "synthetic"
    with tracking.pipeline_run("train", {k: params[k] for k in ("train", "evaluate") if k in params}, tags):
        for path in sorted(out.rglob("*")):
            if path.is_file():
                mlflow_artifact_dir = str(path.parent.relative_to(out)) if path.parent != out else None
                tracking.mlflow.log_artifact(str(path), artifact_path=mlflow_artifact_dir)
        for task, (fitted, predictors, best) in fitted_tasks.items():
            for name, model_metrics in metrics[task].items():
                with tracking.model_run(f"{task}/{name}", tags={"task": task, "model": name}) as run:
                    run_ids[f"{task}/{name}"] = run.info.run_id
                    if name in chosen[task]["params"]:
                        tracking.mlflow.log_params({k: str(v) for k, v in chosen[task]["params"][name].items()})
                        tracking.mlflow.log_metric("cv_score", chosen[task]["cv"][name])
                    tracking.log_metrics_with_ci(model_metrics)
                    if name == best:
                        example = table.iloc[fitted.test_index[:5]][[PATIENT_ID, *fitted.features]]
                        # Integer columns would make the signature refuse missing values later.
                        example = example.astype({c: float for c in fitted.features
                                                  if pd.api.types.is_integer_dtype(example[c])})
                        info = tracking.log_pyfunc_model(PrognosisModel(predictors[name]), "model", example,
                                                         registered_name=REGISTERED[task])
                        print(f"registered {REGISTERED[task]} version {info.registered_model_version} "
                              f"({name}) with alias candidate")
    return run_ids


def run_train(features: Path, out: Path, models_dir: Path, params_path: Path, tasks: tuple[str, ...],
              truth: Path | None = None, repo_root: Path | None = None, track: bool = True,
              covariates: tuple[str, ...] = ()) -> dict[str, Any]:
    """Fit and evaluate ``tasks`` on ``features``; return the metrics dictionary.

    ``covariates`` are extra columns (declared by a cohort mapping) used as they are.
    """
    params = yaml.safe_load(Path(params_path).read_text())
    settings, evaluate = params["train"], params["evaluate"]
    table = usable_patients(pd.read_parquet(features))
    truth_table = pd.read_csv(truth, dtype={PATIENT_ID: str}) if truth is not None else None
    train_index, test_index = training.split_patients(table, float(settings["test_fraction"]), int(settings["seed"]))
    source = _source(table, truth_table)
    out.mkdir(parents=True, exist_ok=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / RUNS_FILE).unlink(missing_ok=True)   # run ids of an earlier run would be wrong
    metrics: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    predictions_out = []
    fitted_tasks = {}
    for task in tasks:
        start = time.perf_counter()
        fitted = training.fit_task(table, task, train_index, test_index, settings, covariates=covariates,
                                   jobs=int(settings["jobs"]))
        predictors = comparison.build_predictors(fitted, table)
        predictions = comparison.task_predictions(task, predictors, table.iloc[train_index],
                                                  table.iloc[test_index], truth_table)
        test = table.iloc[test_index]
        y_train = (outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome)(
            table.iloc[train_index])
        y_test = (outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome)(test)
        metrics[task] = evaluation.evaluate_task(task, y_train, y_test, predictions, reference="fong",
                                                 n_resamples=int(evaluate["bootstrap"]), seed=int(evaluate["seed"]))
        best = best_model(fitted.cv_scores, task)
        chosen[task] = {"best": best, "params": fitted.best_params, "cv": fitted.cv_scores,
                        "n_features_in": len(fitted.features), "seconds": round(time.perf_counter() - start, 1)}
        _plots(task, fitted, table, predictions, out, source, best)
        for name, predictor in predictors.items():
            joblib.dump(predictor, models_dir / f"{task}_{name}.joblib")
        for name, pred in predictions.items():
            value = pred.risk if task == training.RECURRENCE else pred.probability
            predictions_out.append(pd.DataFrame({PATIENT_ID: test[PATIENT_ID].to_numpy(), "task": task,
                                                 "model": name, "prediction": value}))
        fitted_tasks[task] = (fitted, predictors, best)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True))
    (out / "cv.json").write_text(json.dumps(chosen, indent=2, default=str))
    pd.concat(predictions_out).to_csv(out / "predictions_test.csv", index=False)
    split = pd.DataFrame({PATIENT_ID: table[PATIENT_ID], "split": "train"})
    split.loc[test_index, "split"] = "test"
    split.to_csv(out / "split.csv", index=False)
    (models_dir / BEST_FILE).write_text(json.dumps({task: chosen[task]["best"] for task in tasks}, indent=2))
    # --- issue 11: the models remember their extraction settings (crlm predict checks them) ---
    from features.extraction import copy_record_to_models
    copy_record_to_models(features, models_dir)
    # --- end issue 11 ---
    if track:
        run_ids = _track(repo_root or Path.cwd(), params, features, truth, out, metrics, chosen, fitted_tasks, table)
        (models_dir / RUNS_FILE).write_text(json.dumps(run_ids, indent=2))
    for task in tasks:
        best = chosen[task]["best"]
        primary = PRIMARY_METRIC[task]
        print(f"{task}: best {best} {primary} {metrics[task][best][primary]['value']:.3f} "
              f"(fong {metrics[task]['fong'][primary]['value']:.3f}"
              + (f", oracle {metrics[task]['oracle'][primary]['value']:.3f}" if "oracle" in metrics[task] else "")
              + ")")
    return metrics

