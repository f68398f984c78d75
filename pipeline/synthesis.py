"""The synthetic CRLM cohort: clinical table, latent tumour biology and true outcomes.

Vectorised over patients and deterministic for a seed (docs/design.md section 5). The clinical table and
the outcomes do not depend on whether images are rendered: phantoms draw from their own
per-patient random streams (see `patient_seed`).

The true models, with every parameter in ``configs/world.yaml``:
- recurrence: Weibull proportional hazards, S(t | x) = exp(-(t / scale)^shape * exp(lp));
- response: P(CR or PR) = logistic(intercept + scale * sum of terms).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy.special import expit

from features import schema as s
from pipeline.world import ClinicalParams, RecurrenceParams, ResponseParams, TraitParams, World

# Columns of truth.csv besides the patient id: never read by the models.
TRUTH_RECURRENCE_LP = s.TRUTH_RECURRENCE_LP  # the names are the schema's (features.schema)
TRUTH_RECURRENCE_CLINICAL_LP = s.TRUTH_RECURRENCE_CLINICAL_LP
TRUTH_RECURRENCE_IMAGING_LP = s.TRUTH_RECURRENCE_IMAGING_LP
TRUTH_RESPONSE_LP = s.TRUTH_RESPONSE_LP
TRUTH_RESPONSE_PROBABILITY = s.TRUTH_RESPONSE_PROBABILITY
TRUTH_RECURRENCE_TIME = s.TRUTH_RECURRENCE_TIME
TRUTH_CENSORING_TIME = s.TRUTH_CENSORING_TIME
TRAIT_HETEROGENEITY = "trait_heterogeneity"
TRAIT_IRREGULARITY = "trait_irregularity"
TRAIT_RIM = "trait_rim_enhancement"
TRAIT_NECROSIS = "trait_necrotic_fraction"
TRAITS = (TRAIT_HETEROGENEITY, TRAIT_IRREGULARITY, TRAIT_RIM, TRAIT_NECROSIS)

_DECIMALS = {
    s.AGE: 0,
    s.DFI_MONTHS: 1,
    s.LARGEST_CM: 1,
    s.CEA: 1,
    s.CA19_9: 1,
    s.MONTHS_TO_SURGERY: 1,
    s.RECURRENCE_MONTHS: 2,
}


def site_code(site: str) -> int:
    """A stable integer for a site name, used to separate the random streams of sites."""
    return zlib.crc32(site.encode("utf-8"))


def patient_ids(n: int, seed: int, site: str) -> list[str]:
    """Synthetic identifiers such as ``A7-0001`` (site, seed, running number)."""
    width = max(4, len(str(n)))
    return [f"{site}{seed}-{i + 1:0{width}d}" for i in range(n)]


def patient_seed(seed: int, site: str, index: int) -> np.random.SeedSequence:
    """The random stream of one patient's phantom: independent of n, order and workers."""
    return np.random.SeedSequence([seed, site_code(site), index, 1])


def _correlated_normals(rng: np.random.Generator, base: np.ndarray, rho: float) -> np.ndarray:
    """Standard normals with correlation ``rho`` to the standard normals ``base``."""
    return rho * base + np.sqrt(1.0 - rho**2) * rng.standard_normal(base.shape)


