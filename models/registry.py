"""The model families, what they are judged by, the models folder and the one model loader.

One home for the facts every stage shares (issue 12): adding a model family means adding one
`Family` to `FAMILIES` (and its tests); training, comparison, explanation, prediction and the
report read everything else from here.

- **Families** per task, in preference order (the simplest model first: a tie in the
  cross-validated score, or a models folder without ``best.json``, takes the first).
- **What models are judged by**: the primary metric per task, the baseline clinical scores and
  the default reference baseline of the paired differences.
- **The models folder** written by ``crlm train --models``: ``{task}_{model}.joblib`` per
  fitted predictor, ``best.json`` (the chosen model per task), ``mlflow_runs.json`` (the MLflow
  run of each model) and the extraction settings record (``features.extraction.SETTINGS_FILE``).
- **The loader** (`load_models`) used by ``crlm evaluate``, ``crlm explain`` and ``crlm predict``:
  a models folder, a ``.joblib`` file or an MLflow URI (``models:/crlm-recurrence@champion``,
  ``runs:/<id>/model_recurrence``). For a URI it points MLflow at the tracking store it is given
  (the stage passes the project's, ``pipeline.tracking.tracking_uri``), so a fresh process finds
  the registered model instead of MLflow's default ``./mlflow.db``.

Nothing heavy is imported here at module level: estimators, joblib and MLflow are imported
where they are used.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RECURRENCE = "recurrence"
RESPONSE = "response"
TASKS = (RECURRENCE, RESPONSE)
IMAGING_PREFIXES = ("patient_", "rad_")  # model inputs that come from the images (morphology, radiomics)


# --------------------------------------------------------------------------- families


def _coxnet(seed: int):
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    return CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=[0.05], fit_baseline_model=False, max_iter=100000)


def _xgb_cox(seed: int):
    from models.survival import XGBCoxSurvival

    return XGBCoxSurvival(random_state=seed)


def _xgb_aft(seed: int):
    from models.survival import XGBAFTSurvival

    return XGBAFTSurvival(random_state=seed)


def _logistic(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.1, max_iter=5000)


def _xgb(seed: int):
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=300,
        max_depth=2,
        learning_rate=0.03,
        subsample=0.8,
        colsample_bytree=0.8,
        min_child_weight=5,
        n_jobs=1,
        random_state=seed,
        eval_metric="logloss",
        verbosity=0,
    )


@dataclass(frozen=True)
class Family:
    """One model family of one task.

    ``estimator(seed)`` gives the unfitted estimator (last step of the model's pipeline; its
    grid comes from params.yaml ``train.grids.<name>``). ``shap`` is how it is explained
    (``linear``: exact from the coefficients; ``tree``: TreeSHAP). ``recalibrate``: its risk
    scale is refitted to the training outcomes before the Breslow baseline is estimated (a risk
    that is not a log hazard, e.g. the AFT margin; `models.survival.breslow_survival`).
    """

    name: str
    task: str
    estimator: Callable[[int], Any]
    shap: Literal["linear", "tree"]
    recalibrate: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("coxnet", RECURRENCE, _coxnet, "linear"),
    Family("xgb_cox", RECURRENCE, _xgb_cox, "tree"),
    Family("xgb_aft", RECURRENCE, _xgb_aft, "tree", recalibrate=True),
    Family("logistic", RESPONSE, _logistic, "linear"),
    Family("xgb", RESPONSE, _xgb, "tree"),
)
# {task: family names in preference order}
MODELS: dict[str, tuple[str, ...]] = {task: tuple(f.name for f in FAMILIES if f.task == task) for task in TASKS}


def family(task: str, name: str) -> Family:
    """The family ``name`` of ``task``; ValueError naming the known ones."""
    for candidate in FAMILIES:
        if candidate.task == task and candidate.name == name:
            return candidate
    raise ValueError(f"unknown {task} model {name!r}; known: {', '.join(MODELS.get(task, ()))}")


def preferred(task: str, names: Sequence[str]) -> str:
    """The first of ``names`` in the task's preference order (unknown names last, by name)."""
    order = MODELS.get(task, ())
    return min(names, key=lambda n: (order.index(n) if n in order else len(order), n))


