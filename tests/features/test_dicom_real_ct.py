"""Real CT as DICOM series and highdicom SEGs (issue 11): the good cases give the NIfTI path's
features bit for bit, and every fault of the issue's table is a status, never ``ok`` with a
wrong number. The CT is tests/data/real_ct/STS_002, cropped (tests/features/real_dicom.py)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from features import extraction, imaging, radiomics
from features.imaging import LabelRoles
from features.schema import CASE_STATUSES
from tests.conftest import LIGHT_RADIOMICS
from tests.features import real_dicom as rd

LABELS = LabelRoles(liver=1, lesion=2, segment_roles={"Liver": "liver", "Tumor_*": "lesion"})
OPTIONS = extraction.CaseOptions(radiomics.ExtractionSettings(LIGHT_RADIOMICS, 10.0), LABELS)


@pytest.fixture(scope="session")
def real(tmp_path_factory) -> dict:
    """The cropped real CT written every way the tests need (about 2 s)."""
    root = tmp_path_factory.mktemp("real_dicom")
    ct, tumour, spacing, origin = rd.load_crop()
    stack = rd.segment_stack(tumour)
    study, frame = generate_uid(), generate_uid()
    sources = rd.write_series(
        ct, spacing, origin, root / "pv", study_uid=study, frame_uid=frame, description="portal venous"
    )
    seg = rd.write_seg(sources, stack, root / "seg" / "seg.dcm")
    image = sitk.GetImageFromArray(ct.astype(np.float32))  # stored as the source: float32 HU
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(root / "ct.nii.gz"))
    mask = sitk.GetImageFromArray(rd.label_map(stack))
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(root / "mask.nii.gz"))
    return {
        "root": root,
        "ct": ct,
        "stack": stack,
        "spacing": spacing,
        "origin": origin,
        "study": study,
        "frame": frame,
        "pv": root / "pv",
        "seg": seg,
        "sources": sources,
        "nifti": (root / "ct.nii.gz", root / "mask.nii.gz"),
    }


def series(real: dict, folder: Path, **kwargs) -> list:
    return rd.write_series(
        real["ct"] if "ct" not in kwargs else kwargs.pop("ct"),
        real["spacing"],
        real["origin"],
        folder,
        study_uid=real["study"],
        frame_uid=real["frame"],
        **kwargs,
    )


def extract(
    image: Path, mask: Path, options: extraction.CaseOptions = OPTIONS, pid: str = "P"
) -> extraction.CaseResult:
    return extraction.extract_case(extraction.CaseInput(pid, image, mask), options, None)


def features_of(result: extraction.CaseResult) -> pd.DataFrame:
    assert [r["status"] for r in result.report] == ["ok"] * len(result.report), result.report
    table = pd.DataFrame(result.lesions)
    keep = [
        c
        for c in table
        if c.startswith(radiomics.FEATURE_PREFIXES) or c.startswith("patient_") or c.startswith("lesion_")
    ]
    return table[keep]


def status_of(result: extraction.CaseResult) -> tuple[str, str]:
    assert len(result.report) == 1 and not result.lesions, result.report
    return result.report[0]["status"], result.report[0]["reason"]


@pytest.fixture(scope="session")
def nifti_features(real) -> pd.DataFrame:
    return features_of(extract(*real["nifti"]))


def copy_series(src: Path, dst: Path, prefix: str = "") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        shutil.copy(path, dst / f"{prefix}{path.name}")


# ----------------------------------------------------------------------------- good cases


def test_dicom_series_with_seg_gives_the_nifti_features_bit_for_bit(real, nifti_features):
    dicom = features_of(extract(real["pv"], real["seg"]))
    assert len(dicom) == 2  # Tumor_1 and the touching Tumor_2: two lesions
    pd.testing.assert_frame_equal(dicom, nifti_features, check_exact=True)


@pytest.mark.parametrize("kind", ["FRACTIONAL", "LABELMAP"])
def test_fractional_and_labelmap_segs_are_read(real, kind, tmp_path, nifti_features):
    """A LABELMAP SEG used to be 'unreadable' with a message about NIfTI/NRRD readers."""
    seg = rd.write_seg(real["sources"], real["stack"], tmp_path / "seg.dcm", kind)
    case = imaging.load_case("P", real["pv"], seg, LABELS)
    expected = rd.label_map(real["stack"])
    if kind == "LABELMAP":  # one segment per voxel: Liver_Remnant/Hepatic/Portal win over Liver
        painted = np.argmax(real["stack"][..., ::-1], axis=-1)
        winner = len(rd.SEGMENTS) - painted
        winner[real["stack"].sum(axis=-1) == 0] = 0
        expected = np.zeros_like(expected)
        expected[winner == 1] = 1
        expected[winner == 5] = 2
        expected[winner == 6] = 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.mask), expected)
    if kind == "FRACTIONAL":
        pd.testing.assert_frame_equal(features_of(extract(real["pv"], seg)), nifti_features, check_exact=True)


def test_reversed_order_implicit_vr_and_files_without_extension_read_the_same(real, tmp_path, nifti_features):
    folder = tmp_path / "odd"
    series(
        real, folder, series_uid=real["sources"][0].SeriesInstanceUID, implicit_vr=True, suffix="", reverse_numbers=True
    )
    sources = rd.read_sources(folder)
    seg = rd.write_seg(sources, real["stack"], tmp_path / "seg.dcm")
    pd.testing.assert_frame_equal(features_of(extract(folder, seg)), nifti_features, check_exact=True)


# ----------------------------------------------------------------------------- the table


def test_seg_drawn_on_another_series_is_series_mismatch_naming_both(real, tmp_path):
    """Row 1: SEG on the portal-venous series, folder with the arterial one (mean 78.7 vs 38.7 HU)."""
    arterial = tmp_path / "arterial"
    other = series(real, arterial, ct=(real["ct"] + 40).astype(np.int16), description="arterial")
    status, reason = status_of(extract(arterial, real["seg"]))
    assert status == "series_mismatch"
    assert real["sources"][0].SeriesInstanceUID in reason and other[0].SeriesInstanceUID in reason
    assert "arterial" in reason


def test_a_folder_with_both_series_takes_the_one_the_seg_references(real, tmp_path, nifti_features):
    both = tmp_path / "both"
    copy_series(real["pv"], both, "pv_")
    series(real, both, ct=(real["ct"] + 40).astype(np.int16), description="arterial", prefix="art")
    pd.testing.assert_frame_equal(features_of(extract(both, real["seg"])), nifti_features, check_exact=True)


def test_two_series_of_the_same_size_without_a_reference_are_ambiguous(real, tmp_path):
    """Row 2: one was picked by UID order, with a line on stderr only."""
    both = tmp_path / "both"
    copy_series(real["pv"], both, "pv_")
    other = series(real, both, ct=(real["ct"] + 40).astype(np.int16), description="arterial", prefix="art")
    status, reason = status_of(extract(both, real["nifti"][1]))
    assert status == "ambiguous_series"
    assert other[0].SeriesInstanceUID in reason and f"{len(real['sources'])} files" in reason
    assert "'portal venous'" in reason and "'arterial'" in reason


def test_a_ct_cut_short_at_the_top_is_seg_outside_image(real, tmp_path):
    """Row 3: SEG frames above the CT were dropped without notice (liver 159 instead of 178 mL)."""
    short = tmp_path / "short"
    copy_series(real["pv"], short)
    top = max(short.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for path in sorted(short.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[-5:]:
        path.unlink()
    assert not top.exists()
    status, reason = status_of(extract(short, real["seg"]))
    assert status == "seg_outside_image" and "outside the CT" in reason and "cut short" in reason


def test_a_seg_covering_fewer_slices_is_placed_by_frame_position(real, tmp_path):
    """SEG frames only where something is drawn (highdicom omits empty frames): filled in by position."""
    stack = real["stack"].copy()
    stack[:3] = 0
    stack[-3:] = 0
    seg = rd.write_seg(real["sources"], stack, tmp_path / "seg.dcm")
    case = imaging.load_case("P", real["pv"], seg, LABELS)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.mask), rd.label_map(stack))


@pytest.mark.parametrize("resample_mask", [False, True])
def test_a_missing_slice_is_missing_slices_even_with_resample_mask(real, tmp_path, resample_mask):
    """Row 4: --resample-mask gave features from a distorted grid (20.6 instead of 23.0 mL)."""
    gap = tmp_path / "gap"
    copy_series(real["pv"], gap)
    ordered = sorted(gap.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    missing_z = float(pydicom.dcmread(ordered[10]).ImagePositionPatient[2])
    ordered[10].unlink()
    options = replace(OPTIONS, resample_mask=resample_mask)
    for mask in (real["seg"], real["nifti"][1]):
        status, reason = status_of(extract(gap, mask, options))
        assert status == "missing_slices", reason
        assert "missing 1 slice" in reason and f"{missing_z - real['spacing'][2]:.2f}" in reason


def test_a_thin_reconstruction_in_the_same_folder_does_not_replace_the_referenced_one(real, tmp_path, nifti_features):
    """Row 5: with --resample-mask, features came from the other reconstruction."""
    folder = tmp_path / "both"
    copy_series(real["pv"], folder, "thick_")
    thin = np.repeat(real["ct"], 2, axis=0)
    rd.write_series(
        thin,
        (*real["spacing"][:2], real["spacing"][2] / 2),
        real["origin"],
        folder,
        study_uid=real["study"],
        frame_uid=real["frame"],
        description="thin",
        prefix="thin",
    )
    result = extract(folder, real["seg"], replace(OPTIONS, resample_mask=True))
    pd.testing.assert_frame_equal(features_of(result), nifti_features, check_exact=True)


def test_the_same_hu_stored_as_int16_float32_or_rescaled_uint16_give_the_same_features(real, tmp_path):
    """Row 6: float32 instead of int16 changed 223 of 1,130 features by more than 1%. With the
    project's radiomics settings (B-spline resampling, LoG, wavelet), all features are equal."""
    params = radiomics.load_radiomics_params(rd.REPO / "configs" / "radiomics.yaml")
    options = replace(OPTIONS, settings=radiomics.ExtractionSettings(params, 25.0))
    mask = real["nifti"][1]
    results = {}
    image = sitk.ReadImage(str(real["nifti"][0]))
    for name, pixel in (("float32", sitk.sitkFloat32), ("int16", sitk.sitkInt16)):
        sitk.WriteImage(sitk.Cast(image, pixel), str(tmp_path / f"{name}.nii.gz"))
        results[name] = features_of(extract(tmp_path / f"{name}.nii.gz", mask, options))
    series(real, tmp_path / "uint16", stored="uint16", intercept=-1024.0)
    results["uint16 + rescale"] = features_of(extract(tmp_path / "uint16", mask, options))
    assert results["float32"].shape[1] > 1130
    for name in ("int16", "uint16 + rescale"):
        pd.testing.assert_frame_equal(results[name], results["float32"], check_exact=True)


