"""Small pieces of the radiomics layer: lesion numbering, crop boxes, settings."""

from __future__ import annotations

import numpy as np
import pytest

from features import radiomics
from tests.conftest import REPO


def test_lesions_are_numbered_largest_first_across_labels():
    mask = np.zeros((10, 10, 30), np.uint8)
    mask[1:3, 1:3, 1:3] = 2          # 8 voxels, label 2
    mask[1:5, 1:5, 10:14] = 2        # 64 voxels, label 2
    mask[6:9, 6:9, 20:23] = 3        # 27 voxels, label 3
    mask[0, 0, 29] = 1               # liver, not a lesion
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