# --------------------------------------------------------------------------- what models are judged by

PRIMARY_METRIC = {RECURRENCE: "c_index", RESPONSE: "roc_auc"}
BASELINES = ("fong", "oslo", "game", "tbs")  # clinical scores used as baselines (features.scores.SCORE_COLUMNS)
DEFAULT_REFERENCE = "fong"  # params.yaml evaluate.reference: the paired differences' baseline
DEFAULT_MIN_COVERAGE = 0.8  # params.yaml evaluate.baseline_min_coverage
ORACLE = "oracle"  # the simulation's true predictors (synthetic cohorts only)
NOTES = "notes"  # metrics.json: what was skipped, left out or flagged (not a task)


# --------------------------------------------------------------------------- the models folder

BEST_FILE = "best.json"  # {task: chosen model name}
RUNS_FILE = "mlflow_runs.json"  # {"train": parent run id, "task/model": run id}
CV_FILE = "cv.json"  # crlm train's report ({task: {"best": name, ...}}), if copied into a folder
PREDICTOR_SUFFIX = ".joblib"
URI_SCHEMES = ("models:/", "runs:/")


def predictor_file(task: str, name: str) -> str:
    """``{task}_{name}.joblib``: the file name of a fitted predictor in a models folder."""
    return f"{task}_{name}{PREDICTOR_SUFFIX}"


def parse_predictor_file(path: Path) -> tuple[str, str] | None:
    """(task, family) of a fitted predictor's file name, or None if it names no family of `MODELS`
    (a baseline score or the oracle is not a model: never saved, ignored if found)."""
    task, _, name = Path(path).stem.partition("_")
    return (task, name) if Path(path).suffix == PREDICTOR_SUFFIX and name in MODELS.get(task, ()) else None


def is_model_uri(spec: str | Path) -> bool:
    """Whether ``spec`` is an MLflow model URI (``models:/...``, ``runs:/...``, ``scheme://...``)."""
    text = str(spec)
    return text.startswith(URI_SCHEMES) or "://" in text


def read_runs(folder: Path) -> dict[str, str]:
    """``mlflow_runs.json`` of a models folder ({} if absent)."""
    path = Path(folder) / RUNS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_best(folder: Path) -> dict[str, str]:
    """The chosen model per task of a models folder: ``best.json``, else ``cv.json``'s ``best``."""
    folder = Path(folder)
    chosen: dict[str, str] = {}
    if (folder / CV_FILE).is_file():
        cv = json.loads((folder / CV_FILE).read_text(encoding="utf-8"))
        chosen = {task: entry["best"] for task, entry in cv.items() if isinstance(entry, dict) and "best" in entry}
    if (folder / BEST_FILE).is_file():
        chosen.update(json.loads((folder / BEST_FILE).read_text(encoding="utf-8")))
    return chosen


# --------------------------------------------------------------------------- the loader


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model: the predictor (columns, explanations) and, for an MLflow URI, the pyfunc
    model that produces the numbers. ``version`` is ``sha256:<12 hex>`` of a file or the
    registry's ``name vN (@alias)``; ``source`` is the file or URI it came from."""

    task: str
    name: str
    version: str
    source: str
    predictor: Any
    pyfunc: Any = None

    @property
    def feature_columns(self) -> list[str]:
        return list(self.predictor.feature_columns)

    @property
    def needs_images(self) -> bool:
        return any(c.startswith(IMAGING_PREFIXES) for c in self.feature_columns)

    @property
    def is_registry(self) -> bool:
        return is_model_uri(self.source)

    def predict(self, frame, inputs=None):
        """The model's output frame, one row per row of ``frame`` (same index, no ``patient_id``).
        ``inputs``: `models.predictor.prepare_inputs` of ``frame``, shared with the explanation
        (used by a local predictor; an MLflow pyfunc model transforms ``frame`` itself)."""
        if self.pyfunc is not None:
            out = self.pyfunc.predict(frame)
        else:
            out = (
                self.predictor.predict_frame(frame, inputs)
                if inputs is not None
                else self.predictor.predict_frame(frame)
            )
        out = out.drop(columns="patient_id", errors="ignore")
        out.index = frame.index
        return out


