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
