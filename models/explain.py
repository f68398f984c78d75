"""SHAP explanations of the fitted predictors: values, tables and plots (docs/design.md section 7).

A predictor's pipeline is pre-processing (imputation, rank normalisation, one-hot encoding,
correlation filter, univariate selection) followed by one estimator. The estimator is explained
on the features it sees (the selected, transformed columns, named after the input columns they
come from); the background (reference) distribution is the training split. Each SHAP value is
in the units of the explained quantity, and per patient ``sum(values) + base_value`` equals it
exactly as the predictor computes it (`model_margin`):

========================  ==================================================================
model                     explained quantity (SHAP values are in its units)
========================  ==================================================================
``coxnet``                linear predictor = log hazard ratio; base = training (background) mean
``xgb_cox``               xgboost ``survival:cox`` margin = log hazard ratio
``xgb_aft``               risk = minus the xgboost ``survival:aft`` margin (a log survival time):
                          signs are flipped so that a positive value means higher risk,
                          as `models.survival.XGBAFTSurvival.predict` does
``logistic``, ``xgb``     log-odds of response (RECIST CR/PR)
========================  ==================================================================

Linear models are explained with ``shap.LinearExplainer`` (exact: ``coef * (x - mean)``), the
boosters with the interventional ``shap.TreeExplainer``; both use the background rows
unchanged (shap's ``Independent`` masker would otherwise keep a 100-row sample).

Plot functions return ``(figure, data)`` like `models.plots` (a `matplotlib.figure.Figure`
built without pyplot, and the numbers drawn); every title or axis names the explained quantity
and every figure carries the ``Data: <source>`` caption. Save them with `models.plots.save_plot`.

References: Lundberg & Lee, NeurIPS 2017 (SHAP); Lundberg et al., Nat Mach Intell 2020;2:56
(TreeSHAP, interventional); Janzing et al., AISTATS 2020 (interventional vs observational).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shap
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sksurv.linear_model import CoxnetSurvivalAnalysis
from xgboost import XGBClassifier

from features.schema import PATIENT_ID
from features.settings import settings_class
from models import training
from models.plots import caption
from models.predictor import RecurrencePredictor, ResponsePredictor
from models.survival import XGBAFTSurvival, XGBCoxSurvival

# --- defaults (the ``explain`` block of params.yaml overrides them) -----------------------------
DEFAULT_TOP_K = 5  # contributions per patient in top_contributions.csv and summary
DEFAULT_DEPENDENCE_PLOTS = 5  # dependence plots for the globally most important features
DEFAULT_WATERFALLS = 4  # patients with a waterfall plot (half highest, half lowest)
DEFAULT_BACKGROUND_SIZE = 200  # training patients in the background (all if fewer)
DEFAULT_SEED = 0  # sampling of the background
MAX_DISPLAY = 20  # features shown in beeswarm and bar plots
WATERFALL_DISPLAY = 10  # rows of a waterfall (the rest summed in one row)
# sum(SHAP) + base must equal the margin; xgboost sums its trees in float32, so the check
# allows float32 rounding (relative to the margins' scale), far below any real discrepancy.
ADDITIVITY_TOLERANCE = 1e-4

CLINICAL = "clinical"
IMAGING = "imaging"
QUANTITY_LOG_HR = "log hazard ratio (Cox linear predictor)"
QUANTITY_XGB_COX = "log hazard ratio (xgboost Cox margin)"
QUANTITY_AFT_RISK = "risk = minus log survival time (negated xgboost AFT margin)"
QUANTITY_LOG_ODDS = "log-odds of response (CR/PR)"

SWARM_BINS = 100  # resolution of the beeswarm's stacking along the SHAP axis
SWARM_HALF_WIDTH = 0.4  # vertical half-width of one beeswarm row (row spacing = 1)
COLOUR_MAP = "coolwarm"  # feature value: low = blue, high = red
INCREASE_COLOUR, DECREASE_COLOUR = "#d62728", "#1f77b4"
GROUP_COLOURS = {CLINICAL: "#4c72b0", IMAGING: "#dd8452"}
MISSING_COLOUR = "0.6"
FIGURE_WIDTH = 8.0  # inches, at least
PLOT_AREA_WIDTH = 5.5  # inches kept for the data next to the feature names
LABEL_INCHES_PER_CHARACTER = 0.065


@settings_class
class ExplainSettings:
    """The ``explain`` block of params.yaml, validated when built."""

    top_k: int = DEFAULT_TOP_K
    dependence_plots: int = DEFAULT_DEPENDENCE_PLOTS
    waterfalls: int = DEFAULT_WATERFALLS
    background_size: int = DEFAULT_BACKGROUND_SIZE
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        for name, minimum in (("top_k", 1), ("dependence_plots", 0), ("waterfalls", 0), ("background_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"explain.{name} must be a whole number >= {minimum}; found {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"explain.seed must be a whole number >= 0; found {self.seed!r}")


@dataclass
class ShapResult:
    """SHAP values of one model on ``n`` patients and ``p`` model features.

    ``values`` (n, p) and ``base_values`` (n,) are in the units of ``quantity``;
    ``data`` (n, p) holds the model's inputs (after pre-processing: rank-normalised, one-hot);
    ``display_data`` (n, p) the same features in original units (one-hot: 0/1 indicator;
    NaN = missing before imputation). ``source_columns[j]`` is the feature-table column that
    feature ``j`` comes from.
    """

    model: str
    task: str
    quantity: str
    feature_names: list[str]
    source_columns: list[str]
    values: np.ndarray
    base_values: np.ndarray
    data: np.ndarray
    display_data: np.ndarray
    patient_ids: list[str]
    n_background: int

    @property
    def output(self) -> np.ndarray:
        """The explained quantity per patient: sum of SHAP values plus the base value."""
        return self.values.sum(axis=1) + self.base_values


# --- the model behind a predictor ---------------------------------------------------------------
def _parts(predictor: RecurrencePredictor | ResponsePredictor) -> tuple[Pipeline, object, str]:
    if isinstance(predictor, RecurrencePredictor):
        task = training.RECURRENCE
    elif isinstance(predictor, ResponsePredictor):
        task = training.RESPONSE
    else:
        raise TypeError(
            f"cannot explain a {type(predictor).__name__}: expected a RecurrencePredictor or "
            f"ResponsePredictor from models.predictor (a fitted model saved by crlm train)"
        )
    pipeline = predictor.pipeline
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) < 2:
        raise TypeError(
            f"model '{predictor.name}': expected a fitted sklearn Pipeline of pre-processing "
            f"steps and an estimator, got {type(pipeline).__name__}"
        )
    return pipeline[:-1], pipeline.steps[-1][1], task


def explained_quantity(estimator: object) -> str:
    """What SHAP values of ``estimator`` add up to (see the module docstring)."""
    if isinstance(estimator, CoxnetSurvivalAnalysis):
        return QUANTITY_LOG_HR
    if isinstance(estimator, XGBAFTSurvival):
        return QUANTITY_AFT_RISK
    if isinstance(estimator, XGBCoxSurvival):
        return QUANTITY_XGB_COX
    if isinstance(estimator, (LogisticRegression, XGBClassifier)):
        return QUANTITY_LOG_ODDS
    raise TypeError(
        f"no SHAP explainer for {type(estimator).__name__}; supported: CoxnetSurvivalAnalysis, "
        f"XGBCoxSurvival, XGBAFTSurvival, LogisticRegression, XGBClassifier"
    )


def _margin_of_inputs(estimator: object, X: np.ndarray) -> np.ndarray:
    if isinstance(estimator, LogisticRegression):
        return np.asarray(estimator.decision_function(X), dtype=float)
    if isinstance(estimator, XGBClassifier):
        return np.asarray(estimator.predict(X, output_margin=True), dtype=float)
    return np.asarray(estimator.predict(X), dtype=float)  # survival models: risk, higher = worse


def model_margin(predictor: RecurrencePredictor | ResponsePredictor, table: pd.DataFrame) -> np.ndarray:
    """The quantity SHAP explains, per patient of ``table``, as the predictor computes it.

    Recurrence: ``predictor.risk(table)`` (log hazard ratio; minus log time for AFT).
    Response: the log-odds whose logistic transform is ``predictor.probability(table)``.
    """
    if isinstance(predictor, RecurrencePredictor):
        return predictor.risk(table)
    prepare, estimator, _ = _parts(predictor)
    X = prepare.transform(training.model_frame(table, predictor.feature_columns))
    return _margin_of_inputs(estimator, np.asarray(X, dtype=float))


def model_features(predictor: RecurrencePredictor | ResponsePredictor) -> tuple[list[str], list[str]]:
    """Names of the estimator's input features and the feature-table column each comes from.

    Numeric features keep their column name; a one-hot feature is ``<column>_<category>``.
    """
    prepare, estimator, _ = _parts(predictor)
    columns = list(predictor.feature_columns)
    try:
        names = [str(n) for n in prepare.get_feature_names_out()]
    except (AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"model '{predictor.name}': its pre-processing cannot name its output features "
            f"({err}); refit it with crlm train"
        ) from err
    expected = getattr(estimator, "n_features_in_", len(names))
    if len(names) != expected:
        raise ValueError(
            f"model '{predictor.name}': pre-processing names {len(names)} features but the "
            f"estimator takes {expected}; refit it with crlm train"
        )
    by_length = sorted(columns, key=len, reverse=True)
    sources = []
    for name in names:
        if name in columns:
            sources.append(name)
            continue
        source = next((c for c in by_length if name.startswith(f"{c}_")), None)
        if source is None:
            raise ValueError(f"model '{predictor.name}': feature '{name}' does not map to an input column")
        sources.append(source)
    return names, sources


def _display_data(frame: pd.DataFrame, names: Sequence[str], sources: Sequence[str]) -> np.ndarray:
    """Features in original units (``frame``: the model frame); a one-hot feature is its 0/1
    indicator (NaN if missing)."""
    out = np.empty((len(frame), len(names)))
    for j, (name, source) in enumerate(zip(names, sources, strict=True)):
        column = frame[source]
        if name == source:
            out[:, j] = pd.to_numeric(column, errors="coerce").to_numpy(float)
        else:
            category = name[len(source) + 1 :]
            out[:, j] = np.where(column.isna(), np.nan, (column.astype(str) == category).astype(float))
    return out


def _background(X: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(X) <= size:
        return X
    rows = np.random.default_rng(seed).choice(len(X), size=size, replace=False)
    return X[np.sort(rows)]


def _linear_coefficients(estimator: object, n_features: int) -> tuple[np.ndarray, float]:
    if isinstance(estimator, CoxnetSurvivalAnalysis):
        # sksurv predicts X @ coef_[:, -1] - offset_[-1] (the last penalty on the path).
        coef = np.asarray(estimator.coef_, dtype=float)[:, -1]
        intercept = -float(np.asarray(getattr(estimator, "offset_", [0.0]))[-1])
    else:
        coef = np.asarray(estimator.coef_, dtype=float).reshape(-1)
        intercept = float(np.asarray(estimator.intercept_).reshape(-1)[0])
    if coef.shape[0] != n_features:
        raise ValueError(
            f"{type(estimator).__name__}: {coef.shape[0]} coefficients for {n_features} features "
            f"(only binary response models and single-output Cox models are supported)"
        )
    return coef, intercept


def _shap_values(estimator: object, X: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, float]:
    """SHAP values (n, p) and base value of the estimator's margin (before any sign flip)."""
    masker = shap.maskers.Independent(background, max_samples=len(background))
    if isinstance(estimator, (CoxnetSurvivalAnalysis, LogisticRegression)):
        explainer = shap.LinearExplainer(_linear_coefficients(estimator, X.shape[1]), masker)
        values = explainer.shap_values(X)
    else:
        booster = estimator.get_booster() if isinstance(estimator, XGBClassifier) else estimator.booster_
        explainer = shap.TreeExplainer(booster, data=masker, feature_perturbation="interventional", model_output="raw")
        values = explainer.shap_values(X, check_additivity=False)  # checked against the predictor below
    base = float(np.asarray(explainer.expected_value, dtype=float).reshape(-1)[0])
    return np.asarray(values, dtype=float).reshape(X.shape), base


