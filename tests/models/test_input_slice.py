"""The pre-processing cut to the columns a fitted model uses (issue 14, `models.input_slice`):
the same numbers as the full pre-processing, bit for bit, or the full pre-processing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import KNNImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from models import input_slice
from models.predictor import used_columns
from models.preprocessing import feature_pipeline

IMAGING = [f"rad_largest__original_firstorder_F{i}" for i in range(40)]
CLINICAL = ["age_years", "cea_ng_ml"]
CATEGORICAL = ["sex", "primary_site"]


def _table(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.lognormal(size=(n, len(IMAGING))), columns=IMAGING)  # heavy-tailed, as radiomics
    X["rad_largest__original_firstorder_F7"] = 3.0  # near-constant: dropped by the fitted pipeline
    X["rad_largest__original_firstorder_F9"] = X["rad_largest__original_firstorder_F3"] * 2 + 1e-9  # correlated
    X.insert(0, "age_years", rng.integers(30, 85, n))  # an integer column
    X.insert(1, "cea_ng_ml", rng.lognormal(2, 1, n))
    X["sex"] = rng.choice(["F", "M"], n)
    X["primary_site"] = rng.choice(["left", "right", "rectum"], n)
    X.loc[rng.random(n) < 0.1, "rad_largest__original_firstorder_F3"] = np.nan  # missing values
    X.loc[rng.random(n) < 0.1, "cea_ng_ml"] = np.nan
    y = (X["rad_largest__original_firstorder_F3"].fillna(1) + (X["sex"] == "M") + rng.normal(size=n) > 2).astype(int)
    return X, y


def _fitted(select_among: str, k: int = 5) -> tuple[Pipeline, list[str]]:
    X, y = _table(160, 0)
    numeric = CLINICAL + IMAGING
    steps = feature_pipeline(numeric, CATEGORICAL, 0.9, k, imaging=IMAGING, select_among=select_among)
    pipeline = Pipeline([*steps, ("model", LogisticRegression(max_iter=500))]).fit(X, y)
    return pipeline, list(X.columns)


@pytest.mark.parametrize("select_among", ["imaging", "all"])
def test_the_sliced_preprocessing_gives_the_full_one_bit_for_bit(select_among):
    pipeline, columns = _fitted(select_among)
    new, _ = _table(75, 1)  # other patients, with missing values and unseen extremes
    new.loc[0, "rad_largest__original_firstorder_F0"] = 1e9
    new.loc[1, "cea_ng_ml"] = -5.0
    sliced = input_slice.slice_preprocessing(pipeline)
    full = pipeline[:-1].transform(new[columns])
    fast = sliced.transform(new[columns])
    assert fast.dtype == full.dtype and fast.shape == full.shape
    np.testing.assert_array_equal(fast, full)
    # and it needs only the used columns: the others may be absent
    assert len(sliced.columns) < len(columns) / 2
    np.testing.assert_array_equal(sliced.transform(new[sliced.columns]), full)
    # predictions from it are the pipeline's own
    np.testing.assert_array_equal(pipeline[-1].predict_proba(fast), pipeline.predict_proba(new[columns]))


def test_prepare_checks_the_first_batch_then_uses_the_cut():
    pipeline, columns = _fitted("imaging")
    new, _ = _table(40, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = input_slice.prepare(pipeline, new[columns])
        second = input_slice.prepare(pipeline, new[columns])
    np.testing.assert_array_equal(first, pipeline[:-1].transform(new[columns]))
    np.testing.assert_array_equal(second, first)
    assert input_slice._SLICES[pipeline].checked


def test_a_cut_that_differs_from_the_full_preprocessing_is_dropped_with_a_warning():
    """Never a silently wrong number: a slice whose values differ (here its fitted quantiles are
    spoiled, as a scikit-learn change of a transformer's attributes could do) is noticed on the
    first batch; that batch and every later one come from the full pre-processing."""
    pipeline, columns = _fitted("imaging")
    sliced = input_slice.slice_preprocessing(pipeline)
    quantile = next(s for b in sliced.blocks for s in b.steps if type(s).__name__ == "QuantileTransformer")
    quantile.quantiles_ = quantile.quantiles_ + 0.5
    input_slice._SLICES[pipeline] = sliced
    new, _ = _table(30, 3)
    full = pipeline[:-1].transform(new[columns])
    with pytest.warns(RuntimeWarning, match="differs from the full one"):
        np.testing.assert_array_equal(input_slice.prepare(pipeline, new[columns]), full)
    assert input_slice._SLICES[pipeline] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(input_slice.prepare(pipeline, new[columns]), full)


def test_a_pipeline_that_mixes_columns_is_not_sliced():
    X, y = _table(80, 4)
    numeric = X[CLINICAL + IMAGING]
    knn = Pipeline([("impute", KNNImputer()), ("model", LogisticRegression(max_iter=500))]).fit(numeric, y)
    with pytest.raises(input_slice.NotSliceable):
        input_slice.slice_preprocessing(knn)
    assert used_columns(knn, list(numeric.columns)) == list(numeric.columns)
    np.testing.assert_array_equal(input_slice.prepare(knn, numeric), knn[:-1].transform(numeric))


def test_used_columns_include_the_one_hot_encoded_inputs():
    pipeline, columns = _fitted("imaging")
    used = used_columns(pipeline, columns)
    assert used[:2] == CLINICAL and set(CATEGORICAL) <= set(used)
    assert "rad_largest__original_firstorder_F7" not in used  # near-constant
    assert len([c for c in used if c in IMAGING]) == 5  # k
