"""Small pieces of the radiomics layer: lesion numbering, crop boxes, settings."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from features import radiomics
from tests.conftest import REPO


def test_lesions_are_numbered_largest_first_across_labels():
    mask = np.zeros((10, 10, 30), np.uint8)
    mask[1:3, 1:3, 1:3] = 2  # 8 voxels, label 2
    mask[1:5, 1:5, 10:14] = 2  # 64 voxels, label 2
    mask[6:9, 6:9, 20:23] = 3  # 27 voxels, label 3
    mask[0, 0, 29] = 1  # liver, not a lesion
    numbered, labels = radiomics.label_lesions(mask, (2, 3))
    assert labels == [2, 3, 2]
    assert [(numbered == k).sum() for k in (1, 2, 3)] == [64, 27, 8]
    assert numbered[0, 0, 29] == 0


def test_equal_lesions_keep_a_stable_order():
    mask = np.zeros((4, 4, 12), np.uint8)
    mask[1:3, 1:3, 8:10] = 2
    mask[1:3, 1:3, 1:3] = 2
    numbered, _ = radiomics.label_lesions(mask, (2,))
    assert numbered[1, 1, 1] == 1 and numbered[1, 1, 8] == 2


def test_crop_box_grows_by_the_margin_in_voxels_and_stays_inside():
    box = (slice(5, 10), slice(0, 4), slice(90, 100))
    grown = radiomics.crop_box(box, margin_mm=6.0, spacing_xyz=(2.0, 1.0, 3.0), shape_zyx=(20, 50, 100))
    assert grown == (slice(3, 12), slice(0, 10), slice(87, 100))
    assert radiomics.crop_box(box, 0.0, (2.0, 1.0, 3.0), (20, 50, 100), min_voxels=4)[0] == slice(1, 14)


def test_settings_hash_follows_every_setting():
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    base = radiomics.ExtractionSettings(params, 25.0)
    assert base.digest() == radiomics.ExtractionSettings(params, 25.0).digest()
    assert base.digest() != radiomics.ExtractionSettings(params, 20.0).digest()
    other = {**params, "setting": {**params["setting"], "binWidth": 10}}
    assert base.digest() != radiomics.ExtractionSettings(other, 25.0).digest()
    with pytest.raises(ValueError, match="crop_margin_mm cannot be negative"):
        radiomics.ExtractionSettings(params, -1.0)


def test_an_invalid_pyradiomics_file_is_rejected_with_its_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidht: 25\n")
    with pytest.raises(ValueError, match="bad.yaml: not a valid pyradiomics parameter file"):
        radiomics.load_radiomics_params(bad)


def _small_case():
    import SimpleITK as sitk

    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[:20, :32, :32]
    ct = (40 + 25 * rng.standard_normal((20, 32, 32))).astype(np.float32)
    mask = np.zeros((20, 32, 32), np.uint8)
    lesion = (z - 10) ** 2 + ((y - 16) / 1.3) ** 2 + (x - 15) ** 2 <= 36
    mask[lesion] = 2
    ct[lesion] -= 30 * np.exp(-((z[lesion] - 10) ** 2) / 20)
    image, label_map = sitk.GetImageFromArray(ct), sitk.GetImageFromArray(mask)
    for item in (image, label_map):
        item.SetSpacing((1.2, 1.2, 2.0))
    return image, label_map


def test_reduced_parameters_compute_the_named_features_exactly_and_little_else():
    """Issue 14: predict extracts only the image types, LoG sigmas and classes its model's
    inputs come from; each feature kept equals the full extraction's (pyradiomics computes image
    types and classes independently)."""
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    wanted = [
        "original_shape_Sphericity",
        "log-sigma-2-0-mm-3D_firstorder_Mean",
        "wavelet-LHL_glcm_Contrast",
        "original_glcm_Idm",
    ]
    reduced = radiomics.params_for_features(params, wanted)
    assert reduced["imageType"] == {"Original": {}, "LoG": {"sigma": [2.0]}, "Wavelet": {}}
    assert set(reduced["featureClass"]) == {"shape", "firstorder", "glcm"}
    assert reduced["setting"] == params["setting"]
    image, mask = _small_case()
    rows = {}
    for name, settings in (("full", params), ("reduced", reduced)):
        extraction_settings = radiomics.ExtractionSettings(settings, 10.0)
        (row,) = radiomics.lesion_rows(image, mask, (2,), extraction_settings)
        assert row["error"] == ""
        rows[name] = row
    assert all(name in rows["reduced"] for name in wanted)
    for name in wanted:
        assert rows["reduced"][name] == pytest.approx(rows["full"][name], rel=1e-12, abs=1e-12)
    kept = [c for c in rows["reduced"] if c.startswith(radiomics.FEATURE_PREFIXES)]
    assert len(kept) < len([c for c in rows["full"] if c.startswith(radiomics.FEATURE_PREFIXES)]) / 2
    assert all(rows["reduced"][c] == rows["full"][c] for c in kept)
    assert radiomics.ExtractionSettings(reduced, 10.0).digest() != radiomics.ExtractionSettings(params, 10.0).digest()


@pytest.mark.parametrize(
    "name",
    [
        "log-sigma-5-0-mm-3D_firstorder_Mean",
        "square_firstorder_Mean",
        "original_ngtdm2_Busyness",
        "wavelet-LLH_shape_Sphericity",
        "nonsense",
    ],
)
def test_a_feature_the_parameters_cannot_make_means_the_full_extraction(name):
    """Never a guess: a name that cannot be traced to the parameters keeps everything."""
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    assert radiomics.params_for_features(params, ["original_firstorder_Mean", name]) is None


def test_each_derived_image_gets_only_its_own_classes_and_features_with_the_full_values():
    """Issue 14: on each derived image (original, one LoG sigma, one wavelet sub-band) only the
    classes and features named for it are computed, with pyradiomics' own building blocks; each
    value equals the full extraction's exactly, and no other column appears."""
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    wanted = [
        "original_shape_Sphericity",
        "original_glcm_Idm",
        "original_firstorder_Median",
        "log-sigma-2-0-mm-3D_firstorder_Mean",
        "log-sigma-2-0-mm-3D_glszm_SmallAreaEmphasis",
        "wavelet-LHL_glcm_Contrast",
        "wavelet-HHH_gldm_DependenceEntropy",
        "wavelet-HHH_glrlm_RunEntropy",
        "wavelet-LLL_ngtdm_Busyness",
    ]
    selection = radiomics.feature_selection(params, wanted)
    assert selection["wavelet-HHH"] == {"gldm": ["DependenceEntropy"], "glrlm": ["RunEntropy"]}
    assert set(selection) == {"original", "log-sigma-2-0-mm-3D", "wavelet-LHL", "wavelet-HHH", "wavelet-LLL"}
    reduced = radiomics.params_for_features(params, wanted)
    image, mask = _small_case()
    (full,) = radiomics.lesion_rows(image, mask, (2,), radiomics.ExtractionSettings(params, 10.0))
    selected = radiomics.ExtractionSettings(reduced, 10.0, tuple(wanted))
    (row,) = radiomics.lesion_rows(image, mask, (2,), selected)
    assert row["error"] == ""
    assert sorted(c for c in row if c.startswith(radiomics.FEATURE_PREFIXES)) == sorted(wanted)
    assert {name: row[name] for name in wanted} == {name: full[name] for name in wanted}
    assert [c for c in row if not c.startswith(radiomics.FEATURE_PREFIXES)] == [
        c for c in full if not c.startswith(radiomics.FEATURE_PREFIXES)
    ]
    # Its own cache key; a full extraction's key is the one it had before the field existed.
    assert selected.digest() != radiomics.ExtractionSettings(reduced, 10.0).digest()
    assert (
        radiomics.ExtractionSettings(params, 10.0, None).digest() == radiomics.ExtractionSettings(params, 10.0).digest()
    )


