"""The patient-level feature table: clinical features, clinical scores, morphology, radiomics.

One row per input patient, always, in input order, with a ``status`` (``ok`` or why the
patient cannot be used) and a ``reason``. A patient whose validation or extraction failed
keeps its row (clinical values as given, imaging features missing), so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features import aggregation, extraction, radiomics
from features.schema import (
    CLINICAL_INPUTS,
    INVALID,
    NOT_EXTRACTED,
    OK,
    PATIENT_ID,
    REASON,
    STATUS,
)
from features.scores import clinical_scores, score_criteria

MORPHOLOGY_PREFIX = "patient_"


def extraction_status(patient_ids: Sequence[str], report: pd.DataFrame) -> pd.DataFrame:
    """Per patient: ``ok`` if every lesion was extracted, else the first failure and its reason."""
    failures = report.loc[report[extraction.STATUS] != extraction.OK]
    first = failures.groupby(PATIENT_ID, sort=False).first()
    status = pd.DataFrame({STATUS: OK, REASON: ""}, index=pd.Index(list(patient_ids), name=PATIENT_ID))
    absent = ~status.index.isin(report[PATIENT_ID])
    status.loc[absent, STATUS] = NOT_EXTRACTED
    status.loc[absent, REASON] = "no row in extraction_report.csv; run crlm extract on this cohort"
    failed = status.index.isin(first.index)
    status.loc[failed, STATUS] = first.loc[status.index[failed], extraction.STATUS].to_numpy()
    status.loc[failed, REASON] = first.loc[status.index[failed], extraction.REASON].to_numpy()
    return status


def imaging_features(lesions: pd.DataFrame, rules: Sequence[str]) -> pd.DataFrame:
    """Patient-level morphology (``patient_*``) and aggregated radiomics, indexed by patient."""
    if lesions.empty:
        return pd.DataFrame(index=pd.Index([], name=PATIENT_ID))
    morphology_columns = [c for c in lesions.columns if c.startswith(MORPHOLOGY_PREFIX) and c != PATIENT_ID]
    morphology = lesions.groupby(PATIENT_ID, sort=False)[morphology_columns].first()
    features = extraction.lesion_feature_columns(lesions)
    aggregated = aggregation.aggregate_lesions(lesions, features, rules, radiomics.LESION_VOLUME_ML, radiomics.LESION)
    return morphology.join(aggregated)


def patient_feature_table(
    clinical: pd.DataFrame,
    validation_status: pd.Series,
    lesions: pd.DataFrame | None = None,
    report: pd.DataFrame | None = None,
    rules: Sequence[str] = ("largest", "volume_weighted_mean"),
) -> pd.DataFrame:
    """Join clinical columns, clinical scores and (optionally) imaging features per patient.

    ``validation_status`` is indexed like ``clinical`` ("ok" or "invalid: ..."); ``clinical`` is
    best ``ValidationReport.table`` (typed, rejected cells missing). Without
    ``lesions``/``report`` (a clinical-only cohort) no imaging columns are added.
    """
    table = clinical.reset_index(drop=True).copy()
    valid = validation_status.reset_index(drop=True).astype(str)
    # A cohort without some canonical input (e.g. TCIA has no lesion count) gets missing
    # scores for those patients, not an error: absent columns count as missing values.
    # Only valid patients are scored: an invalid patient's scores stay missing.
    absent = [c for c in CLINICAL_INPUTS if c not in table]
    complete = table.reindex(columns=[*table.columns, *absent])
    usable = complete.loc[(valid == OK).to_numpy()]
    scored = pd.concat([clinical_scores(usable), score_criteria(usable)], axis=1).reindex(table.index)
    table = pd.concat([table, scored], axis=1)
    table[STATUS] = np.where(valid == OK, OK, INVALID)
    table[REASON] = np.where(valid == OK, "", valid.str.removeprefix(f"{INVALID}: "))
    if lesions is not None and report is not None:
        ids = table[PATIENT_ID].astype(str)
        status = extraction_status(ids.tolist(), report)
        imaging = imaging_features(lesions, rules)
        still_ok = table[STATUS] == OK
        failed = status[STATUS].to_numpy() != OK
        table.loc[still_ok & failed, STATUS] = status[STATUS].to_numpy()[still_ok & failed]
        table.loc[still_ok & failed, REASON] = status[REASON].to_numpy()[still_ok & failed]
        imaging = imaging.reindex(ids)
        imaging.loc[failed] = np.nan  # never a half-filled row
        table = pd.concat([table, imaging.reset_index(drop=True)], axis=1)
    front = [PATIENT_ID, STATUS, REASON]
    return table[front + [c for c in table.columns if c not in front]]
