"""Evaluation plots: risk-group Kaplan-Meier, calibration, ROC, time-dependent AUC, decision curves.

Every plot function returns ``(figure, data)``: a `matplotlib.figure.Figure` (built directly,
without pyplot, so there is no global figure state and no backend is chosen on import) and a
tidy DataFrame holding exactly the numbers drawn, so the same table can feed ``dvc plots``.
Every figure says which data it shows: a caption line at its bottom reads ``Data: <source>``.
`save_plot` writes both next to each other (``<name>.png``, ``<name>.csv``).

Conventions shared with the rest of `models`:

- Time is in months; a survival outcome is a ``time`` array and an ``event`` array (the fields
  of the structured array `models.outcomes.recurrence_outcome` builds).
- A risk score is "higher = worse"; risk groups use training cut-points and the rule of
  `models.predictor.risk_groups`: group ``i`` holds ``cutpoints[i-1] <= risk < cutpoints[i]``.
- A binary outcome is 0/1; a probability is the predicted probability of the outcome 1.
- Summary numbers that are not part of the drawn table (log-rank p, numbers at risk, dropped
  times) are in ``data.attrs``; they are not written to the CSV.

References: Kaplan & Meier, JASA 1958;53:457 (log-log bands: Kalbfleisch & Prentice 2002, 1.3);
Wilson, JASA 1927;22:209; Uno et al., JASA 2007;102:527 and Hung & Chiang, Can J Stat 2010;38:8
(cumulative/dynamic AUC); Vickers & Elkin, Med Decis Making 2006;26:565 (decision curves);
Vickers et al., BMC Med Inform Decis Mak 2008;8:53 (decision curves for time-to-event outcomes).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score, roc_curve
from sksurv.compare import compare_survival
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

AT_RISK_MONTHS: tuple[float, ...] = (0.0, 12.0, 24.0, 36.0, 48.0, 60.0)
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.05, 0.95, 19), 10).tolist())
TERTILES: tuple[float, float] = (1 / 3, 2 / 3)
CONFIDENCE = 0.95
Z = float(norm.ppf(0.5 + CONFIDENCE / 2))  # 1.959963...
TREAT_ALL = "treat all"
TREAT_NONE = "treat none"
TIME_LABEL = "Time (months)"
CROWDED_LEGEND = 4  # more entries than this: legend goes outside the axes
DPI = 120
CAPTION_WIDTH = 110  # characters per caption line


# --- validation ---------------------------------------------------------------------------------
def _array(values, caller: str, argument: str, n: int | None = None) -> np.ndarray:
    """A finite 1-d float array; raises ValueError naming the argument otherwise."""
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{caller}: {argument} must be numeric ({err})") from err
    if x.ndim != 1:
        raise ValueError(f"{caller}: {argument} must be one-dimensional, got shape {x.shape}")
    if n is not None and x.shape[0] != n:
        raise ValueError(f"{caller}: {argument} has {x.shape[0]} values, expected {n} (one per patient)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"{caller}: {argument} must be finite; found {x[bad[:5]].tolist()} at position(s) {bad[:5].tolist()}"
        )
    return x


def _probability(values, caller: str, argument: str, n: int) -> np.ndarray:
    x = _array(values, caller, argument, n)
    bad = np.flatnonzero((x < 0) | (x > 1))
    if bad.size:
        raise ValueError(
            f"{caller}: {argument} must lie in [0, 1]; found {x[bad[:5]].tolist()} at position(s) {bad[:5].tolist()}"
        )
    return x


def _binary(y, caller: str, argument: str = "y") -> np.ndarray:
    x = _array(y, caller, argument)
    bad = np.flatnonzero(~np.isin(x, (0.0, 1.0)))
    if bad.size:
        raise ValueError(
            f"{caller}: {argument} must be 0/1; found {x[bad[:5]].tolist()} at position(s) {bad[:5].tolist()}"
        )
    return x.astype(int)


def _survival(time, event, caller: str) -> tuple[np.ndarray, np.ndarray]:
    t = _array(time, caller, "time")
    if (t < 0).any():
        raise ValueError(f"{caller}: time must be >= 0 months; found minimum {t.min()}")
    e = _binary(event, caller, "event").astype(bool)
    if e.shape[0] != t.shape[0]:
        raise ValueError(f"{caller}: time has {t.shape[0]} values but event has {e.shape[0]}")
    return t, e


def _thresholds(thresholds: Sequence[float], caller: str) -> np.ndarray:
    pt = _array(thresholds, caller, "thresholds")
    if pt.size == 0 or ((pt <= 0) | (pt >= 1)).any():
        raise ValueError(f"{caller}: thresholds must be non-empty and inside (0, 1); got {pt.tolist()}")
    return pt


def _model_arrays(
    values: Mapping[str, np.ndarray],
    caller: str,
    argument: str,
    n: int,
    probability: bool = True,
    reserved: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    if not values:
        raise ValueError(f"{caller}: {argument} must name at least one model")
    clash = [name for name in values if name in reserved]
    if clash:
        raise ValueError(f"{caller}: model name(s) {clash} are reserved for the reference curves {list(reserved)}")
    check = _probability if probability else _array
    return {str(name): check(v, caller, f"{argument}[{name!r}]", n) for name, v in values.items()}


# --- figure helpers -----------------------------------------------------------------------------
def _figure(figsize: tuple[float, float] = (7.0, 5.0)) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def caption(fig: Figure, source: str) -> None:
    """The data-source line at the bottom of the figure (laid out by constrained layout)."""
    text = f"Data: {source.strip() or 'source not stated'}"
    fig.supxlabel(textwrap.fill(text, CAPTION_WIDTH), x=0.01, ha="left", fontsize=8, color="0.3")


def _legend(fig: Figure, ax: Axes, title: str | None = None, inside: str = "best") -> None:
    """Legend inside the axes, or outside on the right when it has many entries."""
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > CROWDED_LEGEND:
        fig.legend(loc="outside right upper", title=title, fontsize=8, title_fontsize=8)
    else:
        ax.legend(loc=inside, title=title, fontsize=8, title_fontsize=8)


def _time_ticks(at_risk_times: np.ndarray, x_max: float) -> np.ndarray:
    """The at-risk times, continued at their last spacing up to ``x_max``."""
    ticks = np.unique(at_risk_times)
    step = float(np.diff(ticks)[-1]) if ticks.size > 1 else 12.0
    return np.r_[ticks, np.arange(ticks[-1] + step, x_max + 1e-9, step)]


def _format_p(p: float) -> str:
    if not np.isfinite(p):
        return "log-rank p not computable (fewer than two non-empty groups)"
    return "log-rank p < 0.001" if p < 0.001 else f"log-rank p = {p:.3f}"


# --- Kaplan-Meier ---------------------------------------------------------------------------------
def _km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kaplan-Meier steps with 95% log-log bands, starting at (0, 1)."""
    x, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log", conf_level=CONFIDENCE)
    lo, hi = ci
    if x[0] > 0:
        x, s, lo, hi = np.r_[0.0, x], np.r_[1.0, s], np.r_[1.0, lo], np.r_[1.0, hi]
    return x, s, lo, hi


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """Kaplan-Meier survival at ``horizon`` with its 95% log-log interval.

    NaN if follow-up ends before the horizon while the curve is above 0 (the estimate is
    undefined there; it is not carried forward).
    """
    if time.size == 0:
        return np.nan, np.nan, np.nan
    x, s, lo, hi = _km(time, event)
    if horizon > x[-1] and s[-1] > 0:
        return np.nan, np.nan, np.nan
    i = np.searchsorted(x, horizon, side="right") - 1
    return float(s[i]), float(lo[i]), float(hi[i])


