"""Cohort mappings (features.mapping), the TCIA mapping, and ``crlm validate`` (pipeline.validate)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import schema as s
from features.mapping import MappingError, apply_mapping, load_mapping, mapping_from_dict
from features.settings import SettingsError
from features.validation import validate_cohort
from pipeline.validate import run_validate

REPO = Path(__file__).resolve().parents[2]
TCIA_MAPPING = REPO / "configs" / "mappings" / "tcia_crlm.yaml"
TCIA_SAMPLE = REPO / "tests" / "data" / "tcia_clinical_sample.csv"
NA = pd.NA


def write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sheet() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": ["007", "P-2", "P-3"],
            "Age": ["61", "-999", "70"],
            "Gender": ["M", "f", "unknown"],
            "tumour_mm": [42.0, 18.0, None],
            "LiverOnly": ["yes", "no", "NA"],
            "note": ["x", "y", "z"],
        }
    )


SIMPLE = {
    "rename": {
        "ID": s.PATIENT_ID,
        "Age": s.AGE,
        "Gender": s.SEX,
        "tumour_mm": s.LARGEST_CM,
        "LiverOnly": s.EXTRAHEPATIC,
    },
    "missing_values": [-999],
    "column_missing_values": {s.EXTRAHEPATIC: ["NA"]},
    "recode": {s.SEX: {"m": "male", "F": "female"}, s.EXTRAHEPATIC: {"yes": 0, "no": 1}},
    "units": {s.LARGEST_CM: 0.1},
}


# --- loading: strict keys, nearest names -----------------------------------------------------


def test_unknown_key_names_the_nearest_valid_key(tmp_path):
    path = write(tmp_path, "percent_column: [necrosis_percent]\n")
    with pytest.raises(SettingsError, match=r"unknown key 'percent_column'; did you mean 'percent_columns'\?"):
        load_mapping(path)
    path = write(tmp_path, "covariates: {bmi: {kind: numeric, maximun: 80}}\n")
    with pytest.raises(SettingsError, match=r"covariates\.bmi: unknown key 'maximun'; did you mean 'maximum'\?"):
        load_mapping(path)


def test_unknown_rule_and_rule_argument_name_the_nearest(tmp_path):
    path = write(tmp_path, "derive: [{rule: dfi_from_synchronus}]\n")
    with pytest.raises(
        SettingsError,
        match=r"derive\[0\]: unknown rule 'dfi_from_synchronus'; "
        r"did you mean 'dfi_from_synchronous'\?",
    ):
        load_mapping(path)
    path = write(tmp_path, "derive: [{rule: recurrence_event_from, colum: progression}]\n")
    with pytest.raises(SettingsError, match=r"unknown key 'colum'; did you mean 'column'\?"):
        load_mapping(path)


def test_rename_to_a_non_canonical_column_names_the_nearest_canonical_column(tmp_path):
    path = write(tmp_path, "rename: {age: age_year}\n")
    with pytest.raises(
        SettingsError,
        match=rf"{path}: rename: 'age' -> 'age_year': 'age_year' is not a "
        r"canonical column; did you mean 'age_years'\?",
    ):
        load_mapping(path)
    path = write(tmp_path, "rename: {bmi: body_mass}\ncovariates: {body_mass: {kind: numeric}}\n")
    assert load_mapping(path).rename == {"bmi": "body_mass"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"percent_columns": ["necrosis"]},
            "percent_columns: 'necrosis' is neither a canonical column nor a covariate",
        ),
        ({"units": {s.SEX: 0.1}}, "units: 'sex' is not a numeric column"),
        ({"units": {s.LARGEST_CM: 0}}, "units: factor of 'largest_lesion_cm' must be a positive number"),
        ({"recode": {s.PATIENT_ID: {"1": "2"}}}, "'patient_id' is passed through unchanged"),
        ({"recode": {s.BILOBAR: {True: 1}}}, "quote the value"),
        ({"covariates": {s.AGE: {"kind": "numeric"}}}, "'age_years' is a canonical column"),
        ({"covariates": {"bmi": {"kind": "numbers"}}}, "kind 'numbers' is not one of numeric, categorical"),
        ({"rename": {"a": s.AGE, "b": s.AGE}}, r"\['a', 'b'\] all map to 'age_years'"),
    ],
)
def test_inconsistent_mappings_are_rejected_at_load(data, message):
    with pytest.raises(SettingsError, match=message):
        mapping_from_dict(data, where="m.yaml")


# --- applying --------------------------------------------------------------------------------


def test_apply_renames_recodes_converts_units_and_keeps_ids():
    raw = sheet()
    before = raw.copy()
    out = apply_mapping(raw, mapping_from_dict(SIMPLE))
    pd.testing.assert_frame_equal(raw, before)  # the input is not mutated
    assert out.columns.tolist() == [s.PATIENT_ID, s.AGE, s.SEX, s.LARGEST_CM, s.EXTRAHEPATIC]
    assert out[s.PATIENT_ID].tolist() == ["007", "P-2", "P-3"]
    assert out[s.AGE].tolist()[::2] == [61.0, 70.0] and np.isnan(out[s.AGE][1])
    assert out[s.SEX].tolist() == ["male", "female", "unknown"]  # unknown codes are left for validation
    np.testing.assert_allclose(out[s.LARGEST_CM], [4.2, 1.8, np.nan])
    assert out[s.EXTRAHEPATIC].tolist() == [0, 1, NA]
    assert str(out[s.EXTRAHEPATIC].dtype) == "Int64"


def test_identifiers_are_never_missing_coded_recoded_or_parsed():
    raw = sheet().assign(ID=["-999", " 007 ", "NA"])
    mapping = mapping_from_dict({**SIMPLE, "missing_values": [-999, "NA"]})
    assert apply_mapping(raw, mapping)[s.PATIENT_ID].tolist() == ["-999", " 007 ", "NA"]


def test_keep_unmapped_keeps_other_columns_after_covariates():
    out = apply_mapping(
        sheet(), mapping_from_dict({**SIMPLE, "keep_unmapped": True, "covariates": {"note": {"kind": "categorical"}}})
    )
    assert out.columns.tolist()[-1:] == ["note"]
    out = apply_mapping(sheet(), mapping_from_dict({"rename": {"ID": s.PATIENT_ID}, "keep_unmapped": True}))
    assert out.columns.tolist() == [s.PATIENT_ID, "Age", "Gender", "tumour_mm", "LiverOnly", "note"]


def test_unparseable_values_are_kept_for_validation_to_report():
    raw = sheet().assign(Age=["61", "sixty", "70"])
    out = apply_mapping(raw, mapping_from_dict(SIMPLE))
    assert out[s.AGE].tolist() == [61.0, "sixty", 70.0]
    report = validate_cohort(out)
    assert [p.message for p in report.problems] == [
        "patient P-2 (row 2): age_years = 'sixty' is not a number (allowed: 18 to 110 years)",
        "patient P-3 (row 3): sex = 'unknown' is not one of male, female",
    ]


def test_a_mapped_column_absent_from_the_sheet_is_an_error_naming_the_nearest():
    with pytest.raises(MappingError, match=r"the sheet has no column 'age'; did you mean 'Age'\?"):
        apply_mapping(sheet(), mapping_from_dict({"rename": {"age": s.AGE}}))


def test_rename_onto_an_existing_sheet_column_is_an_error():
    raw = sheet().assign(**{s.SEX: ["male"] * 3})
    with pytest.raises(MappingError, match="the sheet already has a column 'sex'"):
        apply_mapping(raw, mapping_from_dict({"rename": {"Gender": s.SEX}}))


def test_dfi_rule_sets_zero_for_synchronous_and_keeps_provided_values():
    raw = pd.DataFrame({s.PATIENT_ID: ["a", "b", "c", "d"], "sync": [1, 0, 0, None], "dfi": [7.0, 15.0, None, 3.0]})
    mapping = mapping_from_dict(
        {"rename": {"sync": s.SYNCHRONOUS, "dfi": s.DFI_MONTHS}, "derive": [{"rule": "dfi_from_synchronous"}]}
    )
    np.testing.assert_array_equal(apply_mapping(raw, mapping)[s.DFI_MONTHS], [0.0, 15.0, np.nan, 3.0])


# --- the TCIA Colorectal-Liver-Metastases sheet ----------------------------------------------


def test_tcia_sample_maps_to_exact_canonical_values():
    mapping = load_mapping(TCIA_MAPPING)
    raw = pd.read_csv(TCIA_SAMPLE, dtype={mapping.id_column: str})
    out = apply_mapping(raw, mapping)
    nan = np.nan
    expected = pd.DataFrame(
        {
            s.PATIENT_ID: [
                "CRLM-CT-1001",
                "CRLM-CT-1002",
                "CRLM-CT-1003",
                "CRLM-CT-1004",
                "CRLM-CT-1005",
                "CRLM-CT-1006",
                "CRLM-CT-1007",
                "007",
            ],
            s.AGE: [61.0, 48.0, nan, 70.0, 55.0, 66.0, 39.0, 52.0],
            s.SEX: ["male", "female", "male", "female", "male", "female", "male", "female"],
            s.NODE_POSITIVE: pd.array([1, 0, NA, 1, 0, 0, 1, 1], dtype="Int64"),
            s.SYNCHRONOUS: pd.array([1, 0, 1, 0, 1, 0, 1, 0], dtype="Int64"),
            s.DFI_MONTHS: [0.0, nan, 0.0, nan, 0.0, nan, 0.0, nan],
            s.MULTIPLE_LESIONS: pd.array([1, 0, 1, 1, 0, 1, 1, 0], dtype="Int64"),
            s.LARGEST_CM: [4.2, 6.0, 2.5, 1.8, 10.5, 3.3, 7.0, 0.9],
            s.BILOBAR: pd.array([1, 0, 0, 1, 0, 1, 1, 0], dtype="Int64"),
            s.CEA: [12.5, 250.0, nan, 5.1, 3.0, 800.4, 45.0, 0.5],
            s.EXTRAHEPATIC: pd.array([0, 0, 0, 1, NA, 0, 0, 0], dtype="Int64"),
            s.RECURRENCE_EVENT: pd.array([1, 0, 1, 1, NA, 0, 1, 0], dtype="Int64"),
            s.RECURRENCE_MONTHS: [14.3, 72.5, 6.1, 22.0, nan, 40.0, 3.2, 101.0],
            "tcia_fong_score": [3.0, 1.0, nan, 3.0, 2.0, 2.0, 4.0, 2.0],
            "chemo_before_liver_resection": [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            "total_response_percent": [90.0, nan, 35.0, 100.0, 12.5, nan, 50.0, 5.5],
            "necrosis_percent": [60.0, nan, 10.0, 0.0, 5.0, nan, 20.0, 0.0],
            "fibrosis_percent": [30.0, nan, 25.0, 100.0, 7.5, nan, 30.0, 5.0],
            "mucin_percent": [0.0, nan, nan, 0.0, 0.0, nan, 5.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(out, expected, check_dtype=False)
    for column in (s.NODE_POSITIVE, s.SYNCHRONOUS, s.MULTIPLE_LESIONS, s.BILOBAR, s.EXTRAHEPATIC, s.RECURRENCE_EVENT):
        assert str(out[column].dtype) == "Int64", column


def test_tcia_mapping_gives_the_same_table_from_text_only_reading():
    mapping = load_mapping(TCIA_MAPPING)
    typed = apply_mapping(pd.read_csv(TCIA_SAMPLE, dtype={mapping.id_column: str}), mapping)
    text = apply_mapping(pd.read_csv(TCIA_SAMPLE, dtype=str, keep_default_na=False), mapping)
    pd.testing.assert_frame_equal(typed, text, check_dtype=False)
    assert text[s.PATIENT_ID].tolist()[-1] == "007"


# --- crlm validate ---------------------------------------------------------------------------


def test_run_validate_tcia_sample_with_mapping_exits_0_and_prints_the_report():
    out = io.StringIO()
    assert run_validate(TCIA_SAMPLE, TCIA_MAPPING, out=out) == 0
    text = out.getvalue()
    assert f"validated {TCIA_SAMPLE} (mapping {TCIA_MAPPING})" in text
    assert "8 patients: 8 ok, 0 invalid; 0 fatal problem(s), 0 row problem(s)" in text


def test_run_validate_reports_row_problems_but_exits_0(tmp_path):
    csv = write(tmp_path, "patient_id,cea_ng_ml,sex\n007,-3,male\n008,12,unknown\n009,5,female\n", "c.csv")
    out = io.StringIO()
    assert run_validate(csv, None, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[1] == "3 patients: 1 ok, 2 invalid; 0 fatal problem(s), 2 row problem(s)"
    assert "  patient 007 (row 1): cea_ng_ml = -3 is outside 0 to 1000000 ng/mL" in lines
    assert "  patient 008 (row 2): sex = 'unknown' is not one of male, female" in lines


def test_run_validate_exits_1_on_fatal_problems(tmp_path):
    csv = write(tmp_path, "patient_id,cea_ng_ml\n007,1\n7,2\n007,3\n", "c.csv")
    out = io.StringIO()
    assert run_validate(csv, None, out=out) == 1
    assert "  patient_id '007' appears 2 times, in rows 1, 3" in out.getvalue()
    no_id = write(tmp_path, "id,cea_ng_ml\n1,1\n", "no_id.csv")
    assert run_validate(no_id, None, out=io.StringIO()) == 1


def test_run_validate_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.csv")):
        run_validate(tmp_path / "absent.csv", None, out=io.StringIO())
    empty = write(tmp_path, "", "empty.csv")
    with pytest.raises(ValueError, match=f"{empty}: cannot be read as a CSV table"):
        run_validate(empty, None, out=io.StringIO())
    with pytest.raises(SettingsError, match="settings file not found"):
        run_validate(TCIA_SAMPLE, tmp_path / "absent.yaml", out=io.StringIO())
