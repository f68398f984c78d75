"""Feature robustness across image perturbations: ICC(1,1) per feature (issue 13, docs/robustness.md).

ICC(1,1) is the one-way random-effects, single-measurement intraclass correlation of Shrout &
Fleiss (1979, Psychol Bull 86:420, case 1): subjects are patients, "judges" are perturbations
(each patient's perturbed images are a random sample of what another acquisition and another
reader could have given), so a feature keeps its ranking of patients when ICC is near 1:

    ICC(1,1) = (BMS - WMS) / (BMS + (k - 1) WMS)

with BMS the between-subjects and WMS the within-subject mean square over n subjects and k
perturbations. Zwanenburg et al. (Sci Rep 2019 9:614) use the same ICC to rank features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.aggregation import RULE_PREFIX
from features.schema import PATIENT_ID, PERTURBATION

MIN_ICC_PATIENTS = 10  # fewer patients than this: the ICC is not computed (issue 13, "Bad input")
MORPHOLOGY = "morphology"  # feature class (and image type) of the non-radiomics imaging columns
ICC_COLUMNS = ("feature", "icc", "n_patients", "n_perturbations", "image_type", "feature_class")


def icc_1_1(values: np.ndarray) -> float | np.ndarray:
    """ICC(1,1) of ``values`` (n subjects x k raters), or of every feature at once when
    ``values`` is n x k x p (returns p values). NaN where undefined: fewer than 2 subjects or
    raters, a non-finite value, or no variance at all (BMS + (k-1) WMS = 0)."""
    x = np.asarray(values, dtype=float)
    single = x.ndim == 2
    if single:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"values has shape {x.shape}; expected subjects x raters (x features)")
    n, k, p = x.shape
    if n < 2 or k < 2:
        result = np.full(p, np.nan)
    else:
        subject_means = x.mean(axis=1)  # n x p
        grand = subject_means.mean(axis=0)  # p
        bms = k * ((subject_means - grand) ** 2).sum(axis=0) / (n - 1)
        wms = ((x - subject_means[:, None, :]) ** 2).sum(axis=(0, 1)) / (n * (k - 1))
        denominator = bms + (k - 1) * wms
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.where(denominator > 0, (bms - wms) / denominator, np.nan)
        result[~np.isfinite(x).all(axis=(0, 1))] = np.nan
    return float(result[0]) if single else result


def feature_origin(column: str) -> tuple[str, str]:
    """(image type, feature class) of a patient-level imaging column: ``rad_<rule>__<image
    type>_<class>_<feature>`` as pyradiomics names it after aggregation (``original``,
    ``log-sigma-2-0-mm-3D``, ``wavelet-LLH``; ``firstorder``, ``glcm``, ``shape``, ...); the
    morphology columns (``patient_*``) are (``morphology``, ``morphology``)."""
    for prefix in RULE_PREFIX.values():
        if column.startswith(prefix):
            parts = column[len(prefix) :].split("_")
            if len(parts) >= 3:
                return parts[0], parts[1]
            break
    return MORPHOLOGY, MORPHOLOGY


def icc_table(
    rows: pd.DataFrame,
    features: Sequence[str],
    patients: Sequence[str] | None = None,
    min_patients: int = MIN_ICC_PATIENTS,
) -> pd.DataFrame:
    """One row per feature (`ICC_COLUMNS`): ICC(1,1) across the perturbations of ``rows``.

    ``rows`` has one row per (``patient_id``, ``perturbation``); ``patients`` restricts it (e.g.
    to those extracted in every perturbation). A feature is computed over the patients with a
    finite value in every perturbation (``n_patients``); with fewer than ``min_patients`` of
    them its ICC is NaN. Vectorised over features: a fully observed block of features is one
    array operation, only features with missing values are done one by one.
    """
    features = list(features)
    if patients is not None:
        rows = rows.loc[rows[PATIENT_ID].isin(list(patients))]
    perturbations = sorted(rows[PERTURBATION].unique())
    ids = sorted(rows[PATIENT_ID].unique())
    index = pd.MultiIndex.from_product([ids, perturbations], names=[PATIENT_ID, PERTURBATION])
    block = rows.set_index([PATIENT_ID, PERTURBATION])[features].reindex(index)
    cube = block.to_numpy(dtype=float).reshape(len(ids), len(perturbations), len(features))
    finite = np.isfinite(cube).all(axis=1)  # n x p: patient observed in every perturbation
    counts = finite.sum(axis=0)
    icc = np.full(len(features), np.nan)
    complete = finite.all(axis=0)
    if len(ids) >= min_patients and complete.any():
        icc[complete] = icc_1_1(cube[:, :, complete])
    for j in np.flatnonzero(~complete & (counts >= min_patients)):
        icc[j] = icc_1_1(cube[finite[:, j], :, j])
    icc[counts < min_patients] = np.nan
    origin = [feature_origin(f) for f in features]
    return pd.DataFrame(
        {
            "feature": features,
            "icc": icc,
            "n_patients": counts.astype(int),
            "n_perturbations": len(perturbations),
            "image_type": [o[0] for o in origin],
            "feature_class": [o[1] for o in origin],
        },
        columns=list(ICC_COLUMNS),
    )


def icc_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per image type: features, median ICC, share of features with ICC above 0.75 and 0.9."""
    grouped = table.groupby("image_type")["icc"]
    return pd.DataFrame(
        {
            "features": grouped.size(),
            "median_icc": grouped.median(),
            "share_above_0.75": grouped.apply(lambda v: float((v > 0.75).mean())),
            "share_above_0.9": grouped.apply(lambda v: float((v > 0.9).mean())),
        }
    )