def explain(
    predictor: RecurrencePredictor | ResponsePredictor,
    table: pd.DataFrame,
    background: pd.DataFrame,
    background_size: int = DEFAULT_BACKGROUND_SIZE,
    seed: int = DEFAULT_SEED,
) -> ShapResult:
    """SHAP values of ``predictor`` for the patients of ``table`` (e.g. the held-out split).

    ``background`` is the training split (at most ``background_size`` of its rows, sampled
    with ``seed``, form the reference distribution). Raises if the values do not add up to
    `model_margin` (relative tolerance ``ADDITIVITY_TOLERANCE``).
    """
    prepare, estimator, task = _parts(predictor)
    quantity = explained_quantity(estimator)
    names, sources = model_features(predictor)
    frames = [training.model_frame(t, predictor.feature_columns) for t in (table, background)]
    if len(frames[0]) == 0 or len(frames[1]) == 0:
        raise ValueError(
            f"model '{predictor.name}': nothing to explain ({len(frames[0])} patients, "
            f"{len(frames[1])} background patients)"
        )
    # one pass through the pre-processing (its cost is per column: ~2,000 radiomics features)
    X_all = np.asarray(prepare.transform(pd.concat(frames, ignore_index=True)), dtype=float)
    X, X_background = X_all[: len(frames[0])], X_all[len(frames[0]) :]
    X_background = _background(X_background, int(background_size), int(seed))
    values, base = _shap_values(estimator, X, X_background)
    if isinstance(estimator, XGBAFTSurvival):
        values, base = -values, -base  # AFT margin is log time; risk = -margin
    ids = table[PATIENT_ID].tolist() if PATIENT_ID in table else [str(i) for i in table.index]
    result = ShapResult(
        predictor.name,
        task,
        quantity,
        names,
        sources,
        values,
        np.full(len(X), base),
        X,
        _display_data(frames[0], names, sources),
        ids,
        len(X_background),
    )
    margin = _margin_of_inputs(estimator, X)  # = model_margin(predictor, table), without a second pass
    error = np.abs(result.output - margin)
    scale = max(1.0, float(np.abs(margin).max()))
    if error.max() > ADDITIVITY_TOLERANCE * scale:
        worst = int(error.argmax())
        raise RuntimeError(
            f"model '{predictor.name}': SHAP values do not add up to its {quantity} "
            f"(patient {ids[worst]}: {result.output[worst]:.6g} vs {margin[worst]:.6g}); "
            f"this estimator is not explained correctly by models/explain.py"
        )
    return result


