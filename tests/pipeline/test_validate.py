"""``crlm validate`` and ``crlm featurize`` on a user's own sheet (issue 10, items 4-6).

Every bad cell the issue lists costs its patient, never the cohort: validate exits 0 and lists
it, featurize keeps every input row with the same status and a reason that names the patient,
the 1-based data row, the column and the value.
"""

from __future__ import annotations

import pandas as pd
import pytest

from features import schema as s
from pipeline.cli import main
from pipeline.synthesis import simulate_cohort
from pipeline.world import load_world
from tests.conftest import REPO

# (column, value as written in the CSV, what the reason says about it)
BAD_CELLS = [
    (s.CEA, ".", "cea_ng_ml = '.' is not a number"),
    (s.CEA, "3,6", "cea_ng_ml = '3,6' is not a number"),
    (s.LARGEST_CM, "2021-03-04", "largest_lesion_cm = '2021-03-04' is not a number"),
    (s.NODE_POSITIVE, "2", "primary_node_positive = 2 is not 0 or 1"),
    (s.AGE, "150.5", "age_years = 150.5 is outside 18 to 110 years"),
    (s.ECOG, "two", "ecog = 'two' is not a number"),
    (s.N_LESIONS, "2.5", "n_liver_lesions = 2.5 is not a whole number"),
    (s.SEX, "M", "sex = 'M' is not one of male, female"),
]
N = 12


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    clinical, _ = simulate_cohort(n=N, seed=3, site="A", world=load_world(REPO / "configs" / "world.yaml"))
    return clinical.drop(columns=[s.IMAGE, s.MASK], errors="ignore")


def bad_sheet(clean: pd.DataFrame, path, cells=BAD_CELLS):
    """Patient i (0-based, i < len(cells)) gets bad cell i; the others stay clean."""
    table = clean.astype(object)
    for i, (column, value, _) in enumerate(cells):
        table.loc[i, column] = value
    table.to_csv(path, index=False)
    return path


def featurize(cohort, out, *extra) -> int:
    return main(["featurize", "--cohort", str(cohort), "--no-images", "--out", str(out), *extra])


def test_each_bad_cell_costs_its_patient_in_validate_and_featurize(clean, tmp_path, capsys):
    sheet = bad_sheet(clean, tmp_path / "bad.csv")
    assert main(["validate", "--cohort", str(sheet)]) == 0
    text = capsys.readouterr().out
    assert f"{N} patients: {N - len(BAD_CELLS)} ok, {len(BAD_CELLS)} invalid" in text
    out = tmp_path / "features.parquet"
    assert featurize(sheet, out) == 0
    assert f"wrote {N} patients" in capsys.readouterr().out
    table = pd.read_parquet(out)
    assert table[s.PATIENT_ID].tolist() == clean[s.PATIENT_ID].tolist()  # every row, input order
    for i, (column, _, said) in enumerate(BAD_CELLS):
        patient = clean.at[i, s.PATIENT_ID]
        where = f"patient {patient} (row {i + 1}): {said}"
        assert where in text, where  # validate says it
        assert table.at[i, "status"] == "invalid"  # featurize keeps the row
        assert where in table.at[i, "reason"], table.at[i, "reason"]
        assert pd.isna(table.at[i, column])  # the rejected value is not passed on
        assert pd.isna(table.at[i, "fong_score"])  # nor scored
    good = table.iloc[len(BAD_CELLS) :]
    assert (good["status"] == "ok").all() and (good["reason"] == "").all()
    assert good["fong_score"].notna().all()


def test_a_count_that_contradicts_the_flag_is_that_patients_problem(clean, tmp_path, capsys):
    table = clean.copy()
    table[s.MULTIPLE_LESIONS] = (table[s.N_LESIONS] > 1).astype(int)
    table.loc[1, s.MULTIPLE_LESIONS] = 1 - table.loc[1, s.MULTIPLE_LESIONS]
    path = tmp_path / "c.csv"
    table.to_csv(path, index=False)
    assert featurize(path, tmp_path / "f.parquet") == 0
    out = pd.read_parquet(tmp_path / "f.parquet")
    assert out["status"].tolist() == ["ok", "invalid"] + ["ok"] * (N - 2)
    assert f"patient {table.at[1, s.PATIENT_ID]} (row 2): n_liver_lesions = " in out.at[1, "reason"]
    assert "contradicts multiple_liver_lesions" in out.at[1, "reason"]


# --- headers as people write them -----------------------------------------------------------


