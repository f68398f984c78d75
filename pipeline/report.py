"""``crlm report``: one self-contained HTML report per pipeline run (docs/design.md section 1).

The report is a single file that renders offline: CSS inline, every image a base64
``data:image/png`` URI, no JavaScript, no fonts, no http(s) resource (a Content-Security-Policy
says so to the browser as well). This module gathers the numbers and texts; the layout is the Jinja2
template ``pipeline/templates/report.html.j2``, rendered with autoescape, so every piece of user data
(patient ids, column names, status reasons, notes, model names) is HTML-escaped exactly once.

Inputs, each optional except ``train_dir/metrics.json`` (written by ``crlm train``):

- ``train_dir``: ``metrics.json`` ({task: {model: {metric: {value, ci_low, ci_high}}}}),
  ``cv.json`` ({task: {best, params, cv, ...}}), ``plots/*.png``;
- ``features``: ``features.parquet`` (cohort summary, status counts);
- ``extraction``: the folder of ``crlm extract`` (``extraction_summary.json``,
  ``extraction_report.csv``);
- ``external_dir``: ``metrics.json`` of ``crlm evaluate`` on another site;
- ``explain_dir``: ``{task}/{model}/`` with ``bar.png``, ``beeswarm.png``,
  ``attribution_share.json``, ``importance.csv`` (SHAP);
- ``truth``: a synthetic cohort's ``truth.csv``: its presence labels the data as synthetic.

A missing optional input gives a visible "not available" section, never a crash.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
import numpy as np
import pandas as pd
import yaml
from sksurv.nonparametric import kaplan_meier_estimator

from features import schema as s
from features.aggregation import RULE_PREFIX
from features.morphology import LARGEST_DIAMETER_MM, LESION_COUNT
from features.patient_table import MORPHOLOGY_PREFIX, OK, REASON, STATUS
from features.scores import clinical_scores
from models.evaluation import CALIBRATION_HORIZON as HORIZON_MONTHS
from models.evaluation import CALIBRATION_SLOPE
from models.registry import BASELINES, DEFAULT_REFERENCE, NOTES, ORACLE, PRIMARY_METRIC, RECURRENCE, TASKS
from models.registry import MODELS as FITTED_MODELS
from pipeline.paths import REPO_ROOT

REPORT_NAME = "report.html"
TRAIN_RUN_NAME = "train"  # the parent run pipeline/train.py opens (tracking.pipeline_run)
MLFLOW_ARTIFACT_DIR = "report"
PARAM_BLOCKS = ("train", "evaluate")

SYNTHETIC_LABEL = "synthetic cohort (simulated; not clinical evidence)"
REAL_LABEL = "real cohort"
DATA_KIND_COLUMN = "data_kind"  # optional features column: "synthetic" labels the data
DATA_KIND_METADATA = b"crlm.data_kind"  # optional parquet key-value metadata, same meaning
SYNTHETIC = "synthetic"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANCE = 0.5  # C-index / AUC of a random ranking
DECIMALS = 3  # metrics
PERCENT_DECIMALS = 1  # cohort shares
SHARE_DECIMALS = 0  # share of the oracle's gain
SHARE_SUM_TOLERANCE = 0.01  # leaves of a mapping summing to 1 are shown as percentages
MAX_STATUS_ROWS = 20  # status / reason rows shown before "... more"
MAX_EXAMPLE_IDS = 5  # patient ids listed per status row
MAX_OTHER_COLUMNS = 30  # unrecognised feature columns listed by name
TOP_IMPORTANCE_ROWS = 15  # rows of importance.csv shown

REFERENCE = DEFAULT_REFERENCE  # the default reference of the paired differences (params.yaml evaluate.reference)
TASK_TITLES = {
    "recurrence": "Recurrence after liver resection (time to event)",
    "response": "Response to pre-operative chemotherapy (CR/PR vs SD/PD)",
}

METRIC_LABELS = {
    "c_index": "Harrell's C",
    "uno_c_index": "Uno's C",
    "auc_12m": "AUC 12 mo",
    "auc_24m": "AUC 24 mo",
    "auc_36m": "AUC 36 mo",
    "ibs": "integrated Brier (lower better)",
    CALIBRATION_SLOPE: f"calibration slope {HORIZON_MONTHS:g} mo (ideal 1)",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "brier": "Brier (lower better)",
    "calibration_intercept": "calibration intercept (ideal 0)",
    "calibration_slope": "calibration slope (ideal 1)",
}

PLOT_CAPTIONS = {
    "km_recurrence_model": "Kaplan-Meier recurrence-free survival of the held-out patients by risk group "
    "(tertile cut-points of the best model's risk on the training split), log-rank test.",
    "km_recurrence_fong": "Kaplan-Meier recurrence-free survival of the held-out patients by Fong-score risk "
    "group (cut-points from the training split), log-rank test.",
    "calibration_recurrence": f"Calibration of the best recurrence model: predicted vs Kaplan-Meier observed "
    f"recurrence-free probability at {HORIZON_MONTHS:g} months, by risk quantile.",
    "td_auc_recurrence": "Time-dependent (cumulative/dynamic) AUC over follow-up for every model, baseline "
    "and the oracle.",
    "decision_recurrence": f"Decision curve at {HORIZON_MONTHS:g} months: net benefit of the best "
    f"recurrence model against treat-all and treat-none.",
    "roc_response": "ROC curves for response (CR/PR) on the held-out patients: models, baselines, oracle.",
    "calibration_response": "Calibration of the best response model: predicted vs observed response rate by "
    "quantile bin (Wilson 95% intervals).",
    "decision_response": "Decision curves for response: the best model, the Fong score and the oracle against "
    "treat-all and treat-none.",
}
PLOT_ORDER = tuple(PLOT_CAPTIONS)

EXPLAIN_IMAGES = {
    "bar.png": "mean |SHAP| per feature (global importance)",
    "beeswarm.png": "SHAP values per patient and feature (beeswarm)",
}
ATTRIBUTION_FILE = "attribution_share.json"
IMPORTANCE_FILE = "importance.csv"

# Browsers enforce it: nothing but inline styles and data: images may load.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATE = "report.html.j2"  # pipeline/templates/, shipped as package data (pyproject.toml)
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)


class Ci(NamedTuple):
    """A formatted value and its interval text; the template puts the interval in ``span.ci``."""

    value: str
    interval: str


def table(
    headers: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str | None] | None = None,
    numeric: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """A table for the template's ``table`` macro (no header row when every header is empty)."""
    return {
        "headers": list(headers),
        "rows": [list(r) for r in rows],
        "classes": row_classes,
        "numeric": list(numeric or [False] * len(headers)),
    }


