"""Reference-tissue normalisation: the region (liver minus lesions, eroded in mm), an HU offset
cancelling through the project's extraction path on a real CT, the statuses, and the settings hash
and record of default extractions unchanged.

The real CT is STS_002 of tests/data/real_ct (soft-tissue sarcoma, float HU holding whole numbers,
0.98 x 0.98 x 3.27 mm): its gross tumour is the lesion (label 2) and a shell of tissue around
it (label 1) stands in for the liver; what is tested is arithmetic on HU, not anatomy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from features import extraction, radiomics
from features.imaging import DEFAULT_LABELS
from features.reference_tissue import ReferenceTissue, liver_reference, reference_region
from features.schema import OK, REASON, REFERENCE_MEDIAN_HU, REFERENCE_VOXELS, STATUS
from tests.conftest import LIGHT_RADIOMICS

REAL_CT = Path(__file__).resolve().parents[1] / "data" / "real_ct" / "STS_002"
REFERENCE = ReferenceTissue(enabled=True, erosion_mm=3.0, min_voxels=500)
# The digest and record of CaseOptions(LIGHT_RADIOMICS, crop margin 25 mm, labels 1/2) computed on
# main before reference_tissue existed (pyradiomics 3.x of this environment): default extractions
# keep their cache keys and the records models were trained with.
MAIN_DIGEST = "81ef3c9d9074d3cd"
MAIN_RECORD = (
    '{"aggregation": ["largest"], "crop_margin_mm": 25.0, "labels": {"lesion": 2, "liver": 1, '
    '"seg_lesions": "segments", "segment_roles": {}}, "min_lesion_voxels": 2, "radiomics": {"featureClass": '
    '{"firstorder": null, "glcm": null, "shape": null}, "imageType": {"Original": {}}, "setting": {"binWidth": 25, '
    '"interpolator": "sitkBSpline", "label": 1, "padDistance": 5, "resampledPixelSpacing": [2.0, 2.0, 2.0]}}, '
    '"require_hu": true, "resample_mask": false, "settings_hash": "81ef3c9d9074d3cd"}'
)
FIRST_ORDER_SHIFTING = ("Mean", "Median", "10Percentile", "90Percentile", "Minimum", "Maximum")
FIRST_ORDER_INVARIANT = ("Variance", "InterquartileRange", "Range", "MeanAbsoluteDeviation", "Skewness", "Kurtosis")


def options(reference: ReferenceTissue | None = None) -> extraction.CaseOptions:
    return extraction.CaseOptions(
        settings=radiomics.ExtractionSettings(LIGHT_RADIOMICS, 25.0), labels=DEFAULT_LABELS, reference_tissue=reference
    )


# ----------------------------------------------------------------------------- the region


def test_erosion_is_in_mm_on_anisotropic_voxels():
    """A 40 x 40 x 20 voxel liver box, 1 x 1 x 3 mm voxels, eroded by 5 mm: a voxel is kept when
    the nearest non-liver voxel is more than 5 mm away: 5 voxels go on each side in plane
    (1..5 mm), 1 across slices (3 mm; the next is 6 mm away): 30 x 30 x 18 voxels are left."""
    mask = np.zeros((24, 44, 44), np.uint8)
    mask[2:22, 2:42, 2:42] = 1
    region = reference_region(mask, 1, (1.0, 1.0, 3.0), 5.0)
    assert region.sum() == 30 * 30 * 18
    z, y, x = np.nonzero(region)
    assert (z.min(), z.max(), y.min(), y.max(), x.min(), x.max()) == (3, 20, 7, 36, 7, 36)
    assert reference_region(mask, 1, (1.0, 1.0, 3.0), 0.0).sum() == 40 * 40 * 20
    # the same box touching the image border: outside the image counts as not liver
    assert reference_region(mask[2:22, 2:42, 2:42], 1, (1.0, 1.0, 3.0), 5.0).sum() == 30 * 30 * 18


def test_region_excludes_lesions_and_keeps_erosion_mm_from_them():
    spacing = (0.8, 0.8, 2.5)
    mask = np.zeros((30, 60, 60), np.uint8)
    mask[3:27, 5:55, 5:55] = 1
    zz, yy, xx = np.indices(mask.shape)
    lesion = ((xx - 30) * 0.8) ** 2 + ((yy - 30) * 0.8) ** 2 + ((zz - 15) * 2.5) ** 2 <= 8.0**2
    mask[lesion] = 2
    region = reference_region(mask, 1, spacing, 4.0)
    assert region.any() and not (region & lesion).any()
    distance_to_lesion = ndimage.distance_transform_edt(~lesion, sampling=spacing[::-1])
    assert distance_to_lesion[region].min() > 4.0
    # every liver voxel farther than 4 mm from lesion and edge is kept: the erosion takes no more
    distance_to_other = ndimage.distance_transform_edt(np.pad(mask == 1, 1), sampling=spacing[::-1])[1:-1, 1:-1, 1:-1]
    assert np.array_equal(region, distance_to_other > 4.0)


def test_reference_statistics_are_the_region_median_and_mad():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (20, 30, 30)).round()
    mask = np.zeros(image.shape, np.uint8)
    mask[2:18, 2:28, 2:28] = 1
    mask[8:12, 12:18, 12:18] = 2
    image[mask == 2] = 1000.0  # lesion values never reach the reference
    stats = liver_reference(image, mask, 1, (1.0, 1.0, 1.0), 2.0)
    values = image[reference_region(mask, 1, (1.0, 1.0, 1.0), 2.0)]
    assert stats.median_hu == np.median(values) and stats.voxels == values.size
    assert stats.mad_hu == pytest.approx(np.median(np.abs(values - np.median(values))))
    assert stats.liver_voxels == int((mask == 1).sum())


# ----------------------------------------------------------------------------- real CT, extraction path


@pytest.fixture(scope="module")
def real_case(tmp_path_factory) -> dict[str, Path]:
    """STS_002 with its tumour as label 2 and a tissue shell around it as label 1; the image as
    read, plus 8 HU and plus 25 HU (one bin width)."""
    out = tmp_path_factory.mktemp("reference_real_ct")
    image = sitk.ReadImage(str(REAL_CT / "CT_image.nii.gz"))
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "CT_mask.nii.gz"))) > 0
    values = sitk.GetArrayFromImage(image)
    assert np.array_equal(values, np.round(values))  # whole HU: every offset below is exact in float32
    shell = ndimage.binary_dilation(tumour, np.ones((3, 9, 9), bool), iterations=2) & ~tumour & (values > -200)
    mask = np.zeros(values.shape, np.uint8)
    mask[shell] = 1
    mask[tumour] = 2
    paths = {"mask": out / "mask.nii.gz", "no_liver": out / "no_liver.nii.gz", "thin": out / "thin.nii.gz"}
    for name, array in (
        ("mask", mask),
        ("no_liver", np.where(mask == 2, 2, 0).astype(np.uint8)),
        ("thin", np.where(mask == 2, 2, (ndimage.binary_dilation(tumour) & ~tumour).astype(np.uint8))),
    ):
        written = sitk.GetImageFromArray(array.astype(np.uint8))
        written.CopyInformation(image)
        sitk.WriteImage(written, str(paths[name]))
    for offset in (0, 8, 25):
        shifted = sitk.GetImageFromArray((values + offset).astype(np.float32))
        shifted.CopyInformation(image)
        paths[offset] = out / f"image_{offset}.nii.gz"
        sitk.WriteImage(shifted, str(paths[offset]))
    return paths


@pytest.fixture(scope="module")
def rows(real_case) -> dict[tuple[int, bool], dict]:
    """The one lesion row for each (offset, normalised)."""
    found = {}
    for offset in (0, 8, 25):
        for normalised in (False, True):
            if offset == 25 and normalised:
                continue
            case = extraction.CaseInput("STS_002", real_case[offset], real_case["mask"])
            result = extraction.extract_case(case, options(REFERENCE if normalised else None), None)
            assert [r[STATUS] for r in result.report] == [OK], result.report
            found[offset, normalised] = result.lesions[0]
    return found


def test_hu_offset_cancels_exactly_with_normalisation(rows):
    plain, shifted = rows[0, True], rows[8, True]
    features = [c for c in plain if c.startswith("original_")]
    assert any(c.startswith("original_glcm_") for c in features)
    for column in features:  # the normalised image is the same to the bit: every feature, texture too
        assert shifted[column] == plain[column], column
    assert shifted[REFERENCE_MEDIAN_HU] == plain[REFERENCE_MEDIAN_HU] + 8
    assert shifted[REFERENCE_VOXELS] == plain[REFERENCE_VOXELS] >= REFERENCE.min_voxels
    # relative to the reference: the first-order values move by minus the patient's median
    raw = rows[0, False]
    for name in FIRST_ORDER_SHIFTING:
        column = f"original_firstorder_{name}"
        assert plain[column] == pytest.approx(raw[column] - plain[REFERENCE_MEDIAN_HU], abs=1e-3), column


def test_without_normalisation_an_offset_moves_first_order_and_texture_only_approximately_invariant(rows):
    """Without normalisation, 8 HU move the mean, median and percentiles by 8 HU and leave the
    spread alone; texture changes because pyradiomics' bins (25 HU) start at floor(min / 25) * 25,
    a fixed HU grid the values move across. An offset of one whole bin width keeps texture."""
    raw, shifted, whole_bin = rows[0, False], rows[8, False], rows[25, False]
    for name in FIRST_ORDER_SHIFTING:
        column = f"original_firstorder_{name}"
        assert shifted[column] == pytest.approx(raw[column] + 8, abs=1e-3), column
    for name in FIRST_ORDER_INVARIANT:
        column = f"original_firstorder_{name}"
        assert shifted[column] == pytest.approx(raw[column], rel=1e-5, abs=1e-6), column
    glcm = [c for c in raw if c.startswith("original_glcm_")]
    assert any(shifted[c] != pytest.approx(raw[c], rel=1e-6) for c in glcm)
    for column in glcm:
        assert whole_bin[column] == pytest.approx(raw[column], rel=1e-6, abs=1e-9), column


def test_shape_features_do_not_depend_on_normalisation(rows):
    shape = [c for c in rows[0, False] if c.startswith("original_shape_")]
    assert shape
    for column in shape:
        assert rows[0, True][column] == rows[0, False][column], column


def test_missing_liver_is_a_status_naming_patient_label_and_fix(real_case):
    case = extraction.CaseInput("P-noliver", real_case[0], real_case["no_liver"])
    result = extraction.extract_case(case, options(REFERENCE), None)
    assert not result.lesions
    [row] = result.report
    assert row[STATUS] == "no_liver_label"
    assert "P-noliver" in row[REASON] and "label 1" in row[REASON] and "reference_tissue" in row[REASON]
    # the same mask without normalisation is extracted as before
    assert [r[STATUS] for r in extraction.extract_case(case, options(), None).report] == [OK]


def test_too_few_reference_voxels_after_erosion_is_a_status(real_case):
    case = extraction.CaseInput("P-thin", real_case[0], real_case["thin"])
    result = extraction.extract_case(case, options(REFERENCE), None)
    [row] = result.report
    assert row[STATUS] == "reference_tissue_too_small"
    assert "P-thin" in row[REASON] and "label 1" in row[REASON] and "erosion_mm" in row[REASON]
    # a one-voxel shell: only its flat caps above and below the tumour keep voxels farther than 3 mm
    assert "fewer than min_voxels 500" in row[REASON]


# ----------------------------------------------------------------------------- digest and record


def test_default_digest_and_record_are_the_ones_of_main():
    record = extraction.settings_record(options(), ["largest"])
    record.pop("versions")
    assert options().digest() == MAIN_DIGEST
    assert json.dumps(record, sort_keys=True) == MAIN_RECORD
    assert "reference_tissue" not in extraction.settings_record(options())


def test_record_round_trips_and_old_records_read_without_it():
    on = options(REFERENCE)
    assert on.digest() != MAIN_DIGEST
    assert on.digest() != options(ReferenceTissue(enabled=True, erosion_mm=5.0, min_voxels=500)).digest()
    record = json.loads(json.dumps(extraction.settings_record(on, ["largest"])))
    assert record["reference_tissue"] == {
        "enabled": True,
        "erosion_mm": 3.0,
        "min_voxels": 500,
        "method": "subtract_median",
    }
    assert extraction.options_from_record(record) == on
    assert (
        extraction.options_from_record(
            {**record, "reference_tissue": {**record["reference_tissue"], "enabled": False}}
        ).reference_tissue
        is None
    )
    with pytest.raises(ValueError, match="pass None"):
        options(ReferenceTissue(enabled=False))
    old = json.loads(MAIN_RECORD)
    assert extraction.options_from_record(old).reference_tissue is None
    assert extraction.options_from_record(old).digest() == MAIN_DIGEST


def test_reduced_options_for_prediction_keep_the_reference_tissue():
    reduced = extraction.options_for_columns(options(REFERENCE), ["rad_largest__original_firstorder_Mean"])
    assert reduced.reference_tissue == REFERENCE
    assert reduced.settings != options(REFERENCE).settings