def is_linear(estimator: object) -> bool:
    """Whether ``estimator`` is one of the linear models (attributions = coefficient x difference)."""
    return isinstance(estimator, (LogisticRegression, CoxnetSurvivalAnalysis))


# Numeric blocks of models.preprocessing's ColumnTransformers ("numeric" when every column competes
# for selection; "clinical" and "imaging" when only imaging columns are selected).
NUMERIC_BLOCKS = ("numeric", "clinical", "imaging")


def _linear_reference(pipeline: Pipeline, width: int) -> np.ndarray:
    """The reference patient in the estimator's input space: numeric columns at their training
    mean (0 after the fitted StandardScaler), categorical columns at their most frequent
    training category (the fitted imputer's statistic), one-hot encoded."""
    prepare = pipeline.named_steps["prepare"]
    parts = []
    for name, transformer, columns in prepare.transformers_:
        if name in NUMERIC_BLOCKS:  # after the fitted scaler, the training mean is 0
            parts.append(np.zeros(len(transformer.get_feature_names_out(list(columns)))))
        elif name == "categorical":
            modes = transformer.named_steps["impute"].statistics_
            one_hot = transformer.named_steps["one_hot"]
            parts.append(np.asarray(one_hot.transform(np.asarray([modes], dtype=object))).ravel())
        elif name != "remainder":
            raise NotImplementedError(f"no reference patient for a pipeline with a {name!r} transformer")
    reference = np.concatenate(parts)
    for step in ("decorrelate", "select"):
        if step in pipeline.named_steps:  # selection over every column (train.select_among: all)
            reference = reference[pipeline.named_steps[step].support_]
    if reference.shape[0] != width:
        raise ValueError(f"the reference patient has {reference.shape[0]} model features, the model {width}")
    return reference


