"""MLflow tracking and model registry for the pipeline (docs/design.md section 8).

Entry-point layer: this module may read ``MLFLOW_TRACKING_URI``; nothing happens on import.
A stage calls :func:`configure` first, then::

    with pipeline_run("train", params=params_yaml, tags={"data.train": file_digest(path)}):
        with model_run("recurrence-coxnet"):
            log_metrics_with_ci({"c_index": {"value": .71, "ci_low": .66, "ci_high": .76}})
            log_pyfunc_model(PrognosisModel(predictor), "model", example, "crlm-recurrence")

Store: ``sqlite:///<repo>/mlruns/mlflow.db`` with artifacts under ``<repo>/mlruns/artifacts/``
(``make ui`` shows both), unless ``MLFLOW_TRACKING_URI`` names another store (a team server).
Models are registered with aliases (``candidate`` on every new version, ``champion`` moved by
:func:`promote`), never with the deprecated stages.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import math
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking.fluent import ActiveRun
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from pipeline.paths import REPO_ROOT

DEFAULT_EXPERIMENT = "crlm-prognosis"
# MLflow 3's UI opens an experiment on its runs table when it is of this kind (not on the GenAI overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Files whose changes do not make a run "dirty": dvc.lock records the hashes of generated outputs, which
# can differ by a few bytes across CPUs for the same seed (README "Comparing runs").
NOT_USER_CHANGES = ("dvc.lock",)
CANDIDATE = "candidate"
CHAMPION = "champion"

# The project's own packages, embedded in every logged model (MLflow ``code_paths``) so that the
# pickled predictor classes load where crlm-prognosis is not installed (see models/serving.py).
_PROJECT_ROOT = REPO_ROOT
PROJECT_PACKAGES: tuple[Path, ...] = (_PROJECT_ROOT / "models", _PROJECT_ROOT / "features")

# Distributions pinned in a logged model's requirements when installed; MLflow's own inference
# loads the model in a subprocess (slow, and it cannot see classes defined outside packages).
_BASE_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas", "scipy", "scikit-learn")
# Imported module -> distribution: added when the training process imported the module.
_OPTIONAL_REQUIREMENTS = {"sksurv": "scikit-survival", "xgboost": "xgboost", "shap": "shap", "SimpleITK": "SimpleITK"}

_METRIC_KEYS = ("value", "ci_low", "ci_high")
_UNDEFINED_METRICS_PARAM = "undefined_metrics"
_GIT_TIMEOUT_S = 10


# --------------------------------------------------------------------------- store


def _default_tracking_uri(repo_root: Path) -> str:
    return f"sqlite:///{(Path(repo_root).resolve() / 'mlruns' / 'mlflow.db').as_posix()}"


def tracking_uri(repo_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the repository's SQLite store (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or _default_tracking_uri(repo_root)


def use_store(repo_root: Path) -> str:
    """Point MLflow at the project's store (or ``MLFLOW_TRACKING_URI``) without choosing an experiment."""
    return _use_store(repo_root)[0]


def _use_store(repo_root: Path) -> tuple[str, bool]:
    """Point MLflow's tracking and registry at the store; return it and whether it is local."""
    uri = tracking_uri(repo_root)
    local = uri == _default_tracking_uri(repo_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri, local


def configure(repo_root: Path, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Set the tracking and registry URIs and the active experiment; return its id.

    With the default local store, ``mlruns/`` is created and a new experiment keeps its
    artifacts in ``<repo_root>/mlruns/artifacts/<experiment>``. Calling it again changes nothing.
    """
    if not experiment or not experiment.strip():
        raise ValueError("the MLflow experiment name must not be empty")
    repo_root = Path(repo_root).resolve()
    _, local = _use_store(repo_root)
    artifact_location = None
    if local:
        (repo_root / "mlruns").mkdir(parents=True, exist_ok=True)
        artifact_location = (repo_root / "mlruns" / "artifacts" / experiment).as_uri()

    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location)
        except MlflowException as exc:  # created meanwhile by a concurrent stage
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    elif found.lifecycle_stage == LifecycleStage.DELETED:
        raise ValueError(
            f"MLflow experiment {experiment!r} (id {found.experiment_id}) is deleted; "
            f"restore it (`mlflow experiments restore --experiment-id "
            f"{found.experiment_id}`) or choose another experiment name"
        )
    else:
        experiment_id = found.experiment_id
    kind = client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG)
    if kind is None:  # a kind the user set in the UI is kept
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# --------------------------------------------------------------------------- provenance


def git_revision(repo_root: Path) -> str:
    """Commit hash of ``repo_root``, with ``-dirty`` if files differ from it; ``unknown`` outside git.

    Untracked files that git does not ignore count as changes (code that ran but is not in
    the commit), and so does a status git cannot report. ``dvc.lock`` alone does not: running the
    pipeline rewrites it (``NOT_USER_CHANGES``). Never raises, never takes git's
    index lock (``GIT_OPTIONAL_LOCKS=0``), so concurrent git commands are not disturbed.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo_root), *args],
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT_S,
                env=env,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return "unknown"
    status = git("status", "--porcelain")
    # A tree whose status cannot be read is not known to be clean.
    if status is None:
        return f"{commit}-dirty"
    changed = [line.split(maxsplit=1)[-1].strip('"') for line in status.splitlines() if line.strip()]
    return commit if all(path in NOT_USER_CHANGES for path in changed) else f"{commit}-dirty"