# --------------------------------------------------------------------------- numbers


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value: Any, decimals: int = DECIMALS, signed: bool = False) -> str:
    """A number with ``decimals`` places (``+`` sign if ``signed``); ``n/a`` if undefined."""
    number = _finite(value)
    if number is None:
        return "n/a"
    return f"{number:+.{decimals}f}" if signed else f"{number:.{decimals}f}"


def fmt_ci(entry: Mapping[str, Any] | float | None, signed: bool = False) -> Ci | str:
    """``0.662 (0.601 to 0.720)``: the value and its 95% CI (``n/a`` if there is no entry)."""
    if entry is None or (isinstance(entry, Mapping) and not entry):
        return "n/a"
    if not isinstance(entry, Mapping):  # a bare number: no interval to show
        return Ci(fmt(entry, signed=signed), "(CI n/a)")
    low, high = _finite(entry.get("ci_low")), _finite(entry.get("ci_high"))
    if low is None or high is None:
        return Ci(fmt(entry.get("value"), signed=signed), "(CI n/a)")
    return Ci(fmt(entry.get("value"), signed=signed), f"({fmt(low, signed=signed)} to {fmt(high, signed=signed)})")


def oracle_gain_share(value: Any, oracle: Any) -> float | None:
    """(C - 0.5) / (C_oracle - 0.5): the share of the oracle's gain over chance a model reaches."""
    c, best = _finite(value), _finite(oracle)
    if c is None or best is None or best <= CHANCE:
        return None
    return (c - CHANCE) / (best - CHANCE)


def fmt_percent(share: float | None, decimals: int = PERCENT_DECIMALS) -> str:
    return "n/a" if share is None or not math.isfinite(share) else f"{100 * share:.{decimals}f}%"


# --------------------------------------------------------------------------- inputs


def png_data_uri(path: Path) -> str | None:
    """``data:image/png;base64,...`` for a PNG file; None if it is not a readable PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: Path, caption: str) -> dict[str, str | None]:
    """An embedded PNG with its caption, or the problem ('not available') naming the file."""
    uri = png_data_uri(path)
    state = None if uri is not None else "is not a PNG image" if path.is_file() else "not available"
    return {
        "uri": uri,
        "name": path.name,
        "caption": caption,
        "problem": f"{path.name}: {state} ({path})" if state else None,
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _try_read(path: Path, reader) -> tuple[Any, str | None]:
    """(content, None) or (None, why it could not be read): optional inputs never crash the report."""
    if not path.is_file():
        return None, f"{path} not available"
    try:
        return reader(path), None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return None, f"{path} could not be read: {exc}"


def load_metrics(train_dir: Path) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``train_dir/metrics.json``; FileNotFoundError naming the file and the command that writes it."""
    path = Path(train_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the report needs the training metrics; run "
            f"`crlm train --features <features.parquet> --out {Path(train_dir)}` "
            f"(or `dvc repro train`) first"
        )
    try:
        metrics = _read_json(path)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-run crlm train to rewrite it") from None
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ValueError(
            f"{path}: expected {{task: {{model: {{metric: {{value, ci_low, ci_high}}}}}}}}; "
            f"re-run crlm train to rewrite it"
        )
    return metrics


def is_synthetic(truth: Path | None, features_table: pd.DataFrame | None, features: Path | None) -> bool:
    """Synthetic when a truth.csv is given or the features table says so (column or parquet metadata)."""
    if truth is not None:
        return True
    if features_table is not None and DATA_KIND_COLUMN in features_table:
        if (features_table[DATA_KIND_COLUMN].astype(str).str.lower() == SYNTHETIC).any():
            return True
    if features is not None and Path(features).is_file():
        try:
            import pyarrow.parquet as pq

            metadata = pq.read_schema(features).metadata or {}
        except (OSError, ValueError):
            return False
        return metadata.get(DATA_KIND_METADATA, b"").decode("utf-8", "replace").lower() == SYNTHETIC
    return False


def _git_revision(repo_root: Path) -> str:
    try:
        from pipeline.tracking import git_revision
    except ImportError:
        return "unknown"
    return git_revision(repo_root)


# --------------------------------------------------------------------------- header


