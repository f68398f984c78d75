"""Pre-processing fitted inside the training folds only, as scikit-learn transformers.

Imputation, scaling, removal of near-constant and highly correlated features and univariate
feature selection all learn from the rows they are fitted on and nothing else, so a
`sklearn.pipeline.Pipeline` of them can be cross-validated without leakage (docs/design.md section 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import VarianceThreshold, f_classif
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, QuantileTransformer, StandardScaler
from sklearn.utils.validation import check_is_fitted


class _ColumnSubset(TransformerMixin, BaseEstimator):
    """A transformer that keeps the columns flagged in ``support_`` (set by ``fit``)."""

    def transform(self, X):
        check_is_fitted(self, "support_")
        return np.asarray(X, dtype=float)[:, self.support_]

    def get_feature_names_out(self, input_features=None):
        names = np.asarray(
            input_features if input_features is not None else [f"x{i}" for i in range(self.n_features_in_)]
        )
        return names[self.support_]


class CorrelationFilter(_ColumnSubset):
    """Drop features whose absolute Pearson correlation with an earlier kept one exceeds
    ``threshold`` (greedy, in column order)."""

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold

    def fit(self, X, y=None):
        if not 0 < self.threshold <= 1:
            raise ValueError(f"CorrelationFilter: threshold must lie in (0, 1], got {self.threshold}")
        X = np.asarray(X, dtype=float)
        sd = X.std(axis=0)
        Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        corr = np.abs(Z.T @ Z) / max(len(X), 1)
        keep: list[int] = []
        for j in range(X.shape[1]):
            if not keep or corr[j, keep].max() <= self.threshold:
                keep.append(j)
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[keep] = True
        self.n_features_in_ = X.shape[1]
        return self


def martingale_residuals(y) -> np.ndarray:
    """Martingale residuals of the null Cox model: event - Nelson-Aalen cumulative hazard.

    ``y`` is the structured (event, time) array. Their correlation with a feature is the
    score statistic of a univariate Cox model, up to scale (Therneau et al., Biometrika 1990).
    """
    event = np.asarray(y["event"], dtype=float)
    time = np.asarray(y["time"], dtype=float)
    order = np.argsort(time, kind="mergesort")
    t_sorted, e_sorted = time[order], event[order]
    unique, first = np.unique(t_sorted, return_index=True)
    at_risk = len(time) - first
    deaths = np.add.reduceat(e_sorted, first)
    cumulative = np.cumsum(deaths / at_risk)
    hazard = cumulative[np.searchsorted(unique, time)]
    return event - hazard


class UnivariateSelector(_ColumnSubset):
    """Keep the ``k`` features most associated with the outcome, one at a time.

    Time-to-event outcomes (structured arrays) are ranked by |correlation| with the null
    model's martingale residuals (the univariate Cox score test); binary outcomes by the
    ANOVA F statistic.
    """

    def __init__(self, k: int = 20):
        self.k = k

    def fit(self, X, y):
        if self.k < 1:
            raise ValueError(f"UnivariateSelector: k must be at least 1, got {self.k}")
        X = np.asarray(X, dtype=float)
        if getattr(y, "dtype", None) is not None and y.dtype.names:
            residual = martingale_residuals(y)
            Xc = X - X.mean(axis=0)
            rc = residual - residual.mean()
            denominator = np.sqrt((Xc**2).sum(axis=0) * (rc**2).sum())
            scores = np.abs(Xc.T @ rc) / np.where(denominator > 0, denominator, np.inf)
        else:
            scores, _ = f_classif(X, np.asarray(y))
        scores = np.nan_to_num(scores, nan=0.0)
        k = min(self.k, X.shape[1])
        chosen = np.argsort(-scores, kind="mergesort")[:k]
        self.scores_ = scores
        self.support_ = np.zeros(X.shape[1], dtype=bool)
        self.support_[chosen] = True
        self.n_features_in_ = X.shape[1]
        return self


QUANTILES = 200  # grid of the rank-based normalisation (capped at the number of rows)


def _numeric_steps() -> list[tuple[str, object]]:
    return [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("near_constant", VarianceThreshold(threshold=1e-8)),
        ("normalise", QuantileTransformer(n_quantiles=QUANTILES, output_distribution="normal")),
        ("scale", StandardScaler()),
    ]


def _categorical_steps() -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )


def tabular_preprocessor(numeric: Sequence[str], categorical: Sequence[str]) -> ColumnTransformer:
    """Numeric columns: median imputation, near-constant removal, then a rank-based map to a
    standard normal (radiomics features are heavy-tailed: a z-score lets a few outliers
    dominate linear models). Categorical columns: most frequent imputation, one-hot."""
    transformers = [("numeric", Pipeline(_numeric_steps()), list(numeric))]
    if categorical:
        transformers.append(("categorical", _categorical_steps(), list(categorical)))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def clinical_radiomics_preprocessor(
    clinical_numeric: Sequence[str],
    categorical: Sequence[str],
    imaging: Sequence[str],
    correlation_threshold: float,
    k_features: int,
) -> ColumnTransformer:
    """Clinical columns all kept; imaging columns decorrelated and the ``k_features`` most
    associated with the outcome kept (the usual combined clinical-radiomics model).

    Clinical factors with a modest hazard ratio or a low prevalence (extrahepatic disease,
    positive margin: ~10% of patients) lose a univariate ranking against ~2,000 radiomics
    features by chance; selecting among the imaging columns only keeps them in the model.
    """
    transformers: list[tuple[str, object, list[str]]] = []
    if clinical_numeric:
        transformers.append(("clinical", Pipeline(_numeric_steps()), list(clinical_numeric)))
    if categorical:
        transformers.append(("categorical", _categorical_steps(), list(categorical)))
    if imaging:
        transformers.append(
            (
                "imaging",
                Pipeline(
                    [
                        *_numeric_steps(),
                        ("decorrelate", CorrelationFilter(correlation_threshold)),
                        ("select", UnivariateSelector(k_features)),
                    ]
                ),
                list(imaging),
            )
        )
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


SELECT_K = {"all": "select__k", "imaging": "prepare__imaging__select__k"}  # grid key per selection scope


def feature_pipeline(
    numeric: Sequence[str],
    categorical: Sequence[str],
    correlation_threshold: float,
    k_features: int,
    imaging: Sequence[str] = (),
    select_among: str = "all",
) -> list[tuple[str, object]]:
    """The pre-processing steps every model shares, to be followed by an estimator.

    ``select_among="all"``: every column competes for the ``k_features`` places;
    ``"imaging"``: clinical columns are all kept and the selection runs over ``imaging`` only.
    """
    if select_among == "imaging":
        clinical = [c for c in numeric if c not in set(imaging)]
        return [
            (
                "prepare",
                clinical_radiomics_preprocessor(
                    clinical, categorical, [c for c in numeric if c in set(imaging)], correlation_threshold, k_features
                ),
            )
        ]
    if select_among != "all":
        raise ValueError(f"select_among must be 'all' or 'imaging', got {select_among!r}")
    return [
        ("prepare", tabular_preprocessor(numeric, categorical)),
        ("decorrelate", CorrelationFilter(correlation_threshold)),
        ("select", UnivariateSelector(k_features)),
    ]


def split_feature_types(df: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Numeric and categorical columns among ``columns`` (categorical = text or category)."""
    numeric, categorical = [], []
    for column in columns:
        kind = df[column].dtype
        if pd.api.types.is_bool_dtype(kind) or pd.api.types.is_numeric_dtype(kind):
            numeric.append(column)
        else:
            categorical.append(column)
    return numeric, categorical