def risk_group_cutpoints(train_risk, quantiles: Sequence[float] = TERTILES) -> list[float]:
    """Risk-group cut-points: quantiles of the TRAINING risk (tertiles by default).

    Apply them unchanged to the test split (`kaplan_meier_by_risk_group`,
    `models.predictor.risk_groups`). With a discrete score, cut-points can tie and a group be empty.
    """
    risk = _array(train_risk, "risk_group_cutpoints", "train_risk")
    q = _array(quantiles, "risk_group_cutpoints", "quantiles")
    if risk.size == 0:
        raise ValueError("risk_group_cutpoints: train_risk is empty")
    if q.size == 0 or ((q <= 0) | (q >= 1)).any() or (np.diff(q) <= 0).any():
        raise ValueError(f"risk_group_cutpoints: quantiles must be increasing and inside (0, 1); got {q.tolist()}")
    return [float(c) for c in np.quantile(risk, q)]


def _group_names(n_groups: int) -> tuple[str, ...]:
    if n_groups == 2:
        return ("low", "high")
    if n_groups == 3:
        return ("low", "intermediate", "high")  # = models.predictor.GROUP_NAMES
    return tuple(f"group {i + 1}" for i in range(n_groups))


def kaplan_meier_by_risk_group(
    time,
    event,
    risk,
    cutpoints: Sequence[float],
    group_names: Sequence[str] | None = None,
    source: str = "",
    at_risk_times: Sequence[float] = AT_RISK_MONTHS,
) -> tuple[Figure, pd.DataFrame]:
    """Kaplan-Meier curves of risk groups with 95% log-log bands, log-rank test and numbers at risk.

    Patients fall into ``len(cutpoints) + 1`` groups, lowest risk first:
    ``cutpoints[i-1] <= risk < cutpoints[i]``. Cut-points must come from the training split
    (`risk_group_cutpoints`). Default names: low/high, low/intermediate/high, else group 1..k.

    Returns ``(figure, data)``; data columns ``group, time, survival, ci_low, ci_high`` (one row
    per step, starting at time 0, survival 1). ``data.attrs`` holds ``logrank_p`` and
    ``logrank_chisq`` (NaN with fewer than two non-empty groups), ``at_risk``
    ({group: [n at each of at_risk_times]}), ``at_risk_times`` and ``cutpoints``.
    Log-rank: `sksurv.compare.compare_survival`.
    """
    caller = "kaplan_meier_by_risk_group"
    t, e = _survival(time, event, caller)
    r = _array(risk, caller, "risk", t.size)
    cuts = _array(cutpoints, caller, "cutpoints")
    if cuts.size == 0 or (np.diff(cuts) < 0).any():
        raise ValueError(f"{caller}: cutpoints must be non-empty and non-decreasing; got {cuts.tolist()}")
    names = tuple(group_names) if group_names is not None else _group_names(cuts.size + 1)
    if len(names) != cuts.size + 1 or len(set(names)) != len(names):
        raise ValueError(
            f"{caller}: group_names must be {cuts.size + 1} distinct names for {cuts.size} "
            f"cut-point(s); got {list(names)}"
        )
    times_at_risk = _array(at_risk_times, caller, "at_risk_times")
    group = np.searchsorted(cuts, r, side="right")  # same rule as models.predictor.risk_groups

    rows, at_risk = [], {}
    for g, name in enumerate(names):
        member = group == g
        at_risk[name] = [int((t[member] >= a).sum()) for a in times_at_risk]
        if member.any():
            x, s, lo, hi = _km(t[member], e[member])
            rows.append(pd.DataFrame({"group": name, "time": x, "survival": s, "ci_low": lo, "ci_high": hi}))
    data = pd.concat(rows, ignore_index=True)
    data["group"] = data["group"].astype(str)

    present = np.unique(group)
    p = chisq = np.nan
    if present.size >= 2:
        chisq, p = compare_survival(Surv.from_arrays(event=e, time=t), np.asarray(names, dtype=object)[group])
        chisq, p = float(chisq), float(p)

    n_rows = len(names)
    fig = _figure((9.5, 5.0 + 0.22 * n_rows))
    ax, table = fig.subplots(2, 1, sharex=True, height_ratios=[4.0, 0.35 + 0.22 * n_rows])
    colours = {}
    for g, name in enumerate(names):
        member = group == g
        label = f"{name} (n={int(member.sum())}, {int(e[member].sum())} events)"
        sub = data[data["group"] == name]
        if sub.empty:
            (line,) = ax.plot([], [], label=label)
        else:
            (line,) = ax.step(sub["time"], sub["survival"], where="post", label=label)
            ax.fill_between(
                sub["time"], sub["ci_low"], sub["ci_high"], step="post", alpha=0.15, color=line.get_color(), linewidth=0
            )
        colours[name] = line.get_color()
    x_max = max(float(t.max()), float(times_at_risk.max()))
    ax.set_xlim(0, x_max * 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Event-free probability (95% CI)")
    ax.set_title(
        f"Kaplan-Meier by risk group (training cut-points: {', '.join(f'{c:.3g}' for c in cuts)})", fontsize=10
    )
    ax.grid(True, alpha=0.4)
    ax.tick_params(labelbottom=True)
    ax.set_xticks(_time_ticks(times_at_risk, x_max))
    ax.set_xlabel(TIME_LABEL)
    # outside the data: curves and bands fill the axes wherever they happen to fall
    fig.legend(loc="outside right upper", title=_format_p(p), fontsize=8, title_fontsize=8)

    for row, name in enumerate(names):
        for a, n in zip(times_at_risk, at_risk[name], strict=True):
            table.text(a, n_rows - 1 - row, str(n), ha="center", va="center", fontsize=8, color=colours[name])
    table.set_ylim(-0.6, n_rows - 0.4)
    table.set_yticks(range(n_rows), labels=list(reversed(names)), fontsize=8)
    for label, name in zip(table.get_yticklabels(), reversed(names), strict=True):
        label.set_color(colours[name])
    table.tick_params(axis="x", bottom=False, labelbottom=False)
    table.tick_params(axis="y", left=False, pad=14)  # keep names clear of the counts at time 0
    for spine in table.spines.values():
        spine.set_visible(False)
    table.set_title("Number at risk", loc="left", fontsize=8)
    caption(fig, source)

    data.attrs.update(
        logrank_p=p, logrank_chisq=chisq, at_risk=at_risk, at_risk_times=times_at_risk.tolist(), cutpoints=cuts.tolist()
    )
    return fig, data


# --- calibration ----------------------------------------------------------------------------------
def _quantile_bins(predicted: np.ndarray, bins: int, caller: str) -> np.ndarray:
    """Bin number 0..k-1 by quantiles of the prediction; tied quantiles merge bins (k <= bins)."""
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"{caller}: bins must be a positive integer; got {bins!r}")
    if predicted.size < bins:
        raise ValueError(f"{caller}: {predicted.size} patient(s) cannot fill {bins} bins")
    return np.asarray(pd.qcut(predicted, bins, labels=False, duplicates="drop"), dtype=int)