def test_uint16_hu_plus_1024_without_rescale_is_not_hu(real, tmp_path):
    """Row 7: accepted, firstorder mean 1,066 instead of 42 HU."""
    shifted = (real["ct"].astype(np.int32) + 1024).astype(np.uint16)
    series(
        real,
        tmp_path / "dicom",
        ct=shifted.astype(np.int16),
        stored="uint16",
        series_uid=real["sources"][0].SeriesInstanceUID,
    )
    status, reason = status_of(extract(tmp_path / "dicom", real["seg"]))
    assert status == "not_hu" and "intercept 0" in reason
    image = sitk.GetImageFromArray(shifted)
    image.CopyInformation(sitk.ReadImage(str(real["nifti"][1])))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    status, reason = status_of(extract(tmp_path / "ct.nii.gz", real["nifti"][1]))
    assert status == "not_hu" and "[45" in reason


# ----------------------------------------------------------------------------- other statuses


def test_uneven_spacing_is_uneven_spacing(real, tmp_path):
    z = [real["origin"][2] + k * real["spacing"][2] for k in range(len(real["sources"]))]
    z[12] += 1.0
    series(real, tmp_path / "uneven", positions_z=z)
    status, reason = status_of(extract(tmp_path / "uneven", real["nifti"][1]))
    assert status == "uneven_spacing" and f"{z[12]:.2f}" in reason


