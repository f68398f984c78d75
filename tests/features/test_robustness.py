"""ICC(1,1) per feature (features/robustness.py) against published and analytic values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.robustness import ICC_COLUMNS, feature_origin, icc_1_1, icc_summary, icc_table
from features.schema import PATIENT_ID, PERTURBATION

# Shrout & Fleiss (1979), Psychol Bull 86:420, Table 2: 6 targets rated by 4 judges.
# Their Table 4 gives ICC(1,1) = 0.17 (BMS = 11.24, WMS = 6.26).
SHROUT_FLEISS = np.array(
    [
        [9, 2, 5, 8],
        [6, 1, 3, 2],
        [8, 4, 6, 8],
        [7, 1, 2, 6],
        [10, 5, 6, 9],
        [6, 2, 4, 7],
    ]
)


def test_shrout_fleiss_table():
    assert icc_1_1(SHROUT_FLEISS) == pytest.approx(0.17, abs=0.005)
    # from their mean squares: (11.24 - 6.26) / (11.24 + 3 * 6.26)
    assert icc_1_1(SHROUT_FLEISS) == pytest.approx((11.2417 - 6.2639) / (11.2417 + 3 * 6.2639), abs=1e-3)


def test_closed_form_on_planted_data():
    # subject means 2, 6, 10 (grand 6): BMS = 2 * 32 / 2 = 32; every rater 1 off its mean: WMS = 6 / 3 = 2
    values = np.array([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]])
    assert icc_1_1(values) == pytest.approx((32 - 2) / (32 + 2), abs=1e-12)


def test_planted_variance_components_are_recovered():
    # x_ij = a_i + e_ij: ICC(1,1) estimates var(a) / (var(a) + var(e)) = 4 / (4 + 1) = 0.8
    rng = np.random.default_rng(0)
    values = rng.normal(0, 2, (4000, 1)) + rng.normal(0, 1, (4000, 5))
    assert icc_1_1(values) == pytest.approx(0.8, abs=0.02)


def test_pure_noise_is_zero_and_stable_feature_is_one():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(300, 4))
    assert abs(icc_1_1(noise)) < 0.06
    stable = np.repeat(rng.normal(size=(300, 1)), 4, axis=1)
    assert icc_1_1(stable) == pytest.approx(1.0)
    assert np.isnan(icc_1_1(np.ones((10, 4))))  # no variance: undefined


def test_vectorised_equals_one_by_one():
    rng = np.random.default_rng(2)
    cube = rng.normal(size=(20, 4, 50)) + rng.normal(size=(20, 1, 50)) * np.linspace(0, 3, 50)
    together = icc_1_1(cube)
    np.testing.assert_allclose(together, [icc_1_1(cube[:, :, j]) for j in range(50)], rtol=1e-12)


def _rows(values: dict[str, np.ndarray], n: int, k: int) -> pd.DataFrame:
    ids = [f"p{i:02d}" for i in range(n)]
    frame = pd.DataFrame({PATIENT_ID: np.repeat(ids, k), PERTURBATION: np.tile([f"icc-{j + 1}" for j in range(k)], n)})
    for name, cube in values.items():
        frame[name] = cube.reshape(-1)
    return frame


def test_icc_table_per_feature_with_origin_and_missing_values():
    rng = np.random.default_rng(3)
    n, k = 30, 4
    stable = np.repeat(rng.normal(size=(n, 1)), k, axis=1)
    noise = rng.normal(size=(n, k))
    gappy = stable.copy()
    gappy[0, 2] = np.nan  # patient p00 lacks one perturbation for this feature only
    rows = _rows(
        {
            "rad_largest__original_firstorder_Mean": stable,
            "rad_vwmean__wavelet-LLH_glcm_Contrast": noise,
            "rad_largest__log-sigma-2-0-mm-3D_glszm_ZoneEntropy": gappy,
            "patient_tumour_volume_ml": stable,
        },
        n,
        k,
    )
    table = icc_table(rows, [c for c in rows.columns if c not in (PATIENT_ID, PERTURBATION)])
    assert list(table.columns) == list(ICC_COLUMNS)
    by = table.set_index("feature")
    assert by.loc["rad_largest__original_firstorder_Mean", "icc"] == pytest.approx(1.0)
    assert abs(by.loc["rad_vwmean__wavelet-LLH_glcm_Contrast", "icc"]) < 0.3
    assert by.loc["rad_largest__log-sigma-2-0-mm-3D_glszm_ZoneEntropy", "n_patients"] == n - 1
    assert by.loc["rad_largest__log-sigma-2-0-mm-3D_glszm_ZoneEntropy", "icc"] == pytest.approx(1.0)
    assert by.loc["rad_vwmean__wavelet-LLH_glcm_Contrast", ["image_type", "feature_class"]].tolist() == [
        "wavelet-LLH",
        "glcm",
    ]
    assert (by["n_perturbations"] == k).all()
    summary = icc_summary(table)
    assert summary.loc["original", "median_icc"] == pytest.approx(1.0)


def test_too_few_patients_give_nan():
    rng = np.random.default_rng(4)
    rows = _rows({"rad_largest__original_firstorder_Mean": rng.normal(size=(9, 3))}, 9, 3)
    table = icc_table(rows, ["rad_largest__original_firstorder_Mean"])
    assert np.isnan(table.loc[0, "icc"]) and table.loc[0, "n_patients"] == 9


def test_feature_origin_of_pyradiomics_names():
    assert feature_origin("rad_largest__original_shape_Sphericity") == ("original", "shape")
    assert feature_origin("rad_vwmean__log-sigma-1-0-mm-3D_firstorder_Mean") == ("log-sigma-1-0-mm-3D", "firstorder")
    assert feature_origin("rad_largest__lbp-3D-m1_glcm_Idm") == ("lbp-3D-m1", "glcm")
    assert feature_origin("patient_liver_volume_ml") == ("morphology", "morphology")
