"""Clinical prognostic scores for colorectal liver metastases (docs/design.md section 4).

Pure, vectorised functions over the canonical clinical table (``features.schema``). Each score
function takes a DataFrame and returns a Series indexed like it, named after the score.
Integer scores are pandas nullable ``Int64``; the tumour burden score is ``float64``.

Missing input gives a missing score, never a zero: if any item of a score is unknown for a
patient, that patient's score is ``<NA>``, even when the points already earned are certain.
An item is known when any canonical input that defines it is known (``ITEMS``, docs/scores.md):
Fong's "more than one tumour" from ``n_liver_lesions`` or from ``multiple_liver_lesions``.
Risk-group functions take a score Series and return an ordered categorical Series that is
missing where the score is missing.

Thresholds follow the wording of each paper: "more than" / ">" is strict, ">=" is inclusive.
Every threshold is a named constant below with its reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
# Thresholds as tabulated in secondary sources (docs/design.md section 4); not yet checked against the paper.
NORDLINGER_AGE_YEARS = 60.0  # point if age > 60 years
NORDLINGER_T_STAGE = 4  # point if primary T4 (serosal invasion), i.e. T stage >= 4
NORDLINGER_DFI_MONTHS = 24.0  # point if disease-free interval < 24 months
NORDLINGER_N_LESIONS = 3  # point if more than 3 liver metastases (> 3)
NORDLINGER_LARGEST_CM = 5.0  # point if largest metastasis > 5 cm
NORDLINGER_MEDIUM_RISK_MIN = 3  # 0-2, 3-4, 5-6
NORDLINGER_HIGH_RISK_MIN = 5
NORDLINGER_MAX = 6

# Columns each score needs, by the paper's own wording (its primary inputs). An item may also be
# known from another canonical input (``ITEMS`` below, docs/scores.md): more than one tumour from
# the ``multiple_liver_lesions`` flag, a disease-free interval under 12 months from synchronous
# disease, no progression on chemotherapy from no chemotherapy at all.
FONG_INPUTS = (NODE_POSITIVE, DFI_MONTHS, N_LESIONS, LARGEST_CM, CEA)
OSLO_INPUTS = (LARGEST_CM, CEA, MONTHS_TO_SURGERY, PROGRESSION_ON_CHEMO)
TBS_INPUTS = (LARGEST_CM, N_LESIONS)
GAME_INPUTS = (RAS, CEA, NODE_POSITIVE, LARGEST_CM, N_LESIONS, EXTRAHEPATIC)
NORDLINGER_INPUTS = (AGE, T_STAGE, NODE_POSITIVE, DFI_MONTHS, N_LESIONS, LARGEST_CM)

RISK_LEVELS_2 = ("low", "high")
RISK_LEVELS_3 = ("low", "medium", "high")

# --- items: what each score adds up, and which canonical inputs can tell it --------------------
#
# Every quantity an item reads is an interval per patient, [lower, upper] (equal when known
# exactly, [0 or 1, inf] when nothing is known). An item is known when its threshold falls
# outside the interval: e.g. "more than one tumour" is 1 when the lesion count is at least 2,
# whatever its exact value, so ``multiple_liver_lesions == 1`` defines it as well as a count does.

Values = dict[str, pd.Series]
Bounds = tuple[np.ndarray, np.ndarray]


def _bounds_exact(x: pd.Series, unknown_lower: float = 0.0) -> Bounds:
    """[x, x] where known, [unknown_lower, inf] where missing."""
    v = x.to_numpy(float)
    known = ~np.isnan(v)
    return np.where(known, v, unknown_lower), np.where(known, v, np.inf)


def _lesion_count(v: Values) -> Bounds:
    """Number of liver lesions: ``n_liver_lesions``; else ``multiple_liver_lesions`` 0 -> exactly
    1, 1 -> at least 2; else at least 1. Where both are given, the count is used (validation
    reports a count that contradicts the flag)."""
    n = v[N_LESIONS].to_numpy(float)
    flag = v[MULTIPLE_LESIONS].to_numpy(float)
    lower = np.where(~np.isnan(n), n, np.where(flag == 1, 2.0, 1.0))
    upper = np.where(~np.isnan(n), n, np.where(flag == 0, 1.0, np.inf))
    return lower, upper


def _dfi(v: Values) -> Bounds:
    """Disease-free interval (months): the value; else 0 for synchronous disease (by definition)."""
    d = v[DFI_MONTHS].to_numpy(float)
    sync = v[SYNCHRONOUS].to_numpy(float) == 1
    lower = np.where(~np.isnan(d), d, 0.0)
    upper = np.where(~np.isnan(d), d, np.where(sync, 0.0, np.inf))
    return lower, upper


def _tbs_bounds(v: Values) -> Bounds:
    """Tumour burden score sqrt(largest^2 + count^2) as an interval (monotone in both)."""
    largest_lo, largest_hi = _bounds_exact(v[LARGEST_CM])
    count_lo, count_hi = _lesion_count(v)
    return np.sqrt(largest_lo**2 + count_lo**2), np.sqrt(largest_hi**2 + count_hi**2)


def _point(one: np.ndarray, zero: np.ndarray, index: pd.Index, weight: float = 1.0) -> pd.Series:
    """``weight`` where ``one``, 0 where ``zero``, NaN (unknown) elsewhere."""
    return pd.Series(np.where(one, weight, np.where(zero, 0.0, np.nan)), index=index)


def _more_than(b: Bounds, threshold: float, index: pd.Index) -> pd.Series:
    return _point(b[0] > threshold, b[1] <= threshold, index)


def _at_least(b: Bounds, threshold: float, index: pd.Index) -> pd.Series:
    return _point(b[0] >= threshold, b[1] < threshold, index)


def _less_than(b: Bounds, threshold: float, index: pd.Index) -> pd.Series:
    return _point(b[1] < threshold, b[0] >= threshold, index)


def _flag(x: pd.Series, weight: float = 1.0) -> pd.Series:
    return (x * weight).astype("float64")


def _progression_on_chemo(v: Values) -> pd.Series:
    """Progression on pre-operative chemotherapy; 0 where no chemotherapy was given
    (``chemo_regimen`` none or ``chemo_cycles`` 0): one cannot progress on a treatment not given."""
    none = (v[CHEMO_REGIMEN] == "none").to_numpy(bool) | (v[CHEMO_CYCLES].to_numpy(float) == 0)
    given = v[PROGRESSION_ON_CHEMO]
    return given.where(given.notna(), pd.Series(np.where(none, 0.0, np.nan), index=given.index))


def _tbs_zone_points(v: Values, index: pd.Index) -> pd.Series:
    """GAME points of the TBS zone: < 3 -> 0, 3 to < 9 -> 1, >= 9 -> 2; unknown when the
    interval of the TBS straddles a cut."""
    lower, upper = _tbs_bounds(v)
    points = np.select(
        [lower >= TBS_HIGH_MIN, (lower >= TBS_MEDIUM_MIN) & (upper < TBS_HIGH_MIN), upper < TBS_MEDIUM_MIN],
        [GAME_TBS_HIGH_POINTS, GAME_TBS_MEDIUM_POINTS, 0],
        default=np.nan,
    )
    return pd.Series(points.astype(float), index=index)


def _exact_count(v: Values, index: pd.Index) -> pd.Series:
    lower, upper = _lesion_count(v)
    return pd.Series(np.where(lower == upper, lower, np.nan), index=index)


@dataclass(frozen=True)
class Item:
    """One item of a score: its wording, the canonical inputs that can tell it, its points.

    ``inputs`` holds one group per quantity the item reads; any column of a group may define
    it (``("n_liver_lesions", "multiple_liver_lesions")``), the first is the paper's own.
    ``points(values, index)`` returns float points, NaN where the item is unknown.
    """

    wording: str
    inputs: tuple[tuple[str, ...], ...]
    points: Callable[[Values, pd.Index], pd.Series]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for group in self.inputs for c in group)


_COUNT = (N_LESIONS, MULTIPLE_LESIONS)
_DFI = (DFI_MONTHS, SYNCHRONOUS)
_PROGRESSION = (PROGRESSION_ON_CHEMO, CHEMO_REGIMEN, CHEMO_CYCLES)

ITEMS: dict[str, tuple[Item, ...]] = {
    "fong": (
        Item("node-positive primary", ((NODE_POSITIVE,),), lambda v, i: _flag(v[NODE_POSITIVE])),
        Item(
            f"disease-free interval < {FONG_DFI_MONTHS:g} months",
            (_DFI,),
            lambda v, i: _less_than(_dfi(v), FONG_DFI_MONTHS, i),
        ),
        Item(
            f"more than {FONG_N_LESIONS} liver tumour",
            (_COUNT,),
            lambda v, i: _more_than(_lesion_count(v), FONG_N_LESIONS, i),
        ),
        Item(
            f"largest tumour > {FONG_LARGEST_CM:g} cm",
            ((LARGEST_CM,),),
            lambda v, i: _more_than(_bounds_exact(v[LARGEST_CM]), FONG_LARGEST_CM, i),
        ),
        Item(
            f"CEA > {FONG_CEA_NG_ML:g} ng/mL",
            ((CEA,),),
            lambda v, i: _more_than(_bounds_exact(v[CEA]), FONG_CEA_NG_ML, i),
        ),
    ),
    "oslo": (
        Item(
            f"largest lesion > {OSLO_LARGEST_CM:g} cm",
            ((LARGEST_CM,),),
            lambda v, i: _more_than(_bounds_exact(v[LARGEST_CM]), OSLO_LARGEST_CM, i),
        ),
        Item(
            f"CEA > {OSLO_CEA_NG_ML:g} ng/mL",
            ((CEA,),),
            lambda v, i: _more_than(_bounds_exact(v[CEA]), OSLO_CEA_NG_ML, i),
        ),
        Item(
            f"< {OSLO_MONTHS_TO_SURGERY:g} months from primary resection to liver surgery",
            ((MONTHS_TO_SURGERY,),),
            lambda v, i: _less_than(_bounds_exact(v[MONTHS_TO_SURGERY]), OSLO_MONTHS_TO_SURGERY, i),
        ),
        Item("progressive disease on chemotherapy", (_PROGRESSION,), lambda v, i: _progression_on_chemo(v)),
    ),
    "game": (
        Item("RAS mutant", ((RAS,),), lambda v, i: _flag(v[RAS], GAME_RAS_POINTS)),
        Item(
            f"CEA >= {GAME_CEA_NG_ML:g} ng/mL",
            ((CEA,),),
            lambda v, i: _at_least(_bounds_exact(v[CEA]), GAME_CEA_NG_ML, i) * GAME_CEA_POINTS,
        ),
        Item("node-positive primary", ((NODE_POSITIVE,),), lambda v, i: _flag(v[NODE_POSITIVE], GAME_NODE_POINTS)),
        Item("tumour burden score zone", ((LARGEST_CM,), _COUNT), _tbs_zone_points),
        Item("extrahepatic disease", ((EXTRAHEPATIC,),), lambda v, i: _flag(v[EXTRAHEPATIC], GAME_EXTRAHEPATIC_POINTS)),
    ),
    "nordlinger": (
        Item(
            f"age > {NORDLINGER_AGE_YEARS:g} years",
            ((AGE,),),
            lambda v, i: _more_than(_bounds_exact(v[AGE]), NORDLINGER_AGE_YEARS, i),
        ),
        Item("primary T4", ((T_STAGE,),), lambda v, i: _at_least(_bounds_exact(v[T_STAGE]), NORDLINGER_T_STAGE, i)),
        Item("node-positive primary", ((NODE_POSITIVE,),), lambda v, i: _flag(v[NODE_POSITIVE])),
        Item(
            f"disease-free interval < {NORDLINGER_DFI_MONTHS:g} months",
            (_DFI,),
            lambda v, i: _less_than(_dfi(v), NORDLINGER_DFI_MONTHS, i),
        ),
        Item(
            f"more than {NORDLINGER_N_LESIONS} liver metastases",
            (_COUNT,),
            lambda v, i: _more_than(_lesion_count(v), NORDLINGER_N_LESIONS, i),
        ),
        Item(
            f"largest metastasis > {NORDLINGER_LARGEST_CM:g} cm",
            ((LARGEST_CM,),),
            lambda v, i: _more_than(_bounds_exact(v[LARGEST_CM]), NORDLINGER_LARGEST_CM, i),
        ),
    ),
    # TBS is continuous: it needs the diameter and the exact count (flag 0 = exactly one lesion).
    "tbs": (
        Item("largest diameter", ((LARGEST_CM,),), lambda v, i: _flag(v[LARGEST_CM])),
        Item("number of lesions", (_COUNT,), _exact_count),
    ),
}
SCORE_COLUMNS: dict[str, str] = {
    "fong": "fong_score",
    "oslo": "oslo_score",
    "game": "game_score",
    "nordlinger": "nordlinger_score",
    "tbs": "tbs",
}
# score column -> the canonical columns it is computed from
SCORE_INPUTS: dict[str, tuple[str, ...]] = {
    "fong_score": FONG_INPUTS,
    "oslo_score": OSLO_INPUTS,
    "game_score": GAME_INPUTS,
    "nordlinger_score": NORDLINGER_INPUTS,
    "tbs": TBS_INPUTS,
}
# every column clinical_scores() writes, in its order (scores and their risk groups / zones)
SCORE_OUTPUTS: tuple[str, ...] = (
    "fong_score",
    "fong_risk_group",
    "oslo_score",
    "game_score",
    "game_risk_group",
    "nordlinger_score",
    "nordlinger_risk_group",
    "tbs",
    "tbs_zone",
)


def _values(df: pd.DataFrame, score: str, items: Sequence[Item], strict: bool = True) -> Values:
    """Every input column of ``items`` (float64, NaN = missing; category columns as text).

    ``strict``: raise KeyError when no column of an input group is in ``df`` (naming the
    group's first column), ValueError when a present column is not numeric or a binary column
    holds something other than 0/1. Otherwise absent or unreadable values count as missing.
    """
    name = SCORE_COLUMNS[score]
    if strict:
        absent = [g[0] for item in items for g in item.inputs if not any(c in df.columns for c in g)]
        if absent:
            primary = [g[0] for item in items for g in item.inputs]
            raise KeyError(
                f"{name}: missing column(s) {list(dict.fromkeys(absent))}; it needs "
                f"{list(dict.fromkeys(primary))} (canonical names from features.schema; "
                f"docs/scores.md lists what else can stand in for an item)"
            )
    values: Values = {}
    for column in dict.fromkeys(c for item in items for c in item.columns):
        kind = COLUMN_BY_NAME[column].kind
        if kind == "category":
            text = df[column] if column in df.columns else pd.Series(None, index=df.index, dtype=object)
            values[column] = text.astype(object).where(text.notna(), None)
            continue
        if column not in df.columns:
            values[column] = pd.Series(np.nan, index=df.index, dtype="float64")
            continue
        try:
            x = pd.to_numeric(df[column], errors="raise").astype("float64")
        except (TypeError, ValueError) as err:
            if strict:
                raise ValueError(f"{name}: column {column!r} must be numeric ({err})") from err
            x = pd.to_numeric(df[column], errors="coerce").astype("float64")
        if kind == "binary":
            bad = x.notna() & ~x.isin([0.0, 1.0])
            if bad.any() and strict:
                shown = {k: v for k, v in x[bad].head(5).items()}
                raise ValueError(
                    f"{name}: column {column!r} must be 0/1 (or missing); found {shown} (patient index: value)"
                )
            x = x.where(~bad)
        values[column] = x
    return values


def item_points(df: pd.DataFrame, score: str, strict: bool = True) -> pd.DataFrame:
    """Points of each item of ``score`` (a key of ``ITEMS``) per patient; NaN = item unknown.

    Columns are the items' wordings, in the paper's order. ``strict``: see ``_values``.
    """
    items = ITEMS[score]
    values = _values(df, score, items, strict)
    return pd.DataFrame(
        {item.wording: item.points(values, df.index).astype("float64").to_numpy() for item in items}, index=df.index
    )


def _score(df: pd.DataFrame, score: str) -> pd.Series:
    """Sum of the item points as Int64; <NA> where any item is unknown."""
    points = item_points(df, score)
    total = points.fillna(0).sum(axis=1).round().astype("int64").astype("Int64")
    return total.mask(points.isna().any(axis=1)).rename(SCORE_COLUMNS[score])


def fong_score(df: pd.DataFrame) -> pd.Series:
    """Fong clinical risk score, 0-5 (Int64).

    One point each: node-positive primary; disease-free interval < 12 months (0 months for
    synchronous disease); more than one liver tumour (``n_liver_lesions`` > 1, or
    ``multiple_liver_lesions`` = 1); largest tumour > 5 cm; CEA > 200 ng/mL.
    Fong et al., Ann Surg 1999;230:309.
    """
    return _score(df, "fong")


def oslo_score(df: pd.DataFrame) -> pd.Series:
    """Oslo score, 0-4 (Int64). No published risk groups, so none is provided.

    One point each: largest lesion > 5.5 cm; CEA > 80 ng/mL; < 24 months from primary
    resection to liver surgery; progressive disease on chemotherapy (0 when no chemotherapy
    was given). Dueland et al., Ann Surg 2020;271:212.
    """
    return _score(df, "oslo")


def tumour_burden_score(df: pd.DataFrame) -> pd.Series:
    """Tumour burden score (float64): sqrt(largest diameter [cm]^2 + number of lesions^2).

    NaN if the diameter or the exact count is unknown (``multiple_liver_lesions`` = 0 is a
    count of one). Sasaki et al., Ann Surg 2018;267:132.
    """
    points = item_points(df, "tbs")
    largest, count = points.iloc[:, 0], points.iloc[:, 1]
    return np.sqrt(largest**2 + count**2).astype("float64").rename("tbs")


def game_score(df: pd.DataFrame) -> pd.Series:
    """GAME score, 0-7 (Int64). Margonis et al., Br J Surg 2018;105:1210.

    RAS mutant 1; CEA >= 20 ng/mL 1; node-positive primary 1; extrahepatic disease 2;
    tumour burden score: < 3 -> 0, 3 to < 9 -> 1, >= 9 -> 2. The paper writes the middle zone
    as "3-8"; TBS is continuous, so 8 < TBS < 9 falls in the middle zone (1 point), following
    Sasaki's zones < 3, 3-8.99, >= 9. The zone is known whenever the inputs fix it, e.g. ten
    lesions give TBS >= 10 whatever the diameter.
    """
    return _score(df, "game")


def nordlinger_score(df: pd.DataFrame) -> pd.Series:
    """Nordlinger score, 0-6 (Int64). Nordlinger et al., Cancer 1996;77:1254.

    One point each: age > 60 years; primary T4; node-positive primary; disease-free interval
    < 24 months (0 months for synchronous disease); more than 3 liver metastases (not more
    than 3 when ``multiple_liver_lesions`` = 0); largest metastasis > 5 cm. Thresholds as
    tabulated in secondary sources (docs/design.md section 4), not yet checked against the 1996 paper.
    """
    return _score(df, "nordlinger")


# --- which scores a featurized table can give ------------------------------------------------


@dataclass(frozen=True)
class ScoreAvailability:
    """How many patients of a table have a score, and which inputs are missing for the others.

    ``missing_items``: input (``"cea_ng_ml"``, or ``"n_liver_lesions or multiple_liver_lesions"``
    where either defines the item) -> number of patients without the score for want of it.
    """

    n_patients: int
    n_computable: int
    missing_items: dict[str, int]

    @property
    def available(self) -> bool:
        """True when at least one patient has the score."""
        return self.n_computable > 0

    @property
    def reason(self) -> str:
        """'n_liver_lesions missing for 226/226 patients; ...' (most often missing first, at most
        three), or '' when every patient has the score."""
        if self.n_computable == self.n_patients:
            return ""
        worst = sorted(self.missing_items.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        text = "; ".join(f"{name} missing for {n}/{self.n_patients} patients" for name, n in worst if n)
        return text or f"not computable for {self.n_patients - self.n_computable}/{self.n_patients} patients"


def score_availability(table: pd.DataFrame) -> dict[str, ScoreAvailability]:
    """Per baseline score (``fong``, ``oslo``, ``game``, ``nordlinger``, ``tbs``): patients with
    the score and the inputs missing for the others.

    ``table`` is a featurized table (``crlm featurize``); pass the rows you use (e.g. status ok).
    A score column absent from the table counts as missing for everyone, and so does an input
    column. An input is counted for a patient whose score is missing, whose item reading it is
    unknown, and who lacks the input (for "a or b", lacks a, the paper's own input). Pure.
    """
    out: dict[str, ScoreAvailability] = {}
    for score, column in SCORE_COLUMNS.items():
        known = (table[column].notna() if column in table.columns else pd.Series(False, index=table.index)).to_numpy(
            bool
        )
        items = ITEMS[score]
        values = _values(table, score, items, strict=False)
        points = item_points(table, score, strict=False)
        missing: dict[str, int] = {}
        for item in items:
            unknown = points[item.wording].isna().to_numpy() & ~known
            for group in item.inputs:
                lacking = int((values[group[0]].isna().to_numpy() & unknown).sum())
                name = " or ".join(group)
                if lacking:
                    missing[name] = max(missing.get(name, 0), lacking)
        out[score] = ScoreAvailability(len(table), int(known.sum()), missing)
    return out


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
    return _group(score, [0, GAME_MEDIUM_RISK_MIN, GAME_HIGH_RISK_MIN], RISK_LEVELS_3, GAME_MAX, "game_risk_group")


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
    # Interval and lesion-count items from their scores' items, so that a stand-in input (the
    # multiple-lesion flag, synchronous disease) sets them as it sets the scores.
    fong = item_points(df, "fong", strict=False)
    nordlinger = item_points(df, "nordlinger", strict=False)
    fong_items, nordlinger_items = ITEMS["fong"], ITEMS["nordlinger"]
    columns = {
        f"{p}dfi_under_{FONG_DFI_MONTHS:g}m": fong[fong_items[1].wording],
        f"{p}dfi_under_{NORDLINGER_DFI_MONTHS:g}m": nordlinger[nordlinger_items[3].wording],
        f"{p}more_than_{FONG_N_LESIONS}_lesion": fong[fong_items[2].wording],
        f"{p}more_than_{NORDLINGER_N_LESIONS}_lesions": nordlinger[nordlinger_items[4].wording],
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
    absent = {s: [c for c in cols if c not in df.columns] for s, cols in SCORE_INPUTS.items()}
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
