"""Reading images and masks in every supported format, and every bad case named with its reason."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from features import imaging
from features.imaging import CaseError, LabelRoles

LABELS = LabelRoles(liver=1, lesion=2)
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-10.0, 20.0, 30.0)
SHAPE_ZYX = (10, 24, 32)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEGMENTS = ("Liver", "Tumor_1", "Tumor_2", "Portal")


def make_image(array: np.ndarray, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


@pytest.fixture(scope="module")
def ct_array() -> np.ndarray:
    return np.random.default_rng(7).integers(-1000, 1500, size=SHAPE_ZYX).astype(np.int16)


def segment_stack() -> np.ndarray:
    """Binary segments (z, y, x, segment) in the order of SEGMENTS; slices 0, 1 and 9 empty."""
    stack = np.zeros((*SHAPE_ZYX, len(SEGMENTS)), np.uint8)
    stack[2:8, 3:21, 3:29, 0] = 1  # liver
    stack[3:6, 6:11, 6:11, 1] = 1  # Tumor_1
    stack[4:7, 6:11, 11:15, 2] = 1  # Tumor_2, touching Tumor_1
    stack[2:4, 15:17, 3:29, 3] = 1  # Portal (unmapped), partly outside the liver
    stack[2:4, 21:23, 3:29, 3] = 1
    return stack


def label_map() -> np.ndarray:
    """A liver box with two separate lesions, on the CT grid (z, y, x)."""
    mask = np.zeros(SHAPE_ZYX, np.uint8)
    mask[2:8, 3:21, 3:29] = LABELS.liver
    mask[3:6, 6:11, 6:11] = LABELS.lesion
    mask[4:7, 13:18, 18:24] = LABELS.lesion
    return mask


def write_dicom_series(image: sitk.Image, folder: Path, study_uid: str, frame_uid: str) -> Path:
    """One CT slice per file, with the tags a DICOM reader needs to rebuild the volume."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    sx, sy, sz = image.GetSpacing()
    for k in range(image.GetDepth()):
        # A one-slice volume, not a 2-D slice: once any ImageSeriesReader has run in the process,
        # GDCM writes a 2-D slice with Spacing Between Slices 1, which highdicom takes for the SEG's.
        slice_k = image[:, :, k : k + 1]
        tags = {
            "0008|0016": CT_IMAGE_STORAGE,
            "0008|0018": generate_uid(),
            "0008|0060": "CT",
            "0010|0020": "P1",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0052": frame_uid,
            "0020|0013": str(k + 1),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": str(sz),
        }
        for tag, value in tags.items():
            slice_k.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_k)
    return folder


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory, ct_array) -> tuple[Path, Path]:
    """A DICOM CT series and a DICOM-SEG (Liver, Tumor_1, Tumor_2, Portal) referencing it."""
    root = tmp_path_factory.mktemp("dicom")
    series = write_dicom_series(make_image(ct_array), root / "ct", generate_uid(), generate_uid())
    sources = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in enumerate(SEGMENTS, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_stack(),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    (root / "seg").mkdir()
    seg_file = root / "seg" / "segmentation.dcm"
    seg.save_as(seg_file)
    return series, seg_file


def expect_case_error(reason: str, patient_id: str, call, *args, **kwargs) -> CaseError:
    with pytest.raises(CaseError) as caught:
        call(*args, **kwargs)
    assert caught.value.reason == reason, str(caught.value)
    assert caught.value.patient_id == patient_id
    assert f"patient {patient_id}" in str(caught.value)
    return caught.value


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_image_reads_back_values_and_geometry_in_every_file_format(tmp_path, ct_array, suffix):
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(make_image(ct_array), str(path), useCompression=suffix != ".nii")
    image = imaging.read_image(path, "P1")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct_array)
    np.testing.assert_allclose(image.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_integer_masks_come_back_as_uint8_label_maps(tmp_path, suffix):
    path = tmp_path / f"mask{suffix}"
    sitk.WriteImage(make_image(label_map().astype(np.int16)), str(path))
    mask = imaging.read_mask(path, None, "P1")
    assert mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), label_map())


def test_dicom_series_folder_reads_back_spacing_origin_and_values(dicom_case, ct_array):
    series, _ = dicom_case
    image = imaging.read_image(series, "P1")
    np.testing.assert_allclose(image.GetSpacing(), SPACING, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct_array)


