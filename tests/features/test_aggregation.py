"""Patient-level aggregation of per-lesion features, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.aggregation import aggregate_lesions


@pytest.fixture()
def lesions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P1", "P2"],
            "lesion": [2, 1, 3, 1],
            "lesion_volume_ml": [1.0, 3.0, 0.0, 2.0],
            "original_firstorder_Mean": [10.0, 20.0, 99.0, 5.0],
            "original_glcm_Contrast": [1.0, np.nan, 7.0, 4.0],
        }
    )


def test_largest_takes_lesion_one_of_each_patient(lesions):
    out = aggregate_lesions(lesions, ["original_firstorder_Mean"], ["largest"], "lesion_volume_ml", "lesion")
    assert out.loc["P1", "rad_largest__original_firstorder_Mean"] == 20.0
    assert out.loc["P2", "rad_largest__original_firstorder_Mean"] == 5.0


def test_volume_weighted_mean_weights_by_volume_and_skips_missing_values(lesions):
    out = aggregate_lesions(
        lesions,
        ["original_firstorder_Mean", "original_glcm_Contrast"],
        ["volume_weighted_mean"],
        "lesion_volume_ml",
        "lesion",
    )
    # P1: (1*10 + 3*20 + 0*99) / 4 = 17.5; contrast: lesion 1 missing -> (1*1 + 0*7) / 1 = 1.
    assert out.loc["P1", "rad_vwmean__original_firstorder_Mean"] == pytest.approx(17.5)
    assert out.loc["P1", "rad_vwmean__original_glcm_Contrast"] == pytest.approx(1.0)
    assert out.loc["P2", "rad_vwmean__original_firstorder_Mean"] == pytest.approx(5.0)


def test_unknown_rule_is_rejected_with_the_allowed_ones(lesions):
    with pytest.raises(ValueError, match="unknown aggregation rule.*'median'.*allowed: largest, volume_weighted_mean"):
        aggregate_lesions(lesions, ["original_firstorder_Mean"], ["median"], "lesion_volume_ml", "lesion")