def explain_without_background(
    predictor: RecurrencePredictor | ResponsePredictor,
    frame: pd.DataFrame,
    typed: bool = False,
    prepared: np.ndarray | None = None,
) -> ShapResult:
    """Exact, additive SHAP values of ``predictor`` on ``frame`` without training rows (inference).

    Linear models (Coxnet, logistic): ``coef_j * (z_j - z_ref_j)`` on the fitted pre-processed
    features, relative to a reference patient (numeric inputs at their training mean, which the
    fitted StandardScaler maps to 0; categorical inputs at their most frequent training
    category); the base value is the reference patient's prediction. xgboost: TreeSHAP with the
    trees' own training cover (``tree_path_dependent``, xgboost's ``pred_contribs``); the base
    value is the cover-weighted mean margin. Units: those of `explained_quantity` (AFT signs
    flipped to risk). Per patient, values + base equal the predictor's margin.
    ``typed``: ``frame`` already holds the model's columns typed as fitted. ``prepared``: what the
    pipeline's pre-processing makes of them (`models.predictor.prepare_inputs`, ``.dense``), when
    the caller already computed it for the prediction.
    """
    import xgboost as xgb

    prepare, estimator, task = _parts(predictor)
    pipeline = predictor.pipeline
    quantity = explained_quantity(estimator)
    names, sources = model_features(predictor)
    X = frame[predictor.feature_columns] if typed else training.model_frame(frame, predictor.feature_columns)
    Z = np.asarray(prepare.transform(X) if prepared is None else prepared, dtype=float)
    if is_linear(estimator):
        coef, _ = _linear_coefficients(estimator, Z.shape[1])
        reference = _linear_reference(pipeline, Z.shape[1])
        values = coef * (Z - reference)
        base = np.full(len(Z), float(_margin_of_inputs(estimator, reference[None, :])[0]))
        margin = _margin_of_inputs(estimator, Z)
    else:
        booster = estimator.get_booster() if isinstance(estimator, XGBClassifier) else estimator.booster_
        contributions = booster.predict(xgb.DMatrix(Z), pred_contribs=True).astype(float)
        margin = booster.predict(xgb.DMatrix(Z), output_margin=True).astype(float)
        values, base = contributions[:, :-1], contributions[:, -1]
        if isinstance(estimator, XGBAFTSurvival):
            values, base, margin = -values, -base, -margin  # AFT margin is log time; risk = -margin
    error = np.abs(values.sum(axis=1) + base - margin)
    if error.size and error.max() > ADDITIVITY_TOLERANCE * max(1.0, float(np.abs(margin).max())):
        raise RuntimeError(
            f"model '{predictor.name}': SHAP values do not add up to its {quantity} "
            f"(off by {error.max():.3g}); models/explain.py cannot explain this estimator"
        )
    ids = [str(v) for v in frame[PATIENT_ID]] if PATIENT_ID in frame else [str(i) for i in frame.index]
    return ShapResult(
        predictor.name,
        task,
        quantity,
        names,
        sources,
        values,
        base,
        Z,
        _display_data(X, names, sources),
        ids,
        n_background=0,
    )


