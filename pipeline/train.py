"""``crlm train``: fit, evaluate on the held-out split, plot and track (thin stage script).

Writes under ``--out``: ``metrics.json`` ({task: {model: {metric: {value, ci_low, ci_high}}}}),
``plots/*.png`` with their data as ``plots/*.csv`` (DVC plots), ``predictions_test.csv``,
``cv.json`` (chosen hyper-parameters); fitted predictors under ``--models``. Every run is an
MLflow parent run with one nested run per model; the best model of each task is logged as a
pyfunc model and registered (alias ``candidate``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from features.schema import OK, PATIENT_ID, PERTURBATION, SITE, STATUS
from models import comparison, evaluation, novelty, outcomes, plots, registry, robustness, training
from models.evaluation import EvaluateSettings
from models.predictor import OUT_OF_DISTRIBUTION, novelty_frame
from models.registry import (  # their home: models.registry
    BEST_FILE,
    NOTES,
    PRIMARY_METRIC,
    RUNS_FILE,
)
from models.training import TrainSettings
from pipeline.settings import as_dict, load_params

PIPELINE_NAME = "crlm"  # the pipeline's own registered models: crlm-recurrence, crlm-response
SUMMARY_FILE = "summary.json"  # headline numbers per task: what `dvc metrics show` / `dvc exp show` display


def registered_name(name: str, task: str) -> str:
    """The registry name of ``task``'s model in a run named ``name`` (``crlm`` -> ``crlm-recurrence``)."""
    return f"{name}-{task}"


def best_model(cv_scores: dict[str, float], task: str) -> str:
    """The fitted model with the best cross-validated score on the training split.

    Chosen without looking at the held-out patients, so the held-out metrics of the chosen
    model stay an honest estimate (picking the best test score would be optimistic).
    """
    fitted = [m for m in registry.MODELS[task] if m in cv_scores]  # preference order breaks ties
    return max(fitted, key=lambda m: cv_scores[m])


def _source(table: pd.DataFrame, truth: pd.DataFrame | None) -> str:
    kind = "synthetic cohort" if truth is not None else "cohort"
    sites = ", ".join(sorted(map(str, table["site"].dropna().unique()))) if "site" in table else ""
    return f"{kind}{', site ' + sites if sites else ''}, held-out test split"


def _plots(
    task: str,
    fitted: training.FittedTask,
    table: pd.DataFrame,
    predictions: dict,
    out: Path,
    source: str,
    best: str,
    reference: str | None,
    oracle: bool,
) -> list[str]:
    """Every plot of ``task``; a plot the data cannot support is skipped and its reason returned."""
    train, test = table.iloc[fitted.train_index], table.iloc[fitted.test_index]
    folder = out / "plots"
    skipped: list[str] = []

    def draw(name: str, make) -> None:
        try:
            fig, data = make()
        except ValueError as err:
            skipped.append(f"plot {name} not drawn: {err}")
            return
        plots.save_plot(fig, data, folder, name)

    if task == training.RECURRENCE:
        y_train, y_test = outcomes.recurrence_outcome(train), outcomes.recurrence_outcome(test)
        for name, label in ((best, "model"), (reference, "reference")):
            if name is None or name not in predictions:
                continue
            pred = predictions[name]
            cut = plots.risk_group_cutpoints(_train_risk(name, fitted, table))
            file = "km_recurrence_model" if label == "model" else f"km_recurrence_{name}"
            draw(
                file,
                lambda pred=pred, cut=cut, name=name: plots.kaplan_meier_by_risk_group(
                    y_test["time"], y_test["event"], pred.risk, cut, source=f"{source}; {name}"
                ),
            )
        at24 = {n: p.at(evaluation.CALIBRATION_HORIZON) for n, p in predictions.items()}
        draw(
            f"calibration_{task}",
            lambda: plots.survival_calibration(
                y_test["time"], y_test["event"], at24[best], evaluation.CALIBRATION_HORIZON, source=f"{source}; {best}"
            ),
        )
        draw(
            f"td_auc_{task}",
            lambda: plots.time_dependent_auc(
                y_train, y_test, {n: p.risk for n, p in predictions.items()}, np.arange(6.0, 49.0, 3.0), source=source
            ),
        )
        draw(
            f"decision_{task}",
            lambda: plots.survival_decision_curve(
                y_test["time"],
                y_test["event"],
                1 - at24[best],
                evaluation.CALIBRATION_HORIZON,
                np.linspace(0.05, 0.95, 19),
                source=f"{source}; {best}",
            ),
        )
    else:
        y_test = outcomes.response_outcome(test)
        probabilities = {n: p.probability for n, p in predictions.items()}
        draw(f"roc_{task}", lambda: plots.roc_curves(y_test, probabilities, source=source))
        draw(
            f"calibration_{task}",
            lambda: plots.binary_calibration(y_test, probabilities[best], bins=5, source=f"{source}; {best}"),
        )
        shown = [n for n in (best, reference, comparison.ORACLE if oracle else None) if n in probabilities]
        draw(
            f"decision_{task}",
            lambda: plots.decision_curve(y_test, {n: probabilities[n] for n in shown}, source=source),
        )
    return skipped