def header(
    synthetic: bool,
    repo_root: Path,
    inputs: Mapping[str, Path | None],
    oracle_present: bool,
    params_file: Path | None = None,
) -> dict[str, Any]:
    """Title, what data this is, date, git revision, inputs and the params used (``params_file``,
    the params.yaml the run was given; default ``repo_root/params.yaml``)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [("generated", now), ("git revision", _git_revision(repo_root))]
    facts += [(name, str(path) if path is not None else "not given") for name, path in inputs.items()]
    params_path = Path(params_file) if params_file is not None else repo_root / "params.yaml"
    params, problem = _try_read(params_path, lambda p: yaml.safe_load(p.read_text(encoding="utf-8")))
    if problem is not None or not isinstance(params, dict):
        shown = {"problem": f"params: {problem or f'{params_path} holds no mapping'}"}
    else:
        blocks = {k: params[k] for k in PARAM_BLOCKS if k in params}
        text = (
            yaml.safe_dump(blocks, sort_keys=False, default_flow_style=None) if blocks else "(no train/evaluate blocks)"
        )
        shown = {"problem": None, "path": params_path, "text": text}
    return {
        "synthetic": synthetic,
        "label": SYNTHETIC_LABEL if synthetic else REAL_LABEL,
        "oracle_warning": not synthetic and oracle_present,
        "facts": table(["", ""], facts),
        "params": shown,
    }


# --------------------------------------------------------------------------- cohort


def _binary(series: pd.Series) -> pd.Series:
    if series.dtype == object:
        series = series.map(
            lambda v: {"true": 1, "false": 0, "yes": 1, "no": 0}.get(v.lower(), v) if isinstance(v, str) else v
        )
    return pd.to_numeric(series, errors="coerce")


def _share_line(table_: pd.DataFrame, column: str, label: str) -> tuple[str, str]:
    if column not in table_:
        return label, "column not in table"
    values = _binary(table_[column])
    known = values.dropna()
    if known.empty:
        return label, "all missing"
    return label, f"{int(known.sum())}/{len(known)} ({fmt_percent(known.mean())})" + _missing(values)


def _missing(values: pd.Series) -> str:
    n = int(values.isna().sum())
    return f"; {n} missing" if n else ""


def _median_line(table_: pd.DataFrame, column: str, label: str) -> tuple[str, str]:
    if column not in table_:
        return label, "column not in table"
    values = pd.to_numeric(table_[column], errors="coerce")
    known = values.dropna()
    if known.empty:
        return label, "all missing"
    q1, median, q3 = np.quantile(known, [0.25, 0.5, 0.75])
    return label, f"median {median:.1f} (IQR {q1:.1f} to {q3:.1f})" + _missing(values)


def _counts_line(table_: pd.DataFrame, column: str, label: str) -> tuple[str, str]:
    if column not in table_:
        return label, "column not in table"
    values = table_[column]
    counts = values.value_counts(sort=False)
    if isinstance(values.dtype, pd.CategoricalDtype):
        counts = counts.reindex(values.cat.categories)  # the scale's own order (low, high)
    elif pd.api.types.is_numeric_dtype(values):
        counts = counts.sort_index()  # scores in numeric order
    else:
        counts = counts.sort_values(ascending=False, kind="mergesort")
    counts = counts[counts > 0]
    counts.index = counts.index.map(str)
    if values.isna().any():
        counts["missing"] = int(values.isna().sum())
    total = int(counts.sum())
    return label, ", ".join(f"{k}: {v} ({fmt_percent(v / total)})" for k, v in counts.items())


def reverse_km_median(time: np.ndarray, event: np.ndarray) -> float | None:
    """Median follow-up in months by the reverse Kaplan-Meier method (Schemper & Smith, Control Clin
    Trials 1996;17:343): scikit-survival's estimate of the censoring distribution (an event at a time
    leaves the risk set before a censoring at the same time); None if it never falls to 0.5."""
    times, censoring_free = kaplan_meier_estimator(np.asarray(event, bool), np.asarray(time, float), reverse=True)
    reached = np.flatnonzero(censoring_free <= CHANCE)
    return float(times[reached[0]]) if reached.size else None


def _outcome_lines(table_: pd.DataFrame) -> list[tuple[str, str]]:
    lines = []
    if {s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS} <= set(table_.columns):
        event = _binary(table_[s.RECURRENCE_EVENT])
        time = pd.to_numeric(table_[s.RECURRENCE_MONTHS], errors="coerce")
        known = event.notna() & time.notna()
        if known.any():
            e, t = event[known].to_numpy(bool), time[known].to_numpy(float)
            lines.append(("recurrence events", f"{int(e.sum())}/{len(e)} ({fmt_percent(e.mean())})"))
            follow = reverse_km_median(t, e)
            lines.append(
                (
                    "median follow-up (reverse Kaplan-Meier)",
                    f"{follow:.1f} months" if follow is not None else "not reached",
                )
            )
            lines.append(("median observed time", f"{np.median(t):.1f} months"))
        else:
            lines.append(("recurrence events", "no known outcome"))
    else:
        lines.append(("recurrence events", "columns not in table"))
    if s.RECIST in table_:
        recist = table_[s.RECIST]
        known = recist.isin(s.RECIST_CATEGORIES)
        responders = recist.isin(s.RESPONDER_CATEGORIES)
        share = responders.sum() / known.sum() if known.any() else None
        lines.append(("responders (CR or PR)", f"{int(responders.sum())}/{int(known.sum())} ({fmt_percent(share)})"))
    else:
        lines.append(("responders (CR or PR)", "column not in table"))
    return lines


def _status_table(table_: pd.DataFrame, source: str) -> dict[str, Any]:
    """Rows grouped by status and reason, largest groups first, with example patient ids."""
    status = table_[STATUS].astype(str) if STATUS in table_ else pd.Series("no status column", index=table_.index)
    reason = table_[REASON].fillna("").astype(str) if REASON in table_ else pd.Series("", index=table_.index)
    ids = table_[s.PATIENT_ID].astype(str) if s.PATIENT_ID in table_ else pd.Series("?", index=table_.index)
    frame = pd.DataFrame({"status": status, "reason": reason, "id": ids})
    groups = frame.groupby(["status", "reason"], sort=False)["id"].agg(list)
    groups = groups.loc[groups.map(len).sort_values(ascending=False, kind="mergesort").index]
    rows = []
    for (state, why), members in list(groups.items())[:MAX_STATUS_ROWS]:
        example = ", ".join(members[:MAX_EXAMPLE_IDS]) + (" ..." if len(members) > MAX_EXAMPLE_IDS else "")
        rows.append([state, why or "-", len(members), example if state != OK else "-"])
    return {
        "table": table(["status", "reason", "patients", "patient ids"], rows, numeric=[False, False, True, False]),
        "more": max(len(groups) - MAX_STATUS_ROWS, 0),
        "source": source,
        "columns": f"{STATUS} and {REASON}",
    }


def _column_families(table_: pd.DataFrame) -> tuple[dict[str, Any], str | None]:
    """Columns counted by family, and the unrecognised ones by name (None if there are none)."""
    scores = set(clinical_scores(pd.DataFrame(columns=list(s.CLINICAL_INPUTS))).columns)
    known = set(s.COLUMN_BY_NAME) | {STATUS, REASON, DATA_KIND_COLUMN}
    columns = [str(c) for c in table_.columns]
    radiomics = [c for c in columns if c.startswith(tuple(RULE_PREFIX.values()))]
    morphology = [c for c in columns if c.startswith(MORPHOLOGY_PREFIX)]
    score_cols = [c for c in columns if c in scores]
    canonical = [c for c in columns if c in known]
    other = [c for c in columns if c not in set(radiomics) | set(morphology) | set(score_cols) | set(canonical)]
    rows = [
        ["canonical clinical, outcomes, status", len(canonical)],
        ["clinical scores", len(score_cols)],
        ["measured morphology (patient_*)", len(morphology)],
        ["aggregated radiomics (rad_*)", len(radiomics)],
        ["other columns", len(other)],
    ]
    shown = ", ".join(other[:MAX_OTHER_COLUMNS]) + (" ..." if len(other) > MAX_OTHER_COLUMNS else "") if other else None
    return table(["column family", "columns"], rows, numeric=[False, True]), shown


def _agreement(table_: pd.DataFrame) -> dict[str, Any]:
    """Clinical vs mask-measured lesion count and largest diameter (docs/design.md section 3)."""
    count, diameter = MORPHOLOGY_PREFIX + LESION_COUNT, MORPHOLOGY_PREFIX + LARGEST_DIAMETER_MM
    rows = []
    if {s.N_LESIONS, count} <= set(table_.columns):
        a, b = pd.to_numeric(table_[s.N_LESIONS], errors="coerce"), pd.to_numeric(table_[count], errors="coerce")
        both = a.notna() & b.notna()
        if both.any():
            rows.append(
                [
                    "lesion count: clinical = measured",
                    f"{int((a[both] == b[both]).sum())}/{int(both.sum())} ({fmt_percent((a[both] == b[both]).mean())})",
                ]
            )
    if {s.LARGEST_CM, diameter} <= set(table_.columns):
        mm_per_cm = 10.0
        a = pd.to_numeric(table_[s.LARGEST_CM], errors="coerce")
        b = pd.to_numeric(table_[diameter], errors="coerce") / mm_per_cm
        both = a.notna() & b.notna()
        if both.any():
            diff = (b[both] - a[both]).abs()
            rows.append(
                [
                    "largest diameter: |measured - clinical| (cm)",
                    f"median {diff.median():.2f}, 90th percentile {diff.quantile(0.9):.2f}",
                ]
            )
    if not rows:
        return {"problem": "clinical vs measured lesion count and diameter: not available (no imaging columns)"}
    return table(["clinical vs measured", "agreement"], rows)


def cohort_section(features: Path | None) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Cohort summary from features.parquet, and the table (None if unavailable)."""
    if features is None:
        return {"problem": "features.parquet: not available (not given; pass --features)"}, None
    table_, problem = _try_read(Path(features), pd.read_parquet)
    if problem is not None:
        return {"problem": f"features.parquet: {problem}; run crlm featurize"}, None
    n = len(table_)
    ok = int((table_[STATUS] == OK).sum()) if STATUS in table_ else None
    overview = [("patients", n), ("status ok", ok if ok is not None else "no status column")]
    if s.SITE in table_:
        overview.append(("sites", ", ".join(f"{k}: {v}" for k, v in table_[s.SITE].astype(str).value_counts().items())))
    else:
        overview.append(("sites", "column not in table"))
    overview += _outcome_lines(table_)
    marginals = [
        _median_line(table_, s.AGE, "age (years)"),
        _counts_line(table_, s.SEX, "sex"),
        _share_line(table_, s.NODE_POSITIVE, "node-positive primary"),
        _share_line(table_, s.SYNCHRONOUS, "synchronous metastases"),
        _median_line(table_, s.N_LESIONS, "number of liver lesions"),
        _median_line(table_, s.LARGEST_CM, "largest lesion (cm)"),
        _median_line(table_, s.CEA, "CEA (ng/mL)"),
        _share_line(table_, s.RAS, "RAS mutant"),
        _share_line(table_, s.EXTRAHEPATIC, "extrahepatic disease"),
        _counts_line(table_, "fong_risk_group", "Fong risk group (low 0-2, high 3-5)"),
        _counts_line(table_, "fong_score", "Fong score"),
    ]
    families, other_columns = _column_families(table_)
    return {
        "problem": None,
        "n": n,
        "source": features,
        "overview": table(["", ""], overview),
        "status": _status_table(table_, str(features)),
        "marginals": table(["variable", "summary"], marginals),
        "agreement": _agreement(table_),
        "families": families,
        "other_columns": other_columns,
    }, table_


