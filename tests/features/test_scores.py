"""Tests for features/scores.py: thresholds on both sides, hand-worked patients, missing data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.schema import (
    AGE,
    CEA,
    CHEMO_CYCLES,
    CHEMO_REGIMEN,
    COLUMN_BY_NAME,
    DFI_MONTHS,
    EXTRAHEPATIC,
    LARGEST_CM,
    MONTHS_TO_SURGERY,
    MULTIPLE_LESIONS,
    N_LESIONS,
    NODE_POSITIVE,
    PROGRESSION_ON_CHEMO,
    RAS,
    SYNCHRONOUS,
    T_STAGE,
)
from features.scores import (
    FONG_INPUTS,
    GAME_INPUTS,
    NORDLINGER_INPUTS,
    OSLO_INPUTS,
    SCORES,
    TBS_INPUTS,
    ScoreAvailability,
    clinical_scores,
    fong_risk_group,
    fong_score,
    game_risk_group,
    game_score,
    item_points,
    nordlinger_risk_group,
    nordlinger_score,
    oslo_score,
    score_availability,
    tbs_zone,
    tumour_burden_score,
)

# A patient with no risk factor for any score (TBS = sqrt(2^2 + 1^2) = 2.24, below 3).
NO_RISK = {
    AGE: 50.0,
    T_STAGE: 2,
    NODE_POSITIVE: 0,
    DFI_MONTHS: 36.0,
    N_LESIONS: 1,
    LARGEST_CM: 2.0,
    CEA: 5.0,
    EXTRAHEPATIC: 0,
    RAS: 0,
    PROGRESSION_ON_CHEMO: 0,
    MONTHS_TO_SURGERY: 36.0,
}

# Every risk factor of every score present.
ALL_RISK = {
    AGE: 75.0,
    T_STAGE: 4,
    NODE_POSITIVE: 1,
    DFI_MONTHS: 0.0,
    N_LESIONS: 10,
    LARGEST_CM: 8.0,
    CEA: 500.0,
    EXTRAHEPATIC: 1,
    RAS: 1,
    PROGRESSION_ON_CHEMO: 1,
    MONTHS_TO_SURGERY: 6.0,
}


def patients(*overrides: dict, index: list | None = None) -> pd.DataFrame:
    """Canonical table, one row per overrides dict, each row the no-risk defaults updated by it."""
    rows = [{**NO_RISK, **o} for o in (overrides or ({},))]
    df = pd.DataFrame(rows, index=index)
    for column in df.columns:
        kind = COLUMN_BY_NAME[column].kind
        # Via Float64 so that pd.NA overrides become NaN in float columns.
        df[column] = df[column].astype("Int64" if kind in ("binary", "int") else "Float64")
        if kind == "float":
            df[column] = df[column].astype("float64")
    return df


def one(score: pd.Series):
    """The single value of a one-row score Series."""
    assert len(score) == 1
    return score.iloc[0]


# --- no risk factor, all risk factors -------------------------------------------------------


@pytest.mark.parametrize("name", ["fong", "oslo", "game", "nordlinger"])
def test_integer_score_is_zero_without_risk_factors(name):
    assert one(SCORES[name](patients())) == 0


@pytest.mark.parametrize("name, maximum", [("fong", 5), ("oslo", 4), ("game", 7), ("nordlinger", 6)])
def test_integer_score_reaches_maximum_with_all_risk_factors(name, maximum):
    assert one(SCORES[name](patients(ALL_RISK))) == maximum


# --- thresholds on both sides ---------------------------------------------------------------

FONG_BOUNDARIES = [
    (CEA, 200.0, 0),
    (CEA, 200.01, 1),
    (DFI_MONTHS, 12.0, 0),
    (DFI_MONTHS, 11.99, 1),
    (LARGEST_CM, 5.0, 0),
    (LARGEST_CM, 5.01, 1),
    (N_LESIONS, 1, 0),
    (N_LESIONS, 2, 1),
    (NODE_POSITIVE, 0, 0),
    (NODE_POSITIVE, 1, 1),
]


@pytest.mark.parametrize("column, value, points", FONG_BOUNDARIES)
def test_fong_score_counts_each_factor_strictly_beyond_its_threshold(column, value, points):
    assert one(fong_score(patients({column: value}))) == points


def test_fong_score_counts_cea_above_200():
    assert fong_score(patients({CEA: 200.0}, {CEA: 200.01})).tolist() == [0, 1]


OSLO_BOUNDARIES = [
    (LARGEST_CM, 5.5, 0),
    (LARGEST_CM, 5.51, 1),
    (CEA, 80.0, 0),
    (CEA, 80.01, 1),
    (MONTHS_TO_SURGERY, 24.0, 0),
    (MONTHS_TO_SURGERY, 23.99, 1),
    (PROGRESSION_ON_CHEMO, 0, 0),
    (PROGRESSION_ON_CHEMO, 1, 1),
]


@pytest.mark.parametrize("column, value, points", OSLO_BOUNDARIES)
def test_oslo_score_counts_each_factor_strictly_beyond_its_threshold(column, value, points):
    assert one(oslo_score(patients({column: value}))) == points


NORDLINGER_BOUNDARIES = [
    (AGE, 60.0, 0),
    (AGE, 61.0, 1),
    (T_STAGE, 3, 0),
    (T_STAGE, 4, 1),
    (NODE_POSITIVE, 0, 0),
    (NODE_POSITIVE, 1, 1),
    (DFI_MONTHS, 24.0, 0),
    (DFI_MONTHS, 23.99, 1),
    (N_LESIONS, 3, 0),
    (N_LESIONS, 4, 1),
    (LARGEST_CM, 5.0, 0),
    (LARGEST_CM, 5.01, 1),
]


@pytest.mark.parametrize("column, value, points", NORDLINGER_BOUNDARIES)
def test_nordlinger_score_counts_each_factor_strictly_beyond_its_threshold(column, value, points):
    assert one(nordlinger_score(patients({column: value}))) == points


GAME_BOUNDARIES = [
    (CEA, 19.99, 0),
    (CEA, 20.0, 1),  # GAME is inclusive: CEA >= 20
    (RAS, 0, 0),
    (RAS, 1, 1),
    (NODE_POSITIVE, 0, 0),
    (NODE_POSITIVE, 1, 1),
    (EXTRAHEPATIC, 0, 0),
    (EXTRAHEPATIC, 1, 2),
]


@pytest.mark.parametrize("column, value, points", GAME_BOUNDARIES)
def test_game_score_counts_each_factor_at_its_threshold(column, value, points):
    assert one(game_score(patients({column: value}))) == points


# (largest_cm, n_lesions, TBS, GAME points). sqrt(5)/2 and sqrt(80)/1 give exactly 3.0 and 9.0.
GAME_TBS_ZONES = [
    (2.828, 1, 2.9996, 0),
    (math.sqrt(5.0), 2, 3.0, 1),
    (4.0, 3, 5.0, 1),
    (8.5, 1, 8.5586, 1),  # 8 < TBS < 9: the middle zone, 1 point
    (8.94, 1, 8.9958, 1),
    (math.sqrt(80.0), 1, 9.0, 2),
    (12.0, 5, 13.0, 2),
]


@pytest.mark.parametrize("largest, n, tbs, points", GAME_TBS_ZONES)
def test_game_score_gives_tbs_points_by_zone(largest, n, tbs, points):
    df = patients({LARGEST_CM: largest, N_LESIONS: n})
    assert one(tumour_burden_score(df)) == pytest.approx(tbs, abs=1e-4)
    assert one(game_score(df)) == points


def test_tbs_boundary_inputs_land_exactly_on_3_and_9():
    # Guard for the zone tests above: they test the boundary itself, not a value near it.
    df = patients({LARGEST_CM: math.sqrt(5.0), N_LESIONS: 2}, {LARGEST_CM: math.sqrt(80.0), N_LESIONS: 1})
    assert tumour_burden_score(df).tolist() == [3.0, 9.0]


@pytest.mark.parametrize("largest, n, tbs", [(4.0, 3, 5.0), (3.0, 4, 5.0), (6.0, 8, 10.0), (5.0, 12, 13.0)])
def test_tumour_burden_score_is_hypotenuse_of_size_and_count(largest, n, tbs):
    assert one(tumour_burden_score(patients({LARGEST_CM: largest, N_LESIONS: n}))) == pytest.approx(tbs)


# --- hand-worked patients -------------------------------------------------------------------

# Patient A: 67 y, T3, node-positive, DFI 8 mo, 3 lesions, largest 4 cm, CEA 45, RAS mutant,
#   no EHD, no progression, 10 months to liver surgery.
#   Fong 3 = node 1 + DFI<12 1 + n>1 1 + size>5 0 + CEA>200 0 -> high.
#   Oslo 1 = size>5.5 0 + CEA>80 0 + <24 months 1 + progression 0.
#   TBS = sqrt(4^2 + 3^2) = 5 -> medium.
#   GAME 4 = RAS 1 + CEA>=20 1 + node 1 + TBS 3-9 1 + EHD 0 -> high.
#   Nordlinger 3 = age>60 1 + T4 0 + node 1 + DFI<24 1 + n>3 0 + size>5 0 -> medium.
PATIENT_A = {
    AGE: 67.0,
    T_STAGE: 3,
    NODE_POSITIVE: 1,
    DFI_MONTHS: 8.0,
    N_LESIONS: 3,
    LARGEST_CM: 4.0,
    CEA: 45.0,
    EXTRAHEPATIC: 0,
    RAS: 1,
    PROGRESSION_ON_CHEMO: 0,
    MONTHS_TO_SURGERY: 10.0,
}
# Patient B: 55 y, T4, node-negative, DFI 30 mo, 1 lesion of 12 cm, CEA 250, EHD, RAS wild-type,
#   progression on chemotherapy, 30 months to liver surgery.
#   Fong 2 = node 0 + DFI<12 0 + n>1 0 + size>5 1 + CEA>200 1 -> low.
#   Oslo 3 = size>5.5 1 + CEA>80 1 + <24 months 0 + progression 1.
#   TBS = sqrt(12^2 + 1^2) = 12.04 -> high.
#   GAME 5 = RAS 0 + CEA>=20 1 + node 0 + TBS>=9 2 + EHD 2 -> high.
#   Nordlinger 2 = age>60 0 + T4 1 + node 0 + DFI<24 0 + n>3 0 + size>5 1 -> low.
PATIENT_B = {
    AGE: 55.0,
    T_STAGE: 4,
    NODE_POSITIVE: 0,
    DFI_MONTHS: 30.0,
    N_LESIONS: 1,
    LARGEST_CM: 12.0,
    CEA: 250.0,
    EXTRAHEPATIC: 1,
    RAS: 0,
    PROGRESSION_ON_CHEMO: 1,
    MONTHS_TO_SURGERY: 30.0,
}
# Patient C: 72 y, T4, node-positive, synchronous (DFI 0), 8 lesions, largest 6 cm, CEA 90,
#   RAS mutant, no EHD, no progression, 6 months to liver surgery.
#   Fong 4 = node 1 + DFI<12 1 + n>1 1 + size>5 1 + CEA>200 0 -> high.
#   Oslo 3 = size>5.5 1 + CEA>80 1 + <24 months 1 + progression 0.
#   TBS = sqrt(6^2 + 8^2) = 10 -> high.
#   GAME 5 = RAS 1 + CEA>=20 1 + node 1 + TBS>=9 2 + EHD 0 -> high.
#   Nordlinger 6 = age>60 1 + T4 1 + node 1 + DFI<24 1 + n>3 1 + size>5 1 -> high.
PATIENT_C = {
    AGE: 72.0,
    T_STAGE: 4,
    NODE_POSITIVE: 1,
    DFI_MONTHS: 0.0,
    N_LESIONS: 8,
    LARGEST_CM: 6.0,
    CEA: 90.0,
    EXTRAHEPATIC: 0,
    RAS: 1,
    PROGRESSION_ON_CHEMO: 0,
    MONTHS_TO_SURGERY: 6.0,
}
# Patient D: no risk factor (the defaults). All scores 0, TBS sqrt(2^2 + 1^2) = 2.24 -> low.
PATIENT_D: dict = {}


def test_clinical_scores_match_hand_worked_patients():
    ids = ["CRLM-A", "CRLM-B", "CRLM-C", "CRLM-D"]
    out = clinical_scores(patients(PATIENT_A, PATIENT_B, PATIENT_C, PATIENT_D, index=ids))
    assert out["fong_score"].tolist() == [3, 2, 4, 0]
    assert out["fong_risk_group"].tolist() == ["high", "low", "high", "low"]
    assert out["oslo_score"].tolist() == [1, 3, 3, 0]
    assert out["tbs"].tolist() == pytest.approx([5.0, math.sqrt(145.0), 10.0, math.sqrt(5.0)])
    assert out["tbs_zone"].tolist() == ["medium", "high", "high", "low"]
    assert out["game_score"].tolist() == [4, 5, 5, 0]
    assert out["game_risk_group"].tolist() == ["high", "high", "high", "low"]
    assert out["nordlinger_score"].tolist() == [3, 2, 6, 0]
    assert out["nordlinger_risk_group"].tolist() == ["medium", "low", "high", "low"]


# --- missing input gives a missing score ----------------------------------------------------

SCORE_INPUTS = [
    (fong_score, FONG_INPUTS),
    (oslo_score, OSLO_INPUTS),
    (game_score, GAME_INPUTS),
    (nordlinger_score, NORDLINGER_INPUTS),
]
SCORE_INPUT_PAIRS = [(f, c) for f, cols in SCORE_INPUTS for c in cols]


@pytest.mark.parametrize("score, column", SCORE_INPUT_PAIRS, ids=lambda v: getattr(v, "__name__", v))
def test_score_is_missing_not_zero_when_any_input_is_missing(score, column):
    out = score(patients({column: pd.NA}, {}))
    assert out.dtype == "Int64"
    assert out.isna().tolist() == [True, False]


@pytest.mark.parametrize("score, column", SCORE_INPUT_PAIRS, ids=lambda v: getattr(v, "__name__", v))
def test_score_is_missing_even_when_other_points_are_certain(score, column):
    risk = {**ALL_RISK, column: pd.NA}
    if score is game_score and column == LARGEST_CM:
        risk[N_LESIONS] = 3  # 10 lesions alone fix TBS >= 9 (tested below); 3 leave the zone open
    out = score(patients(risk))
    assert pd.isna(one(out))


def test_scores_accept_nullable_float_columns():
    df = patients({CEA: 250.0}, {})
    df[CEA] = pd.array([250.0, pd.NA], dtype="Float64")
    assert fong_score(df).tolist() == [1, pd.NA]


def test_fong_score_is_missing_for_high_cea_with_unknown_dfi():
    assert pd.isna(one(fong_score(patients({CEA: 500.0, DFI_MONTHS: np.nan}))))


@pytest.mark.parametrize("column", TBS_INPUTS)
def test_tumour_burden_score_is_nan_when_an_input_is_missing(column):
    out = tumour_burden_score(patients({column: pd.NA}))
    assert out.dtype == "float64"
    assert np.isnan(one(out))


def test_clinical_scores_leave_risk_groups_missing_where_scores_are_missing():
    out = clinical_scores(patients({CEA: pd.NA, LARGEST_CM: pd.NA, AGE: pd.NA}))
    assert out.isna().all(axis=None)


@pytest.mark.parametrize(
    "group, score",
    [(fong_risk_group, 4), (game_risk_group, 5), (nordlinger_risk_group, 6), (tbs_zone, 10.0)],
)
def test_risk_group_is_missing_where_score_is_missing(group, score):
    out = group(pd.Series([score, pd.NA], dtype="Float64"))
    assert out.iloc[0] == "high"
    assert pd.isna(out.iloc[1])


# --- risk groups at their cut points --------------------------------------------------------


def test_fong_risk_group_is_low_up_to_2_and_high_from_3():
    out = fong_risk_group(pd.Series(range(6), dtype="Int64"))
    assert out.tolist() == ["low"] * 3 + ["high"] * 3
    assert out.cat.ordered and list(out.cat.categories) == ["low", "high"]


def test_game_risk_group_is_low_0_1_medium_2_3_high_from_4():
    out = game_risk_group(pd.Series(range(8), dtype="Int64"))
    assert out.tolist() == ["low"] * 2 + ["medium"] * 2 + ["high"] * 4


def test_nordlinger_risk_group_is_low_0_2_medium_3_4_high_5_6():
    out = nordlinger_risk_group(pd.Series(range(7), dtype="Int64"))
    assert out.tolist() == ["low"] * 3 + ["medium"] * 2 + ["high"] * 2


def test_tbs_zone_is_low_below_3_medium_below_9_high_from_9():
    out = tbs_zone(pd.Series([0.0, 2.999, 3.0, 8.5, 8.999, 9.0, 20.0]))
    assert out.tolist() == ["low", "low", "medium", "medium", "medium", "high", "high"]


def test_risk_group_rejects_score_outside_its_range():
    with pytest.raises(ValueError, match="fong_risk_group.*0-5"):
        fong_risk_group(pd.Series([6], dtype="Int64"))


# --- validation at the call -----------------------------------------------------------------


@pytest.mark.parametrize(
    "score, column",
    SCORE_INPUT_PAIRS + [(tumour_burden_score, c) for c in TBS_INPUTS],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_score_raises_naming_the_absent_column(score, column):
    df = patients().drop(columns=column)
    with pytest.raises(KeyError, match=column) as info:
        score(df)
    assert score.__name__.replace("tumour_burden_score", "tbs") in str(info.value)


def test_clinical_scores_name_every_absent_column():
    with pytest.raises(KeyError, match=f"{AGE}.*{PROGRESSION_ON_CHEMO}|{PROGRESSION_ON_CHEMO}.*{AGE}"):
        clinical_scores(patients().drop(columns=[AGE, PROGRESSION_ON_CHEMO]))


def test_score_rejects_binary_column_not_coded_0_1():
    with pytest.raises(ValueError, match=f"fong_score.*{NODE_POSITIVE}.*0/1"):
        fong_score(patients({NODE_POSITIVE: 2}))


def test_score_rejects_non_numeric_column():
    df = patients()
    df[CEA] = df[CEA].astype(object)
    df.loc[df.index[0], CEA] = "high"
    with pytest.raises(ValueError, match=f"fong_score.*{CEA}"):
        fong_score(df)


# --- shape of the output --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCORES))
def test_score_keeps_the_input_index_and_order(name):
    ids = ["CRLM-CT-1009", "CRLM-CT-1001", "CRLM-CT-1005"]
    df = patients(PATIENT_A, PATIENT_B, PATIENT_C, index=ids)
    out = SCORES[name](df)
    assert out.index.equals(df.index)
    pd.testing.assert_series_equal(SCORES[name](df.iloc[::-1]), out.iloc[::-1])


def test_clinical_scores_columns_and_index():
    ids = ["p7", "p3"]
    out = clinical_scores(patients(PATIENT_A, PATIENT_B, index=ids))
    assert list(out.columns) == [
        "fong_score",
        "fong_risk_group",
        "oslo_score",
        "game_score",
        "game_risk_group",
        "nordlinger_score",
        "nordlinger_risk_group",
        "tbs",
        "tbs_zone",
    ]
    assert out.index.equals(pd.Index(ids))


def test_scores_have_their_names_and_dtypes():
    df = patients()
    for fn, name in [
        (fong_score, "fong_score"),
        (oslo_score, "oslo_score"),
        (game_score, "game_score"),
        (nordlinger_score, "nordlinger_score"),
    ]:
        assert fn(df).name == name and fn(df).dtype == "Int64"
    assert tumour_burden_score(df).name == "tbs" and tumour_burden_score(df).dtype == "float64"


def test_scores_accept_an_empty_table():
    out = clinical_scores(patients().iloc[:0])
    assert len(out) == 0 and out["fong_score"].dtype == "Int64"


def test_score_criteria_use_the_published_cut_offs_at_their_boundaries():
    """Fong: CEA > 200, largest > 5 cm, DFI < 12 months, > 1 lesion; Oslo: > 5.5 cm, CEA > 80;
    GAME: CEA >= 20; Nordlinger: age > 60, DFI < 24 months, > 3 lesions. Missing stays missing."""
    from features.scores import score_criteria

    df = pd.DataFrame(
        {
            "cea_ng_ml": [200.0, 200.1, 20.0, 19.9, np.nan],
            "largest_lesion_cm": [5.0, 5.01, 5.5, 5.51, 1.0],
            "disease_free_interval_months": [12.0, 11.9, 24.0, 23.9, 0.0],
            "n_liver_lesions": [1, 2, 3, 4, np.nan],
            "age_years": [60.0, 60.5, 40.0, 70.0, 65.0],
        }
    )
    c = score_criteria(df)
    assert c["criterion_cea_over_200"].tolist()[:4] == [0.0, 1.0, 0.0, 0.0]
    assert c["criterion_cea_over_80"].tolist()[:4] == [1.0, 1.0, 0.0, 0.0]
    assert c["criterion_cea_20_or_more"].tolist()[:4] == [1.0, 1.0, 1.0, 0.0]
    assert c["criterion_largest_over_5cm"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert c["criterion_largest_over_5.5cm"].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert c["criterion_dfi_under_12m"].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert c["criterion_dfi_under_24m"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert c["criterion_more_than_1_lesion"].tolist()[:4] == [0.0, 1.0, 1.0, 1.0]
    assert c["criterion_more_than_3_lesions"].tolist()[:4] == [0.0, 0.0, 0.0, 1.0]
    assert c["criterion_age_over_60"].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert np.isnan(c["criterion_cea_over_200"].iloc[4]) and np.isnan(c["criterion_more_than_1_lesion"].iloc[4])
    # the Fong score is the sum of its criteria plus the node-positive item
    df["primary_node_positive"] = [1, 0, 0, 1, 0]
    fong = fong_score(df.iloc[:4])
    items = (
        c[
            [
                "criterion_cea_over_200",
                "criterion_largest_over_5cm",
                "criterion_dfi_under_12m",
                "criterion_more_than_1_lesion",
            ]
        ]
        .iloc[:4]
        .sum(axis=1)
        + df["primary_node_positive"].iloc[:4]
    )
    assert fong.astype(float).tolist() == items.tolist()


# --- an item known from any input that defines it (docs/scores.md) --------------------------


def _without_count(*flags):
    """NO_RISK patients whose lesion count is unknown but whose multiple-lesion flag is given."""
    df = patients(*({N_LESIONS: pd.NA} for _ in flags))
    df[MULTIPLE_LESIONS] = pd.array(list(flags), dtype="Int64")
    return df


def test_fong_more_than_one_tumour_from_the_multiple_lesions_flag():
    assert fong_score(_without_count(1, 0, pd.NA)).tolist() == [1, 0, pd.NA]


def test_count_wins_over_the_flag_when_both_are_given():
    df = patients({N_LESIONS: 1})
    df[MULTIPLE_LESIONS] = pd.array([1], dtype="Int64")
    assert one(fong_score(df)) == 0


def test_nordlinger_more_than_three_is_known_only_from_a_flag_of_0():
    # flag 0 = one lesion = not more than 3; flag 1 = 2 or more, which may or may not exceed 3
    assert nordlinger_score(_without_count(0, 1)).tolist() == [0, pd.NA]


def test_tumour_burden_score_counts_a_flag_of_0_as_one_lesion():
    out = tumour_burden_score(_without_count(0, 1))
    assert out.iloc[0] == pytest.approx(math.sqrt(2.0**2 + 1))
    assert np.isnan(out.iloc[1])


def test_game_tbs_zone_is_known_when_the_count_alone_fixes_it():
    out = game_score(patients({LARGEST_CM: pd.NA, N_LESIONS: 10}, {LARGEST_CM: pd.NA, N_LESIONS: 3}))
    assert out.tolist() == [2, pd.NA]  # TBS >= 10 whatever the diameter; TBS >= 3 leaves 1 or 2


def test_game_tbs_zone_from_the_flag_and_the_diameter():
    df = _without_count(1, 1)
    df[LARGEST_CM] = [9.5, 4.0]  # TBS >= 9.7: high (2 points); TBS >= 4.5 but open above: unknown
    assert game_score(df).tolist() == [2, pd.NA]


def test_dfi_items_from_synchronous_disease():
    df = patients({DFI_MONTHS: pd.NA}, {DFI_MONTHS: pd.NA})
    df[SYNCHRONOUS] = pd.array([1, 0], dtype="Int64")
    assert fong_score(df).tolist() == [1, pd.NA]
    assert nordlinger_score(df).tolist() == [1, pd.NA]


def test_oslo_no_progression_on_chemotherapy_not_given():
    df = patients(*({PROGRESSION_ON_CHEMO: pd.NA} for _ in range(3)))
    df[CHEMO_REGIMEN] = ["none", "folfox", None]
    df[CHEMO_CYCLES] = pd.array([pd.NA, 6, 0], dtype="Int64")
    assert oslo_score(df).tolist() == [0, pd.NA, 0]


def test_item_points_name_the_papers_items():
    points = item_points(patients(ALL_RISK), "fong")
    assert list(points.columns) == [
        "node-positive primary",
        "disease-free interval < 12 months",
        "more than 1 liver tumour",
        "largest tumour > 5 cm",
        "CEA > 200 ng/mL",
    ]
    assert points.iloc[0].tolist() == [1.0] * 5


# --- score_availability: the contract for training and the report ---------------------------


def test_score_availability_of_a_cohort_without_crlm_columns():
    table = pd.DataFrame({"patient_id": ["a", "b", "c"], AGE: [50.0, 70.0, 40.0]})
    out = score_availability(table)
    assert set(out) == {"fong", "oslo", "game", "nordlinger", "tbs"}
    fong = out["fong"]
    assert isinstance(fong, ScoreAvailability)
    assert (fong.n_patients, fong.n_computable) == (3, 0)
    assert fong.missing_items["n_liver_lesions or multiple_liver_lesions"] == 3
    assert fong.missing_items[CEA] == 3
    assert fong.reason == (
        "cea_ng_ml missing for 3/3 patients; disease_free_interval_months or synchronous "
        "missing for 3/3 patients; largest_lesion_cm missing for 3/3 patients"
    )
    # age is known, so Nordlinger lacks everything but age
    assert AGE not in out["nordlinger"].missing_items
    with pytest.raises(AttributeError):
        fong.n_patients = 4  # frozen


def test_score_availability_of_a_featurized_table_counts_what_is_missing():
    df = patients(PATIENT_A, {CEA: pd.NA}, {CEA: pd.NA, N_LESIONS: pd.NA})
    table = pd.concat([df, clinical_scores(df)], axis=1)
    fong = score_availability(table)["fong"]
    assert (fong.n_patients, fong.n_computable) == (3, 1)
    assert fong.missing_items == {CEA: 2, "n_liver_lesions or multiple_liver_lesions": 1}
    assert fong.reason == (
        "cea_ng_ml missing for 2/3 patients; n_liver_lesions or multiple_liver_lesions missing for 1/3 patients"
    )
    complete = score_availability(table.iloc[:1])["fong"]
    assert complete.reason == "" and complete.missing_items == {} and complete.available


def test_score_criteria_take_stand_in_inputs_as_the_scores_do():
    from features.scores import score_criteria

    df = _without_count(1, 0, pd.NA)
    df[DFI_MONTHS] = np.nan
    df[SYNCHRONOUS] = pd.array([1, 0, pd.NA], dtype="Int64")
    out = score_criteria(df)
    assert out["criterion_more_than_1_lesion"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(out["criterion_more_than_1_lesion"].iloc[2])
    assert out["criterion_more_than_3_lesions"].iloc[1] == 0.0 and np.isnan(
        out["criterion_more_than_3_lesions"].iloc[0]
    )
    assert out["criterion_dfi_under_12m"].iloc[0] == 1.0 and out["criterion_dfi_under_12m"].iloc[1:].isna().all()
