"""``crlm predict``: batch inference on a new cohort in bounded memory (docs/design.md section 8).

The cohort table is read in chunks of ``chunk_size`` patients. Per chunk: identifiers are
checked (a ``patient_id`` that appears on several rows marks *every* such row, wherever it is
in the file), the clinical columns are validated, images are extracted (only when a model uses
imaging features; cached per case), the patient feature table and the clinical scores are
built, every model predicts and every prediction is explained (exact, additive contributions
of the model's input columns). Rows are appended to ``predictions.csv`` and the chunk is
dropped, so peak memory follows the chunk size, not the cohort size.

Outputs under ``out``:

- ``predictions.csv``: exactly one row per input row, in input order: ``patient_id`` (as
  written in the input, byte for byte), ``row`` (1-based data row), ``status`` (``ok`` or a
  reason code), ``reason`` (what is wrong, with the file/column/value and the fix), the
  predictions, per task the novelty score and ``out_of_distribution`` flag (docs/novelty.md),
  the clinical scores, the models used and the top-k contributions per task. A
  row whose status is not ``ok`` carries no numbers (never a half-filled row).
- ``explanations/<id>.json``: every contribution of every model for one patient, and its novelty.
- ``summary.json``: counts per status, models, seconds, patients per minute, models without a
  novelty model.

Nothing at inference is fitted on the cohort: every transformation was fitted on the training
split, so a patient's prediction does not depend on its neighbours or on the chunking.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from tqdm.auto import tqdm

from features import extraction, patient_table, radiomics
from features.mapping import CohortMapping, MappingError, apply_mapping, load_mapping, sheet_headers
from features.schema import (
    DUPLICATE_ID,
    EXTRACTION_ERROR,
    IMAGE,
    INVALID,
    MASK,
    MISSING_ID,
    OK,
    PATIENT_ID,
    REASON,
    STATUS,
    patient_file_stem,
)
from features.scores import SCORE_OUTPUTS
from features.validation import Problem, validate_cohort
from models import explain as shap_explain
from models import registry
from models.evaluation import logit
from models.explain import explain_without_background
from models.predictor import (
    NO_NOVELTY_MODEL,
    NOVELTY,
    NOVELTY_COLUMNS,
    OUT_OF_DISTRIBUTION,
    RESPONSE_PROBABILITY,
    RISK,
    RISK_GROUP,
    novelty_column,
    prepare_inputs,
    survival_column,
    used_columns,
)
from models.preprocessing import split_feature_types
from models.registry import LoadedModel
from pipeline.execution import map_cases
from pipeline.inputs import case_options
from pipeline.paths import DEFAULT_EXTRACTION, DEFAULT_LABELS, DEFAULT_RADIOMICS, REPO_ROOT

DEFAULT_CHUNK_SIZE = 32  # patients per chunk: bounds memory (images of one chunk at a time)
DEFAULT_TOP_K = 3  # contributions per task written to predictions.csv
PREDICTIONS_FILE = "predictions.csv"
SUMMARY_FILE = "summary.json"
EXPLANATIONS_DIR = "explanations"
SECONDS_PER_MINUTE = 60.0
# SHAP values + base vs the prediction, relative to max(1, |margin|): xgboost sums in float32.
ADDITIVITY_TOLERANCE = shap_explain.ADDITIVITY_TOLERANCE

# Status codes (features.schema) besides the extraction's: missing_file, unreadable,
# geometry_mismatch, empty_mask, missing_lesion_label, nan_voxels, invalid_labels, ...
ROW = "row"
EXPLANATION = "explanation"
SCORE_COLUMNS = SCORE_OUTPUTS  # the clinical scores and their groups (features.scores.clinical_scores)
BASE_VALUE = {  # what the base value of an explanation is, per SHAP kind of a family (models.registry)
    "linear": "prediction for a reference patient: numeric inputs at their training mean, categorical "
    "inputs at their most frequent training category",
    "tree": "mean margin over the training data, weighted by the trees' cover (TreeSHAP, tree_path_dependent)",
}


# --------------------------------------------------------------------------- models


def load_models(models: Sequence[str], repo_root: Path) -> list[LoadedModel]:
    """Models from folders written by ``crlm train`` (one per task: the one ``best.json`` names,
    else the first of the registry's preference order present), single ``{task}_{name}.joblib``
    files, or MLflow URIs (``models:/crlm-recurrence@champion``, looked up in the project's
    store): `models.registry.load_models`. At most one model per task."""
    from pipeline import tracking

    return registry.load_models(list(models), tracking.tracking_uri(repo_root))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class IdIndex:
    """What the first pass over the identifier column found."""

    rows: int
    duplicated: dict[str, list[int]]  # id -> every 1-based row that carries it


def _read_ids(path: Path, id_column: str, chunk_size: int) -> Iterator[pd.Series]:
    """The identifier column as written (no NA parsing: 'NA' is an identifier), chunk by chunk."""
    reader = pd.read_csv(
        path,
        usecols=[id_column],
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8-sig",
        chunksize=chunk_size,
    )
    for chunk in reader:
        yield chunk[id_column].astype(object)


def index_ids(path: Path, id_column: str, chunk_size: int) -> IdIndex:
    """Count the rows and find identifiers that appear on more than one row (blank ids excluded)."""
    first: dict[str, int] = {}
    duplicated: dict[str, list[int]] = {}
    row = 0
    for ids in _read_ids(path, id_column, chunk_size):
        for value in ids:
            row += 1
            if not value.strip():
                continue
            if value in first:
                duplicated.setdefault(value, [first[value]]).append(row)
            else:
                first[value] = row
    return IdIndex(row, duplicated)


def read_header(path: Path) -> list[str]:
    """The cohort table's column names; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"cohort table not found: {path}")
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as a CSV table ({exc}); save it as UTF-8 CSV") from exc


def read_chunks(path: Path, id_column: str, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The cohort table in chunks: values parsed as ``crlm validate`` reads them, except the
    identifier column, which is kept exactly as written."""
    reader = pd.read_csv(path, dtype={id_column: str}, encoding="utf-8-sig", chunksize=chunk_size)
    for chunk, ids in zip(reader, _read_ids(path, id_column, chunk_size), strict=True):
        chunk[id_column] = ids.to_numpy()
        yield chunk


# --------------------------------------------------------------------------- one chunk


@dataclass(frozen=True)
class Context:
    """Everything a chunk needs, fixed for the run."""

    cohort: Path
    id_column: str
    mapping: CohortMapping | None
    ids: IdIndex
    models: list[LoadedModel]
    needs_images: bool
    options: extraction.CaseOptions | None
    cache: Path | None
    rules: tuple[str, ...]
    jobs: int
    scheduler: Any
    top_k: int
    columns: list[str]
    explanations: Path
    absent: dict[str, set[str]]  # model -> input columns the cohort table does not have (imputed)
    renames: dict[str, str] = field(default_factory=dict)  # sheet header -> name (features.mapping.sheet_headers)


def _problem_code(problem: Problem) -> str:
    """The reason code of a validation problem (``features.validation.ROW_PROBLEM_CODES``)."""
    return problem.code or INVALID


def explanation_file(patient_id: str) -> str:
    """The explanation file of a patient: ``features.schema.patient_file_stem`` (the file-name
    rule crlm explain uses too) + ``.json``."""
    return f"{patient_file_stem(patient_id)}.json"


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(float(value)) else float(value)
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _fitted_types(pipeline: Any) -> tuple[list[str], list[str]] | None:
    """Numeric and categorical input columns as fitted, from the pipeline's ColumnTransformer."""
    prepare = getattr(pipeline, "named_steps", {}).get("prepare")
    if prepare is None or not hasattr(prepare, "transformers_"):
        return None
    numeric = [c for name, _, cols in prepare.transformers_ if name in shap_explain.NUMERIC_BLOCKS for c in cols]
    categorical = [c for name, _, cols in prepare.transformers_ if name == "categorical" for c in cols]
    return numeric, categorical


def _model_input(table: pd.DataFrame, model: LoadedModel) -> pd.DataFrame:
    """The model's input columns, typed as the model was fitted (never by this chunk's dtypes:
    a categorical column that happens to be empty in a chunk stays categorical)."""
    columns = model.feature_columns
    types = _fitted_types(model.predictor.pipeline)
    numeric, categorical = types if types is not None else split_feature_types(table, columns)
    text = set(categorical)
    present = table.reindex(columns=columns)  # a column the table lacks: all missing
    numbers = present[[c for c in columns if c not in text]]
    try:
        numbers = numbers.astype(float)
    except (TypeError, ValueError):  # text in a numeric column: missing, as in training
        numbers = numbers.apply(pd.to_numeric, errors="coerce").astype(float)
    texts = present[[c for c in columns if c in text]].astype(object)
    texts = texts.where(texts.notna(), np.nan)
    ids = table[[PATIENT_ID]].astype(object)
    return pd.concat([ids, numbers, texts], axis=1)[[PATIENT_ID, *columns]]


def _extract(ctx: Context, cases: list[extraction.CaseInput]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Extract a chunk's cases; if the batch fails unexpectedly, case by case, so one bad case
    cannot stop the others (its exception becomes its reason)."""
    try:
        return extraction.extract_cohort(
            cases, ctx.options, ctx.cache, jobs=ctx.jobs, progress=False, scheduler=ctx.scheduler, map_cases=map_cases
        )
    except Exception:  # noqa: BLE001 - retried per case below; each failure is reported per patient
        pass
    lesions, reports = [], []
    for case in cases:
        try:
            one_lesions, one_report = extraction.extract_cohort(
                [case], ctx.options, ctx.cache, jobs=1, progress=False, map_cases=map_cases
            )
        except Exception as exc:  # noqa: BLE001 - reported in the patient's row, never swallowed
            message = (
                f"patient {case.patient_id}: extraction of image {case.image} with mask {case.mask} "
                f"failed ({type(exc).__name__}: {exc}); check both files open in a viewer and report "
                f"the error if they do"
            )
            one_lesions = pd.DataFrame()
            one_report = pd.DataFrame(
                [
                    {
                        PATIENT_ID: case.patient_id,
                        radiomics.LESION: pd.NA,
                        extraction.STATUS: EXTRACTION_ERROR,
                        extraction.REASON: message,
                        extraction.SECONDS: 0.0,
                        extraction.CACHED: False,
                    }
                ]
            )
        lesions.append(one_lesions)
        reports.append(one_report)
    return pd.concat(lesions, ignore_index=True), pd.concat(reports, ignore_index=True)


def _cases(ctx: Context, valid: pd.DataFrame, status: pd.Series, reason: pd.Series) -> list[extraction.CaseInput]:
    """Case inputs of the valid rows; a blank image or mask path is that patient's failure."""
    base = ctx.cohort.parent
    cases = []
    for index, row in valid.iterrows():
        pid = row[PATIENT_ID]
        blank = [c for c in (IMAGE, MASK) if not isinstance(row.get(c), str) or not row[c].strip()]
        if blank:
            status[index] = "missing_file"
            reason[index] = (
                f"patient {pid}: the {' and '.join(blank)} path is empty in {ctx.cohort}; "
                f"fill in the path (relative to the table) or remove the patient"
            )
            continue
        cases.append(extraction.CaseInput(str(pid), base / row[IMAGE].strip(), base / row[MASK].strip()))
    return cases


def process_chunk(ctx: Context, raw: pd.DataFrame, first_row: int) -> tuple[pd.DataFrame, float]:
    """Output rows of one chunk (input order) and the seconds spent extracting images."""
    n = len(raw)
    raw = raw.reset_index(drop=True)
    ids = raw[ctx.id_column].astype(object)
    rows = np.arange(first_row, first_row + n)
    status = pd.Series(OK, index=raw.index, dtype=object)
    reason = pd.Series("", index=raw.index, dtype=object)
    for i, value in ids.items():
        if not value.strip():
            status[i] = MISSING_ID
            reason[i] = (
                f"row {rows[i]}: {ctx.id_column} is empty in {ctx.cohort}; give every patient a unique identifier"
            )
        elif value in ctx.ids.duplicated:
            where = ctx.ids.duplicated[value]
            status[i] = DUPLICATE_ID
            reason[i] = (
                f"{ctx.id_column} {value!r} appears {len(where)} times in {ctx.cohort} (rows "
                f"{', '.join(map(str, where))}); keep the one right row per patient (or give each its "
                f"own identifier) and run again"
            )
    table = apply_mapping(raw, ctx.mapping) if ctx.mapping is not None else raw
    table = table.copy()
    table[PATIENT_ID] = ids.to_numpy()  # unchanged, whatever the mapping did

    candidates = table.loc[status == OK]
    valid = candidates.iloc[0:0]
    if not candidates.empty:
        report = validate_cohort(
            candidates,
            extra_columns=ctx.mapping.covariate_columns() if ctx.mapping else (),
            ranges=ctx.mapping.ranges if ctx.mapping else None,
            rows=rows[candidates.index.to_numpy()],
        )
        if report.fatal:
            raise ValueError(f"{ctx.cohort}: the table cannot be used:\n{report.format()}")
        by_patient: dict[str, list[Problem]] = {}
        for problem in report.problems:
            by_patient.setdefault(str(problem.patient_id), []).append(problem)
        for index in candidates.index[(report.status != OK).to_numpy()]:
            problems = by_patient.get(str(table.at[index, PATIENT_ID]), [])
            status[index] = _problem_code(problems[0]) if problems else INVALID
            reason[index] = (
                "; ".join(p.message for p in problems) or report.status[index]
            ) + f"; correct the value(s) in {ctx.cohort} and run again"
        valid = report.valid_rows

    extraction_seconds = 0.0
    lesions = extraction_report = None
    if ctx.needs_images and not valid.empty:
        cases = _cases(ctx, valid, status, reason)
        start = time.perf_counter()
        if cases:
            lesions, extraction_report = _extract(ctx, cases)
        else:
            lesions, extraction_report = (
                pd.DataFrame(),
                pd.DataFrame(columns=[PATIENT_ID, extraction.STATUS, extraction.REASON]),
            )
        extraction_seconds = time.perf_counter() - start
        valid = valid.loc[status[valid.index] == OK]

    out = pd.DataFrame(index=raw.index, columns=ctx.columns, dtype=object)
    out[PATIENT_ID] = ids.to_numpy()
    out[ROW] = rows
    if not valid.empty:
        features = patient_table.patient_feature_table(
            valid, pd.Series(OK, index=valid.index), lesions, extraction_report, ctx.rules
        )
        features.index = valid.index
        failed = features[patient_table.STATUS] != OK
        status[features.index[failed]] = features.loc[failed, patient_table.STATUS]
        reason[features.index[failed]] = features.loc[failed, patient_table.REASON]
        features = features.loc[~failed]
        if not features.empty:
            _predict(ctx, features, out)
    out[STATUS] = status
    out[REASON] = reason
    return out, extraction_seconds


def _predict(ctx: Context, features: pd.DataFrame, out: pd.DataFrame) -> None:
    """Predictions, scores, top contributions and explanation files of the ok patients."""
    from models.predictor import used_columns

    # Imaging columns a fitted pipeline drops (selection) are not extracted (issue 14) and
    # cannot change its predictions: only the used ones must be there.
    used = {id(m): set(used_columns(m.predictor.pipeline, m.feature_columns)) for m in ctx.models}
    missing_imaging = sorted(
        {
            c
            for m in ctx.models
            for c in m.feature_columns
            if c.startswith(registry.IMAGING_PREFIXES) and c not in features and c in used[id(m)]
        }
    )
    if missing_imaging:
        raise ValueError(
            f"the models use imaging feature(s) {missing_imaging[:5]} that extraction did not "
            f"produce; extract with the radiomics parameters and aggregation rules the models "
            f"were trained with (--radiomics-params, --extraction-config)"
        )
    for model in ctx.models:
        ctx.absent.setdefault(f"{model.task}/{model.name}", set()).update(
            c
            for c in model.feature_columns
            if c not in features and (c in used[id(model)] or not c.startswith(registry.IMAGING_PREFIXES))
        )
    index = features.index
    for column in SCORE_COLUMNS:
        out.loc[index, column] = features[column].astype(object).where(features[column].notna(), None)
    documents: dict[Any, dict[str, Any]] = {
        i: {PATIENT_ID: features.at[i, PATIENT_ID], ROW: int(out.at[i, ROW]), "models": []} for i in index
    }
    for model in ctx.models:
        frame = _model_input(features, model)
        # Pre-processing once per model and chunk, shared by prediction, novelty and explanation
        # (it used to run three times over every input column; same numbers, issue 14).
        inputs = (
            prepare_inputs(model.predictor.pipeline, frame[model.feature_columns]) if model.pyfunc is None else None
        )
        predicted = model.predict(frame, inputs)
        for column in predicted.columns:
            if column in out.columns:
                out.loc[index, column] = predicted[column].to_numpy()
        for column in NOVELTY_COLUMNS:  # per task: both tasks share a row (docs/novelty.md)
            values = predicted[column] if column in predicted else pd.Series(None, index=index, dtype=object)
            out.loc[index, novelty_column(model.task, column)] = values.astype(object).where(values.notna(), None)
        novelty_note = _novelty_note(model, predicted)
        out.loc[index, f"{model.task}_model"] = model.name
        out.loc[index, f"{model.task}_model_version"] = model.version
        result = explain_without_background(
            model.predictor, frame, typed=True, prepared=inputs.dense if inputs is not None else None
        )
        if model.task == registry.RECURRENCE:
            served, explained = predicted[RISK].to_numpy(float), result.output
        else:  # log-odds through the one (clipped) logit on both sides: saturated probabilities agree
            served = logit(predicted[RESPONSE_PROBABILITY].to_numpy(float))
            explained = logit(expit(np.asarray(result.output, float)))
        gap = np.abs(explained - served)
        if gap.size and gap.max() > ADDITIVITY_TOLERANCE * max(1.0, float(np.abs(result.output).max())):
            raise ValueError(
                f"{model.source}: the unwrapped predictor disagrees with the served model (by "
                f"{gap.max():.3g}); its explanation would not describe its prediction"
            )
        if ctx.top_k:
            top = shap_explain.top_contributions(result, ctx.top_k).drop(columns=PATIENT_ID)
            top.index = index
            for column in top.columns:
                out.loc[index, f"{model.task}_{column}"] = top[column].to_numpy(dtype=object)
        kind = registry.family(model.task, model.name).shap
        for position, i in enumerate(index):
            order = np.argsort(-np.abs(result.values[position]), kind="mergesort")
            documents[i]["models"].append(
                {
                    "task": model.task,
                    "model": model.name,
                    "version": model.version,
                    "source": model.source,
                    "explained": result.quantity,
                    "value": float(result.output[position]),
                    "base_value": float(result.base_values[position]),
                    "base_value_is": BASE_VALUE[kind],
                    "prediction": {c: _json_value(predicted.at[i, c]) for c in predicted.columns},
                    NOVELTY: _json_value(predicted.at[i, NOVELTY]) if NOVELTY in predicted else None,
                    OUT_OF_DISTRIBUTION: (
                        _json_value(predicted.at[i, OUT_OF_DISTRIBUTION]) if OUT_OF_DISTRIBUTION in predicted else None
                    ),
                    "novelty_note": novelty_note,
                    "contributions": [
                        {
                            "feature": result.feature_names[j],
                            "column": result.source_columns[j],
                            "value": _json_value(result.display_data[position, j]),
                            "shap": float(result.values[position, j]),
                        }
                        for j in order
                    ],
                }
            )
    for i, document in documents.items():
        name = explanation_file(str(document[PATIENT_ID]))
        out.at[i, EXPLANATION] = f"{EXPLANATIONS_DIR}/{name}"
        (ctx.explanations / name).write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")


def _novelty_note(model: LoadedModel, predicted: pd.DataFrame) -> str | None:
    """Why this model's patients have no novelty score, or None when they have one."""
    if NOVELTY not in predicted or getattr(model.predictor, "novelty", None) is None:
        return NO_NOVELTY_MODEL
    if predicted[NOVELTY].isna().any():
        return "a patient without a novelty score has a non-finite model input after pre-processing"
    return None


def novelty_notes(models: Sequence[LoadedModel]) -> dict[str, str]:
    """{task/model: why} for the models that give no novelty score (an old models folder)."""
    return {f"{m.task}/{m.name}": NO_NOVELTY_MODEL for m in models if getattr(m.predictor, "novelty", None) is None}


def output_columns(models: Sequence[LoadedModel], top_k: int) -> list[str]:
    """The columns of predictions.csv for these models (fixed for the run)."""
    columns = [PATIENT_ID, ROW, STATUS, REASON]
    for model in models:
        if model.task == registry.RECURRENCE:
            horizons = getattr(model.predictor, "horizons", ())
            columns += [RISK, *(survival_column(h) for h in horizons), RISK_GROUP]
        else:
            columns += [RESPONSE_PROBABILITY]
        columns += [novelty_column(model.task, c) for c in NOVELTY_COLUMNS]
    columns += list(SCORE_COLUMNS)
    for model in models:
        columns += [f"{model.task}_model", f"{model.task}_model_version"]
    for model in models:
        for k in range(1, top_k + 1):
            columns += [f"{model.task}_feature_{k}", f"{model.task}_value_{k}", f"{model.task}_shap_{k}"]
    return columns + [EXPLANATION]


# --------------------------------------------------------------------------- the run


def _prepare_out(out: Path) -> Path:
    """Create ``out``; remove this command's previous outputs there (and nothing else)."""
    out.mkdir(parents=True, exist_ok=True)
    explanations = out / EXPLANATIONS_DIR
    if explanations.is_dir():
        shutil.rmtree(explanations)
    explanations.mkdir()
    for name in (PREDICTIONS_FILE, SUMMARY_FILE):
        (out / name).unlink(missing_ok=True)
    return explanations


model_settings_record = registry.settings_record  # the record the models were trained with


def resolve_settings(
    record: dict[str, Any] | None,
    radiomics_params: Path | None,
    extraction_config: Path | None,
    labels: Path | None,
    liver_label: int | None,
    lesion_label: int | None,
    resample_mask: bool | None,
    allow_different_settings: bool = False,
) -> tuple[extraction.CaseOptions, tuple[str, ...], str | Path]:
    """The extraction settings of a prediction: the model's record, with what was given on the
    command line in place of its parts. Without a record: the given files, else the defaults.

    Returns (options, aggregation rules, the extraction config's cache: `ExtractionConfig.cache_location`).
    Raises ValueError naming every difference (key, model's value, given value) unless ``allow_different_settings``.
    """
    options, cfg = case_options(
        radiomics_params or DEFAULT_RADIOMICS,
        extraction_config or DEFAULT_EXTRACTION,
        labels or DEFAULT_LABELS,
        liver_label,
        lesion_label,
        resample_mask,
    )
    if record is None:
        return options, tuple(cfg.aggregation), cfg.cache_location()
    given = extraction.settings_record(options, cfg.aggregation)
    merged = json.loads(json.dumps(record))
    if radiomics_params is not None:
        merged["radiomics"] = given["radiomics"]
    if extraction_config is not None:
        for key in ("crop_margin_mm", "resample_mask", "min_lesion_voxels", "aggregation"):
            merged[key] = given[key]
        merged.pop("reference_tissue", None)  # in a record only when enabled
        if "reference_tissue" in given:
            merged["reference_tissue"] = given["reference_tissue"]
    if labels is not None:
        merged["labels"] = given["labels"]
    if liver_label is not None:
        merged["labels"]["liver"] = liver_label
    if lesion_label is not None:
        merged["labels"]["lesion"] = lesion_label
    if resample_mask is not None:
        merged["resample_mask"] = resample_mask
    differences = extraction.settings_differences(record, merged)
    if differences and not allow_different_settings:
        listed = "; ".join(
            f"{key}: model {json.dumps(model)}, given {json.dumps(value)}" for key, model, value in differences
        )
        raise ValueError(
            f"the extraction settings differ from the ones the model was trained with ({listed}); "
            f"leave out --params/--config/--labels to use the model's, or pass "
            f"--allow-different-settings to predict anyway (the features will not be the model's)"
        )
    for key, model, value in differences:
        print(
            f"warning: extraction setting {key} differs from the model's ({json.dumps(model)}): using "
            f"{json.dumps(value)} (--allow-different-settings)"
        )
    versions = extraction.settings_differences(
        {"versions": record.get("versions", {})}, {"versions": radiomics.library_versions()}
    )
    for key, model, value in versions:
        print(f"warning: the model's features were extracted with {key.split('.', 1)[1]} {model}, this is {value}")
    return (
        extraction.options_from_record(merged),
        tuple(merged.get("aggregation", cfg.aggregation)),
        cfg.cache_location(),
    )


def run_predict(
    cohort: Path,
    models: Sequence[str],
    out: Path,
    mapping: Path | None = None,
    jobs: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cache: Path | None = None,
    top_k: int = DEFAULT_TOP_K,
    repo_root: Path | None = None,
    progress: bool = True,
    radiomics_params: Path | None = None,
    extraction_config: Path | None = None,
    labels: Path | None = None,
    liver_label: int | None = None,
    lesion_label: int | None = None,
    resample_mask: bool | None = None,
    scheduler: Any = None,
    allow_different_settings: bool = False,
) -> pd.DataFrame:
    """Predict every patient of ``cohort`` with ``models``; write ``out/predictions.csv``,
    ``out/explanations/*.json`` and ``out/summary.json``.

    ``models``: models folders (``crlm train --models``), ``{task}_{name}.joblib`` files or
    MLflow URIs (``models:/crlm-recurrence@champion``, store from ``pipeline.tracking``).
    ``chunk_size``: patients per chunk (bounds memory). ``cache``: per-case extraction cache
    (default: ``cache_dir`` of ``extraction_config``, relative to the working directory). ``jobs`` /
    ``scheduler``: where cases are extracted (`pipeline.execution`: local processes or Dask).
    Extraction settings: the ones the models were trained with (`model_settings_record`) by
    default; ``radiomics_params``, ``extraction_config``, ``labels`` and the label/resampling
    overrides replace their parts, and must agree with the model's unless
    ``allow_different_settings`` (`resolve_settings`). Returns
    ``predictions.csv`` read back once the run is over (scalars only: during the run no more
    than one chunk is ever in memory).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 patient, got {chunk_size}")
    if top_k < 0:
        raise ValueError(f"top_k must be 0 or more, got {top_k}")
    start = time.perf_counter()
    cohort, out = Path(cohort), Path(out)
    repo_root = Path(repo_root) if repo_root is not None else REPO_ROOT
    spec = load_mapping(mapping) if mapping is not None else None
    id_column = spec.id_column if spec else PATIENT_ID
    raw_header = read_header(cohort)
    try:
        renames = sheet_headers(raw_header, spec)
    except MappingError as exc:
        raise MappingError(f"{cohort}: {exc}") from exc
    header = [renames.get(c, c) for c in raw_header]
    if id_column not in header:
        raise ValueError(
            f"{cohort}: no identifier column '{id_column}'; the table has {', '.join(header[:8])}"
            f"{' ...' if len(header) > 8 else ''}"
        )
    raw_id = raw_header[header.index(id_column)]
    loaded = load_models(models, repo_root)
    needs_images = any(m.needs_images for m in loaded)
    record = model_settings_record(loaded) if needs_images else None
    options, aggregation, cache_default = resolve_settings(
        record,
        radiomics_params,
        extraction_config,
        labels,
        liver_label,
        lesion_label,
        resample_mask,
        allow_different_settings,
    )
    if needs_images:
        produced = {spec.rename.get(c, c) for c in header} if spec else set(header)
        absent = [c for c in (IMAGE, MASK) if c not in produced]
        if absent:
            users = ", ".join(f"{m.task}/{m.name}" for m in loaded if m.needs_images)
            raise ValueError(
                f"{cohort}: no {' and '.join(absent)} column, but {users} use(s) imaging features; "
                f"add image and mask paths (relative to the table) or use a clinical-only model"
            )
        cache_dir = Path(cache) if cache is not None else cache_default
        # Only the image types and feature classes of the columns the fitted models use (issue 14).
        used = [c for m in loaded for c in used_columns(m.predictor.pipeline, m.feature_columns)]
        options = extraction.options_for_columns(options, used)
    else:
        cache_dir = None
    ids = index_ids(cohort, raw_id, chunk_size)
    explanations = _prepare_out(out)
    ctx = Context(
        cohort,
        id_column,
        spec,
        ids,
        loaded,
        needs_images,
        options if needs_images else None,
        cache_dir,
        aggregation,
        jobs,
        scheduler,
        top_k,
        output_columns(loaded, top_k),
        explanations,
        {},
        renames,
    )

    partial = out / f".{PREDICTIONS_FILE}.partial"
    counts: Counter[str] = Counter()
    extraction_seconds = 0.0
    first_row = 1
    try:
        with tqdm(total=ids.rows, desc="predict", unit="patient", disable=not progress) as bar:
            for chunk in read_chunks(cohort, raw_id, chunk_size):
                rows, seconds = process_chunk(ctx, chunk.rename(columns=renames), first_row)
                rows.to_csv(
                    partial, mode="w" if first_row == 1 else "a", header=first_row == 1, index=False, encoding="utf-8"
                )
                counts.update(rows[STATUS].tolist())
                extraction_seconds += seconds
                first_row += len(chunk)
                bar.update(len(chunk))
    except BaseException:
        partial.unlink(missing_ok=True)  # a predictions.csv on disk is always complete
        raise
    if first_row == 1:
        pd.DataFrame(columns=ctx.columns).to_csv(partial, index=False, encoding="utf-8")
    partial.replace(out / PREDICTIONS_FILE)

    seconds = time.perf_counter() - start
    n = first_row - 1
    summary = {
        "cohort": str(cohort),
        "patients": n,
        "ok": counts.get(OK, 0),
        "status_counts": dict(sorted(counts.items(), key=lambda kv: (kv[0] != OK, -kv[1], kv[0]))),
        "models": [
            {"task": m.task, "model": m.name, "version": m.version, "source": m.source, "uses_images": m.needs_images}
            for m in loaded
        ],
        "seconds": round(seconds, 3),
        "extraction_seconds": round(extraction_seconds, 3),
        "patients_per_minute": round(n / seconds * SECONDS_PER_MINUTE, 1) if seconds > 0 else None,
        "chunk_size": chunk_size,
        "jobs": jobs,
        "absent_columns": {model: sorted(columns) for model, columns in ctx.absent.items() if columns},
        "novelty": novelty_notes(loaded),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    for model, columns in summary["absent_columns"].items():
        print(
            f"warning: {model} uses {len(columns)} column(s) that {cohort} does not have "
            f"({', '.join(columns[:5])}{' ...' if len(columns) > 5 else ''}); every patient gets the training "
            f"value the model imputes for them; add the columns (or a mapping that derives them) if you can"
        )
    for model, why in summary["novelty"].items():
        print(f"warning: {model}: no novelty score or out_of_distribution flag: {why}")
    statuses = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    print(
        f"predicted {n} patients in {seconds:.1f} s ({summary['patients_per_minute']} patients/min, "
        f"{extraction_seconds / seconds:.0%} extracting images): {statuses or 'no rows'}; "
        f"wrote {out / PREDICTIONS_FILE}"
    )
    return read_predictions(out / PREDICTIONS_FILE)


def read_predictions(path: Path) -> pd.DataFrame:
    """A ``predictions.csv`` as written, with ``patient_id`` exactly as in the file."""
    table = pd.read_csv(path, dtype={PATIENT_ID: str}, encoding="utf-8")
    raw = pd.read_csv(path, usecols=[PATIENT_ID], dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    table[PATIENT_ID] = raw[PATIENT_ID].astype(object).to_numpy()
    table[REASON] = table[REASON].astype(object).fillna("")
    return table