def extraction_section(extraction: Path | None) -> dict[str, Any]:
    """Status counts from extraction_summary.json and extraction_report.csv."""
    if extraction is None:
        return {"problem": "extraction: not available (not given; pass --extraction)"}
    folder = Path(extraction)
    folder = folder.parent if folder.is_file() else folder
    out: dict[str, Any] = {"problem": None, "summary_problem": None, "report_problem": None, "failed": None}
    summary, problem = _try_read(folder / "extraction_summary.json", _read_json)
    if problem is not None or not isinstance(summary, dict):
        out["summary_problem"] = f"extraction_summary.json: {problem or 'not a mapping'}; run crlm extract"
    else:
        out["facts"] = table(["", ""], [(k, v) for k, v in summary.items() if not isinstance(v, dict)])
        out["counts"] = table(
            ["lesion/case status", "rows"], list((summary.get("status_counts") or {}).items()), numeric=[False, True]
        )
    report, problem = _try_read(
        folder / "extraction_report.csv", lambda p: pd.read_csv(p, dtype={s.PATIENT_ID: str}, keep_default_na=False)
    )
    if problem is not None:
        out["report_problem"] = f"extraction_report.csv: {problem}"
    elif STATUS in report:
        failed = report.loc[report[STATUS].astype(str) != OK]
        out.update(n_rows=len(report), n_failed=len(failed), failed=_status_table(failed, "extraction_report.csv"))
    return out


