"""Per-lesion extraction on real CT: the project's settings run, and cropping is harmless.

Three soft-tissue-sarcoma CTs from the IBSI validation set (float HU, 0.98 x 0.98 x 3.27 mm,
gross tumour masks; tests/data/real_ct/README.md). ``lesion_rows`` crops each lesion with
``crop_margin_mm`` before pyradiomics filters it; these tests compare that with plain
pyradiomics on the whole image and the same lesion mask. With resampling on, this only holds if
the crop is resampled on the grid pyradiomics would lay over the whole image (it anchors the
grid at the image corner): resampling the crop on its own grid changed every original feature
(mesh volume by 0.4%, 10th percentile by 21% on STS_001).
"""

from __future__ import annotations

import copy
import logging
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from features.radiomics import (
    FEATURE_PREFIXES,
    ExtractionSettings,
    label_lesions,
    lesion_rows,
    load_radiomics_params,
    make_extractor,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "real_ct"
SCANS = ("STS_001", "STS_002", "STS_003")
COMPARED_SCAN = "STS_001"  # the largest tumour (117,000 voxels); the comparisons take ~4 s each
LESION_LABELS = (1,)

# configs/radiomics.yaml: original (shape 14 + first order 18 + GLCM 24 + GLRLM 16 + GLSZM 16 +
# GLDM 14 + NGTDM 5 = 107) and 11 filtered images (LoG sigma 1, 2, 3 mm and 8 wavelet
# sub-bands) with 93 features each (no shape): 107 + 11 * 93 = 1130.
EXPECTED_FEATURES = 1130
EXPECTED_IMAGE_TYPES = 12

# Cropped against uncropped: original-image features must be the same numbers; filtered ones
# within 1% (a crop changes what the filter sees at the crop border). Differences below
# FILTERED_ABS_FLOOR (in the feature's own units) count as equal: it keeps values that are
# zero up to float32 rounding in both versions (e.g. a wavelet band's median) from failing on
# a relative difference of noise. On STS_001 no feature comes near either bound: with the
# project settings original features are identical and filtered ones within 5e-11; without
# resampling the largest relative difference is 2e-6 (LoG sigma 3 skewness).
ORIGINAL_RTOL = 1e-9
FILTERED_RTOL = 0.01
FILTERED_ABS_FLOOR = 1e-6
# The project's settings (1.5 mm isotropic B-spline resampling) and the same without resampling,
# where pyradiomics filters the whole image and the crop margin alone decides the agreement.
VARIANTS = ("project", "without-resampling")


@cache
def project_params() -> dict[str, Any]:
    return load_radiomics_params(REPO / "configs" / "radiomics.yaml")


@cache
def project_margin_mm() -> float:
    return float(yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())["crop_margin_mm"])


def params_for(variant: str) -> dict[str, Any]:
    params = copy.deepcopy(project_params())
    if variant == "without-resampling":
        params["setting"].pop("resampledPixelSpacing")
    return params


@cache
def scan(name: str) -> tuple[sitk.Image, sitk.Image]:
    return (sitk.ReadImage(str(DATA / name / "CT_image.nii.gz")), sitk.ReadImage(str(DATA / name / "CT_mask.nii.gz")))


@cache
def cropped_rows(name: str, variant: str, margin_mm: float) -> list[dict[str, Any]]:
    image, mask = scan(name)
    params = params_for(variant)
    return lesion_rows(image, mask, LESION_LABELS, ExtractionSettings(params, margin_mm), make_extractor(params))


def pyradiomics_extractor(params: dict[str, Any]):
    """Plain pyradiomics, independent of our wrapper: the reference."""
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    return featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(params))


