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
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "synthesize", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--no-images" in result.stdout


def test_featurize_without_images_maps_a_tcia_sheet_and_keeps_every_patient(tmp_path):
    from tests.conftest import REPO

    sheet = REPO / "tests" / "data" / "tcia_clinical_sample.csv"
    out = tmp_path / "features.parquet"
    code = main(["featurize", "--cohort", str(sheet), "--mapping", str(REPO / "configs" / "mappings" / "tcia_crlm.yaml"),
                 "--no-images", "--out", str(out)])
    assert code == 0
    table = pd.read_parquet(out)
    raw = pd.read_csv(sheet, dtype={"Patient-ID": str})
    assert table[s.PATIENT_ID].tolist() == raw["Patient-ID"].tolist()
    assert {"status", "reason", "tbs", "game_score"} <= set(table.columns)
    # No lesion count in the sheet, but multiple_metastases (0/1) is Fong's "more than one
    # tumour"; the disease-free interval is known (0) for synchronous patients only. Where every
    # item is known, our Fong score is the sheet's clinrisk_score (MSKCC's Fong score).
    complete = (raw["synchronous_crlm"] == 1) & (raw[["node_positive_primary", "multiple_metastases",
                                                      "max_tumor_size", "carcinoembryonic_antigen"]] != -999).all(axis=1)
    assert complete.sum() == 3   # CRLM-CT-1001, -1005, -1007; 1003 lacks node status and CEA
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