def _train_risk(name: str, fitted: training.FittedTask, table: pd.DataFrame) -> np.ndarray:
    train = table.iloc[fitted.train_index]
    if name in fitted.models:
        return np.asarray(fitted.models[name].predict(training.model_frame(train, fitted.features)), dtype=float)
    values = training.baseline_scores(train, fitted.task, (name,))[name]
    return values.fillna(values.median()).to_numpy(float)


def headline(metrics: dict[str, Any], task: str) -> dict[str, Any]:
    """The few numbers that compare runs (MLflow parent run, ``summary.json``): flat keys, no CIs of baselines.

    Per task: the chosen model, its primary metric with CI, the paired difference to the
    reference baseline with CI (if there is one), and the share of the oracle's gain over
    chance (synthetic data only).
    """
    notes = metrics[NOTES][task]
    best, primary = notes["chosen"], PRIMARY_METRIC[task]
    entry = metrics[task][best]
    out: dict[str, Any] = {
        "model": best,
        primary: entry[primary]["value"],
        f"{primary}_ci_low": entry[primary]["ci_low"],
        f"{primary}_ci_high": entry[primary]["ci_high"],
    }
    reference = notes.get("reference")
    delta = next((k for k in entry if k.startswith("delta_")), None)
    if reference and delta:
        out[delta] = entry[delta]["value"]
        out[f"{delta}_ci_low"], out[f"{delta}_ci_high"] = entry[delta]["ci_low"], entry[delta]["ci_high"]
    if comparison.ORACLE in metrics[task]:
        oracle = metrics[task][comparison.ORACLE][primary]["value"]
        value = entry[primary]["value"]
        if oracle is not None and value is not None and oracle - 0.5 > 0:
            out["oracle_gain_share"] = (value - 0.5) / (oracle - 0.5)
    return out


SUMMARY_PREFIX = {training.RECURRENCE: "rec", training.RESPONSE: "resp"}
SUMMARY_METRIC = {"c_index": "c", "roc_auc": "auc"}


def summary_row(row: dict[str, Any], task: str) -> dict[str, Any]:
    """One task's headline with short flat keys: ``rec_model``, ``rec_c`` and ``rec_dc`` (the paired
    difference to the reference baseline), 3 decimals.

    Deliberately narrow, so that ``dvc exp show --only-changed`` fits a 120-column terminal with the
    external site's two numbers beside it (README, "Comparing runs"); CIs and the oracle share are in
    ``metrics.json`` and on the MLflow run.
    """
    prefix, primary = SUMMARY_PREFIX[task], PRIMARY_METRIC[task]
    short = SUMMARY_METRIC[primary]
    out: dict[str, Any] = {f"{prefix}_model": row["model"], f"{prefix}_{short}": row[primary]}
    delta = next((k for k in row if k.startswith("delta_") and not k.endswith(("_ci_low", "_ci_high"))), None)
    if delta:
        out[f"{prefix}_d{short}"] = row[delta]
    return {k: round(v, 3) if isinstance(v, float) and np.isfinite(v) else v for k, v in out.items()}