def to_explanation(result: ShapResult) -> shap.Explanation:
    """The result as a ``shap.Explanation`` (for shap's own plots), in original units."""
    return shap.Explanation(
        values=result.values,
        base_values=result.base_values,
        data=result.display_data,
        feature_names=list(result.feature_names),
    )


# --- tables -------------------------------------------------------------------------------------
def feature_group(column: str) -> str:
    """'imaging' for radiomics/morphology columns (`models.training.IMAGING_PREFIXES`), else 'clinical'
    (clinical inputs, clinical scores, covariates)."""
    return IMAGING if column.startswith(training.IMAGING_PREFIXES) else CLINICAL


def shap_table(result: ShapResult) -> pd.DataFrame:
    """``patient_id`` then one column of SHAP values per model feature."""
    table = pd.DataFrame(result.values, columns=result.feature_names)
    table.insert(0, PATIENT_ID, list(result.patient_ids))
    return table


def importance(result: ShapResult) -> pd.DataFrame:
    """Global importance: mean |SHAP| per feature (units of the quantity), largest first.

    Columns: feature, source_column, group, mean_abs_shap, share (of the total mean |SHAP|),
    mean_shap.
    """
    mean_abs = np.abs(result.values).mean(axis=0)
    total = mean_abs.sum()
    table = pd.DataFrame(
        {
            "feature": result.feature_names,
            "source_column": result.source_columns,
            "group": [feature_group(c) for c in result.source_columns],
            "mean_abs_shap": mean_abs,
            "share": mean_abs / total if total > 0 else np.full(mean_abs.shape, np.nan),
            "mean_shap": result.values.mean(axis=0),
        }
    )
    return table.sort_values("mean_abs_shap", ascending=False, kind="mergesort").reset_index(drop=True)


