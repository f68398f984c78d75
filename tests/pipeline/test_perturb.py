"""``crlm perturb`` end to end on the small synthetic cohort, and a perturbation that loses every
lesion going through the extraction as a status (never a crash)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from features import extraction, radiomics
from features.perturbation import Perturbation
from features.robustness import ICC_COLUMNS
from features.schema import OK, PATIENT_ID, PERTURBATION, PERTURBATION_FAILED, STATUS
from pipeline.cli import main
from tests.conftest import LIGHT_RADIOMICS, REPO


@pytest.fixture(scope="module")
def perturbed(synthetic_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("perturb")
    (root / "radiomics.yaml").write_text(yaml.safe_dump(LIGHT_RADIOMICS))
    config = yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())
    config["cache_dir"] = str(root / "cache")
    (root / "extraction.yaml").write_text(yaml.safe_dump(config))
    (root / "params.yaml").write_text(
        yaml.safe_dump({"robustness": {"patients": 3, "perturbations": 2, "seed": 1, "jobs": 1, "site_scanners": 2}})
    )
    cohort = synthetic_cohort / "clinical.csv"
    common = ["--radiomics", str(root / "radiomics.yaml"), "--config", str(root / "extraction.yaml")]
    assert main(["extract", "--cohort", str(cohort), "--out", str(root / "extraction"), "--jobs", "1", *common]) == 0
    featurize = ["featurize", "--cohort", str(cohort), "--extraction", str(root / "extraction")]
    assert main([*featurize, "--out", str(root / "features.parquet"), "--config", str(root / "extraction.yaml")]) == 0
    command = [
        "perturb",
        "--cohort",
        str(cohort),
        "--features",
        str(root / "features.parquet"),
        "--out",
        str(root / "perturbed.parquet"),
        "--icc",
        str(root / "icc.csv"),
        "--params",
        str(root / "params.yaml"),
        *common,
    ]
    return root, command


def test_perturb_writes_featurize_columns_per_perturbation_and_nan_icc_for_a_tiny_cohort(perturbed, capsys):
    root, command = perturbed
    assert main(command) == 0
    said = capsys.readouterr().out
    assert "ICC not computed" in said and "fewer than 10" in said
    features = pd.read_parquet(root / "features.parquet")
    table = pd.read_parquet(root / "perturbed.parquet")
    assert list(table.columns) == [PATIENT_ID, PERTURBATION, *features.columns[1:]]
    counts = table[PERTURBATION].value_counts().to_dict()
    n = len(features)
    assert counts == {"icc-1": 3, "icc-2": 3, "site-1": n, "site-2": n}  # each scanner: every training patient
    # site B's 5 mm slices made 7-9 mm thick can lose a small lesion: that patient gets the status
    # and missing imaging values for that perturbation, never a half-filled row
    assert set(table[STATUS]) <= {OK, PERTURBATION_FAILED}
    lost = table.loc[table[STATUS] == PERTURBATION_FAILED]
    assert lost["rad_largest__original_firstorder_Mean"].isna().all()
    assert lost["reason"].str.contains("perturbation").all()
    # the site chain changes the radiomics, not the clinical columns
    site = table.loc[table[PERTURBATION] == "site-1"].set_index(PATIENT_ID).loc[features[PATIENT_ID]]
    column = "rad_largest__original_firstorder_Mean"
    kept = (site[STATUS] == OK).to_numpy()
    assert kept.sum() >= 2
    assert not np.allclose(site[column].to_numpy(float)[kept], features[column].to_numpy(float)[kept])
    # two scanners, two different images of the same patients
    other = table.loc[table[PERTURBATION] == "site-2"].set_index(PATIENT_ID).loc[features[PATIENT_ID]]
    both = kept & (other[STATUS] == OK).to_numpy()
    assert not np.allclose(site[column].to_numpy(float)[both], other[column].to_numpy(float)[both])
    np.testing.assert_array_equal(site["age_years"].to_numpy(), features["age_years"].to_numpy())
    icc = pd.read_csv(root / "icc.csv")
    assert list(icc.columns) == list(ICC_COLUMNS)
    assert icc["icc"].isna().all() and column in set(icc["feature"])
    # a re-run (from the cache, keyed by the perturbation) gives the same table
    assert main(command) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(root / "perturbed.parquet"), table)


def test_the_site_chain_is_extracted_only_when_asked(perturbed, tmp_path, capsys):
    """The default run does not choose, so by default no site-k rows (1,200 extractions fewer);
    crlm choose-robustness on such a table stops and names the setting that gives them."""
    root, command = perturbed
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"robustness": {"patients": 3, "perturbations": 2, "seed": 1, "jobs": 1}}))
    out = tmp_path / "perturbed.parquet"
    command = [*command, "--params", str(params), "--out", str(out), "--icc", str(tmp_path / "icc.csv")]
    assert main(command) == 0
    assert pd.read_parquet(out)[PERTURBATION].value_counts().to_dict() == {"icc-1": 3, "icc-2": 3}
    capsys.readouterr()
    choose = ["choose-robustness", "--features", str(root / "features.parquet"), "--perturbed", str(out)]
    choose += [
        "--icc",
        str(tmp_path / "icc.csv"),
        "--out",
        str(tmp_path / "choice"),
        "--params",
        str(REPO / "params.yaml"),
    ]
    assert main(choose) == 2
    said = capsys.readouterr().err
    assert str(out) in said and "no site-k rows" in said and "robustness.site_scanners: 3" in said
    assert not (tmp_path / "choice").exists()


def test_unknown_robustness_key_is_an_error_naming_the_key(perturbed, tmp_path, capsys):
    root, command = perturbed
    bad = tmp_path / "robustness.yaml"
    bad.write_text("icc:\n  rotation_degrees: [-5.0, 5.0]\n")
    assert main([*command, "--robustness", str(bad)]) == 2
    assert "did you mean 'rotation_deg'" in capsys.readouterr().err


def test_a_perturbation_that_removes_the_lesions_is_a_case_status(synthetic_cohort):
    case = extraction.read_manifest(synthetic_cohort / "clinical.csv")[0]
    options = extraction.CaseOptions(
        radiomics.ExtractionSettings(LIGHT_RADIOMICS, 25.0),
        extraction.imaging.DEFAULT_LABELS,
        perturbation=Perturbation("icc", 1, 0, volume_fraction=-1.0),
    )
    lesions, report = extraction.extract_cohort([case], options, cache_dir=None, progress=False)
    assert lesions.empty
    assert report[STATUS].tolist() == [PERTURBATION_FAILED]
    assert case.patient_id in report["reason"].iloc[0] and "icc-1" in report["reason"].iloc[0]


def test_robustness_block_is_validated(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"robustness": {"patients": 10, "perturbations": 1, "seed": 1, "jobs": 1}}))
    assert main(["perturb", "--cohort", str(tmp_path / "x.csv"), "--params", str(params)]) == 2
    assert "an ICC needs at least 2" in capsys.readouterr().err
    params.write_text(yaml.safe_dump({"robustness": {"patient": 10, "perturbations": 4, "seed": 1, "jobs": 1}}))
    assert main(["perturb", "--cohort", str(tmp_path / "x.csv"), "--params", str(params)]) == 2
    assert "did you mean 'patients'" in capsys.readouterr().err
    block = {"patients": 10, "perturbations": 4, "seed": 1, "jobs": 1}
    params.write_text(yaml.safe_dump({"robustness": {**block, "site_perturbation": True}}))  # before 2026-12-02
    assert main(["perturb", "--cohort", str(tmp_path / "x.csv"), "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "site_perturbation was replaced by site_scanners" in err and "site_scanners: 3" in err
    params.write_text(yaml.safe_dump({"robustness": {**block, "site_scanners": -1}}))
    assert main(["perturb", "--cohort", str(tmp_path / "x.csv"), "--params", str(params)]) == 2
    assert "site_scanners: -1" in capsys.readouterr().err