def write_summary(metrics: dict[str, Any], path: Path) -> dict[str, Any]:
    """``summary.json``: the headline numbers, flat keys, 3 decimals (what ``dvc exp show`` shows)."""
    summary: dict[str, Any] = {}
    for task in metrics:
        if task == NOTES or task not in metrics[NOTES]:
            continue
        summary.update(summary_row(headline(metrics, task), task))
    path.write_text(json.dumps(summary, indent=2, allow_nan=True))
    return summary


def _log_models(
    metrics: dict, chosen: dict, fitted_tasks: dict, table: pd.DataFrame, name: str, parent_id: str
) -> dict[str, str]:
    """A nested run per model under the active parent; the best model per task logged on the parent
    run itself (so the runs table's Models column shows it on the row that compares runs) and registered."""
    from models.serving import PrognosisModel
    from pipeline import tracking

    run_ids: dict[str, str] = {"train": parent_id}
    for task, (fitted, predictors, best) in fitted_tasks.items():
        for model_name, model_metrics in metrics[task].items():
            with tracking.model_run(f"{task}/{model_name}", tags={"task": task, "model": model_name}) as run:
                run_ids[f"{task}/{model_name}"] = run.info.run_id
                if model_name in chosen[task]["params"]:
                    tracking.mlflow.log_params({k: str(v) for k, v in chosen[task]["params"][model_name].items()})
                    tracking.mlflow.log_metric("cv_score", chosen[task]["cv"][model_name])
                tracking.log_metrics_with_ci(model_metrics)
                if model_name == best:
                    tracking.mlflow.set_tag("registered_model", registered_name(name, task))
                    warning = metrics[NOTES][task].get("calibration_warning")
                    if warning:
                        tracking.mlflow.set_tag("calibration_warning", warning[:5000])
        example = table.iloc[fitted.test_index[:5]][[PATIENT_ID, *fitted.features]]
        # Integer columns would make the signature refuse missing values later.
        example = example.astype({c: float for c in fitted.features if pd.api.types.is_integer_dtype(example[c])})
        registered = registered_name(name, task)
        info = tracking.log_pyfunc_model(
            PrognosisModel(predictors[best]), f"model_{task}", example, registered_name=registered
        )
        print(f"registered {registered} version {info.registered_model_version} ({best}) with alias candidate")
    return run_ids


def _log_parent(metrics: dict, out: Path, features: Path, table: pd.DataFrame, split: pd.Series) -> None:
    """Headline metrics, the datasets and every output file on the parent run."""
    from pipeline import tracking

    flat: dict[str, float] = {}
    for task in metrics:
        if task == NOTES:
            continue
        row = headline(metrics, task)
        tracking.mlflow.set_tag(f"{task}.model", row.pop("model"))
        flat.update({f"{task}.{k}": float(v) for k, v in row.items() if v is not None and np.isfinite(v)})
        warning = metrics[NOTES][task].get("calibration_warning")
        if warning:
            tracking.mlflow.set_tag(f"{task}.calibration_warning", warning[:5000])
        rate = metrics[NOTES][task].get(NOVELTY_FLAG_RATE, {})
        for key in ("value", "n_flagged", "n_scored"):
            if rate.get(key) is not None:
                suffix = "" if key == "value" else f"_{key}"
                flat[f"{task}.{NOVELTY_FLAG_RATE}{suffix}"] = float(rate[key])
    if flat:
        tracking.mlflow.log_metrics(flat)
    site = ", ".join(sorted(map(str, table[SITE].dropna().unique()))) if SITE in table else ""
    for context, mask in (("training", split == "train"), ("evaluation", split == "test")):
        tracking.log_dataset(
            features,
            f"{Path(features).parent.name}/{Path(features).name} ({context} split)",
            context,
            int(mask.sum()),
            site,
        )
    for path in sorted(out.rglob("*")):
        if path.is_file() and "models" not in path.relative_to(out).parts[:1]:
            mlflow_artifact_dir = str(path.parent.relative_to(out)) if path.parent != out else None
            tracking.mlflow.log_artifact(str(path), artifact_path=mlflow_artifact_dir)