def attribution_share(result: ShapResult) -> dict[str, float]:
    """Share of the total mean |SHAP| carried by clinical and by imaging features.

    ``{"clinical": a, "imaging": b}`` with ``a + b == 1``; both NaN if every SHAP value is 0
    (a model that predicts the same for everyone).
    """
    table = importance(result)
    total = float(table["mean_abs_shap"].sum())
    sums = table.groupby("group")["mean_abs_shap"].sum()
    return {
        group: (float(sums.get(group, 0.0)) / total if total > 0 else float("nan")) for group in (CLINICAL, IMAGING)
    }


def top_contributions(result: ShapResult, k: int = DEFAULT_TOP_K) -> pd.DataFrame:
    """Per patient the ``k`` largest contributions by |SHAP|.

    Columns: patient_id, then feature_1, value_1 (feature value in original units), shap_1
    (in units of the quantity), ..., feature_k, value_k, shap_k.
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"top_contributions: k must be a whole number >= 1, got {k!r}")
    k = min(int(k), len(result.feature_names))
    order = np.argsort(-np.abs(result.values), axis=1, kind="mergesort")[:, :k]
    rows = np.arange(len(result.values))[:, None]
    names = np.asarray(result.feature_names, dtype=object)
    columns: dict[str, object] = {PATIENT_ID: list(result.patient_ids)}
    for i in range(k):
        columns[f"feature_{i + 1}"] = names[order[:, i]]
        columns[f"value_{i + 1}"] = result.display_data[rows[:, 0], order[:, i]]
        columns[f"shap_{i + 1}"] = result.values[rows[:, 0], order[:, i]]
    return pd.DataFrame(columns)


def extreme_patients(result: ShapResult, n: int) -> list[str]:
    """``n`` patient ids: alternately the highest and lowest explained quantity."""
    order = np.argsort(result.output, kind="mergesort")
    chosen: list[int] = []
    high, low = len(order) - 1, 0
    while len(chosen) < min(n, len(order)):
        chosen.append(int(order[high]))
        high -= 1
        if len(chosen) < min(n, len(order)) and low <= high:
            chosen.append(int(order[low]))
            low += 1
    return [result.patient_ids[i] for i in chosen]


# --- plots --------------------------------------------------------------------------------------
def _title(result: ShapResult) -> str:
    return f"{result.task} / {result.model}: SHAP values of the {result.quantity}"


def _top(result: ShapResult, max_display: int) -> np.ndarray:
    mean_abs = np.abs(result.values).mean(axis=0)
    return np.argsort(-mean_abs, kind="mergesort")[:max_display]


def _width(labels: Sequence[str]) -> float:
    """Figure width (inches) leaving the plot area its room next to long feature names."""
    return max(FIGURE_WIDTH, PLOT_AREA_WIDTH + LABEL_INCHES_PER_CHARACTER * max(map(len, labels), default=0))


def _swarm_offsets(x: np.ndarray) -> np.ndarray:
    """Vertical offsets that stack points sharing a SHAP value bin (alternately up and down)."""
    if x.size == 0:
        return x
    span = float(x.max() - x.min())
    bins = np.round((x - x.min()) / span * SWARM_BINS).astype(int) if span > 0 else np.zeros(x.size, int)
    layer = np.zeros(x.size)
    for b in np.unique(bins):
        members = np.flatnonzero(bins == b)
        k = np.arange(members.size)
        layer[members] = ((k + 1) // 2) * np.where(k % 2 == 0, 1.0, -1.0)
    widest = np.abs(layer).max()
    return layer * (SWARM_HALF_WIDTH / widest) if widest > 0 else layer


def _ranks(values: np.ndarray) -> np.ndarray:
    """Percentile rank of each value in its column (0..1), NaN stays NaN."""
    ranked = pd.Series(values).rank(pct=True)
    return ranked.to_numpy(float)


def beeswarm_plot(result: ShapResult, source: str = "", max_display: int = MAX_DISPLAY) -> tuple[Figure, pd.DataFrame]:
    """Beeswarm: one row per feature (most important on top), one dot per patient at its SHAP
    value, coloured by the feature's value (percentile within the patients; grey = missing).

    Data columns: feature, patient_id, shap, value (original units).
    """
    top = _top(result, max_display)
    fig = Figure(figsize=(_width([result.feature_names[j] for j in top]), 1.5 + 0.4 * len(top)), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps[COLOUR_MAP]
    rows = []
    for position, j in enumerate(top[::-1]):
        x = result.values[:, j]
        y = position + _swarm_offsets(x)
        rank = _ranks(result.display_data[:, j])
        known = ~np.isnan(rank)
        ax.scatter(x[~known], y[~known], s=10, color=MISSING_COLOUR, linewidths=0)
        ax.scatter(x[known], y[known], s=10, c=cmap(rank[known]), linewidths=0)
        rows.append(
            pd.DataFrame(
                {
                    "feature": result.feature_names[j],
                    PATIENT_ID: list(result.patient_ids),
                    "shap": x,
                    "value": result.display_data[:, j],
                }
            )
        )
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(range(len(top)), labels=[result.feature_names[j] for j in top[::-1]], fontsize=8)
    ax.set_ylim(-0.6, len(top) - 0.4)
    ax.set_xlabel(f"SHAP value ({result.quantity})")
    ax.set_title(
        f"{_title(result)}\n{len(result.patient_ids)} patients, top {len(top)} of {len(result.feature_names)} features",
        fontsize=10,
    )
    colourbar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1], aspect=40)
    colourbar.ax.set_yticklabels(["low", "high"])
    colourbar.set_label("feature value (percentile)", fontsize=8)
    caption(fig, source)
    return fig, pd.concat(rows, ignore_index=True)


def bar_plot(result: ShapResult, source: str = "", max_display: int = MAX_DISPLAY) -> tuple[Figure, pd.DataFrame]:
    """Mean |SHAP| per feature (most important on top), coloured clinical / imaging; the
    legend gives each group's share of the total. Data: the `importance` table."""
    table = importance(result)
    shown = table.head(max_display).iloc[::-1]
    share = attribution_share(result)
    fig = Figure(figsize=(_width(shown["feature"]), 1.5 + 0.35 * len(shown)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(shown)), shown["mean_abs_shap"], color=[GROUP_COLOURS[g] for g in shown["group"]])
    legend = [
        Patch(color=colour, label=f"{group} ({share[group]:.0%} of total)") for group, colour in GROUP_COLOURS.items()
    ]
    ax.set_yticks(range(len(shown)), labels=shown["feature"], fontsize=8)
    ax.set_xlabel(f"mean |SHAP value| ({result.quantity})")
    ax.set_title(
        f"{result.task} / {result.model}: mean absolute contribution to the {result.quantity}\n"
        f"{len(result.patient_ids)} patients, top {len(shown)} of {len(result.feature_names)} features",
        fontsize=10,
    )
    ax.legend(handles=legend, loc="lower right", fontsize=8)
    caption(fig, source)
    return fig, table