def task_of(predictor: Any) -> str:
    """The task a predictor serves (``models.predictor``'s two classes)."""
    from models.predictor import RecurrencePredictor, ResponsePredictor

    if isinstance(predictor, RecurrencePredictor):
        return RECURRENCE
    if isinstance(predictor, ResponsePredictor):
        return RESPONSE
    raise TypeError(
        f"not a crlm predictor: {type(predictor).__name__} (expected RecurrencePredictor or "
        f"ResponsePredictor); rerun crlm train"
    )


_PREDICTOR_CLASS = {RECURRENCE: "RecurrencePredictor", RESPONSE: "ResponsePredictor"}  # models.predictor


def _file_version(path: Path) -> str:
    return f"sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]}"


def _load_file(path: Path, task: str | None = None) -> LoadedModel:
    import joblib

    predictor = joblib.load(path)
    try:
        found = task_of(predictor)
    except TypeError:
        found = None
    if found is None or (task is not None and found != task):
        wanted = _PREDICTOR_CLASS[task] if task is not None else " or ".join(_PREDICTOR_CLASS.values())
        raise ValueError(
            f"{path}: expected a {wanted}, found {type(predictor).__name__}; rerun crlm train to "
            f"rebuild the models folder"
        )
    return LoadedModel(found, predictor.name, _file_version(path), str(path), predictor)


def _load_folder(folder: Path, every: bool) -> list[LoadedModel]:
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.glob(f"*{PREDICTOR_SUFFIX}")):
        parsed = parse_predictor_file(path)
        if parsed is not None:
            found.setdefault(parsed[0], {})[parsed[1]] = path
    if not found:
        expected = ", ".join(predictor_file(t, m) for t in TASKS for m in MODELS[t])
        raise FileNotFoundError(
            f"no trained predictors in {folder} (looked for {expected}); "
            f"run crlm train first (crlm train --models {folder}), or point at its models folder"
        )
    best = read_best(folder)
    loaded = []
    for task in TASKS:
        if task not in found:
            continue
        names = [n for n in MODELS[task] if n in found[task]]  # preference order
        if not every:
            chosen = best.get(task)
            if chosen is not None and chosen not in found[task]:
                raise FileNotFoundError(
                    f"{folder / BEST_FILE} names {chosen!r} for {task}, but {folder} has no "
                    f"{predictor_file(task, chosen)} (it has {', '.join(names)}); "
                    f"run crlm train --models {folder} again"
                )
            names = [chosen if chosen is not None else preferred(task, names)]
        loaded += [_load_file(found[task][name], task) for name in names]
    return loaded


def use_tracking_store(tracking_uri: str) -> None:
    """Point MLflow's tracking and model registry at ``tracking_uri``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def _registry_version(uri: str) -> str:
    """'crlm-recurrence v3 (@champion)' for models:/name@alias, 'name v3' for models:/name/3, else the URI."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return uri
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return f"{name} v{MlflowClient().get_model_version_by_alias(name, alias).version} (@{alias})"
    name, _, version = rest.partition("/")
    return f"{name} v{version}" if version else name