@dataclass
class RobustInputs:
    """What ``train.robustness`` asks of this run: imaging columns to drop (ICC filter), perturbed
    copies of training patients (augmentation), and the notes that go to metrics.json."""

    drop: frozenset[str] = frozenset()
    copies: pd.DataFrame | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def task_copies(self, train: pd.DataFrame) -> pd.DataFrame | None:
        """The copies of the task's training patients (those whose outcome is known)."""
        if self.copies is None:
            return None
        return self.copies.loc[self.copies[PATIENT_ID].isin(set(train[PATIENT_ID].astype(str)))]

    def params(self) -> dict[str, Any]:
        """Flat numbers for the MLflow parent run: kept/dropped per image type, copies."""
        out: dict[str, Any] = {}
        icc = self.notes.get("icc_filter")
        if icc:
            out["icc_filter_applied"] = icc["applied"]
            out.update({f"kept.{k}": v for k, v in icc["kept"].items()})
            out.update({f"dropped.{k}": v for k, v in icc["dropped"].items()})
        if self.copies is not None:
            out["augmentation_rows"] = len(self.copies)
        return out


def robustness_inputs(
    settings: robustness.TaskRobustness,
    table: pd.DataFrame,
    train_index: np.ndarray,
    perturbed: Path | None,
    icc: Path | None,
    task: str = "",
    read: dict[str, pd.DataFrame] | None = None,
) -> RobustInputs:
    """Read and apply ``crlm perturb``'s outputs as ``train.robustness`` asks for ``task``
    (``RobustnessSettings.for_task``; docs/robustness.md).

    Off (the default): nothing is read. The ICC filter needs ``icc``, augmentation ``perturbed``;
    only training-split patients' copies of the ``augment`` chain (``icc-*`` or ``site-*``) are
    taken. ``augment: site`` without any ``site-*`` row of a training patient is an error naming
    the fix (``robustness.site_scanners``). ``read``: tables already read by an earlier task
    (filled here), so that each file is read once per run.
    """
    said = f"{task}: " if task else ""
    read = {} if read is None else read
    if not settings.active:
        return RobustInputs()
    notes: dict[str, Any] = {"icc_threshold": settings.icc_threshold, "augment": settings.augment}
    drop: frozenset[str] = frozenset()
    imaging = robustness.imaging_columns(table.columns)
    if settings.icc_threshold is not None and not imaging:
        notes["icc_filter"] = None
        notes["icc_filter_note"] = "no imaging columns in the feature table: the ICC filter does not apply"
        print(f"{said}train.robustness.icc_threshold is {settings.icc_threshold}: {notes['icc_filter_note']}")
    elif settings.icc_threshold is not None:
        if icc is None:
            raise ValueError(
                f"{said}train.robustness.icc_threshold is {settings.icc_threshold} but no ICC table was given: "
                "pass --icc data/features/train/icc.csv (written by crlm perturb), or set icc_threshold: null "
                "in params.yaml (train.robustness.icc_threshold, or train.robustness.tasks."
                f"{task or '<task>'}.icc_threshold where the task has its own setting)"
            )
        if "icc" not in read:
            read["icc"] = robustness.read_icc(icc)
        icc_table = read["icc"]
        applied = robustness.icc_filter(icc_table, settings.icc_threshold, list(table.columns), source=str(icc))
        print(f"{said}{applied.note}")
        drop = applied.dropped
        notes["icc_filter"] = applied.as_dict()
    copies = None
    chain = robustness.augment_chain(settings.augment)
    if chain is not None and not imaging:
        notes["augmentation"] = {
            "chain": chain,
            "note": f"no imaging columns in the feature table: the {chain}-k copies do not apply (no copies)",
        }
        print(f"{said}train.robustness.augment is {chain}: {notes['augmentation']['note']}")
    elif chain is not None:
        if perturbed is None:
            raise ValueError(
                f"{said}train.robustness.augment is {chain} but no perturbed features were given: pass --perturbed "
                "data/features/train/perturbed.parquet (written by crlm perturb), or set augment: false in "
                "params.yaml (train.robustness.augment, or train.robustness.tasks."
                f"{task or '<task>'}.augment where the task has its own setting)"
            )
        if "perturbed" not in read:
            read["perturbed"] = robustness.read_perturbed(perturbed)
        rows = read["perturbed"]
        train_ids = table.iloc[train_index][PATIENT_ID].astype(str)
        copies = robustness.perturbed_rows(table, rows, train_ids, chain=chain)
        if chain == robustness.SITE_CHAIN and copies.empty:
            raise ValueError(
                f"{said}train.robustness.augment is site but {perturbed} has no ok {chain}-k row of a training "
                "patient: set robustness.site_scanners (3 is what it is validated with) in params.yaml and run "
                "crlm perturb (dvc repro perturb) again, or set augment: false or icc"
            )
        mine = rows[PERTURBATION].str.startswith(f"{chain}-")
        held_out = set(rows[PATIENT_ID]) - set(train_ids)
        notes["augmentation"] = {
            "source": str(perturbed),
            "chain": chain,
            "rows_used": len(copies),
            "rows_of_held_out_patients_not_used": int((rows[PATIENT_ID].isin(held_out) & mine).sum()),
        }
        print(
            f"{said}augmentation: {len(copies)} perturbed {chain}-k copies of {copies[PATIENT_ID].nunique()} "
            "training patients (validation folds and the held-out split: original rows only)"
        )
        if copies.empty:
            notes["augmentation"]["note"] = f"no {chain}-* row of a training patient in {perturbed}: no augmentation"
            print(f"{said}{notes['augmentation']['note']}")
    return RobustInputs(drop, copies, notes)


