"""``crlm validate --images``: every image/mask pair checked from headers, with the statuses
extraction gives (issue 11), on the real CT written as DICOM (tests/features/real_dicom.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import yaml

from features import extraction
from features.schema import IMAGE, MASK, PATIENT_ID
from pipeline.cli import main
from pipeline.settings import SettingsError
from pipeline.validate import check_images
from pipeline.world import load_labels
from tests.features import real_dicom as rd
from tests.features.test_dicom_real_ct import LABELS, OPTIONS, copy_series, real, series  # noqa: F401 - fixture


def _by_z(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def cohort(real, tmp_path_factory) -> tuple[Path, dict[str, str]]:  # noqa: F811
    """A table of good and broken cases: patient id -> expected status."""
    root = tmp_path_factory.mktemp("validate")
    arterial = root / "arterial"
    series(real, arterial, ct=(real["ct"] + 40).astype(np.int16), description="arterial")
    both = root / "both"
    copy_series(real["pv"], both, "pv_")
    copy_series(arterial, both, "art_")
    short = root / "short"
    copy_series(real["pv"], short)
    for path in _by_z(short)[-5:]:
        path.unlink()
    gap = root / "gap"
    copy_series(real["pv"], gap)
    _by_z(gap)[10].unlink()
    shifted = (real["ct"].astype(np.int32) + 1024).astype(np.int16)
    series(real, root / "unsigned", ct=shifted, stored="uint16", series_uid=real["sources"][0].SeriesInstanceUID)
    coarse = sitk.ReadImage(str(real["nifti"][1]))[::2, ::2, :]
    sitk.WriteImage(coarse, str(root / "coarse.nii.gz"))
    data = real["nifti"][0].read_bytes()
    (root / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    image, mask = (str(p) for p in real["nifti"])
    cases = {
        "ok-dicom": (real["pv"], real["seg"], "ok"),
        "ok-nifti": (image, mask, "ok"),
        "ok-both-series": (both, real["seg"], "ok"),
        "mismatch": (arterial, real["seg"], "series_mismatch"),
        "ambiguous": (both, mask, "ambiguous_series"),
        "short": (short, real["seg"], "seg_outside_image"),
        "gap": (gap, real["seg"], "missing_slices"),
        "unsigned": (root / "unsigned", real["seg"], "not_hu"),
        "grid": (image, root / "coarse.nii.gz", "geometry_mismatch"),
        "truncated": (root / "truncated.nii.gz", mask, "unreadable"),
        "missing": (root / "nowhere", mask, "missing_file"),
        "not-a-seg": (real["pv"], _by_z(real["pv"])[0], "unreadable"),
    }
    table = pd.DataFrame([{PATIENT_ID: pid, IMAGE: str(i), MASK: str(m)} for pid, (i, m, _) in cases.items()])
    table.to_csv(root / "cohort.csv", index=False)
    return root / "cohort.csv", {pid: expected for pid, (_, _, expected) in cases.items()}


def test_validate_images_gives_each_case_the_status_extraction_gives(cohort):
    path, expected = cohort
    table = pd.read_csv(path, dtype={PATIENT_ID: str})
    statuses = check_images(table, path.parent, LABELS).set_index(PATIENT_ID)
    assert statuses["status"].to_dict() == expected
    for pid in expected:
        row = table.set_index(PATIENT_ID).loc[pid]
        result = extraction.extract_case(extraction.CaseInput(pid, row[IMAGE], row[MASK]), OPTIONS, None)
        assert {r["status"] for r in result.report} == {expected[pid]}, (pid, result.report)
    assert "missing 1 slice" in statuses.loc["gap", "reason"]


def test_resample_mask_accepts_another_grid_but_not_a_broken_series(cohort):
    path, expected = cohort
    table = pd.read_csv(path, dtype={PATIENT_ID: str})
    statuses = check_images(table, path.parent, LABELS, resample_mask=True).set_index(PATIENT_ID)["status"]
    assert statuses["grid"] == "ok" and statuses["gap"] == "missing_slices"


def test_crlm_validate_images_prints_and_writes_the_statuses(cohort, tmp_path, capsys):
    path, expected = cohort
    labels = tmp_path / "labels.yaml"
    labels.write_text(
        yaml.safe_dump({"liver": 1, "lesion": 2, "segment_roles": {"Liver": "liver", "Tumor_*": "lesion"}})
    )
    main(
        [
            "validate",
            "--cohort",
            str(path),
            "--images",
            "--labels",
            str(labels),
            "--images-out",
            str(tmp_path / "images.csv"),
        ]
    )
    printed = capsys.readouterr().out
    assert "series_mismatch: patient mismatch" in printed and "checked from headers" in printed
    written = pd.read_csv(tmp_path / "images.csv", dtype={PATIENT_ID: str}).set_index(PATIENT_ID)["status"]
    assert written.to_dict() == expected


def test_seg_lesions_in_labels_yaml_is_validated(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump({"liver": 1, "lesion": 2, "seg_lesions": "component"}))
    with pytest.raises(SettingsError, match="seg_lesions must be one of segments, components"):
        load_labels(path)
    path.write_text(yaml.safe_dump({"liver": 1, "lesion": 2, "seg_lesion": "components"}))
    with pytest.raises(SettingsError, match="did you mean 'seg_lesions'"):
        load_labels(path)
    assert load_labels(rd.REPO / "configs" / "labels.yaml").seg_lesions == "segments"
    assert replace(LABELS, seg_lesions="components").seg_lesions == "components"