def test_headers_match_ignoring_case_and_surrounding_spaces(clean, tmp_path, capsys):
    table = clean.rename(columns={s.AGE: "AGE_YEARS", s.SEX: " sex ", s.PATIENT_ID: "Patient_ID "})
    table.loc[0, "AGE_YEARS"] = 150
    table.loc[1, " sex "] = "unknown"
    path = tmp_path / "headers.csv"
    table.to_csv(path, index=False)
    assert main(["validate", "--cohort", str(path)]) == 0
    text = capsys.readouterr().out
    assert "age_years = 150.0 is outside 18 to 110 years" in text  # the column is read, not ignored
    assert "sex = 'unknown' is not one of male, female" in text
    assert featurize(path, tmp_path / "f.parquet") == 0
    out = pd.read_parquet(tmp_path / "f.parquet")
    assert {s.AGE, s.SEX, s.PATIENT_ID} <= set(out.columns)
    assert out[s.AGE].iloc[2:].tolist() == clean[s.AGE].iloc[2:].tolist()
    assert out["nordlinger_score"].iloc[2:].notna().all()  # age known: scores computed


def test_a_near_miss_header_is_an_error_naming_both(clean, tmp_path, capsys):
    path = tmp_path / "near.csv"
    clean.rename(columns={s.AGE: "age_yrs"}).to_csv(path, index=False)
    for command in (
        ["validate", "--cohort", str(path)],
        ["featurize", "--cohort", str(path), "--no-images", "--out", str(tmp_path / "f.parquet")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "'age_yrs'" in err and "'age_years'" in err and "rename" in err and str(path) in err
    assert not (tmp_path / "f.parquet").exists()


def test_headers_that_collide_after_normalisation_are_an_error_naming_both(clean, tmp_path, capsys):
    path = tmp_path / "twice.csv"
    table = clean.rename(columns={s.AGE: "Age_Years"})
    table["age_years "] = table["Age_Years"]
    table.to_csv(path, index=False)
    assert main(["validate", "--cohort", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'Age_Years'" in err and "'age_years '" in err and "keep one" in err


def test_headers_of_a_mapped_sheet_match_ignoring_case(tmp_path, capsys):
    sheet = pd.read_csv(REPO / "tests" / "data" / "tcia_clinical_sample.csv", dtype=str)
    sheet = sheet.rename(columns={"Patient-ID": " patient-id", "max_tumor_size": "MAX_TUMOR_SIZE"})
    path = tmp_path / "tcia.csv"
    sheet.to_csv(path, index=False)
    mapping = REPO / "configs" / "mappings" / "tcia_crlm.yaml"
    assert featurize(path, tmp_path / "f.parquet", "--mapping", str(mapping)) == 0
    out = pd.read_parquet(tmp_path / "f.parquet")
    assert out[s.PATIENT_ID].tolist()[-1] == "007"
    assert out[s.LARGEST_CM].tolist()[:2] == [4.2, 6.0]


# --- domain limits a mapping can widen: a non-CRLM cohort -------------------------------------


def _write_mapping(path, body: str):
    path.write_text(body, encoding="utf-8")
    return path


def test_a_mapping_widens_and_narrows_ranges_for_its_cohort(tmp_path, capsys):
    # A paediatric liver-tumour cohort (hepatoblastoma): ages 1-16, no CRLM score items.
    cohort = pd.DataFrame(
        {
            "id": ["h1", "h2", "h3", "h4"],
            "age": [2.0, 16.0, 130.0, 9.0],
            "afp": [1200.0, 35.0, 80.0, 90000.0],
            "months": [12.0, 30.0, 40.0, 6.0],
            "relapse": [1, 0, 0, 1],
        }
    )
    path = tmp_path / "hb.csv"
    cohort.to_csv(path, index=False)
    base = (
        "cohort: hepatoblastoma\nrename: {id: patient_id, age: age_years, months: recurrence_months,"
        " relapse: recurrence_event}\ncovariates: {afp: {kind: numeric, unit: ng/mL, minimum: 0}}\n"
    )
    strict = _write_mapping(tmp_path / "default.yaml", base)
    assert main(["validate", "--cohort", str(path), "--mapping", str(strict)]) == 0
    assert "4 patients: 0 ok, 4 invalid" in capsys.readouterr().out  # 18-110 years is for adult CRLM
    widened = _write_mapping(tmp_path / "wide.yaml", base + "ranges: {age_years: [0, 120]}\n")
    assert main(["validate", "--cohort", str(path), "--mapping", str(widened)]) == 0
    text = capsys.readouterr().out
    assert "4 patients: 3 ok, 1 invalid" in text
    assert "patient h3 (row 3): age_years = 130.0 is outside 0 to 120 years" in text
    assert featurize(path, tmp_path / "f.parquet", "--mapping", str(widened)) == 0
    out = pd.read_parquet(tmp_path / "f.parquet")
    assert out["status"].tolist() == ["ok", "ok", "invalid", "ok"]
    narrowed = _write_mapping(tmp_path / "narrow.yaml", base + "ranges: {age_years: [0, 12]}\n")
    assert main(["validate", "--cohort", str(path), "--mapping", str(narrowed)]) == 0
    assert "patient h2 (row 2): age_years = 16.0 is outside 0 to 12 years" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ("{age_yeras: [0, 120]}", "did you mean 'age_years'?"),
        ("{age_years: [120, 0]}", "minimum 120 is above maximum 0"),
        ("{sex: [0, 1]}", "'sex' has no range"),
        ("{afp: [0, 10]}", "give its minimum and maximum under covariates.afp"),
        ("{age_years: [0]}", "expected 2 values"),
    ],
)
def test_bad_ranges_are_errors_naming_the_key(tmp_path, capsys, ranges, message):
    path = tmp_path / "c.csv"
    pd.DataFrame({"id": ["a"], "afp": [1.0]}).to_csv(path, index=False)
    mapping = _write_mapping(
        tmp_path / "m.yaml", f"rename: {{id: patient_id}}\ncovariates: {{afp: {{kind: numeric}}}}\nranges: {ranges}\n"
    )
    assert main(["validate", "--cohort", str(path), "--mapping", str(mapping)]) == 2
    err = capsys.readouterr().err
    assert message in err and "ranges" in err and str(mapping) in err


# --- GBSG2: a real cohort a dependency ships (issue 10, item 9, the mapping part) --------------

GBSG2_MAPPING = REPO / "configs" / "mappings" / "gbsg2.yaml"
DAYS_PER_MONTH = 30.4375


def write_gbsg2_csv(path):
    """scikit-survival's GBSG2 cohort as a CSV: its 8 columns, patient_id 1..686, time (days),
    cens (1 = event). The same as the one-liner in docs/mappings.md."""
    from sksurv.datasets import load_gbsg2

    x, y = load_gbsg2()
    x.insert(0, "patient_id", range(1, len(x) + 1))
    x.assign(time=y["time"], cens=y["cens"].astype(int)).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def gbsg2_csv(tmp_path_factory):
    return write_gbsg2_csv(tmp_path_factory.mktemp("gbsg2") / "gbsg2.csv")


def test_gbsg2_validates_and_featurizes_every_patient_without_a_crlm_score(gbsg2_csv, tmp_path, capsys):
    from features.mapping import load_mapping
    from features.scores import score_availability

    assert load_mapping(GBSG2_MAPPING).cohort == "gbsg2"
    assert main(["validate", "--cohort", str(gbsg2_csv), "--mapping", str(GBSG2_MAPPING)]) == 0
    assert "686 patients: 686 ok, 0 invalid; 0 fatal problem(s), 0 row problem(s)" in capsys.readouterr().out
    out = tmp_path / "features.parquet"
    assert (
        main(
            ["featurize", "--cohort", str(gbsg2_csv), "--mapping", str(GBSG2_MAPPING), "--no-images", "--out", str(out)]
        )
        == 0
    )
    assert "wrote 686 patients" in capsys.readouterr().out
    table = pd.read_parquet(out)
    raw = pd.read_csv(gbsg2_csv)
    assert table[s.PATIENT_ID].tolist() == raw["patient_id"].astype(str).tolist()
    assert table["status"].value_counts().to_dict() == {"ok": 686}
    assert int(table[s.RECURRENCE_EVENT].sum()) == 299
    assert table[s.RECURRENCE_MONTHS].to_numpy() == pytest.approx(raw["time"].to_numpy() / DAYS_PER_MONTH, rel=1e-12)
    assert table[s.AGE].tolist() == raw["age"].tolist()
    assert table["hormone_therapy"].tolist() == (raw["horTh"] == "yes").astype(float).tolist()
    assert table["tumour_grade"].tolist() == raw["tgrade"].map({"I": 1.0, "II": 2.0, "III": 3.0}).tolist()
    assert s.RECIST not in table and s.N_LESIONS not in table
    availability = score_availability(table)
    assert {name: a.n_computable for name, a in availability.items()} == dict.fromkeys(availability, 0)
    assert availability["fong"].reason.startswith("cea_ng_ml missing for 686/686 patients")
    assert "n_liver_lesions or multiple_liver_lesions missing for 686/686 patients" in availability["tbs"].reason
    for name in ("fong_score", "oslo_score", "game_score", "nordlinger_score", "tbs"):
        assert table[name].isna().all(), name