def task_robustness_inputs(
    settings: robustness.RobustnessSettings,
    tasks: Sequence[str],
    table: pd.DataFrame,
    train_index: np.ndarray,
    perturbed: Path | None,
    icc: Path | None,
) -> dict[str, RobustInputs]:
    """`robustness_inputs` of every task under its own setting (`RobustnessSettings.for_task`)."""
    if not any(settings.for_task(task).active for task in tasks):
        if perturbed is not None or icc is not None:
            print("train.robustness is off (icc_threshold: null, augment: false): --perturbed / --icc not read")
        return {task: RobustInputs() for task in tasks}
    read: dict[str, pd.DataFrame] = {}
    return {
        task: robustness_inputs(settings.for_task(task), table, train_index, perturbed, icc, task, read)
        for task in tasks
    }


NOVELTY_FLAG_RATE = "novelty_flag_rate"  # metrics.json notes.<task>: the chosen model's held-out flag rate


def novelty_rates(predictors: dict[str, Any], test: pd.DataFrame, features: list[str]) -> dict[str, Any]:
    """Per model: the share of held-out patients its novelty model flags (`models.novelty.flag_rate`),
    with the threshold and the training patients it was set on; a model without one says so."""
    frame = training.model_frame(test, features)
    rates: dict[str, Any] = {}
    for name, predictor in predictors.items():
        model = getattr(predictor, "novelty", None)
        if model is None:
            rates[name] = {"value": None, "note": "no novelty model (see the task's adaptations)"}
            continue
        rate = novelty.flag_rate(novelty_frame(predictor, frame)[OUT_OF_DISTRIBUTION])
        rates[name] = {**rate, "threshold": model.threshold, "quantile": model.quantile, "n_train": model.n_train}
    return rates


