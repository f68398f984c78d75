"""Patient-level aggregation of per-lesion radiomics (docs/design.md section 6).

Rules, named in ``configs/extraction.yaml``:
- ``largest``: the values of the patient's largest lesion (by voxel count);
- ``volume_weighted_mean``: the mean over all lesions weighted by lesion volume.
Lesion count and total tumour volume come with the per-patient morphology.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.schema import PATIENT_ID

RULE_PREFIX = {"largest": "rad_largest__", "volume_weighted_mean": "rad_vwmean__"}


def _check_rules(rules: Sequence[str]) -> None:
    unknown = [r for r in rules if r not in RULE_PREFIX]
    if unknown:
        raise ValueError(f"unknown aggregation rule(s) {unknown}; allowed: {', '.join(RULE_PREFIX)}")


def aggregate_lesions(
    lesions: pd.DataFrame, feature_columns: Sequence[str], rules: Sequence[str], volume_column: str, lesion_column: str
) -> pd.DataFrame:
    """One row per patient with each rule applied to each feature column.

    ``lesions`` has one row per lesion with ``patient_id``, ``lesion_column`` (1 = largest)
    and ``volume_column`` (mL). Returns a table indexed by ``patient_id``.
    """
    _check_rules(rules)
    features = list(feature_columns)
    parts = []
    if "largest" in rules:
        largest = lesions.sort_values([PATIENT_ID, lesion_column]).groupby(PATIENT_ID, sort=False).head(1)
        parts.append(largest.set_index(PATIENT_ID)[features].add_prefix(RULE_PREFIX["largest"]))
    if "volume_weighted_mean" in rules:
        weights = lesions[volume_column].to_numpy(float)[:, None]
        values = lesions[features].to_numpy(float)
        present = np.isfinite(values)
        weighted = pd.DataFrame(np.where(present, values * weights, 0.0), columns=features)
        total = pd.DataFrame(np.where(present, weights, 0.0), columns=features)
        ids = lesions[PATIENT_ID].to_numpy()
        numerator = weighted.groupby(ids, sort=False).sum()
        denominator = total.groupby(ids, sort=False).sum()
        mean = numerator / denominator.where(denominator > 0)
        mean.index.name = PATIENT_ID
        parts.append(mean.add_prefix(RULE_PREFIX["volume_weighted_mean"]))
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=pd.Index([], name=PATIENT_ID))
