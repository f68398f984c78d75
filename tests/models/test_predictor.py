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


def test_inputs_prepared_once_give_the_same_predictions_novelty_and_explanations():
    """Issue 14: crlm predict transforms a chunk once per model (`prepare_inputs`) and shares it
    with the prediction, the novelty score and the explanation; each must equal, bit for bit,
    what it computes from the model frame on its own (a numeric and a categorical block, a
    patient with a missing category)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from features.schema import PATIENT_ID
    from models import training
    from models.explain import explain_without_background
    from models.novelty import fit_novelty, model_inputs
    from models.predictor import ResponsePredictor, prepare_inputs
    from models.preprocessing import feature_pipeline

    rng = np.random.default_rng(1)
    numeric = ["age_years", *(f"rad_largest__original_firstorder_F{i}" for i in range(10))]
    X = pd.DataFrame(rng.normal(size=(90, len(numeric))), columns=numeric)
    X["primary_site"] = rng.choice(["left", "right", "rectum"], size=90).astype(object)
    columns = [*numeric, "primary_site"]
    y = (X["rad_largest__original_firstorder_F2"] + 0.2 * rng.normal(size=90) > 0).astype(int)
    pipeline = Pipeline(
        [
            *feature_pipeline(numeric, ["primary_site"], 0.95, 3, imaging=numeric[1:], select_among="imaging"),
            ("model", LogisticRegression()),
        ]
    ).fit(X[columns], y)
    predictor = ResponsePredictor("logistic", pipeline, columns, novelty=fit_novelty(model_inputs(pipeline, X)))
    new = X.head(12).copy()
    new.loc[3, "primary_site"] = np.nan
    new.insert(0, PATIENT_ID, [f"P{i}" for i in range(len(new))])
    frame = training.model_frame(new, columns)
    inputs = prepare_inputs(pipeline, frame)
    pd.testing.assert_frame_equal(predictor.predict_frame(new, inputs), predictor.predict_frame(new), check_exact=True)
    alone = explain_without_background(predictor, new)
    shared = explain_without_background(predictor, new, prepared=inputs.dense)
    np.testing.assert_array_equal(shared.values, alone.values)
    np.testing.assert_array_equal(shared.base_values, alone.base_values)
    np.testing.assert_array_equal(inputs.dense, model_inputs(pipeline, frame))