def _task_table(
    table: pd.DataFrame, task: str, train_index: np.ndarray, test_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The split's rows (positions in ``table``) whose outcome for ``task`` is known."""
    known = training.has_outcome(table, task).to_numpy()
    return train_index[known[train_index]], test_index[known[test_index]]


def plan_tasks(table: pd.DataFrame, tasks: tuple[str, ...], explicit: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """The tasks whose outcome the usable patients have, and why the others are skipped.

    With ``explicit`` (``--task recurrence``) a task that cannot be trained is an error.
    """
    ok = table.loc[table[STATUS] == OK] if STATUS in table else table
    trainable, skipped = [], {}
    for task in tasks:
        reason = training.outcome_missing_reason(ok, task)
        if reason is None:
            trainable.append(task)
        elif explicit:
            raise ValueError(f"--task {task}: cannot train: {reason}")
        else:
            skipped[task] = reason
    if not trainable:
        raise ValueError("no task can be trained on this cohort: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
    return tuple(trainable), skipped


def run_train(
    features: Path,
    out: Path,
    models_dir: Path | None,
    params_path: Path,
    tasks: tuple[str, ...],
    truth: Path | None = None,
    repo_root: Path | None = None,
    track: bool = True,
    covariates: tuple[str, ...] = (),
    name: str = PIPELINE_NAME,
    explicit_tasks: bool = False,
    jobs: int | None = None,
    perturbed: Path | None = None,
    icc: Path | None = None,
) -> dict[str, Any]:
    """Fit and evaluate ``tasks`` on ``features``; return the metrics dictionary.

    ``covariates`` are extra columns (declared by a cohort mapping) used as they are. Tasks
    whose outcome the cohort lacks are skipped and listed under ``metrics["notes"]`` (an error
    with ``explicit_tasks``). The best model of each task is registered as ``{name}-{task}``.
    ``models_dir`` defaults to ``out/models``. ``jobs`` overrides ``train.jobs``. ``perturbed``
    and ``icc`` (``crlm perturb``'s outputs) are read only when ``train.robustness`` asks for them.
    """
    params = load_params(params_path, "train", "evaluate")  # a bad value stops here, before any fit
    settings, evaluate = params.train, params.evaluate
    models_dir = Path(models_dir) if models_dir is not None else Path(out) / "models"
    full = pd.read_parquet(features)
    if STATUS not in full:
        raise ValueError(f"{features}: no '{STATUS}' column; build the feature table with crlm featurize")
    tasks, skipped = plan_tasks(full, tuple(tasks), explicit_tasks)
    for task, reason in skipped.items():
        print(f"{task}: skipped: {reason}")
    table = training.usable_patients(full, tasks)
    truth_table = pd.read_csv(truth, dtype={PATIENT_ID: str}) if truth is not None else None
    train_index, test_index = training.split_patients(table, settings.test_fraction, settings.seed, tasks)
    source = _source(table, truth_table)
    # Everything the data allow is checked before the first fit (no model is written for nothing).
    plans = {}
    for task in tasks:
        task_train, task_test = _task_table(table, task, train_index, test_index)
        plans[task] = training.plan_task(table, task, task_train, task_test, settings)
        for note in plans[task].notes:
            print(f"{task}: {note}")
    robust = task_robustness_inputs(settings.robustness, tasks, table, train_index, perturbed, icc)
    out.mkdir(parents=True, exist_ok=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / RUNS_FILE).unlink(missing_ok=True)  # run ids of an earlier run would be wrong
    for task in registry.TASKS:  # models of a task not trained this time
        for model_name in (*registry.MODELS[task], *registry.BASELINES):
            (models_dir / registry.predictor_file(task, model_name)).unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        parent_id = None
        if track:  # opened before the first fit, so that the run's duration is the training's
            from pipeline import tracking

            tracking.configure(repo_root or Path.cwd())
            tags = {"data.features": tracking.file_digest(features), "data.source": source}
            if truth is not None:
                tags["data.truth"] = tracking.file_digest(truth)
                tags["data.kind"] = "synthetic"
            for task, reason in skipped.items():
                tags[f"skipped.{task}"] = reason[:5000]
            logged = {"train": as_dict(settings), "evaluate": as_dict(evaluate)}
            robust_params = {f"{task}.{k}": v for task, inputs in robust.items() for k, v in inputs.params().items()}
            if robust_params:
                logged["robustness"] = robust_params
            parent = stack.enter_context(tracking.pipeline_run("train", logged, tags))
            parent_id = parent.info.run_id
        metrics, fitted_tasks = _fit_and_write(
            table,
            full,
            features,
            truth_table,
            tasks,
            skipped,
            plans,
            train_index,
            test_index,
            settings,
            evaluate,
            covariates,
            n_jobs=jobs if jobs is not None else settings.jobs,
            out=out,
            models_dir=models_dir,
            source=source,
            robust=robust,
        )
        if track:
            split = pd.read_csv(out / "split.csv", dtype={PATIENT_ID: str})["split"]
            _log_parent(metrics, out, features, table, split)
            chosen = json.loads((out / "cv.json").read_text())
            run_ids = _log_models(metrics, chosen, fitted_tasks, table, name, parent_id)
            (models_dir / RUNS_FILE).write_text(json.dumps(run_ids, indent=2))
    for task in tasks:
        notes = metrics[NOTES][task]
        best, primary = notes["chosen"], PRIMARY_METRIC[task]
        others = [
            f"{b} {metrics[task][b][primary]['value']:.3f}"
            for b in (notes["reference"], comparison.ORACLE)
            if b and b in metrics[task]
        ]
        print(
            f"{task}: best {best} {primary} {metrics[task][best][primary]['value']:.3f}"
            + (f" ({', '.join(others)})" if others else "")
        )
    return metrics


def _fit_and_write(
    table: pd.DataFrame,
    full: pd.DataFrame,
    features: Path,
    truth_table: pd.DataFrame | None,
    tasks: tuple[str, ...],
    skipped: dict[str, str],
    plans: dict,
    train_index: np.ndarray,
    test_index: np.ndarray,
    settings: TrainSettings,
    evaluate: EvaluateSettings,
    covariates: tuple[str, ...],
    n_jobs: int,
    out: Path,
    models_dir: Path,
    source: str,
    robust: dict[str, RobustInputs] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple]]:
    """Fit, evaluate, plot and write every output of ``tasks``; return the metrics and, per task,
    (fitted task, predictors, chosen model) for tracking."""
    reference_name, min_coverage = evaluate.reference, evaluate.baseline_min_coverage
    notes: dict[str, Any] = {
        "data": "synthetic" if truth_table is not None else "real cohort",
        "patients": {"in_table": len(full), "not_ok": int((full[STATUS] != OK).sum()), "usable": len(table)},
        "skipped_tasks": skipped,
    }
    metrics: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    predictions_out = []
    fitted_tasks = {}
    for task in tasks:
        start = time.perf_counter()
        task_train, task_test = _task_table(table, task, train_index, test_index)
        plan = plans[task]
        inputs = (robust or {}).get(task, RobustInputs())
        drop, copies = inputs.drop, inputs.task_copies(table.iloc[task_train])
        fitted = training.fit_task(
            table,
            task,
            task_train,
            task_test,
            settings,
            covariates=covariates,
            jobs=n_jobs,
            plan=plan,
            drop_columns=drop,
            copies=copies,
        )
        if copies is not None:
            inputs.notes["augmentation"]["fitted"] = {
                "rows": len(copies),
                "patients": int(copies[PATIENT_ID].nunique()),
                "of_training_patients": len(task_train),
            }
        train, test = table.iloc[task_train], table.iloc[task_test]
        availability = training.baseline_availability({"training": train, "held-out": test}, task, min_coverage)
        baselines = [b for b, status in availability.items() if status.available]
        for status in availability.values():
            if status.reason:
                print(f"{task}: {status.reason}")
        reference = reference_name if reference_name in baselines else None
        predictors = comparison.build_predictors(fitted, table)
        predictions = comparison.task_predictions(task, predictors, train, test, truth_table, baselines=baselines)
        build = outcomes.recurrence_outcome if task == training.RECURRENCE else outcomes.response_outcome
        y_train, y_test = build(train), build(test)
        metrics[task] = evaluation.evaluate_task(
            task,
            y_train,
            y_test,
            predictions,
            reference=reference or "",
            n_resamples=evaluate.bootstrap,
            seed=evaluate.seed,
            jobs=evaluate.jobs,
        )
        best = best_model(fitted.cv_scores, task)
        warning = evaluation.calibration_warning(task, metrics[task][best], predictions[best], y_test)
        if warning:
            print(f"{task}: WARNING: the chosen model {best} is {warning}")
        chosen[task] = {
            "best": best,
            "params": fitted.best_params,
            "cv": fitted.cv_scores,
            "n_features_in": len(fitted.features),
            "seconds": round(time.perf_counter() - start, 1),
        }
        skipped_plots = _plots(
            task, fitted, table, predictions, out, source, best, reference, comparison.ORACLE in predictions
        )
        rates = novelty_rates(predictors, test, fitted.features)
        if rates[best].get("value") is not None:
            r = rates[best]
            print(
                f"{task}: novelty flags {r['n_flagged']}/{r['n_scored']} held-out patients "
                f"({r['value']:.1%}; target {1 - novelty.NOVELTY_QUANTILE:.0%})"
            )
        notes[task] = {
            NOVELTY_FLAG_RATE: {"model": best, "data": "held-out split", **rates[best]},
            "novelty": rates,
            "chosen": best,
            "n_train": plan.n_train,
            "n_test": plan.n_test,
            "cv_folds": plan.cv_folds,
            "reference": reference,
            "reference_note": (
                None
                if reference
                else f"no paired difference: the reference baseline {reference_name!r} is not available"
                + (f" ({availability[reference_name].reason})" if reference_name in availability else "")
            ),
            "baselines": {b: status.as_dict() for b, status in availability.items()},
            "failed_models": fitted.failed,
            "adaptations": [*plan.notes, *fitted.notes],
            "calibration_warning": warning,
            "plots_skipped": skipped_plots,
        }
        for note in skipped_plots:
            print(f"{task}: {note}")
        for model_name, predictor in predictors.items():
            joblib.dump(predictor, models_dir / registry.predictor_file(task, model_name))
        for model_name, pred in predictions.items():
            value = pred.risk if task == training.RECURRENCE else pred.probability
            predictions_out.append(
                pd.DataFrame(
                    {PATIENT_ID: test[PATIENT_ID].to_numpy(), "task": task, "model": model_name, "prediction": value}
                )
            )
        fitted_tasks[task] = (fitted, predictors, best)
    robust_notes = {task: inputs.notes for task, inputs in (robust or {}).items() if inputs.notes}
    if robust_notes:
        notes["robustness"] = robust_notes
    metrics[NOTES] = notes
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True))
    (out / "cv.json").write_text(json.dumps(chosen, indent=2, default=str))
    pd.concat(predictions_out).to_csv(out / "predictions_test.csv", index=False)
    split = pd.DataFrame({PATIENT_ID: table[PATIENT_ID], "split": "train"})
    split.loc[test_index, "split"] = "test"
    split.to_csv(out / "split.csv", index=False)
    (models_dir / BEST_FILE).write_text(json.dumps({task: chosen[task]["best"] for task in tasks}, indent=2))
    # The models remember their extraction settings (crlm predict checks them; docs/imaging.md).
    from features.extraction import copy_record_to_models

    copy_record_to_models(features, models_dir)
    write_summary(metrics, out / SUMMARY_FILE)
    return metrics, fitted_tasks