def dependence_plot(result: ShapResult, feature: str, source: str = "") -> tuple[Figure, pd.DataFrame]:
    """SHAP value of one feature against its value in original units (missing values, which
    the model imputed, are listed in the legend but not drawn). Data: patient_id, value, shap."""
    if feature not in result.feature_names:
        raise ValueError(
            f"dependence_plot: '{feature}' is not a feature of model {result.model}; "
            f"features: {result.feature_names[:10]}{' ...' if len(result.feature_names) > 10 else ''}"
        )
    j = result.feature_names.index(feature)
    value, contribution = result.display_data[:, j], result.values[:, j]
    known = ~np.isnan(value)
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    label = f"{int(known.sum())} patients" + (f" ({int((~known).sum())} missing, not shown)" if (~known).any() else "")
    ax.scatter(value[known], contribution[known], s=14, alpha=0.7, label=label)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    unit = " (0/1 indicator)" if result.source_columns[j] != feature else ""
    ax.set_xlabel(f"{feature}{unit}")
    ax.set_ylabel(f"SHAP value ({result.quantity})")
    ax.set_title(f"{result.task} / {result.model}: contribution of {feature}\nto the {result.quantity}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    caption(fig, source)
    return fig, pd.DataFrame({PATIENT_ID: list(result.patient_ids), "value": value, "shap": contribution})


def _format(value: float) -> str:
    return "missing" if np.isnan(value) else f"{value:.4g}"


def waterfall_plot(
    result: ShapResult, patient_id: str, source: str = "", max_display: int = WATERFALL_DISPLAY
) -> tuple[Figure, pd.DataFrame]:
    """One patient: from the base value (background mean) through each feature's contribution
    to the patient's value of the quantity; the smallest contributions are summed in one row.

    Data columns: feature, value (original units), shap, start, end (cumulative quantity).
    """
    if patient_id not in result.patient_ids:
        raise ValueError(
            f"waterfall_plot: patient '{patient_id}' is not among the {len(result.patient_ids)} "
            f"explained patients of model {result.model}"
        )
    i = result.patient_ids.index(patient_id)
    contribution = result.values[i]
    order = np.argsort(-np.abs(contribution), kind="mergesort")
    shown, rest = order[: max_display - 1], order[max_display - 1 :]
    if rest.size == 1:
        shown, rest = order, rest[:0]
    labels = [f"{result.feature_names[j]} = {_format(result.display_data[i, j])}" for j in shown]
    names = [result.feature_names[j] for j in shown]
    steps = list(contribution[shown])
    values = [result.display_data[i, j] for j in shown]
    if rest.size:
        labels.append(f"{rest.size} other features")
        names.append(f"{rest.size} other features")
        steps.append(float(contribution[rest].sum()))
        values.append(np.nan)
    # bottom row first: the remainder, then contributions from smallest to largest |SHAP|
    labels, names, steps, values = labels[::-1], names[::-1], np.asarray(steps[::-1]), values[::-1]
    base = float(result.base_values[i])
    end = base + np.cumsum(steps)
    start = end - steps
    fig = Figure(figsize=(_width(labels), 1.8 + 0.38 * len(steps)), layout="constrained")
    ax = fig.subplots()
    colours = [INCREASE_COLOUR if s > 0 else DECREASE_COLOUR for s in steps]
    ax.barh(range(len(steps)), steps, left=start, color=colours, height=0.6)
    for row, (s, e) in enumerate(zip(steps, end, strict=True)):
        ax.text(e, row, f" {s:+.3g} ", va="center", ha="left" if s >= 0 else "right", fontsize=7)
    ax.axvline(base, color="0.5", linestyle="--", linewidth=0.8, label=f"base (background mean) = {base:.3g}")
    ax.axvline(end[-1], color="0.2", linewidth=0.8, label=f"this patient = {end[-1]:.3g}")
    ax.set_yticks(range(len(steps)), labels=labels, fontsize=8)
    ax.set_ylim(-0.6, len(steps) - 0.4)
    span = max(float(np.r_[start, end, base].max() - np.r_[start, end, base].min()), 1e-9)
    ax.set_xlim(min(start.min(), end.min(), base) - 0.15 * span, max(start.max(), end.max(), base) + 0.15 * span)
    ax.set_xlabel(result.quantity)
    ax.set_title(
        f"Patient {patient_id}: {result.task} / {result.model}\ncontributions to the {result.quantity}", fontsize=10
    )
    ax.legend(loc="best", fontsize=8)
    caption(fig, source)
    data = pd.DataFrame({"feature": names, "value": values, "shap": steps, "start": start, "end": end})
    return fig, data.iloc[::-1].reset_index(drop=True)