@pytest.mark.parametrize(
    "name",
    [
        "original_glcm_NoSuchFeature",
        "original_firstorder_StandardDeviation",  # deprecated: a full extraction never computes it
        "wavelet-LLH_shape_Sphericity",
        "nonsense",
    ],
)
def test_a_feature_that_cannot_be_traced_selects_nothing(name):
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    assert radiomics.feature_selection(params, ["original_firstorder_Mean", name]) is None
    assert radiomics.feature_selection(params, []) is None


def test_a_lesion_the_selected_extraction_cannot_handle_gets_pyradiomics_error():
    """The reduced path raises what pyradiomics raises (a one-voxel lesion after resampling),
    so the lesion gets the same ``error`` as in a full extraction."""
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    image, _ = _small_case()
    tiny = np.zeros((20, 32, 32), np.uint8)
    tiny[10, 16, 16] = 2
    mask = sitk.GetImageFromArray(tiny)
    mask.CopyInformation(image)
    wanted = ("wavelet-LHL_glcm_Contrast",)
    reduced = radiomics.ExtractionSettings(radiomics.params_for_features(params, wanted), 10.0, wanted)
    (row,) = radiomics.lesion_rows(image, mask, (2,), reduced)
    (full,) = radiomics.lesion_rows(image, mask, (2,), radiomics.ExtractionSettings(params, 10.0))
    assert row["error"].startswith("pyradiomics:") and row["error"] == full["error"]


def test_a_complex_feature_value_from_rounding_is_its_real_part_and_otherwise_missing():
    """pyradiomics' GLCM Imc2 is ``(1 - e^(-2 (HXY2 - HXY))) ** 0.5``: a radicand rounded a hair
    below 0 makes Python return a complex number (seen on perturbed synthetic lesions,
    2026-12-02). The exact value is 0; a real imaginary part is not rounding and gives NaN."""
    rounded = (1 - np.e ** (-2 * (-5e-13))) ** 0.5  # what pyradiomics computes for HXY2 - HXY = -5e-13
    assert isinstance(rounded, complex)
    assert radiomics.feature_value(rounded) == pytest.approx(0.0, abs=1e-15)
    assert radiomics.feature_value(np.complex128(0.42 + 1e-9j)) == 0.42
    assert np.isnan(radiomics.feature_value(0.5 + 0.2j))
    assert radiomics.feature_value(np.float32(0.25)) == 0.25 and radiomics.feature_value(np.array(3.0)) == 3.0
