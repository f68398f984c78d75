"""One MLflow pyfunc wrapper for every fitted prognosis model (docs/design.md section 8).

``PrognosisModel`` wraps a fitted *predictor*: any object with

- ``feature_columns``: the list of columns it needs, and
- ``predict_frame(features: pd.DataFrame) -> pd.DataFrame``: one output row per input row, with
  columns the predictor decides (``risk``, ``survival_12m``, ... or ``response_probability``).

The wrapper checks the input, passes ``patient_id`` through unchanged as the first output column
when the input has one, and returns the predictor's frame. It knows nothing about the model
family, so no model library (scikit-survival, xgboost, shap) is imported here.

Pickling: MLflow stores the wrapper with cloudpickle, which records classes defined in an
importable module (``models.serving``, ``models.<family>``) *by reference*. Loading the model
therefore needs those modules importable; ``pipeline.tracking.log_pyfunc_model`` embeds the
project's ``models/`` and ``features/`` packages in the artifact (MLflow ``code_paths``) so a
registered model also loads where crlm-prognosis is not installed. Predictors must be defined at
module level (not inside a function) for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import pandas as pd

from features.schema import PATIENT_ID, nearest_name

ID_COLUMN = PATIENT_ID


def _nearest(name: str, candidates: Sequence[str]) -> str:
    match = nearest_name(name, candidates, cutoff=0.6)
    return f"{name!r} (nearest: {match!r})" if match else f"{name!r} (no similar column)"


class PrognosisModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc model around a fitted predictor (see the module docstring).

    ``optional_columns`` lists input columns the model accepts but does not need; the logged
    signature marks them optional (``pipeline.tracking.log_pyfunc_model``).
    """

    optional_columns: tuple[str, ...] = (ID_COLUMN,)

    def __init__(self, predictor: Any) -> None:
        if not callable(getattr(predictor, "predict_frame", None)):
            raise TypeError(
                f"PrognosisModel needs a predictor with a predict_frame(features) method; "
                f"got {type(predictor).__name__}"
            )
        columns = getattr(predictor, "feature_columns", None)
        if (
            isinstance(columns, str)
            or not isinstance(columns, Sequence)
            or not columns
            or not all(isinstance(c, str) for c in columns)
        ):
            raise TypeError(
                f"PrognosisModel needs predictor.feature_columns as a non-empty list of column names; got {columns!r}"
            )
        duplicated = sorted({c for c in columns if list(columns).count(c) > 1})
        if duplicated:
            raise ValueError(f"predictor.feature_columns lists {duplicated} more than once")
        if ID_COLUMN in columns:
            raise ValueError(f"{ID_COLUMN!r} is an identifier, not a feature: remove it from predictor.feature_columns")
        self.predictor = predictor

    @property
    def feature_columns(self) -> list[str]:
        return list(self.predictor.feature_columns)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"PrognosisModel.predict expects a pandas DataFrame, got {type(model_input).__name__}")
        columns = self.feature_columns
        present = [str(c) for c in model_input.columns]
        missing = [c for c in columns if c not in model_input.columns]
        if missing:
            listed = ", ".join(_nearest(c, present) for c in missing)
            raise ValueError(f"input is missing {len(missing)} required column(s): {listed}")

        output = self.predictor.predict_frame(model_input[columns])
        if not isinstance(output, pd.DataFrame):
            raise TypeError(
                f"{type(self.predictor).__name__}.predict_frame returned "
                f"{type(output).__name__}, expected a pandas DataFrame"
            )
        if len(output) != len(model_input):
            raise ValueError(
                f"{type(self.predictor).__name__}.predict_frame returned {len(output)} "
                f"rows for {len(model_input)} input rows"
            )
        output = output.copy()
        output.index = model_input.index
        if ID_COLUMN in model_input.columns:
            if ID_COLUMN in output.columns:
                output = output.drop(columns=ID_COLUMN)
            output.insert(0, ID_COLUMN, model_input[ID_COLUMN])
        return output