def simulate_clinical(n: int, rng: np.random.Generator, p: ClinicalParams) -> pd.DataFrame:
    """Draw the canonical clinical inputs of ``n`` resected CRLM patients (no outcomes)."""
    age = np.clip(rng.normal(p.age_mean_years, p.age_sd_years, n), p.age_min_years, p.age_max_years)
    sex = np.where(rng.random(n) < p.male_fraction, "male", "female")
    ecog = rng.choice(len(p.ecog_probabilities), size=n, p=p.ecog_probabilities)
    sites = list(p.primary_site_probabilities)
    primary_site = rng.choice(sites, size=n, p=list(p.primary_site_probabilities.values()))
    t_stage = 1 + rng.choice(4, size=n, p=p.t_stage_probabilities)
    node = rng.random(n) < p.node_positive_fraction
    synchronous = rng.random(n) < p.synchronous_fraction
    dfi = np.where(synchronous, 0.0, rng.gamma(p.dfi_gamma_shape, p.dfi_gamma_scale_months, n))

    lesions = np.minimum(1 + rng.negative_binomial(p.lesions_negbin_n, p.lesions_negbin_p, n), p.lesions_max)
    z_size = rng.standard_normal(n)
    largest = np.clip(p.largest_median_cm * np.exp(p.largest_sigma * z_size), p.largest_min_cm, p.largest_max_cm)
    bilobar = (lesions > 1) & (rng.random(n) < p.bilobar_fraction_if_multiple)
    z_cea = _correlated_normals(rng, z_size, p.cea_burden_correlation)
    cea = p.cea_median_ng_ml * np.exp(p.cea_sigma * z_cea)
    z_ca = _correlated_normals(rng, z_cea, p.ca19_9_cea_correlation)
    ca19_9 = p.ca19_9_median_u_ml * np.exp(p.ca19_9_sigma * z_ca)

    right = primary_site == "right_colon"
    ras = rng.random(n) < np.where(right, p.ras_fraction_right, p.ras_fraction_other)
    braf = ~ras & (rng.random(n) < np.where(right, p.braf_fraction_right_ras_wt, p.braf_fraction_other_ras_wt))
    msi = rng.random(n) < np.where(braf, p.msi_fraction_braf, p.msi_fraction_other)
    extrahepatic = rng.random(n) < p.extrahepatic_fraction
    margin = rng.random(n) < p.margin_positive_fraction

    regimens = list(p.chemo_regimen_probabilities)
    regimen = rng.choice(regimens, size=n, p=list(p.chemo_regimen_probabilities.values()))
    regimen = np.where(ras & np.char.endswith(regimen.astype(str), "anti_egfr"), p.anti_egfr_fallback_regimen, regimen)
    cycles = rng.choice(p.chemo_cycles_choices, size=n, p=p.chemo_cycles_probabilities)
    to_surgery = dfi + cycles * p.months_per_cycle + p.surgery_delay_months

    df = pd.DataFrame(
        {
            s.AGE: age,
            s.SEX: sex,
            s.ECOG: ecog,
            s.PRIMARY_SITE: primary_site,
            s.NODE_POSITIVE: node,
            s.T_STAGE: t_stage,
            s.SYNCHRONOUS: synchronous,
            s.DFI_MONTHS: dfi,
            s.N_LESIONS: lesions,
            s.LARGEST_CM: largest,
            s.BILOBAR: bilobar,
            s.CEA: cea,
            s.CA19_9: ca19_9,
            s.EXTRAHEPATIC: extrahepatic,
            s.RAS: ras,
            s.BRAF: braf,
            s.MSI: msi,
            s.CHEMO_REGIMEN: regimen,
            s.CHEMO_CYCLES: cycles,
            s.MONTHS_TO_SURGERY: to_surgery,
            s.MARGIN_POSITIVE: margin,
        }
    )
    for column, decimals in _DECIMALS.items():
        if column in df:
            df[column] = df[column].round(decimals)
    return df


def simulate_traits(n: int, rng: np.random.Generator, p: TraitParams) -> pd.DataFrame:
    """Latent tumour biology per patient: h, g, rim ~ N(0, 1); necrotic fraction ~ Beta."""
    return pd.DataFrame(
        {
            TRAIT_HETEROGENEITY: rng.standard_normal(n),
            TRAIT_IRREGULARITY: rng.standard_normal(n),
            TRAIT_RIM: rng.standard_normal(n),
            TRAIT_NECROSIS: rng.beta(p.necrosis_beta_a, p.necrosis_beta_b, n),
        }
    )


def response_logit(clinical: pd.DataFrame, traits: pd.DataFrame, p: ResponseParams) -> np.ndarray:
    """The true logit of RECIST response (CR or PR) to pre-operative chemotherapy."""
    c, cut = p.coef, p.thresholds
    ras_wt = (clinical[s.RAS] == 0).to_numpy(float)
    anti_egfr = clinical[s.CHEMO_REGIMEN].str.endswith("anti_egfr").to_numpy(float)
    terms = (
        c.ras_wild_type * ras_wt
        + c.anti_egfr_if_ras_wild_type * anti_egfr * ras_wt
        + c.triplet_chemo * (clinical[s.CHEMO_REGIMEN] == "folfoxiri").to_numpy(float)
        + c.largest_over_5cm * (clinical[s.LARGEST_CM] > cut.largest_cm).to_numpy(float)
        + c.log1p_lesions * np.log1p(clinical[s.N_LESIONS].to_numpy(float))
        + c.heterogeneity * traits[TRAIT_HETEROGENEITY].to_numpy()
        + c.rim * traits[TRAIT_RIM].to_numpy()
        + c.necrosis * traits[TRAIT_NECROSIS].to_numpy()
        + c.cea_under_20 * (clinical[s.CEA] < cut.cea_ng_ml).to_numpy(float)
    )
    return p.intercept + p.scale * terms