def test_a_folder_with_two_series_and_no_reference_is_ambiguous_series(tmp_path, ct_array):
    """Issue 11: the largest series used to be picked with a line on stderr only."""
    write_dicom_series(make_image(ct_array), tmp_path, generate_uid(), generate_uid())
    write_dicom_series(make_image(ct_array[:3] + 1), tmp_path / "scout", generate_uid(), generate_uid())
    for path in (tmp_path / "scout").iterdir():
        path.rename(tmp_path / f"scout_{path.name}")
    error = expect_case_error("ambiguous_series", "P4", imaging.read_image, tmp_path, "P4")
    assert "2 DICOM series" in str(error) and "3 files" in str(error) and "10 files" in str(error)


def expected_seg_labels(separate: bool) -> np.ndarray:
    stack = segment_stack()
    expected = np.zeros(SHAPE_ZYX, np.uint8)
    expected[stack[..., 0] == 1] = LABELS.liver
    expected[stack[..., 1] == 1] = LABELS.lesion
    expected[stack[..., 2] == 1] = 3 if separate else LABELS.lesion
    return expected


@pytest.mark.parametrize("as_folder", [False, True])
def test_dicom_seg_segments_become_roles_voxel_for_voxel_on_the_image_grid(dicom_case, as_folder):
    series, seg_file = dicom_case
    image = imaging.read_image(series, "P1")
    mask = imaging.read_mask(
        seg_file.parent if as_folder else seg_file,
        image,
        "P1",
        {"Liver": "liver", "Tumor_*": "lesion"},
        LABELS,
        separate_lesion_segments=False,
    )
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
        image.GetSize(),
        image.GetSpacing(),
        image.GetOrigin(),
        image.GetDirection(),
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected_seg_labels(separate=False))


def test_dicom_seg_lesion_segments_can_keep_their_own_labels(dicom_case):
    series, seg_file = dicom_case
    image = imaging.read_image(series, "P1")
    mask = imaging.read_mask(
        seg_file, image, "P1", {"Tumor_*": "lesion", "Liver": "liver"}, LABELS, separate_lesion_segments=True
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected_seg_labels(separate=True))
    assert imaging.lesion_labels_present(sitk.GetArrayFromImage(mask), LABELS) == (2, 3)


def test_dicom_seg_without_a_lesion_segment_names_the_segments(dicom_case):
    series, seg_file = dicom_case
    error = expect_case_error(
        "missing_lesion_label",
        "P2",
        imaging.read_mask,
        seg_file,
        imaging.read_image(series),
        "P2",
        {"Liver": "liver", "Tumour*": "lesion"},
        LABELS,
    )
    assert "Tumor_1" in str(error) and str(seg_file) in str(error)


def test_the_first_matching_segment_pattern_wins(dicom_case):
    series, seg_file = dicom_case
    mask = imaging.read_mask(
        seg_file,
        imaging.read_image(series),
        "P1",
        {"Tumor_2": "ignore", "Tumor_*": "lesion", "Liver": "liver"},
        LABELS,
        separate_lesion_segments=False,
    )
    expected = expected_seg_labels(separate=False)
    expected[segment_stack()[..., 2] == 1] = LABELS.liver  # Tumor_2 lies inside the liver box
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.75])
def test_a_truncated_dicom_seg_is_unreadable(dicom_case, tmp_path, fraction):
    """Wherever the file is cut (header, descriptions, frames), never an uncaught library error."""
    series, seg_file = dicom_case
    cut = tmp_path / "seg.dcm"
    data = seg_file.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    expect_case_error("unreadable", "P5", imaging.read_mask, cut, imaging.read_image(series), "P5")


def test_load_case_reads_a_dicom_series_with_its_dicom_seg(dicom_case):
    series, seg_file = dicom_case
    case = imaging.load_case("P1", series, seg_file, LABELS)  # TCIA segment roles by default
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.mask), expected_seg_labels(separate=True))
    assert not case.mask_resampled and case.lesions_by_label


# ----------------------------------------------------------------------------- bad input


