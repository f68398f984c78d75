"""Clinical prognostic scores for colorectal liver metastases (DESIGN.md 4).

Pure, vectorised functions over the canonical clinical table (``features.schema``). Each score
function takes a DataFrame and returns a Series indexed like it, named after the score.
Integer scores are pandas nullable ``Int64``; the tumour burden score is ``float64``.

Missing input gives a missing score, never a zero: if any input of a score is missing for a
patient, that patient's score is ``<NA>``, even when the points already earned are certain.
Risk-group functions take a score Series and return an ordered categorical Series that is
missing where the score is missing.

Thresholds follow the wording of each paper: "more than" / ">" is strict, ">=" is inclusive.
Every threshold is a named constant below with its reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from features.schema import (
    AGE,
    CEA,
    COLUMN_BY_NAME,
    DFI_MONTHS,
    EXTRAHEPATIC,
    LARGEST_CM,
    MONTHS_TO_SURGERY,
    N_LESIONS,
    NODE_POSITIVE,
    PROGRESSION_ON_CHEMO,
    RAS,
    T_STAGE,
)

# --- Fong clinical risk score: Fong et al., Ann Surg 1999;230:309 ---------------------------
FONG_DFI_MONTHS = 12.0  # point if disease-free interval < 12 months
FONG_N_LESIONS = 1  # point if more than one liver tumour (> 1)
FONG_LARGEST_CM = 5.0  # point if largest tumour > 5 cm
FONG_CEA_NG_ML = 200.0  # point if CEA > 200 ng/mL
FONG_HIGH_RISK_MIN = 3  # low risk 0-2, high risk 3-5
FONG_MAX = 5

# --- Oslo score: Dueland et al., Ann Surg 2020;271:212 --------------------------------------
OSLO_LARGEST_CM = 5.5  # point if largest lesion > 5.5 cm
OSLO_CEA_NG_ML = 80.0  # point if CEA > 80 ug/L (= ng/mL)
OSLO_MONTHS_TO_SURGERY = 24.0  # point if < 24 months from primary resection to liver surgery
OSLO_MAX = 4

# --- Tumour burden score: Sasaki et al., Ann Surg 2018;267:132 ------------------------------
TBS_MEDIUM_MIN = 3.0  # zones: low < 3, medium 3 to < 9, high >= 9
TBS_HIGH_MIN = 9.0

# --- GAME score: Margonis et al., Br J Surg 2018;105:1210 -----------------------------------
GAME_CEA_NG_ML = 20.0  # point if CEA >= 20 ng/mL
GAME_RAS_POINTS = 1
GAME_CEA_POINTS = 1
GAME_NODE_POINTS = 1
GAME_TBS_MEDIUM_POINTS = 1  # TBS 3 to < 9 (Sasaki's zones; uses TBS_MEDIUM_MIN)
GAME_TBS_HIGH_POINTS = 2  # TBS >= 9 (uses TBS_HIGH_MIN)
GAME_EXTRAHEPATIC_POINTS = 2
GAME_MEDIUM_RISK_MIN = 2  # low 0-1, medium 2-3, high >= 4
GAME_HIGH_RISK_MIN = 4
GAME_MAX = 7

# --- Nordlinger score: Nordlinger et al., Cancer 1996;77:1254 -------------------------------
# Thresholds as tabulated in secondary sources (DESIGN.md 4); not yet checked against the paper.
NORDLINGER_AGE_YEARS = 60.0  # point if age > 60 years
NORDLINGER_T_STAGE = 4  # point if primary T4 (serosal invasion), i.e. T stage >= 4
NORDLINGER_DFI_MONTHS = 24.0  # point if disease-free interval < 24 months
NORDLINGER_N_LESIONS = 3  # point if more than 3 liver metastases (> 3)
NORDLINGER_LARGEST_CM = 5.0  # point if largest metastasis > 5 cm
NORDLINGER_MEDIUM_RISK_MIN = 3  # 0-2, 3-4, 5-6
NORDLINGER_HIGH_RISK_MIN = 5
NORDLINGER_MAX = 6

# Columns each score needs.
FONG_INPUTS = (NODE_POSITIVE, DFI_MONTHS, N_LESIONS, LARGEST_CM, CEA)
OSLO_INPUTS = (LARGEST_CM, CEA, MONTHS_TO_SURGERY, PROGRESSION_ON_CHEMO)
TBS_INPUTS = (LARGEST_CM, N_LESIONS)
GAME_INPUTS = (RAS, CEA, NODE_POSITIVE, LARGEST_CM, N_LESIONS, EXTRAHEPATIC)
NORDLINGER_INPUTS = (AGE, T_STAGE, NODE_POSITIVE, DFI_MONTHS, N_LESIONS, LARGEST_CM)

RISK_LEVELS_2 = ("low", "high")
RISK_LEVELS_3 = ("low", "medium", "high")


def _inputs(df: pd.DataFrame, score: str, columns: Sequence[str]) -> tuple[dict[str, pd.Series], pd.Series]:
    """Return the score's columns as float64 (NaN = missing) and the any-input-missing mask.

    Raises KeyError if a column is absent, ValueError if a column is not numeric or a binary
    column holds something other than 0/1.
    """
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise KeyError(
            f"{score}: missing column(s) {absent}; it needs {list(columns)} (canonical names from "
            f"features.schema)"
        )
    values: dict[str, pd.Series] = {}
    for column in columns:
        try:
            x = pd.to_numeric(df[column], errors="raise").astype("float64")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{score}: column {column!r} must be numeric ({err})") from err
        if COLUMN_BY_NAME[column].kind == "binary":
            bad = x.notna() & ~x.isin([0.0, 1.0])
            if bad.any():
                shown = {k: v for k, v in x[bad].head(5).items()}
                raise ValueError(
                    f"{score}: column {column!r} must be 0/1 (or missing); found {shown} "
                    f"(patient index: value)"
                )
        values[column] = x
    missing = pd.concat([x.isna() for x in values.values()], axis=1).any(axis=1)
    return values, missing


def _total(points: Sequence[pd.Series], missing: pd.Series, name: str) -> pd.Series:
    """Sum integer points per patient as Int64, <NA> where any input is missing."""
    total = pd.concat([p.astype("int64") for p in points], axis=1).sum(axis=1)
    return total.astype("Int64").mask(missing).rename(name)


def fong_score(df: pd.DataFrame) -> pd.Series:
    """Fong clinical risk score, 0-5 (Int64).

    One point each: node-positive primary; disease-free interval < 12 months; more than one
    liver tumour; largest tumour > 5 cm; CEA > 200 ng/mL. Fong et al., Ann Surg 1999;230:309.
    """
    x, missing = _inputs(df, "fong_score", FONG_INPUTS)
    points = [
        x[NODE_POSITIVE] == 1,
        x[DFI_MONTHS] < FONG_DFI_MONTHS,
        x[N_LESIONS] > FONG_N_LESIONS,
        x[LARGEST_CM] > FONG_LARGEST_CM,
        x[CEA] > FONG_CEA_NG_ML,
    ]
    return _total(points, missing, "fong_score")


def oslo_score(df: pd.DataFrame) -> pd.Series:
    """Oslo score, 0-4 (Int64). No published risk groups, so none is provided.

    One point each: largest lesion > 5.5 cm; CEA > 80 ng/mL; < 24 months from primary
    resection to liver surgery; progressive disease on chemotherapy.
    Dueland et al., Ann Surg 2020;271:212.
    """
    x, missing = _inputs(df, "oslo_score", OSLO_INPUTS)
    points = [
        x[LARGEST_CM] > OSLO_LARGEST_CM,
        x[CEA] > OSLO_CEA_NG_ML,
        x[MONTHS_TO_SURGERY] < OSLO_MONTHS_TO_SURGERY,
        x[PROGRESSION_ON_CHEMO] == 1,
    ]
    return _total(points, missing, "oslo_score")


def tumour_burden_score(df: pd.DataFrame) -> pd.Series:
    """Tumour burden score (float64): sqrt(largest diameter [cm]^2 + number of lesions^2).

    NaN if either input is missing. Sasaki et al., Ann Surg 2018;267:132.
    """
    x, _ = _inputs(df, "tbs", TBS_INPUTS)
    return np.sqrt(x[LARGEST_CM] ** 2 + x[N_LESIONS] ** 2).rename("tbs")


def game_score(df: pd.DataFrame) -> pd.Series:
    """GAME score, 0-7 (Int64). Margonis et al., Br J Surg 2018;105:1210.

    RAS mutant 1; CEA >= 20 ng/mL 1; node-positive primary 1; extrahepatic disease 2;
    tumour burden score: < 3 -> 0, 3 to < 9 -> 1, >= 9 -> 2. The paper writes the middle zone
    as "3-8"; TBS is continuous, so 8 < TBS < 9 falls in the middle zone (1 point), following
    Sasaki's zones < 3, 3-8.99, >= 9.
    """
    x, missing = _inputs(df, "game_score", GAME_INPUTS)
    tbs = tumour_burden_score(df)
    tbs_points = pd.Series(
        np.select(
            [tbs >= TBS_HIGH_MIN, tbs >= TBS_MEDIUM_MIN],
            [GAME_TBS_HIGH_POINTS, GAME_TBS_MEDIUM_POINTS],
            default=0,
        ),
        index=df.index,
    )
    points = [
        (x[RAS] == 1) * GAME_RAS_POINTS,
        (x[CEA] >= GAME_CEA_NG_ML) * GAME_CEA_POINTS,
        (x[NODE_POSITIVE] == 1) * GAME_NODE_POINTS,
        tbs_points,
        (x[EXTRAHEPATIC] == 1) * GAME_EXTRAHEPATIC_POINTS,
    ]
    return _total(points, missing, "game_score")


def nordlinger_score(df: pd.DataFrame) -> pd.Series:
    """Nordlinger score, 0-6 (Int64). Nordlinger et al., Cancer 1996;77:1254.

    One point each: age > 60 years; primary T4; node-positive primary; disease-free interval
    < 24 months; more than 3 liver metastases; largest metastasis > 5 cm. Thresholds as
    tabulated in secondary sources (DESIGN.md 4), not yet checked against the 1996 paper.
    """
    x, missing = _inputs(df, "nordlinger_score", NORDLINGER_INPUTS)
    points = [
        x[AGE] > NORDLINGER_AGE_YEARS,
        x[T_STAGE] >= NORDLINGER_T_STAGE,
        x[NODE_POSITIVE] == 1,
        x[DFI_MONTHS] < NORDLINGER_DFI_MONTHS,
        x[N_LESIONS] > NORDLINGER_N_LESIONS,
        x[LARGEST_CM] > NORDLINGER_LARGEST_CM,
    ]
    return _total(points, missing, "nordlinger_score")


def _group(
    score: pd.Series, lower_bounds: Sequence[float], labels: Sequence[str], maximum: float, name: str
) -> pd.Series:
    """Cut a score into ordered groups; group i holds lower_bounds[i] <= score < lower_bounds[i+1]."""
    x = pd.to_numeric(score, errors="raise").astype("float64")
    bad = x.notna() & ((x < 0) | (x > maximum))
    if bad.any():
        shown = {k: v for k, v in x[bad].head(5).items()}
        raise ValueError(f"{name}: score must be within 0-{maximum}; found {shown} (patient index: value)")
    bins = [-np.inf, *lower_bounds[1:], np.inf]
    groups = pd.cut(x, bins=bins, labels=list(labels), right=False, ordered=True)
    return pd.Series(groups, index=score.index, name=name)


def fong_risk_group(score: pd.Series) -> pd.Series:
    """Fong risk group from ``fong_score``: low 0-2, high 3-5 (ordered categorical)."""
    return _group(score, [0, FONG_HIGH_RISK_MIN], RISK_LEVELS_2, FONG_MAX, "fong_risk_group")


def game_risk_group(score: pd.Series) -> pd.Series:
    """GAME risk group from ``game_score``: low 0-1, medium 2-3, high >= 4 (ordered categorical)."""
    return _group(
        score, [0, GAME_MEDIUM_RISK_MIN, GAME_HIGH_RISK_MIN], RISK_LEVELS_3, GAME_MAX, "game_risk_group"
    )


def nordlinger_risk_group(score: pd.Series) -> pd.Series:
    """Nordlinger risk group from ``nordlinger_score``: low 0-2, medium 3-4, high 5-6."""
    return _group(
        score,
        [0, NORDLINGER_MEDIUM_RISK_MIN, NORDLINGER_HIGH_RISK_MIN],
        RISK_LEVELS_3,
        NORDLINGER_MAX,
        "nordlinger_risk_group",
    )


def tbs_zone(tbs: pd.Series) -> pd.Series:
    """TBS zone from ``tumour_burden_score``: low < 3, medium 3 to < 9, high >= 9 (Sasaki 2018)."""
    return _group(tbs, [0, TBS_MEDIUM_MIN, TBS_HIGH_MIN], RISK_LEVELS_3, np.inf, "tbs_zone")


SCORES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "fong": fong_score,
    "oslo": oslo_score,
    "game": game_score,
    "nordlinger": nordlinger_score,
    "tbs": tumour_burden_score,
}


CRITERION_PREFIX = "criterion_"


def _criterion(df: pd.DataFrame, column: str, test) -> pd.Series:
    """1.0 / 0.0 where ``column`` is known, NaN where it is missing."""
    x = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return test(x).astype("float64").where(x.notna())


def score_criteria(df: pd.DataFrame) -> pd.DataFrame:
    """The published cut-offs of the scores above as separate 0/1 features (NaN = missing input).

    A model given only a continuous CEA or diameter has to learn a threshold effect from a few
    hundred patients; the published thresholds (Fong 1999, Rees/Oslo, GAME: Margonis 2018,
    Nordlinger 1996) are prior knowledge it may use. Only items known before treatment; items
    equal to a canonical binary column (node-positive primary, extrahepatic disease) are not
    repeated.
    """
    p = CRITERION_PREFIX
    columns = {
        f"{p}dfi_under_{FONG_DFI_MONTHS:g}m": _criterion(df, DFI_MONTHS, lambda x: x < FONG_DFI_MONTHS),
        f"{p}dfi_under_{NORDLINGER_DFI_MONTHS:g}m": _criterion(df, DFI_MONTHS, lambda x: x < NORDLINGER_DFI_MONTHS),
        f"{p}more_than_{FONG_N_LESIONS}_lesion": _criterion(df, N_LESIONS, lambda x: x > FONG_N_LESIONS),
        f"{p}more_than_{NORDLINGER_N_LESIONS}_lesions": _criterion(df, N_LESIONS, lambda x: x > NORDLINGER_N_LESIONS),
        f"{p}largest_over_{FONG_LARGEST_CM:g}cm": _criterion(df, LARGEST_CM, lambda x: x > FONG_LARGEST_CM),
        f"{p}largest_over_{OSLO_LARGEST_CM:g}cm": _criterion(df, LARGEST_CM, lambda x: x > OSLO_LARGEST_CM),
        f"{p}cea_over_{FONG_CEA_NG_ML:g}": _criterion(df, CEA, lambda x: x > FONG_CEA_NG_ML),
        f"{p}cea_over_{OSLO_CEA_NG_ML:g}": _criterion(df, CEA, lambda x: x > OSLO_CEA_NG_ML),
        f"{p}cea_{GAME_CEA_NG_ML:g}_or_more": _criterion(df, CEA, lambda x: x >= GAME_CEA_NG_ML),
        f"{p}age_over_{NORDLINGER_AGE_YEARS:g}": _criterion(df, AGE, lambda x: x > NORDLINGER_AGE_YEARS),
    }
    return pd.DataFrame({name: column.rename(name) for name, column in columns.items()}, index=df.index)


def clinical_scores(df: pd.DataFrame) -> pd.DataFrame:
    """All clinical scores and risk groups, one row per input row, indexed like ``df``.

    Columns: fong_score, fong_risk_group, oslo_score, game_score, game_risk_group,
    nordlinger_score, nordlinger_risk_group, tbs, tbs_zone. Raises KeyError naming every
    absent column of every score before computing anything.
    """
    needs = {
        "fong_score": FONG_INPUTS,
        "oslo_score": OSLO_INPUTS,
        "game_score": GAME_INPUTS,
        "nordlinger_score": NORDLINGER_INPUTS,
        "tbs": TBS_INPUTS,
    }
    absent = {s: [c for c in cols if c not in df.columns] for s, cols in needs.items()}
    absent = {s: cols for s, cols in absent.items() if cols}
    if absent:
        raise KeyError(f"clinical_scores: missing column(s) by score: {absent}")
    fong, game, nordlinger, tbs = fong_score(df), game_score(df), nordlinger_score(df), tumour_burden_score(df)
    return pd.DataFrame(
        {
            "fong_score": fong,
            "fong_risk_group": fong_risk_group(fong),
            "oslo_score": oslo_score(df),
            "game_score": game,
            "game_risk_group": game_risk_group(game),
            "nordlinger_score": nordlinger,
            "nordlinger_risk_group": nordlinger_risk_group(nordlinger),
            "tbs": tbs,
            "tbs_zone": tbs_zone(tbs),
        },
        index=df.index,
    )
