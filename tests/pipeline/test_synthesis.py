"""The simulated clinical world: literature marginals, calibrated outcomes, known truth.

A large clinical-only draw (no images) is compared with the targets of docs/design.md section 5 and the
published anchors (Fong C-index ~0.57-0.58 on real cohorts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from features import schema as s
from features.scores import fong_score
from pipeline import synthesis

N_LARGE = 20_000


@pytest.fixture(scope="module")
def large(world) -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthesis.simulate_cohort(N_LARGE, seed=2024, site="A", world=world)


def c_index(clinical: pd.DataFrame, risk) -> float:
    event = clinical[s.RECURRENCE_EVENT].astype(bool).to_numpy()
    time = clinical[s.RECURRENCE_MONTHS].to_numpy(float)
    return concordance_index_censored(event, time, np.asarray(risk, float))[0]


def responders(clinical: pd.DataFrame) -> np.ndarray:
    return clinical[s.RECIST].isin(s.RESPONDER_CATEGORIES).to_numpy()


@pytest.mark.parametrize(
    ("name", "fraction", "target", "tolerance"),
    [
        ("node-positive primary", lambda c: c[s.NODE_POSITIVE].mean(), 0.55, 0.02),
        ("synchronous", lambda c: c[s.SYNCHRONOUS].mean(), 0.45, 0.02),
        ("multiple metastases", lambda c: (c[s.N_LESIONS] > 1).mean(), 0.55, 0.02),
        ("CEA > 200 ng/mL", lambda c: (c[s.CEA] > 200).mean(), 0.09, 0.015),
        ("RAS mutant", lambda c: c[s.RAS].mean(), 0.35, 0.02),
        ("BRAF mutant", lambda c: c[s.BRAF].mean(), 0.05, 0.015),
        ("right-sided primary", lambda c: (c[s.PRIMARY_SITE] == "right_colon").mean(), 0.25, 0.02),
        ("extrahepatic disease", lambda c: c[s.EXTRAHEPATIC].mean(), 0.10, 0.015),
        ("positive margin", lambda c: c[s.MARGIN_POSITIVE].mean(), 0.10, 0.015),
        ("largest > 5 cm", lambda c: (c[s.LARGEST_CM] > 5).mean(), 0.22, 0.03),
    ],
)
def test_clinical_marginals_match_literature_targets(large, name, fraction, target, tolerance):
    clinical, _ = large
    assert fraction(clinical) == pytest.approx(target, abs=tolerance), name


def test_fong_high_risk_fraction_is_about_thirty_percent(large):
    clinical, _ = large
    high = (fong_score(clinical) >= 3).mean()
    assert high == pytest.approx(0.30, abs=0.05)


def test_ras_is_more_frequent_in_right_sided_primaries(large):
    clinical, _ = large
    right = clinical[s.PRIMARY_SITE] == "right_colon"
    assert clinical.loc[right, s.RAS].mean() > clinical.loc[~right, s.RAS].mean() + 0.1


def test_braf_and_ras_are_mutually_exclusive_and_anti_egfr_only_for_ras_wild_type(large):
    clinical, _ = large
    assert not ((clinical[s.RAS] == 1) & (clinical[s.BRAF] == 1)).any()
    anti_egfr = clinical[s.CHEMO_REGIMEN].str.endswith("anti_egfr")
    assert anti_egfr.any() and (clinical.loc[anti_egfr, s.RAS] == 0).all()


def test_synchronous_disease_has_zero_disease_free_interval(large):
    clinical, _ = large
    sync = clinical[s.SYNCHRONOUS] == 1
    assert (clinical.loc[sync, s.DFI_MONTHS] == 0).all()
    assert (clinical.loc[~sync, s.DFI_MONTHS] >= 0).all()
    assert (clinical[s.MONTHS_TO_SURGERY] >= clinical[s.DFI_MONTHS]).all()


def test_single_lesions_are_unilobar(large):
    clinical, _ = large
    assert (clinical.loc[clinical[s.N_LESIONS] == 1, s.BILOBAR] == 0).all()


def test_every_value_respects_the_schema(large):
    clinical, _ = large
    for column in s.COLUMNS:
        if column.name not in clinical:
            continue
        values = clinical[column.name]
        if column.kind == "category":
            assert values.isin(column.categories).all(), column.name
        elif column.kind == "binary":
            assert values.isin([0, 1]).all(), column.name
        elif column.minimum is not None:
            assert values.between(column.minimum, column.maximum).all(), column.name


def test_five_year_recurrence_is_sixty_to_seventy_percent_and_mostly_early(large):
    _, truth = large
    true_time = truth[synthesis.TRUTH_RECURRENCE_TIME]
    by_5y = (true_time <= 60).mean()
    by_2y = (true_time <= 24).mean()
    assert 0.60 <= by_5y <= 0.70
    assert by_2y > 0.5 * by_5y  # most recurrences within two years


def test_censoring_hides_some_recurrences(large):
    clinical, truth = large
    assert clinical[s.RECURRENCE_EVENT].mean() < (truth[synthesis.TRUTH_RECURRENCE_TIME] <= 120).mean()
    censored = clinical[s.RECURRENCE_EVENT] == 0
    assert (clinical.loc[censored, s.RECURRENCE_MONTHS] <= 120).all()


def test_responders_are_fifty_to_sixty_percent(large):
    clinical, _ = large
    assert 0.50 <= responders(clinical).mean() <= 0.60
    assert set(clinical[s.RECIST]) == set(s.RECIST_CATEGORIES)
    assert (clinical[s.PROGRESSION_ON_CHEMO] == (clinical[s.RECIST] == "PD")).all()


def test_higher_fong_score_means_shorter_recurrence_free_time(large):
    clinical, truth = large
    fong = fong_score(clinical)
    medians = truth.groupby(fong.to_numpy())[synthesis.TRUTH_RECURRENCE_TIME].median()
    assert medians.index.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.all(np.diff(medians.to_numpy()) < 0), medians.to_dict()


def test_fong_concordance_is_as_published_and_below_the_oracle(large):
    clinical, truth = large
    fong_c = c_index(clinical, fong_score(clinical))
    oracle_c = c_index(clinical, truth[synthesis.TRUTH_RECURRENCE_LP])
    assert 0.55 <= fong_c <= 0.65
    assert oracle_c <= 0.80
    assert oracle_c > fong_c + 0.05


def test_imaging_adds_what_the_clinical_part_lacks(large):
    clinical, truth = large
    clinical_only = c_index(clinical, truth[synthesis.TRUTH_RECURRENCE_CLINICAL_LP])
    imaging_only = c_index(clinical, truth[synthesis.TRUTH_RECURRENCE_IMAGING_LP])
    oracle = c_index(clinical, truth[synthesis.TRUTH_RECURRENCE_LP])
    assert oracle > max(clinical_only, imaging_only) + 0.02


def test_no_single_imaging_trait_decides_the_outcome(large):
    clinical, truth = large
    oracle_c = c_index(clinical, truth[synthesis.TRUTH_RECURRENCE_LP])
    oracle_auc = roc_auc_score(responders(clinical), truth[synthesis.TRUTH_RESPONSE_LP])
    for trait in synthesis.TRAITS:
        c = c_index(clinical, truth[trait])
        auc = roc_auc_score(responders(clinical), truth[trait])
        assert max(c, 1 - c) < oracle_c - 0.05, trait
        assert max(auc, 1 - auc) < oracle_auc - 0.05, trait


def test_response_oracle_is_informative_but_bounded_and_fong_is_weak(large):
    clinical, truth = large
    y = responders(clinical)
    oracle_auc = roc_auc_score(y, truth[synthesis.TRUTH_RESPONSE_LP])
    fong_auc = roc_auc_score(y, -fong_score(clinical).to_numpy(float))
    assert 0.65 <= oracle_auc <= 0.85
    assert fong_auc < 0.60
    assert truth[synthesis.TRUTH_RESPONSE_PROBABILITY].between(0, 1).all()


def test_permuted_outcomes_carry_no_signal(large):
    clinical, truth = large
    shuffled = clinical.copy()
    order = np.random.default_rng(0).permutation(len(clinical))
    shuffled[[s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS]] = clinical[
        [s.RECURRENCE_EVENT, s.RECURRENCE_MONTHS]
    ].to_numpy()[order]
    assert c_index(shuffled, truth[synthesis.TRUTH_RECURRENCE_LP]) == pytest.approx(0.5, abs=0.02)


def test_same_seed_gives_the_same_tables_and_another_seed_another_cohort(world):
    a_clinical, a_truth = synthesis.simulate_cohort(300, seed=5, site="A", world=world)
    b_clinical, b_truth = synthesis.simulate_cohort(300, seed=5, site="A", world=world)
    pd.testing.assert_frame_equal(a_clinical, b_clinical)
    pd.testing.assert_frame_equal(a_truth, b_truth)
    c_clinical, _ = synthesis.simulate_cohort(300, seed=6, site="A", world=world)
    assert not a_clinical.drop(columns=s.PATIENT_ID).equals(c_clinical.drop(columns=s.PATIENT_ID))
    assert set(a_clinical[s.PATIENT_ID]).isdisjoint(c_clinical[s.PATIENT_ID])


def test_sites_draw_different_patients_with_the_same_seed(world):
    a, _ = synthesis.simulate_cohort(300, seed=5, site="A", world=world)
    b, _ = synthesis.simulate_cohort(300, seed=5, site="B", world=world)
    assert not np.array_equal(a[s.CEA].to_numpy(), b[s.CEA].to_numpy())
    assert (b[s.SITE] == "B").all()


def test_patient_ids_are_unique_and_ordered(world):
    clinical, truth = synthesis.simulate_cohort(50, seed=1, site="A", world=world)
    assert clinical[s.PATIENT_ID].is_unique
    assert clinical[s.PATIENT_ID].tolist() == truth[s.PATIENT_ID].tolist()
    assert clinical[s.PATIENT_ID].iloc[0] == "A1-0001"