def test_missing_files_are_missing_file(tmp_path, ct_array):
    sitk.WriteImage(make_image(ct_array), str(tmp_path / "ct.nii.gz"))
    error = expect_case_error(
        "missing_file", "P7", imaging.load_case, "P7", tmp_path / "ct.nii.gz", tmp_path / "nowhere.nii.gz", LABELS
    )
    assert "nowhere.nii.gz" in str(error) and error.path.endswith("nowhere.nii.gz")
    expect_case_error("missing_file", "P7", imaging.read_image, tmp_path / "none.nrrd", "P7")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_truncated_file_is_unreadable(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(make_image(np.random.default_rng(1).normal(size=SHAPE_ZYX).astype(np.float32)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    error = expect_case_error("unreadable", "P8", imaging.read_image, path, "P8")
    assert str(path) in str(error)


def test_a_mask_on_another_grid_is_an_error_unless_resampling_is_allowed(tmp_path, ct_array, caplog):
    image_path, mask_path = tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz"
    sitk.WriteImage(make_image(ct_array), str(image_path))
    coarse = label_map()[:, ::2, ::2]
    sitk.WriteImage(
        make_image(coarse, spacing=(1.6, 1.4, 2.5), origin=(ORIGIN[0] + 0.4, ORIGIN[1] + 0.35, ORIGIN[2])),
        str(mask_path),
    )
    error = expect_case_error("geometry_mismatch", "P9", imaging.load_case, "P9", image_path, mask_path, LABELS)
    assert "(16, 12, 10) vs (32, 24, 10)" in str(error) and "resample" in str(error)
    with caplog.at_level(logging.INFO, logger="features.imaging"):
        case = imaging.load_case("P9", image_path, mask_path, LABELS, resample_mask=True)
    assert case.mask_resampled and "P9" in caplog.text and "resampl" in caplog.text
    assert imaging.geometry_differences(case.image, case.mask) == []
    resampled = sitk.GetArrayFromImage(case.mask)
    np.testing.assert_array_equal(resampled[:, ::2, ::2], coarse)


def test_a_grid_within_tolerance_is_accepted_and_aligned(tmp_path, ct_array):
    image_path, mask_path = tmp_path / "ct.nrrd", tmp_path / "mask.nrrd"
    sitk.WriteImage(make_image(ct_array), str(image_path))
    sitk.WriteImage(make_image(label_map(), origin=(ORIGIN[0] + 1e-4, *ORIGIN[1:])), str(mask_path))
    case = imaging.load_case("P1", image_path, mask_path, LABELS)
    assert case.mask.GetOrigin() == case.image.GetOrigin() and not case.mask_resampled


def test_check_geometry_reports_both_values(ct_array):
    image = make_image(ct_array)
    shifted = make_image(label_map(), origin=(ORIGIN[0] + 2.0, *ORIGIN[1:]))
    error = expect_case_error(
        "geometry_mismatch", "P3", imaging.check_geometry, image, shifted, "P3", mask_path="/x/mask.nii.gz"
    )
    assert "origin (-8.0, 20.0, 30.0) vs (-10.0, 20.0, 30.0)" in str(error) and "/x/mask.nii.gz" in str(error)
    imaging.check_geometry(image, make_image(label_map()), "P3")


def test_empty_mask_is_empty_mask():
    expect_case_error("empty_mask", "P10", imaging.check_mask, np.zeros(SHAPE_ZYX, np.uint8), LABELS, "P10", "m")


def test_a_mask_with_only_the_liver_has_no_lesion_label():
    liver_only = np.where(label_map() > 0, LABELS.liver, 0).astype(np.uint8)
    expect_case_error("missing_lesion_label", "P11", imaging.check_mask, liver_only, LABELS, "P11", "m")


def test_a_one_voxel_lesion_is_too_small():
    mask = label_map()
    mask[1, 1, 1] = 5  # a further lesion label, one voxel
    error = expect_case_error("lesion_too_small", "P12", imaging.check_mask, mask, LABELS, "P12", "m.nrrd")
    assert "label 5" in str(error) and "(1, 1, 1)" in str(error)
    imaging.check_mask(mask, LABELS, "P12", "m.nrrd", min_lesion_voxels=1)


def test_a_missing_liver_fails_only_when_required():
    lesions_only = np.where(label_map() == LABELS.lesion, LABELS.lesion, 0).astype(np.uint8)
    imaging.check_mask(lesions_only, LABELS, "P13", "m")
    expect_case_error("no_liver_label", "P13", imaging.check_mask, lesions_only, LABELS, "P13", "m", require_liver=True)


@pytest.mark.parametrize("suffix", [".mha", ".nii", ".nii.gz"])
def test_nan_voxels_in_a_float_image_are_nan_voxels(tmp_path, suffix):
    """NIfTI too: ITK's NIfTI reader silently turns NaN into 0, so the stored bytes are checked."""
    values = np.random.default_rng(2).normal(size=SHAPE_ZYX).astype(np.float32)
    values[4, 5, 6] = np.nan
    values[0, 0, 0] = np.inf
    image_path, mask_path = tmp_path / f"ct{suffix}", tmp_path / "mask.mha"
    sitk.WriteImage(make_image(values), str(image_path))
    sitk.WriteImage(make_image(label_map()), str(mask_path))
    error = expect_case_error("nan_voxels", "P14", imaging.load_case, "P14", image_path, mask_path, LABELS)
    assert "2 NaN or infinite" in str(error) and str(image_path) in str(error)


def test_a_probability_map_is_not_a_label_map(tmp_path):
    path = tmp_path / "prob.nii.gz"
    sitk.WriteImage(make_image(label_map().astype(np.float32) * 0.5), str(path))
    expect_case_error("invalid_labels", "P15", imaging.read_mask, path, None, "P15")


def test_further_label_values_are_further_lesion_labels():
    mask = label_map()
    mask[0, 0, :2] = 7
    assert imaging.lesion_labels_present(mask, LABELS) == (2, 7)
    assert imaging.lesion_labels_present(mask.astype(np.int32), LABELS) == (2, 7)


def test_case_errors_survive_pickling_with_their_attributes():
    error = pickle.loads(pickle.dumps(CaseError("P1", "/x.nii", "unreadable", "broken")))
    assert (error.patient_id, error.path, error.reason, str(error)) == (
        "P1",
        "/x.nii",
        "unreadable",
        "patient P1: broken",
    )


def test_a_gzip_nifti_whose_trailer_crc_disagrees_is_unreadable(tmp_path, ct_array):
    """The gzip trailer vouches for the voxels ITK read (issue 14: no second decompression); a
    stream whose CRC-32 disagrees with its content is corrupt, whatever ITK made of it."""
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(make_image(ct_array), str(path), True)
    assert imaging._gzip_crc_matches(path, sitk.ReadImage(str(path)))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the trailer's CRC-32, not the voxels
    path.write_bytes(bytes(data))
    error = expect_case_error("unreadable", "P8", imaging.read_image, path, "P8")
    assert str(path) in str(error)


def test_the_gzip_trailer_does_not_vouch_for_other_voxels(tmp_path, ct_array):
    """Zeros where ITK could not read (its NIfTI reader fills a short stream with zeros) do not
    match the stored CRC-32: the whole file is then decompressed and checked."""
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(make_image(ct_array), str(path), True)
    zeroed = ct_array.copy()
    zeroed[-1] = 0
    assert not imaging._gzip_crc_matches(path, make_image(zeroed))
    assert not imaging._gzip_crc_matches(path, make_image(ct_array.astype(np.float32)))  # not the stored type


def test_load_case_finds_the_lesions_once_inside_their_box(tmp_path, ct_array):
    """One pass over the mask (issue 14): label counts, and components only inside the lesions'
    bounding box, shared with the extraction through Case.label_summary."""
    mask = label_map()
    mask[1, 1, 1] = 5
    sitk.WriteImage(make_image(ct_array), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(make_image(mask), str(tmp_path / "mask.nii.gz"))
    case = imaging.load_case("P14", tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", LABELS, min_lesion_voxels=1)
    summary = case.label_summary
    values, counts = np.unique(mask, return_counts=True)
    assert summary.counts == {int(v): int(c) for v, c in zip(values, counts, strict=True) if v}
    assert summary.lesion_labels == imaging.lesion_labels_present(mask, LABELS) == (2, 5)
    lesion_voxels = np.argwhere((mask != 0) & (mask != LABELS.liver))
    assert summary.offset == tuple(lesion_voxels.min(axis=0))
    box_shape = tuple(lesion_voxels.max(axis=0) - lesion_voxels.min(axis=0) + 1)
    assert all(summary.components[label][0].shape == box_shape for label in (2, 5))
