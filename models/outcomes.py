"""The two outcomes, each built in one place (scikit-survival's convention, STYLE.md).

- Recurrence: a structured array with fields ``event`` (bool) and ``time`` (months), as
  `sksurv.util.Surv.from_arrays` builds it.
- Response: 1 for RECIST CR or PR, 0 for SD or PD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sksurv.util import Surv

from features import schema as s


def has_recurrence_outcome(df: pd.DataFrame) -> pd.Series:
    """Patients whose recurrence event and time are both known."""
    return df[s.RECURRENCE_EVENT].notna() & df[s.RECURRENCE_MONTHS].notna()


def has_response_outcome(df: pd.DataFrame) -> pd.Series:
    """Patients with a RECIST category."""
    return df[s.RECIST].isin(s.RECIST_CATEGORIES)


def recurrence_outcome(df: pd.DataFrame) -> np.ndarray:
    """Structured (event, time) array of recurrence after liver resection, time in months."""
    missing = ~has_recurrence_outcome(df)
    if missing.any():
        raise ValueError(
            f"recurrence outcome missing for {int(missing.sum())} patient(s), e.g. "
            f"{df.loc[missing, s.PATIENT_ID].head(3).tolist()}"
        )
    return Surv.from_arrays(
        event=df[s.RECURRENCE_EVENT].astype(bool).to_numpy(), time=df[s.RECURRENCE_MONTHS].astype(float).to_numpy()
    )


def response_outcome(df: pd.DataFrame) -> np.ndarray:
    """1 for a responder (CR or PR), 0 otherwise (SD or PD)."""
    missing = ~has_response_outcome(df)
    if missing.any():
        raise ValueError(
            f"RECIST response missing for {int(missing.sum())} patient(s), e.g. "
            f"{df.loc[missing, s.PATIENT_ID].head(3).tolist()}"
        )
    return df[s.RECIST].isin(s.RESPONDER_CATEGORIES).astype(int).to_numpy()
