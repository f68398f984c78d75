"""``crlm explain``: SHAP explanations of the fitted models on the held-out split (thin stage script).

Reads the predictors ``{task}_{model}.joblib`` that ``crlm train`` saved (fitted models only;
baselines and the oracle are not models), the feature table (patients with status ``ok``) and
``split.csv`` (``patient_id``, ``split`` = train | test). Test patients are explained against
a background of training patients. Writes under ``out/{task}/{model}/``:

- ``shap_values.csv`` (patient_id + one column per model feature), ``importance.csv``,
  ``top_contributions.csv``, ``attribution_share.json``;
- ``beeswarm.png``, ``bar.png``, ``dependence_<feature>.png`` and ``waterfalls/<patient>.png``
  (each with the drawn numbers as ``.csv``; ``waterfalls/index.csv`` maps patient ids to
  file names, which are made safe for any file system);

and ``out/summary.json``: per task and model the explained quantity, base value, top features
and the clinical / imaging attribution share. With tracking, each model's folder is logged
(artifact path ``shap``) into that model's MLflow run, as listed by ``crlm train`` in
``<models>/mlflow_runs.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from features.schema import OK, PATIENT_ID, STATUS, patient_file_stem
from features.settings import build
from models import explain, registry
from models.plots import save_plot
from models.predictor import RecurrencePredictor, ResponsePredictor
from models.registry import RUNS_FILE  # its home: models.registry

SPLIT = "split"
TRAIN, TEST = "train", "test"
ARTIFACT_PATH = "shap"
SUMMARY = "summary.json"
safe_file_stem = patient_file_stem  # the one file-name rule (features.schema), also crlm predict's


def load_predictors(
    models: Path | str, tracking_uri: str | None = None
) -> dict[tuple[str, str], RecurrencePredictor | ResponsePredictor]:
    """The fitted predictors of a models folder (or the one of an MLflow model URI), keyed by
    (task, model); `models.registry.load_models` checks each file holds its task's predictor."""
    return {
        (m.task, m.name): m.predictor
        for m in registry.load_models(models, tracking_uri, every=True, one_per_task=False)
    }