# --------------------------------------------------------------------------- models


def _role(task: str, name: str) -> tuple[str, str | None]:
    if name == ORACLE:
        return "oracle (true linear predictor; upper bound)", "oracle"
    if name in BASELINES:
        return "baseline (clinical score)", "baseline"
    if name in FITTED_MODELS.get(task, ()):
        return "fitted model", None
    return "model", None


def _model_order(task: str, names: Iterable[str]) -> list[str]:
    names = list(names)
    fitted = FITTED_MODELS.get(task, ())
    rank = {n: i for i, n in enumerate((*fitted, *BASELINES, ORACLE))}
    unknown = len(fitted) - 0.5  # a model this module does not know sits with the fitted ones
    return sorted(names, key=lambda n: (rank.get(n, unknown), n))


def metrics_table(
    task: str, task_metrics: Mapping[str, Mapping[str, Any]], best: str | None, reference: str | None = REFERENCE
) -> dict[str, Any]:
    """One row per model: every metric with its CI, the paired delta vs ``reference``, the oracle-gain share.

    Without a reference baseline (``None``: the cohort cannot compute it) there is no delta column.
    """
    names = _model_order(task, task_metrics)
    metric_names: list[str] = []
    for name in names:
        for metric in task_metrics[name]:
            if metric not in metric_names and not str(metric).startswith("delta_"):
                metric_names.append(metric)
    primary = PRIMARY_METRIC.get(task, metric_names[0] if metric_names else "")
    oracle = task_metrics.get(ORACLE, {}).get(primary, {}).get("value") if ORACLE in task_metrics else None
    has_delta = reference is not None and reference in task_metrics
    headers: list[Any] = ["model", "role", *(METRIC_LABELS.get(m, m) for m in metric_names)]
    if has_delta:
        headers.append(f"difference in {METRIC_LABELS.get(primary, primary)} vs {reference}")
    if oracle is not None:
        headers.append("share of the oracle's gain over chance")
    rows, classes = [], []
    for name in names:
        entry = task_metrics[name]
        role, css = _role(task, name)
        row: list[Any] = [
            f"{name} (best)" if name == best else name,
            role,
            *(fmt_ci(entry.get(m)) for m in metric_names),
        ]
        if has_delta:
            delta = next((v for k, v in entry.items() if str(k).startswith("delta_")), None)
            row.append("reference" if name == reference else fmt_ci(delta, signed=True))
        if oracle is not None:
            share = None if name == ORACLE else oracle_gain_share(entry.get(primary, {}).get("value"), oracle)
            row.append("-" if name == ORACLE else fmt_percent(share, SHARE_DECIMALS))
        rows.append(row)
        classes.append("best" if name == best else css)
    numeric = [False, False, *([True] * (len(headers) - 2))]
    return table(headers, rows, classes, numeric)


def _metrics_legend(
    task: str, has_oracle: bool, patients: str = "the held-out patients", reference: str | None = REFERENCE
) -> str:
    primary = PRIMARY_METRIC.get(task, "")
    text = f"Values on {patients} with bootstrap 95% CIs in brackets. "
    if reference is not None:
        text += f"The difference vs {reference} is paired (same bootstrap resamples). "
    if has_oracle:
        text += f"Share of the oracle's gain = ({primary} - 0.5) / ({primary} of the oracle - 0.5), a point estimate. "
    return (
        text + "Baselines are clinical scores used as risk scores; the oracle is the simulated truth (synthetic only)."
    )


