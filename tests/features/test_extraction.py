"""Cohort extraction: every case reported, morphology right, cache hits, provenance kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from features import extraction, radiomics
from features.patient_table import patient_feature_table
from features.schema import PATIENT_ID
from pipeline import cohort as synthetic
from tests.conftest import LIGHT_RADIOMICS


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory, synthetic_cohort) -> Path:
    """The first three patients of the shared cohort (tests/conftest.py), in a copy of its folder."""
    out = tmp_path_factory.mktemp("cohort") / "cohort"
    shutil.copytree(synthetic_cohort, out)
    clinical = pd.read_csv(out / synthetic.CLINICAL_FILE, dtype={PATIENT_ID: str})
    clinical.head(3).to_csv(out / synthetic.CLINICAL_FILE, index=False)
    return out


def options(labels, margin: float = 10.0) -> extraction.CaseOptions:
    return extraction.CaseOptions(settings=radiomics.ExtractionSettings(LIGHT_RADIOMICS, margin), labels=labels)


def bad_manifest(small_cohort: Path, tmp: Path) -> Path:
    """The good patients plus a missing image, a truncated image and an empty mask."""
    table = pd.read_csv(small_cohort / synthetic.CLINICAL_FILE, dtype={PATIENT_ID: str})
    rows = [
        (pid, str(small_cohort / img), str(small_cohort / msk))
        for pid, img, msk in table[[PATIENT_ID, "image", "mask"]].itertuples(index=False)
    ]
    first_image, first_mask = rows[0][1], rows[0][2]
    truncated = tmp / "truncated.nii.gz"
    data = Path(first_image).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = sitk.Image(sitk.ReadImage(first_mask))
    empty = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(empty)))
    empty.CopyInformation(sitk.ReadImage(first_mask))
    sitk.WriteImage(empty, str(tmp / "empty.nii.gz"))
    rows += [
        ("BAD-missing", str(tmp / "nowhere.nii.gz"), first_mask),
        ("BAD-truncated", str(truncated), first_mask),
        ("BAD-empty", first_image, str(tmp / "empty.nii.gz")),
    ]
    manifest = tmp / "manifest.csv"
    pd.DataFrame(rows, columns=[PATIENT_ID, "image", "mask"]).to_csv(manifest, index=False)
    return manifest


def test_every_patient_is_reported_and_good_ones_extracted(small_cohort, tmp_path, labels):
    cases = extraction.read_manifest(bad_manifest(small_cohort, tmp_path))
    lesions, report = extraction.extract_cohort(cases, options(labels), cache_dir=None, jobs=1, progress=False)
    assert set(report[PATIENT_ID]) == {c.patient_id for c in cases}
    status = report.groupby(PATIENT_ID)[extraction.STATUS].first()
    assert status["BAD-missing"] == "missing_file"
    assert status["BAD-truncated"] == "unreadable"
    assert status["BAD-empty"] == "empty_mask"
    assert "BAD-missing" in report.set_index(PATIENT_ID).loc["BAD-missing", extraction.REASON]
    clinical = pd.read_csv(small_cohort / synthetic.CLINICAL_FILE, dtype={PATIENT_ID: str})
    counts = lesions.groupby(PATIENT_ID).size()
    for row in clinical.itertuples():
        assert counts[row.patient_id] == row.n_liver_lesions
        largest = lesions[(lesions[PATIENT_ID] == row.patient_id) & (lesions[radiomics.LESION] == 1)]
        assert abs(largest[radiomics.LESION_DIAMETER_MM].item() - 10 * row.largest_lesion_cm) <= 5.0
    assert not lesions[PATIENT_ID].str.startswith("BAD").any()


def test_provenance_travels_with_every_lesion(small_cohort, labels):
    cases = extraction.read_manifest(small_cohort / synthetic.CLINICAL_FILE)[:1]
    lesions, _ = extraction.extract_cohort(cases, options(labels), cache_dir=None, progress=False)
    for column in (
        extraction.SETTINGS_HASH,
        extraction.IMAGE_SHA256,
        "pyradiomics_version",
        "simpleitk_version",
        *extraction.SPACING,
        *extraction.SIZE,
    ):
        assert lesions[column].notna().all(), column
    image = sitk.ReadImage(str(cases[0].image))
    assert lesions[extraction.SPACING[2]].iloc[0] == pytest.approx(image.GetSpacing()[2])
    assert "original_firstorder_Mean" in lesions


def test_second_run_reads_everything_from_the_cache(small_cohort, tmp_path, labels):
    cases = extraction.read_manifest(small_cohort / synthetic.CLINICAL_FILE)
    first_lesions, first = extraction.extract_cohort(cases, options(labels), tmp_path, progress=False)
    again_lesions, again = extraction.extract_cohort(cases, options(labels), tmp_path, progress=False)
    assert not first[extraction.CACHED].any()
    assert again[extraction.CACHED].all()
    pd.testing.assert_frame_equal(first_lesions, again_lesions)


def test_an_interrupted_run_resumes_and_new_settings_miss_the_cache(small_cohort, tmp_path, labels):
    cases = extraction.read_manifest(small_cohort / synthetic.CLINICAL_FILE)
    extraction.extract_cohort(cases[:1], options(labels), tmp_path, progress=False)
    _, report = extraction.extract_cohort(cases, options(labels), tmp_path, progress=False)
    cached = report.groupby(PATIENT_ID)[extraction.CACHED].all()
    assert cached[cases[0].patient_id] and not cached[cases[1].patient_id]
    _, other = extraction.extract_cohort(cases[:1], options(labels, margin=12.0), tmp_path, progress=False)
    assert not other[extraction.CACHED].any()


def test_cached_results_follow_the_manifest_identifier(small_cohort, tmp_path, labels):
    case = extraction.read_manifest(small_cohort / synthetic.CLINICAL_FILE)[0]
    extraction.extract_cohort([case], options(labels), tmp_path, progress=False)
    renamed = extraction.CaseInput("Zoë-01", case.image, case.mask)
    lesions, report = extraction.extract_cohort([renamed], options(labels), tmp_path, progress=False)
    assert set(lesions[PATIENT_ID]) == {"Zoë-01"} and set(report[PATIENT_ID]) == {"Zoë-01"}


def test_feature_table_keeps_failed_patients_without_half_filled_rows(small_cohort, tmp_path, labels):
    manifest = bad_manifest(small_cohort, tmp_path)
    lesions, report = extraction.extract_cohort(
        extraction.read_manifest(manifest), options(labels), None, progress=False
    )
    clinical = pd.read_csv(small_cohort / synthetic.CLINICAL_FILE, dtype={PATIENT_ID: str})
    bad = pd.DataFrame({PATIENT_ID: ["BAD-missing", "BAD-truncated", "BAD-empty"]})
    clinical = pd.concat([clinical, bad], ignore_index=True)
    validation = pd.Series("ok", index=clinical.index)
    table = patient_feature_table(clinical, validation, lesions, report)
    assert table[PATIENT_ID].tolist() == clinical[PATIENT_ID].tolist()
    rows = table.set_index(PATIENT_ID)
    assert rows.loc["BAD-truncated", "status"] == "unreadable"
    radiomic = [c for c in table.columns if c.startswith("rad_")]
    assert radiomic and rows.loc[["BAD-missing", "BAD-truncated", "BAD-empty"], radiomic].isna().all().all()
    good = clinical[PATIENT_ID].iloc[0]
    assert rows.loc[good, "status"] == "ok"
    assert rows.loc[good, "patient_lesion_count"] == rows.loc[good, "n_liver_lesions"]
    assert rows.loc[good, radiomic].notna().all()
    assert {"fong_score", "tbs", "game_score"} <= set(table.columns)


def test_manifest_without_mask_column_is_rejected(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({PATIENT_ID: ["a"], "image": ["x.nii.gz"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing column.*mask"):
        extraction.read_manifest(path)


def test_manifest_keeps_identifiers_as_text(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({PATIENT_ID: ["007", "Zoë"], "image": ["a", "b"], "mask": ["c", "d"]}).to_csv(path, index=False)
    assert [c.patient_id for c in extraction.read_manifest(path)] == ["007", "Zoë"]


def test_manifest_images_and_cache_can_live_behind_an_fsspec_url(small_cohort, tmp_path, labels):
    """A remote store (fsspec's in-process ``memory://``): images copied locally, cache written there."""
    import fsspec

    memory = fsspec.filesystem("memory")
    root = f"/crlm-test-{tmp_path.name}"
    try:
        memory.put(str(small_cohort), root, recursive=True)
        cases = extraction.read_manifest(f"memory://{root}/{synthetic.CLINICAL_FILE}")
        assert all(str(case.image).startswith(f"memory://{root}/images/") for case in cases)
        local_lesions, _ = extraction.extract_cohort(
            extraction.read_manifest(small_cohort / synthetic.CLINICAL_FILE), options(labels), None, progress=False
        )
        lesions, report = extraction.extract_cohort(cases, options(labels), f"memory://{root}/cache", progress=False)
        pd.testing.assert_frame_equal(local_lesions, lesions)
        assert not report[extraction.CACHED].any() and memory.find(f"{root}/cache")
        _, again = extraction.extract_cohort(cases, options(labels), f"memory://{root}/cache", progress=False)
        assert again[extraction.CACHED].all()
        extraction.write_extraction(f"memory://{root}/out", lesions, report)  # outputs on shared storage too
        with memory.open(f"{root}/out/lesions.parquet", "rb") as handle:
            pd.testing.assert_frame_equal(pd.read_parquet(handle), lesions)
        with memory.open(f"{root}/out/extraction_report.csv", "rb") as handle:
            assert pd.read_csv(handle, dtype={PATIENT_ID: str})[PATIENT_ID].tolist() == report[PATIENT_ID].tolist()
        memory.pipe_file(f"{root}/truncated.nii.gz", memory.cat_file(cases[0].image)[:500])
        bad = [
            extraction.CaseInput("gone", f"memory://{root}/nowhere.nii.gz", cases[0].mask),
            extraction.CaseInput("cut", f"memory://{root}/truncated.nii.gz", cases[0].mask),
        ]
        _, report = extraction.extract_cohort(bad, options(labels), None, progress=False)
        assert report[extraction.STATUS].tolist() == ["missing_file", "unreadable"]
        assert f"memory://{root}/truncated.nii.gz" in report[extraction.REASON].iloc[1]
    finally:
        memory.rm(root, recursive=True)
