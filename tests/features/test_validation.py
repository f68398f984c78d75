"""Validation of canonical cohort tables (features.validation)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import schema as s
from features.validation import OK, validate_cohort
from pipeline.synthesis import simulate_cohort
from pipeline.world import load_world

REPO = Path(__file__).resolve().parents[2]


def cohort(**overrides: list) -> pd.DataFrame:
    """Three clean patients; keyword arguments replace whole columns."""
    table = pd.DataFrame(
        {
            s.PATIENT_ID: ["CRLM-CT-1001", "CRLM-CT-1002", "CRLM-CT-1003"],
            s.AGE: [61.0, 48.0, 70.0],
            s.SEX: ["male", "female", "male"],
            s.NODE_POSITIVE: [1, 0, 1],
            s.CEA: [12.5, 250.0, 5.1],
            s.ECOG: [0, 1, 2],
            "my_covariate": ["a", 2, None],
        }
    )
    for column, values in overrides.items():
        table[column] = values
    return table


def test_clean_table_has_no_problems_and_every_row_ok():
    report = validate_cohort(cohort())
    assert report.fatal == [] and report.problems == []
    assert report.status.tolist() == [OK] * 3
    assert len(report.valid_rows) == 3


def test_every_problem_is_reported_in_one_call():
    table = cohort(**{s.CEA: [-3.0, 250.0, 5.1], s.AGE: [61.0, 250.0, 70.0], s.SEX: ["male", "female", "x"]})
    report = validate_cohort(table)
    assert [(p.patient_id, p.column) for p in report.problems] == [
        ("CRLM-CT-1001", s.CEA),
        ("CRLM-CT-1002", s.AGE),
        ("CRLM-CT-1003", s.SEX),
    ]
    assert report.fatal == []
    assert all(status.startswith("invalid: ") for status in report.status)
    assert report.valid_rows.empty


@pytest.mark.parametrize(
    ("column", "value", "message", "code"),
    [
        (s.CEA, -3.0, "patient CRLM-CT-1002 (row 2): cea_ng_ml = -3.0 is outside 0 to 1000000 ng/mL", "out_of_range"),
        (s.AGE, 250, "patient CRLM-CT-1002 (row 2): age_years = 250 is outside 18 to 110 years", "out_of_range"),
        (
            s.SEX,
            "unknown",
            "patient CRLM-CT-1002 (row 2): sex = 'unknown' is not one of male, female",
            "unknown_category",
        ),
        (
            s.CEA,
            "12,5",
            "patient CRLM-CT-1002 (row 2): cea_ng_ml = '12,5' is not a number (allowed: 0 to 1000000 ng/mL)",
            "not_a_number",
        ),
        (s.NODE_POSITIVE, 2, "patient CRLM-CT-1002 (row 2): primary_node_positive = 2 is not 0 or 1", "not_binary"),
        (s.ECOG, 1.5, "patient CRLM-CT-1002 (row 2): ecog = 1.5 is not a whole number from 0 to 4", "out_of_range"),
    ],
)
def test_bad_value_marks_only_that_patient_invalid(column, value, message, code):
    table = cohort()
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    report = validate_cohort(table)
    assert [p.message for p in report.problems] == [message]
    problem = report.problems[0]
    assert (problem.patient_id, problem.column, problem.value, problem.code) == ("CRLM-CT-1002", column, value, code)
    assert report.fatal == []
    assert report.status.tolist() == [OK, "invalid: " + message, OK]
    assert problem.row == 2
    assert report.valid_rows[s.PATIENT_ID].tolist() == ["CRLM-CT-1001", "CRLM-CT-1003"]


def test_missing_values_are_allowed():
    table = cohort(**{s.CEA: [None, 250.0, float("nan")], s.SEX: [None, " ", "male"]})
    report = validate_cohort(table)
    assert report.problems == [] and report.fatal == []


def test_duplicate_patient_id_is_fatal_and_lists_every_row_with_it():
    table = cohort(**{s.PATIENT_ID: ["A-1", "B-2", "A-1"]})
    report = validate_cohort(table)
    assert [p.message for p in report.fatal] == ["patient_id 'A-1' appears 2 times, in rows 1, 3"]
    assert report.status.tolist()[1] == OK
    assert report.status[0].startswith("invalid: patient_id 'A-1' appears 2 times")
    assert report.status[2] == report.status[0]
    table.loc[2, s.CEA] = -1.0
    assert [p.message for p in validate_cohort(table).problems] == [
        "patient A-1 (row 3): cea_ng_ml = -1.0 is outside 0 to 1000000 ng/mL"
    ]


def test_missing_required_column_is_fatal_for_every_row():
    report = validate_cohort(cohort().drop(columns=s.PATIENT_ID), required=(s.PATIENT_ID, s.CEA))
    assert [p.message for p in report.fatal] == ["required column 'patient_id' is missing from the table"]
    report = validate_cohort(cohort().drop(columns=s.CEA), required=(s.CEA,))
    assert [p.column for p in report.fatal] == [s.CEA]
    assert set(report.status) == {"invalid: required column 'cea_ng_ml' is missing from the table"}


def test_missing_patient_id_value_and_empty_table_are_fatal():
    report = validate_cohort(cohort(**{s.PATIENT_ID: ["A-1", None, "  "]}))
    assert [p.message for p in report.fatal] == ["patient_id is missing in row(s) 2, 3"]
    assert report.status.tolist() == [
        OK,
        "invalid: row 2: patient_id is missing",
        "invalid: row 3: patient_id is missing",
    ]
    assert [p.message for p in validate_cohort(cohort().iloc[:0]).fatal] == ["the table has no rows"]


def test_status_is_indexed_like_the_input_and_valid_rows_are_typed():
    table = cohort(**{s.CEA: ["12.5", "abc", "5.1"]}).set_index(pd.Index([10, 20, 30]))
    report = validate_cohort(table)
    assert report.status.index.tolist() == [10, 20, 30]
    assert report.status[20].startswith("invalid: patient CRLM-CT-1002 (row 2): cea_ng_ml = 'abc'")
    assert report.valid_rows.index.tolist() == [10, 30]
    assert report.valid_rows[s.CEA].tolist() == [12.5, 5.1]
    assert str(report.valid_rows[s.NODE_POSITIVE].dtype) == "Int64"


def test_non_ascii_patient_ids_pass_through_unchanged():
    ids = ["Müller-007", "患者-2", "Ødegård 3"]
    report = validate_cohort(cohort(**{s.PATIENT_ID: ids}).assign(**{s.AGE: [61.0, 48.0, 250.0]}))
    assert report.valid_rows[s.PATIENT_ID].tolist() == ids[:2]
    assert report.problems[0].patient_id == "Ødegård 3"
    assert report.problems[0].message.startswith("patient Ødegård 3 (row 3): age_years = 250.0")


def test_extra_columns_are_checked_when_described():
    extra = s.Column("tumour_percent", "float", "pathological response", "%", 0, 100)
    table = cohort(tumour_percent=[90.0, 120.0, None])
    assert validate_cohort(table).problems == []
    report = validate_cohort(table, extra_columns=(extra,))
    assert [p.message for p in report.problems] == [
        "patient CRLM-CT-1002 (row 2): tumour_percent = 120.0 is outside 0 to 100 %"
    ]


def test_report_format_gives_counts_then_one_line_per_problem():
    table = cohort(**{s.PATIENT_ID: ["A-1", "A-1", "C-3"], s.CEA: [1.0, 2.0, -3.0]})
    lines = validate_cohort(table).format().splitlines()
    assert lines[0] == "3 patients: 0 ok, 3 invalid; 1 fatal problem(s), 1 row problem(s)"
    assert "  patient_id 'A-1' appears 2 times, in rows 1, 2" in lines
    assert "  patient C-3 (row 3): cea_ng_ml = -3.0 is outside 0 to 1000000 ng/mL" in lines


def test_synthetic_cohort_validates_with_zero_problems():
    clinical, _ = simulate_cohort(n=200, seed=11, site="A", world=load_world(REPO / "configs" / "world.yaml"))
    # multiple_liver_lesions stands in for a lesion count a sheet lacks; the simulation has the count
    required = tuple(c for c in s.CLINICAL_INPUTS if c not in s.STAND_IN_INPUTS) + s.OUTCOMES
    report = validate_cohort(clinical, required=required)
    assert report.fatal == [] and report.problems == [], report.format()
    assert len(report.valid_rows) == 200