def _best_line(task: str, cv: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(the best model's line, None) or (None, why there is none)."""
    if cv is None:
        return None, "cv.json: not available, so no model is marked best (run crlm train)"
    chosen = cv.get(task)
    if not isinstance(chosen, dict) or "best" not in chosen:
        return None, f"cv.json has no best model for {task}"
    best = chosen["best"]
    parts = [
        f"Best model (highest cross-validated score on the training split, chosen without looking at "
        f"the held-out patients): {best}."
    ]
    params = (chosen.get("params") or {}).get(best)
    if params:
        parts.append(f" Hyper-parameters: {json.dumps(params, default=str)}.")
    if best in (chosen.get("cv") or {}):
        parts.append(f" Cross-validated score: {fmt(chosen['cv'][best])}.")
    if "n_features_in" in chosen:
        parts.append(f" Candidate features: {chosen['n_features_in']}.")
    return "".join(parts), None


def plots_for(task: str, plot_dir: Path) -> list[Path]:
    """The task's PNGs in a reading order (known plots first)."""
    pngs = [p for p in sorted(plot_dir.glob("*.png")) if task in p.stem.split("_")]
    rank = {name: i for i, name in enumerate(PLOT_ORDER)}
    return sorted(pngs, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def caption(stem: str, source: str) -> str:
    return PLOT_CAPTIONS.get(stem, stem.replace("_", " ")) + f" ({source})"


def task_notes(task: str, notes: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """What the data allowed for ``task``: (calibration warning, [baselines left out, adaptations,
    failed models, plots skipped])."""
    entry = notes.get(task) if isinstance(notes, Mapping) else None
    if not isinstance(entry, Mapping):
        return None, []
    warning = entry.get("calibration_warning")
    warning = f"Warning: the chosen model {entry.get('chosen', '')} is {warning}." if warning else None
    items = [
        str(status["reason"])
        for status in (entry.get("baselines") or {}).values()
        if isinstance(status, Mapping) and status.get("reason")
    ]
    if entry.get("reference_note"):
        items.append(str(entry["reference_note"]))
    items += [str(a) for a in entry.get("adaptations") or []]
    items += [f"{m}: not fitted: {why}" for m, why in (entry.get("failed_models") or {}).items()]
    items += [str(p) for p in entry.get("plots_skipped") or []]
    return warning, items


def _metrics(
    task: str,
    task_metrics: Mapping[str, Any],
    best: str | None,
    reference: str | None,
    patients: str = "the held-out patients",
) -> dict[str, Any]:
    return {
        "table": metrics_table(task, task_metrics, best, reference),
        "legend": _metrics_legend(task, ORACLE in task_metrics, patients, reference=reference),
    }


def models_section(metrics: Mapping[str, Any], cv: Mapping[str, Any] | None, train_dir: Path) -> dict[str, Any]:
    """Per task: what the data allowed, the metrics table, the best model, the plots."""
    plot_dir = train_dir / "plots"
    shown: set[Path] = set()
    notes = metrics.get(NOTES, {})
    skipped = [
        f"{TASK_TITLES.get(task, task)}: not trained: {reason}."
        for task, reason in (notes.get("skipped_tasks") or {}).items()
    ]
    tasks = []
    for task, task_metrics in metrics.items():
        if task == NOTES:
            continue
        best = (cv or {}).get(task, {}).get("best") if isinstance((cv or {}).get(task), dict) else None
        reference = (notes.get(task) or {}).get("reference", REFERENCE) if NOTES in metrics else REFERENCE
        warning, allowed = task_notes(task, notes)
        best_line, best_problem = _best_line(task, cv)
        pngs = plots_for(task, plot_dir) if plot_dir.is_dir() else []
        shown.update(pngs)
        tasks.append(
            {
                "title": TASK_TITLES.get(task, task),
                "calibration_warning": warning,
                "allowed": allowed,
                "metrics": _metrics(task, task_metrics, best, reference),
                "best": best_line,
                "best_problem": best_problem,
                "figures": [figure(p, caption(p.stem, f"{train_dir.name}/plots/{p.name}")) for p in pngs],
                "no_plots": f"plots for {task}: not available in {plot_dir}",
            }
        )
    other = [p for p in sorted(plot_dir.glob("*.png")) if p not in shown] if plot_dir.is_dir() else []
    return {"skipped": skipped, "tasks": tasks, "other_figures": [figure(p, caption(p.stem, p.name)) for p in other]}


# --------------------------------------------------------------------------- external


def _rate(entry: Mapping[str, Any] | None) -> str:
    """``5.6% (4/72)``, or why there is no rate."""
    if not isinstance(entry, Mapping):
        return "n/a (no novelty record)"
    if _finite(entry.get("value")) is None:
        return f"n/a ({entry.get('note') or 'not scored'})"
    return f"{fmt_percent(entry['value'])} ({entry['n_flagged']}/{entry['n_scored']})"


def _group(entry: Mapping[str, Any] | None) -> str:
    if not isinstance(entry, Mapping):
        return "n/a"
    if _finite(entry.get("value")) is None:
        return entry.get("note") or "n/a"
    return f"{fmt(entry['value'])} (n = {entry['n']})"


def novelty_table(
    task: str, internal: Mapping[str, Any], external_notes: Mapping[str, Any], names: Sequence[str], best: str | None
) -> dict[str, Any] | None:
    """Per fitted model: the novelty flag rate on the held-out split of the training cohort and on
    the external cohort, and the model's discrimination among the external flagged and unflagged
    patients (docs/novelty.md); None when neither run has a novelty record."""
    inside = ((internal.get(NOTES) or {}).get(task) or {}).get("novelty") or {}
    outside = (external_notes.get(task) or {}).get("novelty") or {}
    if not inside and not outside:
        return None
    label = METRIC_LABELS.get(PRIMARY_METRIC.get(task, ""), "")
    rows, classes = [], []
    for name in (n for n in names if n in inside or n in outside):
        by_flag = (outside.get(name) or {}).get("by_flag") or {}
        rows.append(
            [
                f"{name} (best)" if name == best else name,
                _rate(inside.get(name)),
                _rate(outside.get(name)),
                _group(by_flag.get("flagged")),
                _group(by_flag.get("unflagged")),
            ]
        )
        classes.append("best" if name == best else None)
    return table(
        [
            "model",
            "flagged: held-out split, training cohort",
            "flagged: external cohort",
            f"external {label}, flagged",
            f"external {label}, unflagged",
        ],
        rows,
        classes,
    )


def external_section(
    external_dir: Path | None, internal: Mapping[str, Any], cv: Mapping[str, Any] | None
) -> dict[str, Any]:
    """External-site metrics: primary metrics side by side with the internal ones, then the full tables."""
    if external_dir is None:
        return {"problem": "external validation: not available (not given; pass --external)"}
    path = Path(external_dir) / "metrics.json"
    external, problem = _try_read(path, _read_json)
    if problem is not None or not isinstance(external, dict):
        return {"problem": f"external validation: {problem or 'not a mapping'}; run crlm evaluate --out {external_dir}"}
    external_notes = external.get(NOTES, {}) if isinstance(external.get(NOTES), dict) else {}
    skipped = [
        f"{TASK_TITLES.get(task, task)}: not evaluated: {reason}."
        for task, reason in (external_notes.get("skipped_tasks") or {}).items()
    ]
    tasks = []
    for task, task_metrics in external.items():
        if not isinstance(task_metrics, dict) or task == NOTES:
            continue
        reference = (external_notes.get(task) or {}).get("reference", REFERENCE) if external_notes else REFERENCE
        primary = PRIMARY_METRIC.get(task, PRIMARY_METRIC[RECURRENCE])
        best = (cv or {}).get(task, {}).get("best") if isinstance((cv or {}).get(task), dict) else None
        names = _model_order(task, set(task_metrics) | set(internal.get(task, {})) - {NOTES})
        rows, classes = [], []
        for name in names:
            inside = internal.get(task, {}).get(name, {}).get(primary)
            outside = task_metrics.get(name, {}).get(primary)
            change = (_finite((outside or {}).get("value")), _finite((inside or {}).get("value")))
            rows.append(
                [
                    f"{name} (best)" if name == best else name,
                    _role(task, name)[0],
                    fmt_ci(inside),
                    fmt_ci(outside),
                    fmt(change[0] - change[1], signed=True) if None not in change else "n/a",
                ]
            )
            classes.append("best" if name == best else _role(task, name)[1])
        label = METRIC_LABELS.get(primary, primary)
        tasks.append(
            {
                "novelty": novelty_table(task, internal, external_notes, names, best),
                "title": f"{TASK_TITLES.get(task, task)}: {label}, internal vs external",
                "side_by_side": table(
                    ["model", "role", f"internal {label}", f"external {label}", "external - internal"],
                    rows,
                    classes,
                    [False, False, True, True, True],
                ),
                "metrics": _metrics(task, task_metrics, best, reference, "every usable patient of the external cohort"),
            }
        )
    return {"problem": None, "source": path, "skipped": skipped, "tasks": tasks}


# --------------------------------------------------------------------------- explanations


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def attribution_table(shares: Any) -> dict[str, Any]:
    """attribution_share.json as a key/value table; a level whose numbers sum to 1 shows percentages."""
    rows = _flatten(shares)
    numbers = [_finite(v) for _, v in rows]
    defined = [n for n in numbers if n is not None]
    as_share = bool(defined) and len(defined) == len(numbers) and abs(sum(defined) - 1.0) <= SHARE_SUM_TOLERANCE
    cells = []
    for (key, value), number in zip(rows, numbers, strict=True):
        if as_share:
            cells.append([key, fmt_percent(number)])
        elif number is not None and not isinstance(value, bool):
            cells.append([key, fmt(number)])
        else:
            cells.append([key, json.dumps(value, default=str) if not isinstance(value, str) else value])
    return table(["attribution", "share" if as_share else "value"], cells)


def importance_table(frame: pd.DataFrame) -> dict[str, Any]:
    top = frame.head(TOP_IMPORTANCE_ROWS)
    numeric = [pd.api.types.is_numeric_dtype(top[c]) for c in top.columns]
    rows = [
        [fmt(v) if numeric[j] and not isinstance(v, (bool, np.bool_)) else v for j, v in enumerate(row)]
        for row in top.itertuples(index=False)
    ]
    return {
        **table([str(c) for c in top.columns], rows, numeric=numeric),
        "note": f"Top {len(top)} of {len(frame)} rows of {IMPORTANCE_FILE}.",
    }


def explain_section(explain_dir: Path | None) -> dict[str, Any]:
    """SHAP summaries per task and model; every missing piece says 'not run' / 'not available'."""
    if explain_dir is None or not Path(explain_dir).is_dir():
        where = f" ({explain_dir} does not exist)" if explain_dir is not None else " (not given; pass --explain)"
        return {"problem": f"SHAP explanations: not available, explain stage not run{where}"}
    explain_dir = Path(explain_dir)
    folders = sorted(p for p in explain_dir.glob("*/*") if p.is_dir())
    if not folders:
        return {"problem": f"SHAP explanations: not run (no {{task}}/{{model}}/ folders in {explain_dir})"}
    out = []
    for folder in folders:
        task, model = folder.parent.name, folder.name
        shares, shares_problem = _try_read(folder / ATTRIBUTION_FILE, _read_json)
        frame, frame_problem = _try_read(folder / IMPORTANCE_FILE, pd.read_csv)
        others = sorted(p.name for p in folder.glob("*.png") if p.name not in EXPLAIN_IMAGES)
        out.append(
            {
                "title": f"{TASK_TITLES.get(task, task)}: {model}",
                "path": folder,
                "figures": [figure(folder / name, f"{model}: {what}") for name, what in EXPLAIN_IMAGES.items()],
                "attribution": (
                    {"problem": f"{ATTRIBUTION_FILE}: {shares_problem}"}
                    if shares_problem
                    else attribution_table(shares)
                ),
                "importance": (
                    {"problem": f"{IMPORTANCE_FILE}: {frame_problem}"} if frame_problem else importance_table(frame)
                ),
                "others": ", ".join(others),
            }
        )
    return {"problem": None, "folders": out}


# --------------------------------------------------------------------------- assembly


FOOTER = (
    "Research software, not for clinical use. crlm-prognosis is not a medical device; its models and "
    "figures must not guide the care of any patient."
)


def render(context: Mapping[str, Any]) -> str:
    """The whole document from ``pipeline/templates/report.html.j2`` (autoescaped): inline CSS, a CSP
    that forbids scripts and remote resources."""
    return _TEMPLATES.get_template(TEMPLATE).render(csp=CSP, footer=FOOTER, **context)


def _report_path(out: Path) -> Path:
    out = Path(out)
    return out if out.suffix.lower() in {".html", ".htm"} else out / REPORT_NAME


def _robustness_notes(metrics: dict[str, Any]) -> dict[str, Any]:
    """``notes.robustness`` of metrics.json (per task; empty when robustness was off)."""
    return (metrics.get("notes") or {}).get("robustness") or {}


def robustness_settings(metrics: dict[str, Any]) -> list[str]:
    """Per task, one sentence saying what ``train.robustness`` did to its models, from
    ``metrics.json`` (``notes.robustness.<task>``): the ICC filter's note (columns kept of how
    many, or why it was not applied) and the perturbed copies used; "no robustness" for a task
    without a note (the setting was off)."""
    notes = _robustness_notes(metrics)
    lines = []
    for task in TASKS:
        if task not in metrics:
            continue
        mine = notes.get(task) or {}
        parts = []
        icc = mine.get("icc_filter")
        if icc:
            parts.append(str(icc.get("note", "")))
        elif mine.get("icc_filter_note"):
            parts.append(str(mine["icc_filter_note"]))
        augmentation = mine.get("augmentation")
        if augmentation:
            fitted = augmentation.get("fitted") or {}
            whose = (
                f"{fitted['patients']} of the task's {fitted['of_training_patients']} training patients"
                if {"patients", "of_training_patients"} <= set(fitted)
                else "training patients"
            )
            parts.append(
                augmentation.get("note")
                or f"{fitted.get('rows', augmentation.get('rows_used', 0))} perturbed "
                + (f"{augmentation['chain']}-k " if augmentation.get("chain") else "")
                + f"copies of {whose} as extra training rows"
            )
        lines.append(
            f"{task}: " + ("; ".join(p for p in parts if p) or "no robustness (every imaging column, no copies)")
        )
    return lines


def robustness_section(icc_path: Path | None, metrics: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ICC(1,1) distribution of the features across image perturbations (icc.csv of
    ``crlm perturb``), per feature class and image type, and per task what ``train.robustness``
    did to the models (`robustness_settings`); None when no icc.csv is given."""
    if icc_path is None:
        return None
    settings = robustness_settings(metrics or {})
    icc, problem = _try_read(Path(icc_path), pd.read_csv)
    if problem is not None:
        return {"problem": f"icc.csv: {problem}; run crlm perturb", "figure": None, "settings": settings}
    if "icc" not in icc or not icc["icc"].notna().any():
        return {
            "problem": f"{icc_path}: no feature has an ICC (too few patients extracted in every perturbation)",
            "figure": None,
            "settings": settings,
        }
    import io

    from models.plots import DPI, icc_distribution

    n = int(icc["n_patients"].max()) if "n_patients" in icc else 0
    k = int(icc["n_perturbations"].max()) if "n_perturbations" in icc else 0
    filters = {task: (note or {}).get("icc_filter") or {} for task, note in _robustness_notes(metrics or {}).items()}
    applied = {task: float(f["threshold"]) for task, f in filters.items() if f.get("applied") and f.get("threshold")}
    fig, _ = icc_distribution(
        icc, f"{icc_path}: {icc['icc'].notna().sum()} features, {n} patients x {k} perturbations", applied
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    fig.clear()
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    caption = (
        "ICC(1,1) of each imaging feature across image perturbations of the training patients "
        "(noise, rotation, translation, volume adaptation, contour randomisation, slice thickness; "
        "docs/robustness.md). Dashed: 0.75 and 0.9"
        + (f"; solid: the ICC filter of {', '.join(applied)}." if applied else ".")
    )
    figure = {"uri": uri, "name": Path(icc_path).name, "caption": caption, "problem": None}
    return {"problem": None, "figure": figure, "settings": settings}


def run_report(
    train_dir: Path,
    out: Path,
    features: Path | None = None,
    extraction: Path | None = None,
    external_dir: Path | None = None,
    explain_dir: Path | None = None,
    truth: Path | None = None,
    params: Path | None = None,
    repo_root: Path | None = None,
    track: bool = True,
    icc: Path | None = None,
) -> Path:
    """Write the run's HTML report to ``out`` (a ``.html`` file, or a folder for ``report.html``).

    ``params`` is the params.yaml the run used, shown in the report (``crlm report --params``).
    Raises FileNotFoundError if ``train_dir/metrics.json`` is missing (run ``crlm train``).
    With ``track``, the report is logged to the latest MLflow parent run named ``train``.
    """
    train_dir = Path(train_dir)
    repo_root = Path(repo_root) if repo_root is not None else REPO_ROOT
    metrics = load_metrics(train_dir)
    cv, _ = _try_read(train_dir / "cv.json", _read_json)
    cv = cv if isinstance(cv, dict) else None
    cohort, features_table = cohort_section(features)
    synthetic = is_synthetic(truth, features_table, features)
    inputs = {
        "train": train_dir,
        "features": features,
        "extraction": extraction,
        "external": external_dir,
        "explain": explain_dir,
        "truth": truth,
    }
    oracle_present = any(ORACLE in (m or {}) for m in metrics.values() if isinstance(m, dict))
    context = {
        "title": f"crlm-prognosis report: {SYNTHETIC_LABEL if synthetic else REAL_LABEL}",
        "head": header(synthetic, repo_root, inputs, oracle_present, params),
        "cohort_": cohort,
        "extraction_": extraction_section(extraction),
        "models_": models_section(metrics, cv, train_dir),
        "explain_": explain_section(explain_dir),
        "external_": external_section(external_dir, metrics, cv),
        "robustness_": robustness_section(icc, metrics),
    }
    path = _report_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(context), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if track:
        log_to_latest_train_run(path, repo_root)
    return path


def log_to_latest_train_run(path: Path, repo_root: Path) -> str | None:
    """Log the report as an artifact of the latest finished parent run named ``train``; its id or None."""
    from pipeline import tracking

    store = Path(repo_root).resolve() / "mlruns" / "mlflow.db"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not store.is_file():
        print(f"note: no MLflow store at {store}; the report is not logged (run crlm train with tracking)")
        return None
    import mlflow

    experiment_id = tracking.configure(Path(repo_root))
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.runName = '{TRAIN_RUN_NAME}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    finished = [r for r in parents if r.info.status == "FINISHED"] or parents
    if not finished:
        print(
            f"note: no MLflow run named '{TRAIN_RUN_NAME}' in {tracking.tracking_uri(Path(repo_root))}; "
            f"the report is not logged"
        )
        return None
    run = finished[0]
    mlflow.MlflowClient().log_artifact(run.info.run_id, str(path), artifact_path=MLFLOW_ARTIFACT_DIR)
    print(
        f"logged {path.name} to MLflow run {run.info.run_id} ({TRAIN_RUN_NAME}, "
        f"git {run.data.tags.get('git_revision', 'unknown')})"
    )
    return run.info.run_id