@cache
def uncropped_features(name: str, variant: str) -> list[dict[str, float]]:
    """pyradiomics on the whole image, one binary mask per lesion numbered as lesion_rows does."""
    image, mask = scan(name)
    numbered, _ = label_lesions(sitk.GetArrayFromImage(mask), LESION_LABELS)
    extractor = pyradiomics_extractor(params_for(variant))
    results = []
    for number in range(1, int(numbered.max()) + 1):
        lesion_mask = sitk.GetImageFromArray((numbered == number).astype(np.uint8))
        lesion_mask.CopyInformation(image)
        result = extractor.execute(image, lesion_mask, label=1)
        results.append({k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")})
    return results


def features_of(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k.startswith(FEATURE_PREFIXES)}


def relative_difference(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def mismatches(uncropped: dict[str, float], cropped: dict[str, float]) -> list[tuple[str, float, float, float]]:
    """Features outside the tolerance: (name, uncropped, cropped, relative difference), worst first."""
    assert set(uncropped) == set(cropped)
    out = []
    for name, a in uncropped.items():
        b = cropped[name]
        rel = relative_difference(a, b)
        if name.startswith("original_"):
            bad = rel > ORIGINAL_RTOL
        else:
            bad = abs(a - b) > max(FILTERED_RTOL * max(abs(a), abs(b)), FILTERED_ABS_FLOOR)
        if bad:
            out.append((name, a, b, rel))
    return sorted(out, key=lambda m: -m[3])


@pytest.mark.parametrize("name", SCANS)
def test_project_settings_extract_every_lesion(name):
    rows = cropped_rows(name, "project", project_margin_mm())
    assert rows, f"{name}: no lesion found"
    for row in rows:
        assert row["error"] == "", f"{name} lesion {row['lesion']}: {row['error']}"
        features = features_of(row)
        assert len(features) == EXPECTED_FEATURES, (
            f"{name}: {len(features)} features, expected {EXPECTED_FEATURES} from configs/radiomics.yaml"
        )
        image_types = {feature.split("_")[0] for feature in features}
        assert len(image_types) == EXPECTED_IMAGE_TYPES, sorted(image_types)
        assert all(math.isfinite(v) for v in features.values())


@pytest.mark.parametrize("variant", VARIANTS)
def test_cropped_extraction_equals_uncropped(variant):
    rows = cropped_rows(COMPARED_SCAN, variant, project_margin_mm())
    uncropped = uncropped_features(COMPARED_SCAN, variant)
    assert len(rows) == len(uncropped)
    for row, full in zip(rows, uncropped, strict=True):
        bad = mismatches(full, features_of(row))
        assert not bad, (
            f"{COMPARED_SCAN} lesion {row['lesion']} ({variant}): {len(bad)} features differ, worst {bad[:5]}"
        )


def test_a_crop_without_margin_changes_filtered_features():
    """The comparison above can fail: with no margin the filters see the crop border. (With
    resampling, lesion_rows keeps a minimum margin for the B-spline whatever crop_margin_mm says,
    so the test below shows the failure for that case.)"""
    rows = cropped_rows(COMPARED_SCAN, "without-resampling", 0.0)
    uncropped = uncropped_features(COMPARED_SCAN, "without-resampling")
    for row, full in zip(rows, uncropped, strict=True):
        bad = mismatches(full, features_of(row))
        assert len(bad) > 50, bad
        assert all(not name.startswith("original_") for name, *_ in bad)  # never see outside the mask


def test_resampling_a_crop_on_its_own_grid_changes_original_features():
    """Why lesion_rows must resample on the whole image's grid: given a crop, pyradiomics anchors
    its 1.5 mm grid at the crop's corner, image and mask are sampled at other points, and the
    comparison above catches it (this was lesion_rows' first version)."""
    name = "STS_002"  # small tumour: fast
    image, mask = scan(name)
    numbered, _ = label_lesions(sitk.GetArrayFromImage(mask), LESION_LABELS)
    lesion = sitk.GetImageFromArray((numbered == 1).astype(np.uint8))
    lesion.CopyInformation(image)
    zyx = np.argwhere(numbered == 1)
    pad = np.ceil(project_margin_mm() / np.array(image.GetSpacing()[::-1])).astype(int)
    low = np.maximum(zyx.min(axis=0) - pad, 0)
    high = np.minimum(zyx.max(axis=0) + 1 + pad, numbered.shape)
    index, size = low[::-1].tolist(), (high - low)[::-1].tolist()
    crop_image, crop_mask = (sitk.RegionOfInterest(im, size, index) for im in (image, lesion))
    result = pyradiomics_extractor(params_for("project")).execute(crop_image, crop_mask, label=1)
    cropped = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
    bad = mismatches(uncropped_features(name, "project")[0], cropped)
    assert sum(feature.startswith("original_") for feature, *_ in bad) > 50, bad[:5]