def _calibration_figure(data: pd.DataFrame, title: str, xlabel: str, ylabel: str, source: str) -> Figure:
    fig = _figure((6.0, 6.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfect calibration")
    ax.errorbar(
        data["predicted"],
        data["observed"],
        yerr=[data["observed"] - data["ci_low"], data["ci_high"] - data["observed"]],
        fmt="o",
        capsize=3,
        label="quantile bin (95% CI)",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper left", fontsize=8)
    caption(fig, source)
    return fig


def survival_calibration(
    time, event, predicted_survival_at_h, horizon: float, bins: int = 5, source: str = ""
) -> tuple[Figure, pd.DataFrame]:
    """Calibration of predicted survival at ``horizon`` months against Kaplan-Meier within bins.

    Patients are binned by quantiles of their predicted S(h); per bin, ``predicted`` is the
    mean predicted S(h) and ``observed`` the Kaplan-Meier S(h) with its 95% log-log interval
    (NaN if the bin's follow-up ends before h). Data columns ``bin, predicted, observed,
    ci_low, ci_high, n``; ``bins`` rows unless tied predictions merge quantiles.
    """
    caller = "survival_calibration"
    t, e = _survival(time, event, caller)
    predicted = _probability(predicted_survival_at_h, caller, "predicted_survival_at_h", t.size)
    h = float(horizon)
    if not np.isfinite(h) or h <= 0:
        raise ValueError(f"{caller}: horizon must be a positive number of months; got {horizon!r}")
    which = _quantile_bins(predicted, bins, caller)
    rows = []
    for b in np.unique(which):
        member = which == b
        s, lo, hi = _km_at(t[member], e[member], h)
        rows.append(
            {
                "bin": int(b) + 1,
                "predicted": float(predicted[member].mean()),
                "observed": s,
                "ci_low": lo,
                "ci_high": hi,
                "n": int(member.sum()),
            }
        )
    data = pd.DataFrame(rows)
    fig = _calibration_figure(
        data,
        f"Calibration at {h:g} months ({len(data)} quantile bins, n={t.size})",
        f"Predicted survival at {h:g} months (bin mean)",
        f"Observed Kaplan-Meier survival at {h:g} months",
        source,
    )
    return fig, data


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson, JASA 1927;22:209), from
    `scipy.stats.binomtest`; NaN for an empty bin."""
    if n <= 0:
        return np.nan, np.nan
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def binary_calibration(y, probability, bins: int = 10, source: str = "") -> tuple[Figure, pd.DataFrame]:
    """Calibration of predicted probabilities: observed fraction with Wilson 95% CI per quantile bin.

    Data columns ``bin, predicted, observed, ci_low, ci_high, n``; ``bins`` rows unless tied
    predictions merge quantiles.
    """
    caller = "binary_calibration"
    outcome = _binary(y, caller)
    p = _probability(probability, caller, "probability", outcome.size)
    which = _quantile_bins(p, bins, caller)
    rows = []
    for b in np.unique(which):
        member = which == b
        n, k = int(member.sum()), int(outcome[member].sum())
        lo, hi = wilson_interval(k, n)
        rows.append(
            {
                "bin": int(b) + 1,
                "predicted": float(p[member].mean()),
                "observed": k / n,
                "ci_low": lo,
                "ci_high": hi,
                "n": n,
            }
        )
    data = pd.DataFrame(rows)
    fig = _calibration_figure(
        data,
        f"Calibration ({len(data)} quantile bins, n={outcome.size}, {int(outcome.sum())} events)",
        "Predicted probability (bin mean)",
        "Observed fraction",
        source,
    )
    return fig, data


# --- discrimination -------------------------------------------------------------------------------
def roc_curves(y, probabilities: Mapping[str, np.ndarray], source: str = "") -> tuple[Figure, pd.DataFrame]:
    """ROC curves of several models on one axes, AUC in the legend.

    Data columns ``model, fpr, tpr`` (`sklearn.metrics.roc_curve`, from (0, 0) to (1, 1));
    ``data.attrs["auc"]`` is {model: ROC AUC}.
    """
    caller = "roc_curves"
    outcome = _binary(y, caller)
    if outcome.min() == outcome.max():
        raise ValueError(f"{caller}: y holds only {outcome[0]}s; ROC needs both outcomes")
    scores = _model_arrays(probabilities, caller, "probabilities", outcome.size, probability=False)
    fig = _figure((7.0, 6.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="chance")
    rows, auc = [], {}
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(outcome, score)
        auc[name] = float(roc_auc_score(outcome, score))
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc[name]:.3f})")
        rows.append(pd.DataFrame({"model": name, "fpr": fpr, "tpr": tpr}))
    data = pd.concat(rows, ignore_index=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(f"ROC curves (n={outcome.size}, {int(outcome.sum())} events)", fontsize=10)
    ax.grid(True, alpha=0.4)
    _legend(fig, ax, inside="lower right")
    caption(fig, source)
    data.attrs["auc"] = auc
    return fig, data


def time_dependent_auc(
    y_train, y_test, risks: Mapping[str, np.ndarray], times: Sequence[float], source: str = ""
) -> tuple[Figure, pd.DataFrame]:
    """Cumulative/dynamic AUC(t) per model (`sksurv.metrics.cumulative_dynamic_auc`).

    ``y_train`` (for the censoring weights) and ``y_test`` are structured (event, time)
    arrays; risks are "higher = earlier event". Times outside the test follow-up (before the
    first test event or at/after the last test time) are dropped and listed in
    ``data.attrs["dropped_times"]``. Data columns ``model, time, auc``;
    ``data.attrs["mean_auc"]`` is {model: mean AUC over the kept times}.
    """
    caller = "time_dependent_auc"
    t_test, e_test = _survival(y_test["time"], y_test["event"], caller)
    _survival(y_train["time"], y_train["event"], caller)
    grid = np.unique(_array(times, caller, "times"))
    if not e_test.any():
        raise ValueError(f"{caller}: y_test has no events; AUC(t) is undefined")
    first_event, last_time = float(t_test[e_test].min()), float(t_test.max())
    keep = (grid >= first_event) & (grid < last_time)
    if not keep.any():
        raise ValueError(
            f"{caller}: no time in {grid.tolist()} lies within the test follow-up "
            f"[{first_event:g}, {last_time:g}) months"
        )
    kept = grid[keep]
    scores = _model_arrays(risks, caller, "risks", t_test.size, probability=False)
    fig = _figure((7.5, 5.0))
    ax = fig.subplots()
    rows, mean_auc = [], {}
    for name, risk in scores.items():
        try:
            auc, mean = cumulative_dynamic_auc(y_train, y_test, risk, kept)
        except ValueError as err:
            raise ValueError(f"{caller}: model {name!r}: {err}") from err
        mean_auc[name] = float(mean)
        ax.plot(kept, auc, marker="o", markersize=3, label=f"{name} (mean {mean:.3f})")
        rows.append(pd.DataFrame({"model": name, "time": kept, "auc": np.asarray(auc, dtype=float)}))
    data = pd.concat(rows, ignore_index=True)
    ax.axhline(0.5, linestyle="--", color="0.5", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("Cumulative/dynamic AUC(t)")
    ax.set_title(f"Time-dependent AUC (n={t_test.size}, {int(e_test.sum())} events; dashed: chance)", fontsize=10)
    ax.grid(True, alpha=0.4)
    _legend(fig, ax, inside="lower right")
    caption(fig, source)
    data.attrs.update(mean_auc=mean_auc, dropped_times=grid[~keep].tolist())
    return fig, data


# --- decision curves ------------------------------------------------------------------------------
def net_benefit(y, probability, threshold: float) -> float:
    """Net benefit of treating patients with probability >= threshold (Vickers & Elkin 2006).

    NB = TP/n - FP/n * pt / (1 - pt).
    """
    caller = "net_benefit"
    outcome = _binary(y, caller)
    p = _probability(probability, caller, "probability", outcome.size)
    pt = float(_thresholds([threshold], caller)[0])
    if outcome.size == 0:
        raise ValueError(f"{caller}: y is empty")
    treated = p >= pt
    n = outcome.size
    tp = int((treated & (outcome == 1)).sum())
    fp = int((treated & (outcome == 0)).sum())
    return tp / n - fp / n * pt / (1 - pt)


def survival_net_benefit(time, event, predicted_risk, horizon: float, threshold: float) -> float:
    """Net benefit at ``horizon`` for a time-to-event outcome (Vickers et al. 2008).

    With the treated = risk >= pt and S = Kaplan-Meier survival at h among the treated:
    NB = (1 - S) * P(treated) - S * P(treated) * pt / (1 - pt). 0 if nobody is treated; NaN if
    the treated patients' follow-up ends before h with S > 0.
    """
    caller = "survival_net_benefit"
    t, e = _survival(time, event, caller)
    risk = _probability(predicted_risk, caller, "predicted_risk", t.size)
    pt = float(_thresholds([threshold], caller)[0])
    treated = risk >= pt
    share = treated.mean() if t.size else 0.0
    if share == 0:
        return 0.0
    s, _, _ = _km_at(t[treated], e[treated], float(horizon))
    return float((1 - s) * share - s * share * pt / (1 - pt))


def _decision_figure(data: pd.DataFrame, title: str, xlabel: str, source: str) -> Figure:
    fig = _figure((7.5, 5.0))
    ax = fig.subplots()
    for name, sub in data.groupby("model", sort=False):
        style = {}
        if name == TREAT_ALL:
            style = {"color": "0.4", "linewidth": 1.2}
        elif name == TREAT_NONE:
            style = {"color": "black", "linestyle": "--", "linewidth": 1.0}
        ax.plot(sub["threshold"], sub["net_benefit"], label=name, **style)
    models = data.loc[data["model"] != TREAT_ALL, "net_benefit"].dropna()
    top = max(float(data["net_benefit"].max()), 0.01) * 1.1
    bottom = max(min(-0.05 * top, float(models.min()) - 0.02 * top), -top)
    ax.set_ylim(bottom, top)  # treat-all falls steeply: clipped at -top, as decision curves usually are
    ax.set_xlim(float(data["threshold"].min()), float(data["threshold"].max()))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Net benefit")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.4)
    _legend(fig, ax, inside="upper right")
    caption(fig, source)
    return fig


def decision_curve(
    y, probabilities: Mapping[str, np.ndarray], thresholds: Sequence[float] = DEFAULT_THRESHOLDS, source: str = ""
) -> tuple[Figure, pd.DataFrame]:
    """Decision curves: net benefit per model, treat all and treat none (Vickers & Elkin 2006).

    Data columns ``model, threshold, net_benefit``; the y-axis is clipped below (the data are not).
    """
    caller = "decision_curve"
    outcome = _binary(y, caller)
    pt = _thresholds(thresholds, caller)
    models = _model_arrays(probabilities, caller, "probabilities", outcome.size, reserved=(TREAT_ALL, TREAT_NONE))
    models[TREAT_ALL] = np.ones(outcome.size)
    rows = [
        {"model": name, "threshold": float(p), "net_benefit": net_benefit(outcome, prob, p)}
        for name, prob in models.items()
        for p in pt
    ]
    rows += [{"model": TREAT_NONE, "threshold": float(p), "net_benefit": 0.0} for p in pt]
    data = pd.DataFrame(rows)
    prevalence = outcome.mean()
    fig = _decision_figure(
        data, f"Decision curve (n={outcome.size}, prevalence {prevalence:.2f})", "Threshold probability", source
    )
    return fig, data


def survival_decision_curve(
    time,
    event,
    predicted_risk_at_h,
    horizon: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    source: str = "",
    name: str = "model",
) -> tuple[Figure, pd.DataFrame]:
    """Decision curve at ``horizon`` months for a time-to-event outcome (Vickers et al. 2008).

    ``predicted_risk_at_h`` is the predicted probability of an event by h (1 - S(h)). Net
    benefit from Kaplan-Meier (`survival_net_benefit`) for the model (``name``), treat all and
    treat none. Data columns ``model, threshold, net_benefit``.
    """
    caller = "survival_decision_curve"
    t, e = _survival(time, event, caller)
    risk = _probability(predicted_risk_at_h, caller, "predicted_risk_at_h", t.size)
    pt = _thresholds(thresholds, caller)
    if name in (TREAT_ALL, TREAT_NONE):
        raise ValueError(f"{caller}: name {name!r} is reserved for a reference curve")
    h = float(horizon)
    curves = {name: risk, TREAT_ALL: np.ones(t.size)}
    rows = [
        {"model": m, "threshold": float(p), "net_benefit": survival_net_benefit(t, e, r, h, p)}
        for m, r in curves.items()
        for p in pt
    ]
    rows += [{"model": TREAT_NONE, "threshold": float(p), "net_benefit": 0.0} for p in pt]
    data = pd.DataFrame(rows)
    s, _, _ = _km_at(t, e, h)
    fig = _decision_figure(
        data,
        f"Decision curve at {h:g} months (n={t.size}, Kaplan-Meier risk {1 - s:.2f})",
        f"Threshold probability of an event by {h:g} months",
        source,
    )
    return fig, data


# --- feature robustness ---------------------------------------------------------------------------
ICC_REFERENCES = (0.75, 0.9)  # "good" and "excellent" reliability (Koo & Li, J Chiropr Med 2016;15:155)


def icc_distribution(
    icc: pd.DataFrame, source: str, thresholds: Mapping[str, float] | None = None
) -> tuple[Figure, pd.DataFrame]:
    """Box plots of the features' ICC(1,1) across image perturbations (`features.robustness`),
    per feature class and per image type (filter), with the 0.75 and 0.9 lines (dashed).

    ``icc``: one row per feature with ``icc``, ``feature_class`` and ``image_type`` (icc.csv).
    ``thresholds``: the ICC filters the run's models were trained with, by label (e.g.
    ``{"recurrence": 0.5}``), drawn as solid lines with their label in the legend.
    Data: per group, the number of features with an ICC, its median and quartiles.
    """
    missing = [c for c in ("icc", "feature_class", "image_type") if c not in icc]
    if missing:
        raise ValueError(f"icc_distribution: icc table lacks column(s) {missing}; expected icc.csv of crlm perturb")
    rows = []
    fig = _figure((11.0, 5.0))
    axes = fig.subplots(1, 2)
    for ax, by, title in zip(
        axes, ("feature_class", "image_type"), ("per feature class", "per image type"), strict=True
    ):
        groups = {str(k): v.dropna().to_numpy(float) for k, v in icc.groupby(by)["icc"]}
        groups = {k: v for k, v in sorted(groups.items()) if len(v)}
        if groups:
            ax.boxplot(list(groups.values()), orientation="horizontal", tick_labels=list(groups), showfliers=True)
        for reference in ICC_REFERENCES:
            ax.axvline(reference, color="0.5", linestyle="--", linewidth=0.8)
        by_value: dict[float, list[str]] = {}
        for label, value in (thresholds or {}).items():
            by_value.setdefault(float(value), []).append(label)
        for index, (value, labels) in enumerate(sorted(by_value.items())):
            ax.axvline(
                value, color=f"C{index + 3}", linewidth=1.2, label=f"{', '.join(labels)} filter (ICC >= {value:g})"
            )
        if by_value and ax is axes[0]:  # below the x label, clear of the boxes
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize="small", frameon=False)
        ax.set_xlim(min(-0.1, min((v.min() for v in groups.values()), default=0.0)), 1.02)
        ax.set_xlabel("ICC(1,1) across perturbations")
        ax.set_title(title)
        for name, values in groups.items():
            q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
            rows.append({"grouping": by, "group": name, "features": len(values), "q1": q1, "median": median, "q3": q3})
    caption(fig, source)
    return fig, pd.DataFrame(rows, columns=["grouping", "group", "features", "q1", "median", "q3"])


# --- output ---------------------------------------------------------------------------------------
def save_plot(fig: Figure, data: pd.DataFrame, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.png`` (dpi 120, tight) and ``<name>.csv`` (the data) and close the figure.

    Returns ``(png_path, csv_path)``. ``data.attrs`` is not written.
    """
    if not name or Path(name).name != name:
        raise ValueError(f"save_plot: name must be a plain file stem without directories; got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, csv = out / f"{name}.png", out / f"{name}.csv"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    data.to_csv(csv, index=False)
    if fig.canvas.manager is not None:  # made by pyplot: release it there too
        import matplotlib.pyplot as plt

        plt.close(fig)
    else:
        fig.clear()
    return png, csv