def read_split(split: Path, table: pd.DataFrame, features: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (train, test) rows of ``table`` named by ``split.csv``; errors name missing patients."""
    frame = pd.read_csv(split, dtype=str, keep_default_na=False)
    missing_columns = [c for c in (PATIENT_ID, SPLIT) if c not in frame]
    if missing_columns:
        raise ValueError(
            f"{split}: missing column(s) {missing_columns}; expected {PATIENT_ID}, {SPLIT} as written by crlm train"
        )
    unknown = sorted(set(frame[SPLIT]) - {TRAIN, TEST})
    if unknown:
        raise ValueError(f"{split}: column '{SPLIT}' must be '{TRAIN}' or '{TEST}'; found {unknown[:5]}")
    ids = table[PATIENT_ID].astype(str)
    absent = sorted(set(frame[PATIENT_ID]) - set(ids))
    if absent:
        raise ValueError(
            f"{len(absent)} patient(s) of {split} are not among the status-ok patients of "
            f"{features}, e.g. {absent[:3]}; the split and the feature table come from "
            f"different runs (rerun crlm train on this feature table)"
        )
    role = ids.map(dict(zip(frame[PATIENT_ID], frame[SPLIT], strict=True)))
    train, test = table.loc[role == TRAIN], table.loc[role == TEST]
    for name, part in ((TRAIN, train), (TEST, test)):
        if part.empty:
            raise ValueError(f"{split}: no '{name}' patients; SHAP needs training (background) and test patients")
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _source(features: Path, table: pd.DataFrame, test: pd.DataFrame, train: pd.DataFrame) -> str:
    sites = ", ".join(sorted(map(str, table["site"].dropna().unique()))) if "site" in table else ""
    return (
        f"{features}{', site ' + sites if sites else ''}; held-out test split (n={len(test)}), "
        f"SHAP background: training split (n={len(train)})"
    )


def _write_model(
    result: explain.ShapResult, folder: Path, settings: explain.ExplainSettings, source: str
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    explain.shap_table(result).to_csv(folder / "shap_values.csv", index=False)
    importance = explain.importance(result)
    importance.to_csv(folder / "importance.csv", index=False)
    explain.top_contributions(result, settings.top_k).to_csv(folder / "top_contributions.csv", index=False)
    share = explain.attribution_share(result)
    (folder / "attribution_share.json").write_text(json.dumps(share, indent=2, allow_nan=True))
    label = f"{source}; model {result.task}/{result.model}"
    save_plot(*explain.beeswarm_plot(result, label), folder, "beeswarm")
    save_plot(*explain.bar_plot(result, label), folder, "bar")
    for feature in importance["feature"].head(settings.dependence_plots):
        save_plot(*explain.dependence_plot(result, feature, label), folder, f"dependence_{safe_file_stem(feature)}")
    waterfalls = []
    for patient in explain.extreme_patients(result, settings.waterfalls):
        stem = safe_file_stem(patient)
        save_plot(*explain.waterfall_plot(result, patient, label), folder / "waterfalls", stem)
        waterfalls.append({PATIENT_ID: patient, "file": f"{stem}.png"})
    if waterfalls:
        pd.DataFrame(waterfalls).to_csv(folder / "waterfalls" / "index.csv", index=False)
    return {
        "quantity": result.quantity,
        "base_value": float(result.base_values[0]),
        "n_patients": len(result.patient_ids),
        "n_background": result.n_background,
        "n_features": len(result.feature_names),
        "top_features": importance.head(settings.top_k)[["feature", "group", "mean_abs_shap"]].to_dict("records"),
        "attribution_share": share,
        "waterfall_patients": [w[PATIENT_ID] for w in waterfalls],
    }


def _track(runs_file: Path, folders: Mapping[str, Path], repo_root: Path) -> None:
    """Log each model's folder into its training run (artifact path ``shap``)."""
    if not runs_file.is_file():
        print(f"tracking skipped: {runs_file} not found (crlm train writes it when it tracks the models)")
        return
    runs = json.loads(runs_file.read_text(encoding="utf-8"))
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline import tracking

    uri = tracking.tracking_uri(repo_root)
    tracking.configure(repo_root)
    for key, folder in folders.items():
        run_id = runs.get(key)
        if not run_id:
            print(f"tracking: no MLflow run for {key} in {runs_file}; its SHAP files are not logged")
            continue
        try:
            with mlflow.start_run(run_id=run_id):
                mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
        except MlflowException as err:
            raise ValueError(
                f"cannot log SHAP files of {key} into MLflow run {run_id} (listed in {runs_file}) "
                f"at {uri}: {err.message}; rerun crlm train, or explain with --no-tracking"
            ) from err
        print(f"tracking: logged {folder} into run {run_id} ({key}) under '{ARTIFACT_PATH}/'")


def run_explain(
    models_dir: Path | str,
    features: Path,
    split: Path,
    out: Path,
    settings: explain.ExplainSettings | Mapping[str, Any],
    repo_root: Path | None = None,
    track: bool = True,
) -> dict:
    """Explain every fitted model on the test patients of ``split``; return the summary.

    ``models_dir``: a models folder (every fitted model in it) or an MLflow model URI
    (``models:/crlm-response@champion``, looked up in the project's store; not tracked).

    ``settings`` is the ``explain`` block of params.yaml (`ExplainSettings`, or its keys ``top_k``,
    ``dependence_plots``, ``waterfalls``, ``background_size``, ``seed``; all optional, unknown keys are
    an error).
    """
    from pipeline import tracking
    from pipeline.paths import REPO_ROOT

    config = build(explain.ExplainSettings, settings, where="params.yaml: explain")
    repo_root = Path(repo_root) if repo_root is not None else REPO_ROOT
    features, split, out = Path(features), Path(split), Path(out)
    predictors = load_predictors(models_dir, tracking.tracking_uri(repo_root))
    table = pd.read_parquet(features)
    for column in (PATIENT_ID, STATUS):
        if column not in table:
            raise ValueError(f"{features}: no '{column}' column; rebuild the feature table with crlm featurize")
    table = table.loc[table[STATUS] == OK].reset_index(drop=True)
    train, test = read_split(split, table, features)
    source = _source(features, table, test, train)
    summary: dict[str, Any] = {}
    folders: dict[str, Path] = {}
    for (task, name), predictor in predictors.items():
        start = time.perf_counter()
        path = (
            Path(models_dir) / registry.predictor_file(task, name)
            if not registry.is_model_uri(models_dir)
            else models_dir
        )
        try:
            result = explain.explain(predictor, test, train, config.background_size, config.seed)
        except (KeyError, TypeError, ValueError) as err:  # missing columns, unsupported estimator
            raise ValueError(f"{path}: {err.args[0] if err.args else err}") from err
        folder = out / task / name
        summary.setdefault(task, {})[name] = _write_model(result, folder, config, source)
        seconds = time.perf_counter() - start
        summary[task][name]["seconds"] = round(seconds, 2)
        folders[f"{task}/{name}"] = folder
        top = ", ".join(f["feature"] for f in summary[task][name]["top_features"][:3])
        share = summary[task][name]["attribution_share"]
        print(
            f"explain {task}/{name}: {len(test)} patients x {len(result.feature_names)} features in "
            f"{seconds:.1f} s; top: {top}; imaging share {share[explain.IMAGING]:.0%}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=True, ensure_ascii=False), encoding="utf-8")
    if track:
        if registry.is_model_uri(models_dir):
            print(
                f"tracking skipped: {models_dir} is a registry model (crlm explain logs into the runs a models "
                f"folder lists in {RUNS_FILE})"
            )
        else:
            _track(Path(models_dir) / RUNS_FILE, folders, repo_root)
    return summary
