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

import hashlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from features.schema import PATIENT_ID
from models import explain, training
from models.plots import save_plot
from models.predictor import RecurrencePredictor, ResponsePredictor
from features.settings import build

SPLIT = "split"
TRAIN, TEST = "train", "test"
STATUS, OK = "status", "ok"
RUNS_FILE = "mlflow_runs.json"
ARTIFACT_PATH = "shap"
SUMMARY = "summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ID_HASH_LENGTH = 8
_PREDICTOR_TYPE = {training.RECURRENCE: RecurrencePredictor, training.RESPONSE: ResponsePredictor}


def safe_file_stem(name: str) -> str:
    """A file name stem made of ASCII letters, digits, ``-`` and ``_``.

    A name that needs changing gets a short hash of the original appended, so two different
    ids (``Pätient`` and ``P_tient``) never share a file.
    """
    text = str(name)
    safe = _UNSAFE.sub("_", text)
    if safe == text and safe:
        return safe
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:_ID_HASH_LENGTH]
    return f"{safe}-{digest}" if safe else digest


def load_predictors(models_dir: Path) -> dict[tuple[str, str], RecurrencePredictor | ResponsePredictor]:
    """The fitted predictors in ``models_dir`` (``{task}_{model}.joblib`` for the models of
    `models.training.MODELS`), keyed by (task, model)."""
    found = {}
    for task in training.TASKS:
        for name in training.MODELS[task]:
            path = Path(models_dir) / f"{task}_{name}.joblib"
            if not path.is_file():
                continue
            predictor = joblib.load(path)
            if not isinstance(predictor, _PREDICTOR_TYPE[task]):
                raise ValueError(f"{path}: expected a {_PREDICTOR_TYPE[task].__name__}, found "
                                f"{type(predictor).__name__}; rerun crlm train to rebuild the models folder")
            found[(task, name)] = predictor
    if not found:
        expected = [f"{t}_{m}.joblib" for t in training.TASKS for m in training.MODELS[t]]
        raise FileNotFoundError(f"no fitted models in {models_dir} (looked for {', '.join(expected)}); "
                                f"run crlm train first or point --models at its models folder")
    return found


def read_split(split: Path, table: pd.DataFrame, features: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (train, test) rows of ``table`` named by ``split.csv``; errors name missing patients."""
    frame = pd.read_csv(split, dtype=str, keep_default_na=False)
    missing_columns = [c for c in (PATIENT_ID, SPLIT) if c not in frame]
    if missing_columns:
        raise ValueError(f"{split}: missing column(s) {missing_columns}; expected {PATIENT_ID}, {SPLIT} "
                         f"as written by crlm train")
    unknown = sorted(set(frame[SPLIT]) - {TRAIN, TEST})
    if unknown:
        raise ValueError(f"{split}: column '{SPLIT}' must be '{TRAIN}' or '{TEST}'; found {unknown[:5]}")
    ids = table[PATIENT_ID].astype(str)
    absent = sorted(set(frame[PATIENT_ID]) - set(ids))
    if absent:
        raise ValueError(f"{len(absent)} patient(s) of {split} are not among the status-ok patients of "
                         f"{features}, e.g. {absent[:3]}; the split and the feature table come from "
                         f"different runs (rerun crlm train on this feature table)")
    role = ids.map(dict(zip(frame[PATIENT_ID], frame[SPLIT])))
    train, test = table.loc[role == TRAIN], table.loc[role == TEST]
    for name, part in ((TRAIN, train), (TEST, test)):
        if part.empty:
            raise ValueError(f"{split}: no '{name}' patients; SHAP needs training (background) and test patients")
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _source(features: Path, table: pd.DataFrame, test: pd.DataFrame, train: pd.DataFrame) -> str:
    sites = ", ".join(sorted(map(str, table["site"].dropna().unique()))) if "site" in table else ""
    return (f"{features}{', site ' + sites if sites else ''}; held-out test split (n={len(test)}), "
            f"SHAP background: training split (n={len(train)})")


def _write_model(result: explain.ShapResult, folder: Path, settings: explain.ExplainSettings,
                 source: str) -> dict[str, Any]:
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
            raise ValueError(f"cannot log SHAP files of {key} into MLflow run {run_id} (listed in {runs_file}) "
                             f"at {uri}: {err.message}; rerun crlm train, or explain with --no-tracking") from err
        print(f"tracking: logged {folder} into run {run_id} ({key}) under '{ARTIFACT_PATH}/'")


def run_explain(models_dir: Path, features: Path, split: Path, out: Path,
                settings: explain.ExplainSettings | Mapping[str, Any],
                repo_root: Path | None = None, track: bool = True) -> dict:
    """Explain every fitted model on the test patients of ``split``; return the summary.

    ``settings`` is the ``explain`` block of params.yaml (`ExplainSettings`, or its keys ``top_k``,
    ``dependence_plots``, ``waterfalls``, ``background_size``, ``seed``; all optional, unknown keys are
    an error).
    """
    config = build(explain.ExplainSettings, settings, where="params.yaml: explain")
    models_dir, features, split, out = Path(models_dir), Path(features), Path(split), Path(out)
    predictors = load_predictors(models_dir)
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
        path = models_dir / f"{task}_{name}.joblib"
        try:
            result = explain.explain(predictor, test, train, config.background_size, config.seed)
        except (KeyError, TypeError, ValueError) as err:   # missing columns, unsupported estimator
            raise ValueError(f"{path}: {err.args[0] if err.args else err}") from err
        folder = out / task / name
        summary.setdefault(task, {})[name] = _write_model(result, folder, config, source)
        seconds = time.perf_counter() - start
        summary[task][name]["seconds"] = round(seconds, 2)
        folders[f"{task}/{name}"] = folder
        top = ", ".join(f["feature"] for f in summary[task][name]["top_features"][:3])
        share = summary[task][name]["attribution_share"]
        print(f"explain {task}/{name}: {len(test)} patients x {len(result.feature_names)} features in "
              f"{seconds:.1f} s; top: {top}; imaging share {share[explain.IMAGING]:.0%}")
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=True, ensure_ascii=False), encoding="utf-8")
    if track:
        _track(models_dir / RUNS_FILE, folders, Path(repo_root) if repo_root is not None else Path.cwd())
    return summary
