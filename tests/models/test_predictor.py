"""Fitted predictors: which input columns a fitted pipeline uses (issue 14)."""

from __future__ import annotations

import pandas as pd


def test_used_columns_are_the_ones_a_fitted_pipeline_passes_to_its_estimator():
    """Issue 14: predict extracts only what the fitted model uses; columns its selection drops
    cannot change its predictions (every step before the estimator works column by column)."""
    import numpy as np
    from sklearn.impute import KNNImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from models.predictor import used_columns
    from models.preprocessing import feature_pipeline

    rng = np.random.default_rng(0)
    columns = ["age_years", *(f"rad_largest__original_firstorder_F{i}" for i in range(12))]
    X = pd.DataFrame(rng.normal(size=(80, len(columns))), columns=columns)
    y = (X["rad_largest__original_firstorder_F3"] + 0.1 * rng.normal(size=80) > 0).astype(int)
    pipeline = Pipeline(
        [
            *feature_pipeline(columns, [], 0.95, 2, imaging=columns[1:], select_among="imaging"),
            ("model", LogisticRegression()),
        ]
    ).fit(X, y)
    used = used_columns(pipeline, columns)
    assert used[0] == "age_years" and "rad_largest__original_firstorder_F3" in used and len(used) == 3
    changed = X.copy()
    changed[[c for c in columns if c not in used]] = np.nan  # not extracted: missing
    np.testing.assert_array_equal(pipeline.predict_proba(changed), pipeline.predict_proba(X))
    knn = Pipeline([("impute", KNNImputer()), ("model", LogisticRegression())]).fit(X, y)
    assert used_columns(knn, columns) == columns  # not column by column: everything