def recurrence_lp(clinical: pd.DataFrame, traits: pd.DataFrame, p: RecurrenceParams) -> tuple[np.ndarray, np.ndarray]:
    """The true recurrence log hazard ratio, split into its clinical and imaging parts."""
    b, cut = p.log_hr, p.thresholds
    x = clinical
    clinical_part = (
        b.node_positive * x[s.NODE_POSITIVE].to_numpy(float)
        + b.dfi_under_12 * (x[s.DFI_MONTHS] < cut.dfi_months).to_numpy(float)
        + b.multiple_lesions * (x[s.N_LESIONS] > 1).to_numpy(float)
        + b.largest_over_5cm * (x[s.LARGEST_CM] > cut.largest_cm).to_numpy(float)
        + b.cea_over_200 * (x[s.CEA] > cut.cea_ng_ml).to_numpy(float)
        + b.ras_mutant * x[s.RAS].to_numpy(float)
        + b.extrahepatic * x[s.EXTRAHEPATIC].to_numpy(float)
        + b.margin_positive * x[s.MARGIN_POSITIVE].to_numpy(float)
        + b.progression_on_chemo * x[s.PROGRESSION_ON_CHEMO].to_numpy(float)
    )
    h = traits[TRAIT_HETEROGENEITY].to_numpy()
    g = traits[TRAIT_IRREGULARITY].to_numpy()
    imaging_part = (
        b.heterogeneity * h
        + b.irregularity * g
        + b.heterogeneity_x_irregularity * np.maximum(h, 0) * np.maximum(g, 0)
        + b.rim * traits[TRAIT_RIM].to_numpy()
    )
    return clinical_part, imaging_part


def simulate_cohort(n: int, seed: int, site: str, world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a cohort: the canonical clinical table with outcomes, and its truth table.

    Returns ``(clinical, truth)``, both with ``patient_id`` first and in the same order. The
    clinical table has no ``image``/``mask`` columns; `pipeline.cohort` adds them.
    """
    if n < 1:
        raise ValueError(f"a cohort needs at least one patient, got n={n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_code(site), 0]))
    clinical = simulate_clinical(n, rng, world.clinical)
    traits = simulate_traits(n, rng, world.traits)

    resp = world.response
    logit = response_logit(clinical, traits, resp)
    responder = rng.random(n) < expit(logit)
    complete = rng.random(n) < resp.complete_response_fraction_of_responders
    progression = rng.random(n) < resp.progression_fraction_of_non_responders
    recist = np.where(responder, np.where(complete, "CR", "PR"), np.where(progression, "PD", "SD"))
    clinical[s.PROGRESSION_ON_CHEMO] = recist == "PD"

    rec = world.recurrence
    lp_clinical, lp_imaging = recurrence_lp(clinical, traits, rec)
    lp = lp_clinical + lp_imaging
    # Inverse-transform sampling of the Weibull PH model.
    u = rng.random(n)
    event_time = rec.weibull_scale_months * (-np.log(u) * np.exp(-lp)) ** (1.0 / rec.weibull_shape)
    low, high = rec.censoring_uniform_months
    censor_time = np.minimum(rng.uniform(low, high, n), rng.exponential(rec.censoring_exponential_mean_months, n))
    clinical[s.RECURRENCE_EVENT] = event_time <= censor_time
    clinical[s.RECURRENCE_MONTHS] = np.round(np.minimum(event_time, censor_time), _DECIMALS[s.RECURRENCE_MONTHS])
    clinical[s.RECIST] = recist

    ids = patient_ids(n, seed, site)
    clinical.insert(0, s.PATIENT_ID, ids)
    clinical.insert(1, s.SITE, site)
    binary = [c.name for c in s.COLUMNS if c.kind == "binary" and c.name in clinical]
    clinical[binary] = clinical[binary].astype("int64")
    order = [c.name for c in s.COLUMNS if c.name in clinical]
    clinical = clinical[order]

    truth = pd.DataFrame(
        {
            s.PATIENT_ID: ids,
            TRUTH_RECURRENCE_LP: lp,
            TRUTH_RECURRENCE_CLINICAL_LP: lp_clinical,
            TRUTH_RECURRENCE_IMAGING_LP: lp_imaging,
            TRUTH_RESPONSE_LP: logit,
            TRUTH_RESPONSE_PROBABILITY: expit(logit),
            TRUTH_RECURRENCE_TIME: event_time,
            TRUTH_CENSORING_TIME: censor_time,
        }
    )
    truth = pd.concat([truth, traits], axis=1)
    return clinical, truth
