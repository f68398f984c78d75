"""The ``crlm`` command line."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from features import schema as s
from pipeline.cli import main


def test_synthesize_writes_tables_without_images(tmp_path, capsys):
    out = tmp_path / "cohort"
    code = main(["synthesize", "--n", "5", "--seed", "7", "--site", "A", "--out", str(out), "--no-images"])
    assert code == 0
    table = pd.read_csv(out / "clinical.csv")
    assert table[s.PATIENT_ID].tolist() == [f"A7-000{i}" for i in range(1, 6)]
    assert "wrote 5 synthetic patients" in capsys.readouterr().out


def test_unknown_site_is_a_clear_error(tmp_path, capsys):
    code = main(["synthesize", "--n", "5", "--seed", "7", "--site", "Z", "--out", str(tmp_path / "c")])
    assert code == 2
    assert "unknown site 'Z'; configured sites: A, B" in capsys.readouterr().err


def test_console_script_is_installed_and_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "synthesize", "--help"], capture_output=True, text=True, check=True
    )
    assert "--no-images" in result.stdout


def test_featurize_without_images_maps_a_tcia_sheet_and_keeps_every_patient(tmp_path):
    from tests.conftest import REPO

    sheet = REPO / "tests" / "data" / "tcia_clinical_sample.csv"
    out = tmp_path / "features.parquet"
    code = main(
        [
            "featurize",
            "--cohort",
            str(sheet),
            "--mapping",
            str(REPO / "configs" / "mappings" / "tcia_crlm.yaml"),
            "--no-images",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = pd.read_parquet(out)
    raw = pd.read_csv(sheet, dtype={"Patient-ID": str})
    assert table[s.PATIENT_ID].tolist() == raw["Patient-ID"].tolist()
    assert {"status", "reason", "tbs", "game_score"} <= set(table.columns)
    # No lesion count in the sheet, but multiple_metastases (0/1) is Fong's "more than one
    # tumour"; the disease-free interval is known (0) for synchronous patients only. Where every
    # item is known, our Fong score is the sheet's clinrisk_score (MSKCC's Fong score).
    complete = (raw["synchronous_crlm"] == 1) & (
        raw[["node_positive_primary", "multiple_metastases", "max_tumor_size", "carcinoembryonic_antigen"]] != -999
    ).all(axis=1)
    assert complete.sum() == 3  # CRLM-CT-1001, -1005, -1007; 1003 lacks node status and CEA
    assert table.loc[complete, "fong_score"].tolist() == raw.loc[complete, "clinrisk_score"].tolist()
    # metachronous patients: no disease-free interval in the sheet, so no Fong score (not a guess)
    assert table.loc[raw["synchronous_crlm"] == 0, "fong_score"].isna().all()
    assert table.loc[~complete, "fong_score"].isna().all()


def test_featurize_needs_an_extraction_or_no_images(tmp_path, capsys):
    code = main(["featurize", "--cohort", "x.csv", "--out", str(tmp_path / "f.parquet")])
    assert code == 2
    assert "--extraction" in capsys.readouterr().err


def test_validate_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.csv"
    pd.DataFrame({s.PATIENT_ID: ["a", "b"], s.CEA: [3.0, -1.0]}).to_csv(good, index=False)
    assert main(["validate", "--cohort", str(good)]) == 0
    assert "cea_ng_ml" in capsys.readouterr().out
    duplicated = tmp_path / "dup.csv"
    pd.DataFrame({s.PATIENT_ID: ["a", "a"]}).to_csv(duplicated, index=False)
    assert main(["validate", "--cohort", str(duplicated)]) == 1


# Start-up (issue 14): a command imports what it uses. Extraction and synthesis never need the
# model stack, MLflow, SHAP or Dask; they are checked in a fresh interpreter, after a real run.
_NOT_FOR_IMAGES = ("mlflow", "shap", "xgboost", "dask", "distributed", "sklearn", "sksurv", "matplotlib")
_DICOM_ONLY = ("pydicom", "highdicom")  # imported when a DICOM case appears, not for NIfTI (issue 14)
_RUN_AND_LIST_MODULES = (
    "import json, sys\n"
    "from pipeline.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'modules': sorted({m.split('.')[0] for m in sys.modules})}))\n"
)


def _run_fresh(args: list[str], cwd) -> dict:
    import json

    result = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES, *args],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=cwd,
    )  # progress bars are UTF-8
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _tiny_case(folder) -> None:
    """A 48 x 48 x 24 CT with a liver label (1) and one 7-voxel-radius lesion (2)."""
    import numpy as np
    import SimpleITK as sitk

    z, y, x = np.mgrid[:24, :48, :48]
    rng = np.random.default_rng(0)
    ct = (60 + 10 * rng.standard_normal((24, 48, 48))).astype(np.int16)
    mask = np.zeros((24, 48, 48), np.uint8)
    mask[4:20, 6:42, 6:42] = 1
    lesion = (z - 12) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 49
    mask[lesion] = 2
    ct[lesion] -= 40
    for array, name in ((ct, "ct.nii.gz"), (mask, "mask.nii.gz")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 1.5))
        sitk.WriteImage(image, str(folder / name), True)
    (folder / "cohort.csv").write_text("patient_id,image,mask\nP1,ct.nii.gz,mask.nii.gz\n")
    (folder / "radiomics.yaml").write_text(
        "setting: {binWidth: 25, label: 1}\nimageType: {Original: {}}\nfeatureClass: {firstorder: null}\n"
    )


def test_extract_imports_neither_models_nor_mlflow_shap_xgboost_dask(tmp_path):
    _tiny_case(tmp_path)
    run = _run_fresh(
        [
            "extract",
            "--cohort",
            "cohort.csv",
            "--out",
            "out",
            "--jobs",
            "1",
            "--cache",
            "cache",
            "--params",
            "radiomics.yaml",
            "--scheduler",
            "local",
        ],
        cwd=tmp_path,
    )
    assert run["code"] == 0
    assert (tmp_path / "out" / "lesions.parquet").is_file()
    assert "radiomics" in run["modules"]  # the run did extract
    assert sorted(set(_NOT_FOR_IMAGES) & set(run["modules"])) == []
    assert sorted(set(_DICOM_ONLY) & set(run["modules"])) == []  # a NIfTI-only cohort


def test_synthesize_imports_neither_models_nor_radiomics(tmp_path):
    run = _run_fresh(
        [
            "synthesize",
            "--n",
            "1",
            "--seed",
            "3",
            "--site",
            "B",
            "--out",
            "cohort",
            "--jobs",
            "1",
            "--scheduler",
            "local",
        ],
        cwd=tmp_path,
    )
    assert run["code"] == 0
    assert (tmp_path / "cohort" / "images").is_dir()
    assert sorted(set(_NOT_FOR_IMAGES + ("radiomics",)) & set(run["modules"])) == []