def file_digest(path: str | Path, length: int = 16) -> str:
    """Short SHA-256 of a file, or of every file in a folder, for ``data.*`` tags.

    The hash is ``features.radiomics.file_digest`` (names and bytes, in name order), truncated.
    """
    from features.radiomics import file_digest as full_digest

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot hash {path}: no such file or folder")
    return full_digest(path)[:length]


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"seed": 7}}`` -> ``{"train.seed": "7"}``, values as strings.

    Lists stay one value (``"[1, 2]"``); an empty block is kept as ``"{}"``. Values longer than
    MLflow's limit (6000 characters) are cut and end with ``...``.
    """
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        else:
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
            flat[name] = text
    return flat


def _require_active_run(what: str) -> mlflow.ActiveRun:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError(f"{what} needs an active MLflow run: call it inside pipeline_run(...)")
    return run


def _defined(number: Any) -> float | None:
    if number is None:
        return None
    number = float(number)
    return number if math.isfinite(number) else None


def log_metrics_with_ci(metrics: Mapping[str, Mapping[str, float]], prefix: str = "") -> dict[str, float]:
    """Log ``{metric: {"value", "ci_low", "ci_high"}}`` as ``metric``, ``metric_ci_low``, ``metric_ci_high``.

    With a ``prefix`` the names become ``prefix.metric``... . MLflow would store NaN, which
    reads as a number in the UI and in comparisons; undefined values (NaN, infinite, None) are
    not logged and their names are listed, comma-separated, in the param ``undefined_metrics``
    (``prefix.undefined_metrics``): once per run and prefix, as params cannot change.
    Returns what was logged.
    """
    logged: dict[str, float] = {}
    undefined: list[str] = []
    for metric, values in metrics.items():
        if not isinstance(values, Mapping):
            raise TypeError(
                f"metric {metric!r}: expected a mapping with keys {list(_METRIC_KEYS)}, got {type(values).__name__}"
            )
        unknown = [k for k in values if k not in _METRIC_KEYS]
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), _METRIC_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"metric {metric!r}: unknown key {unknown[0]!r}{hint}; allowed: {list(_METRIC_KEYS)}")
        if "value" not in values:
            raise ValueError(f"metric {metric!r}: missing 'value'")
        base = f"{prefix}.{metric}" if prefix else str(metric)
        for key in _METRIC_KEYS:
            if key not in values:
                continue
            name = base if key == "value" else f"{base}_{key}"
            number = _defined(values[key])
            if number is None:
                undefined.append(name)
            else:
                logged[name] = number
    _require_active_run("log_metrics_with_ci")
    if logged:
        mlflow.log_metrics(logged)
    if undefined:
        param = f"{prefix}.{_UNDEFINED_METRICS_PARAM}" if prefix else _UNDEFINED_METRICS_PARAM
        mlflow.log_param(param, ",".join(undefined))
    return logged


# --------------------------------------------------------------------------- runs


def log_dataset(
    path: str | Path, name: str, context: str, n_patients: int, site: str = "", run_id: str | None = None
) -> None:
    """Log a feature table as an MLflow dataset input: name, file digest, source path, patients, site.

    Only metadata is logged (``MetaDataset``), never the patients' data.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.tracking.fluent import _create_dataset_input

    dataset = MetaDataset(resolve_dataset_source(str(Path(path).resolve())), name=name, digest=file_digest(path))
    tags = {"n_patients": str(int(n_patients))}
    if site:
        tags["site"] = site
    target = run_id or _require_active_run("log_dataset").info.run_id
    MlflowClient().log_inputs(target, datasets=[_create_dataset_input(dataset, context, tags)])


@contextmanager
def pipeline_run(
    run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any], *, repo_root: Path | None = None
) -> Iterator[ActiveRun]:
    """The parent run of one pipeline run: flattened ``params``, ``tags`` plus ``git_revision``.

    ``tags`` carries the data hashes (``{"data.train": file_digest(...)}``); ``git_revision``
    is computed from ``repo_root`` (default: this project) unless given. Call :func:`configure`
    first. A failure inside the block marks the run FAILED and propagates.
    """
    all_tags = {str(k): str(v) for k, v in tags.items()}
    all_tags.setdefault("git_revision", git_revision(repo_root or _PROJECT_ROOT))
    with mlflow.start_run(run_name=run_name, tags=all_tags) as run:
        flat = flatten_params(params)
        if flat:
            mlflow.log_params(flat)
        yield run


@contextmanager
def model_run(name: str, tags: Mapping[str, Any] | None = None) -> Iterator[ActiveRun]:
    """A nested run for one model under the active :func:`pipeline_run` (``mlflow.parentRunId``)."""
    _require_active_run("model_run")
    with mlflow.start_run(run_name=name, nested=True, tags={str(k): str(v) for k, v in (tags or {}).items()}) as run:
        yield run