def _load_uri(uri: str, tracking_uri: str | None) -> LoadedModel:
    import mlflow
    from mlflow.exceptions import MlflowException

    if not tracking_uri:
        raise ValueError(
            f"{uri}: an MLflow model URI needs the tracking store it is registered in; "
            "pass tracking_uri (the stages pass pipeline.tracking.tracking_uri(repo_root))"
        )
    use_tracking_store(tracking_uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
        version = _registry_version(uri)
    except MlflowException as exc:
        raise FileNotFoundError(
            f"model {uri} not found in the tracking store {tracking_uri}: {exc.message}; "
            f"list the registered models with `make ui`, or set MLFLOW_TRACKING_URI to the "
            f"store that has it"
        ) from None
    predictor = pyfunc.unwrap_python_model().predictor
    return LoadedModel(task_of(predictor), predictor.name, version, uri, predictor, pyfunc)


def load_models(
    specs: Sequence[str | Path] | str | Path,
    tracking_uri: str | None = None,
    *,
    every: bool = False,
    one_per_task: bool = True,
) -> list[LoadedModel]:
    """The one model loader: models folders, ``{task}_{name}.joblib`` files or MLflow URIs.

    A folder gives, per task, the model ``best.json`` names (else ``cv.json``'s, else the first
    of the preference order present) or, with ``every``, all of its predictors (evaluation and
    explanation compare them all). A URI is loaded from the store ``tracking_uri``, which this
    function sets as MLflow's tracking and registry URI. With ``one_per_task`` two models of one
    task are an error (``crlm predict`` writes one column per task).
    """
    if isinstance(specs, (str, Path)):
        specs = [specs]
    if not specs:
        raise ValueError("give at least one model: a models folder, a .joblib file or models:/<name>@<alias>")
    loaded: list[LoadedModel] = []
    for spec in specs:
        text = str(spec)
        if is_model_uri(text):
            loaded.append(_load_uri(text, tracking_uri))
            continue
        path = Path(text)
        if path.is_dir():
            loaded += _load_folder(path, every)
        elif path.is_file() and path.suffix == PREDICTOR_SUFFIX:
            loaded.append(_load_file(path))
        else:
            raise FileNotFoundError(
                f"model {text!r} is neither a models folder, a {PREDICTOR_SUFFIX} file nor an "
                f"MLflow URI (models:/<name>@<alias>); run crlm train first "
                f"(crlm train --models <folder>)"
            )
    if one_per_task:
        twice = [t for t, n in Counter(m.task for m in loaded).items() if n > 1]
        if twice:
            sources = [f"{m.source} ({m.name})" for m in loaded if m.task in twice]
            raise ValueError(f"more than one {twice[0]} model given: {', '.join(sources)}; give one model per task")
    return loaded


def training_run_id(spec: str | Path) -> str | None:
    """The MLflow parent run that trained ``spec`` (a models folder or a ``models:/`` URI), if recorded.

    For a URI the tracking store must be set (`load_models` sets it)."""
    text = str(spec)
    if is_model_uri(text):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        if not text.startswith("models:/"):
            return None
        rest = text.removeprefix("models:/")
        client = MlflowClient()
        try:
            if "@" in rest:
                found = client.get_model_version_by_alias(*rest.split("@", 1))
            else:
                found = client.get_model_version(*rest.split("/", 1))
            run = client.get_run(found.run_id)
        except MlflowException:
            return None
        return run.data.tags.get("mlflow.parentRunId", run.info.run_id)
    return read_runs(Path(text)).get("train")


def settings_record(models: Sequence[LoadedModel]) -> dict[str, Any] | None:
    """The extraction settings record the models were trained with (``features.extraction.SETTINGS_FILE``
    in their models folder, copied there by crlm train), or None if none carries one. Models
    with different records cannot be used together (ValueError naming the files)."""
    from features import extraction

    records: dict[str, dict[str, Any]] = {}
    for model in models:
        if model.is_registry:
            continue
        source = Path(model.source)
        path = (source if source.is_dir() else source.parent) / extraction.SETTINGS_FILE
        if path.is_file():
            records[str(path)] = json.loads(path.read_text(encoding="utf-8"))
    if len({record.get(extraction.SETTINGS_HASH) for record in records.values()}) > 1:
        raise ValueError(
            f"the models were trained with different extraction settings ({', '.join(records)}); "
            f"give models trained on the same features"
        )
    return next(iter(records.values()), None)