def test_a_slice_position_taken_twice_is_duplicate_positions(real, tmp_path):
    folder = tmp_path / "dup"
    copy_series(real["pv"], folder)
    first = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "copy.dcm")
    status, reason = status_of(extract(folder, real["seg"]))
    assert status == "duplicate_positions" and "copy.dcm" in reason


def test_two_acquisitions_in_one_series_are_multiple_acquisitions(real, tmp_path):
    folder = tmp_path / "two"
    uid = generate_uid()
    series(real, folder, series_uid=uid, prefix="a")
    series(
        real,
        folder,
        series_uid=uid,
        prefix="b",
        acquisitions=[2] * len(real["sources"]),
        ct=(real["ct"] + 40).astype(np.int16),
    )
    status, reason = status_of(extract(folder, real["nifti"][1]))
    assert status == "multiple_acquisitions" and "1, 2" in reason


def test_a_tilted_slice_is_mixed_orientation(real, tmp_path):
    folder = tmp_path / "tilt"
    copy_series(real["pv"], folder)
    path = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9950042, 0.0998334]
    ds.save_as(path)
    status, reason = status_of(extract(folder, real["seg"]))
    assert status == "mixed_orientation" and path.name in reason


def test_touching_tumour_segments_stay_two_lesions_and_components_is_an_option(real, tmp_path):
    """Touching Tumor_1/Tumor_2 merged into one lesion; the option to keep them apart was unreachable."""
    stack = real["stack"].copy()
    z = np.nonzero(stack[..., 5])[0]
    assert not stack[z.min(), 1:3, 2, 4:].any()
    stack[z.min(), 1:3, 2, 5] = 1  # Tumor_2 drawn in two pieces
    seg = rd.write_seg(real["sources"], stack, tmp_path / "seg.dcm")
    by_segment = pd.DataFrame(extract(real["pv"], seg).lesions)
    assert len(by_segment) == 2 and by_segment["patient_lesion_count"].iloc[0] == 2
    components = replace(OPTIONS, labels=replace(LABELS, seg_lesions="components"))
    by_component = extract(real["pv"], seg, components)
    assert len(by_component.report) == 3  # the 2-voxel piece is a lesion of its own
    assert pd.DataFrame(by_component.lesions)["patient_lesion_count"].iloc[0] == 3


def test_a_dicom_mask_that_is_not_a_seg_names_what_it_is(real, tmp_path):
    status, reason = status_of(extract(real["pv"], sorted(real["pv"].iterdir())[0]))
    assert status == "unreadable" and "CT Image Storage" in reason and "tried" in reason


def test_every_status_raised_here_is_declared_in_the_schema():
    source = (rd.REPO / "features" / "imaging.py").read_text()
    import re

    raised = set(re.findall(r'CaseError\([^,]+, [^,]+, "([a-z_]+)"', source))
    assert raised and raised <= set(CASE_STATUSES), raised - set(CASE_STATUSES)