# --------------------------------------------------------------------------- models


def _requirements() -> list[str]:
    import sys

    names = list(_BASE_REQUIREMENTS)
    names += [dist for module, dist in _OPTIONAL_REQUIREMENTS.items() if module in sys.modules]
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


_NUMERIC_TYPES = (DataType.double, DataType.float, DataType.long, DataType.integer)


def _signature(python_model: Any, input_example: pd.DataFrame):
    """Input names and required-ness from the example; numeric inputs typed ``Any``.

    MLflow refuses int64 input for a ``double`` column ("can not safely convert int64 to
    float64"), and a CSV read by ``mlflow models predict`` gives int64 for whole-number columns
    (ECOG, T stage, 0/1 items); declared ``long`` instead, a missing value (float NaN) would be
    refused. The model converts its numeric inputs itself (``models.training.model_frame``).
    """
    signature = infer_signature(input_example, python_model.predict(None, input_example))
    optional = set(getattr(python_model, "optional_columns", ()))
    if signature.inputs is not None:
        signature.inputs = Schema(
            [
                ColSpec(
                    AnyType() if spec.type in _NUMERIC_TYPES else spec.type,
                    spec.name,
                    required=spec.name not in optional,
                )
                for spec in signature.inputs.inputs
            ]
        )
    return signature


def log_pyfunc_model(
    python_model: mlflow.pyfunc.PythonModel,
    name: str,
    input_example: pd.DataFrame,
    registered_name: str | None,
    alias: str | None = CANDIDATE,
    *,
    code_paths: Sequence[str | Path] = PROJECT_PACKAGES,
    pip_requirements: Sequence[str] | None = None,
) -> ModelInfo:
    """Log a pyfunc model with signature and input example; register it and set ``alias``.

    The signature is inferred from ``input_example`` and the model's prediction on it; columns
    in ``python_model.optional_columns`` (``patient_id``) are optional inputs. With
    ``registered_name`` the new version gets ``alias`` (moved from an older version if there);
    ``ModelInfo.registered_model_version`` is the version. ``code_paths`` (default: the project's
    ``models/`` and ``features/``) are embedded so the model loads without the project installed;
    ``pip_requirements`` default to the pinned installed versions of the scientific stack.
    """
    if not isinstance(input_example, pd.DataFrame) or input_example.empty:
        raise ValueError("log_pyfunc_model needs a non-empty pandas DataFrame as input_example")
    model_info = mlflow.pyfunc.log_model(
        name=name,
        python_model=python_model,
        input_example=input_example,
        signature=_signature(python_model, input_example),
        registered_model_name=registered_name,
        code_paths=[str(p) for p in code_paths] or None,
        pip_requirements=list(pip_requirements) if pip_requirements is not None else _requirements(),
    )
    if registered_name and alias:
        MlflowClient().set_registered_model_alias(registered_name, alias, str(model_info.registered_model_version))
    return model_info


def _versions(client: MlflowClient, name: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def _alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    aliases = client.get_registered_model(name).aliases
    return int(aliases[alias]) if alias in aliases else None


def _check_version(client: MlflowClient, name: str, version: int) -> None:
    if "'" in name:
        raise ValueError(f"invalid registered model name {name!r}")
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        existing = sorted(m.name for m in client.search_registered_models())
        near = difflib.get_close_matches(name, existing, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"no registered model named {name!r}{hint}; registered models: "
            f"{', '.join(existing) if existing else 'none'}"
        ) from None
    versions = _versions(client, name)
    if version not in versions:
        raise ValueError(
            f"registered model {name!r} has no version {version}; existing versions: "
            f"{', '.join(map(str, versions)) if versions else 'none'}"
        )


def promote(name: str, version: int, alias: str = CHAMPION) -> None:
    """Move ``alias`` of registered model ``name`` to ``version`` (ValueError if it does not exist)."""
    if isinstance(version, bool) or int(version) != version or int(version) < 1:
        raise ValueError(f"model version must be a positive whole number, got {version!r}")
    client = MlflowClient()
    _check_version(client, name, int(version))
    client.set_registered_model_alias(name, alias, str(int(version)))


def run_promote(name: str, version: int, repo_root: Path, alias: str = CHAMPION) -> int:
    """``crlm promote``: move the alias in the project's store and say what moved."""
    uri, local = _use_store(Path(repo_root))
    if local and not (Path(repo_root) / "mlruns" / "mlflow.db").is_file():
        raise FileNotFoundError(f"no MLflow store at {uri}: train a model first (dvc repro)")
    client = MlflowClient()
    _check_version(client, name, int(version))
    before = _alias_version(client, name, alias)
    promote(name, version, alias)
    if before is None:
        print(f"{name}: alias '{alias}' set on version {version} (no version had it before)")
    elif before == int(version):
        print(f"{name}: alias '{alias}' already on version {version}, nothing moved")
    else:
        print(f"{name}: alias '{alias}' moved from version {before} to version {version}")
    return 0
