"""PrognosisModel: the pyfunc wrapper checks its input and passes patient ids through."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest

FEATURES = ["cea_ng_ml", "n_lesions", "largest_diameter_mm"]


class ScalingPredictor:
    """A fitted predictor in miniature: risk is a weighted sum of the features."""

    feature_columns = FEATURES

    def predict_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        risk = 0.01 * features["cea_ng_ml"] + 0.5 * features["n_lesions"] + 0.02 * features["largest_diameter_mm"]
        return pd.DataFrame({"risk": risk.to_numpy(), "survival_12m": (1 - risk / 10).to_numpy()})


@pytest.fixture
def serving(monkeypatch):
    # MLflow decides on telemetry when it is first imported: switch it off before that.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    return importlib.import_module("models.serving")


def cohort() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["Zoë-01", "P-002", "P-003"],
            "cea_ng_ml": [250.0, 3.5, 40.0],
            "n_lesions": [4, 1, 2],
            "largest_diameter_mm": [62.0, 18.0, 35.0],
            "site": ["A", "A", "B"],
        },
        index=[10, 11, 12],
    )


def test_prognosis_model_passes_patient_id_through_as_first_column(serving):
    frame = cohort()
    out = serving.PrognosisModel(ScalingPredictor()).predict(None, frame)
    assert list(out.columns) == ["patient_id", "risk", "survival_12m"]
    assert out["patient_id"].tolist() == ["Zoë-01", "P-002", "P-003"]
    assert out.index.tolist() == [10, 11, 12]
    assert out["risk"].tolist() == pytest.approx([2.5 + 2 + 1.24, 0.035 + 0.5 + 0.36, 0.4 + 1 + 0.7])


def test_prognosis_model_without_patient_id_returns_the_predictor_frame(serving):
    out = serving.PrognosisModel(ScalingPredictor()).predict(None, cohort().drop(columns="patient_id"))
    assert list(out.columns) == ["risk", "survival_12m"]


def test_prognosis_model_missing_column_raises_naming_it_and_the_nearest(serving):
    frame = cohort().rename(columns={"cea_ng_ml": "cea_ngml"}).drop(columns="n_lesions")
    with pytest.raises(ValueError, match=r"missing 2 required column") as caught:
        serving.PrognosisModel(ScalingPredictor()).predict(None, frame)
    message = str(caught.value)
    assert "'cea_ng_ml' (nearest: 'cea_ngml')" in message
    assert "'n_lesions'" in message


def test_prognosis_model_rejects_a_predictor_without_feature_columns(serving):
    class NoColumns:
        def predict_frame(self, features):
            return features

    with pytest.raises(TypeError, match="feature_columns"):
        serving.PrognosisModel(NoColumns())


def test_prognosis_model_rejects_output_with_a_different_row_count(serving):
    class Dropping(ScalingPredictor):
        def predict_frame(self, features):
            return super().predict_frame(features).iloc[:1]

    with pytest.raises(ValueError, match="returned 1 rows for 3 input rows"):
        serving.PrognosisModel(Dropping()).predict(None, cohort())
