"""``crlm choose-robustness``: score ``train.robustness`` candidates on the training site only (thin script).

Reads the training ``features.parquet`` and ``crlm perturb``'s ``perturbed.parquet`` / ``icc.csv``,
takes the training split ``crlm train`` would take (same ``train.seed`` and ``test_fraction``: the
held-out patients are never used), runs `models.robustness_choice.site_shift_cv` and applies the
rule of docs/robustness.md ("choice"). Writes ``robustness_choice.csv`` (every candidate's scores)
and ``robustness_choice.json`` (the choice and why) under ``--out``, and prints the
``train.robustness`` lines to put in params.yaml. It never reads site B or any external cohort.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from features.schema import PERTURBATION, SITE_CHAIN, STATUS
from features.settings import check_jobs
from models import robustness, robustness_choice, training
from pipeline.settings import load_params

CHOICE_TABLE = "robustness_choice.csv"
FOLD_TABLE = "robustness_choice_folds.csv"
CHOICE_FILE = "robustness_choice.json"
DEFAULT_THRESHOLDS = (0.5, 0.75, 0.9)


def run_choose(
    features: Path,
    perturbed: Path,
    icc: Path,
    params_path: Path,
    out: Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    tolerance: float = robustness_choice.TOLERANCE,
    tasks: Sequence[str] = training.TASKS,
    repeats: int = 1,
    jobs: int = 1,
    augment: Sequence[bool | str] = robustness_choice.AUGMENT_OPTIONS,
) -> dict[str, Any]:
    """Score every candidate (``thresholds`` and no filter, each with every ``augment`` option:
    none, ``icc`` copies, ``site`` copies) and choose; return what ``robustness_choice.json`` holds."""
    for value in thresholds:
        if not 0 < value < 1:
            raise ValueError(f"--thresholds: {value}; expected ICC values between 0 and 1, e.g. 0.75")
    if repeats < 1:
        raise ValueError(f"--repeats: {repeats}; expected at least 1 (each repeat is one train.cv_folds-fold CV)")
    try:
        check_jobs(jobs)
    except ValueError as exc:
        raise ValueError(f"--jobs: {exc}") from None
    if not 0 <= tolerance < 1:
        raise ValueError(f"--tolerance: {tolerance}; expected a small score difference, e.g. 0.01")
    settings = load_params(params_path, "train").train
    full = pd.read_parquet(features)
    if STATUS not in full:
        raise ValueError(f"{features}: no '{STATUS}' column; build the feature table with crlm featurize")
    tasks = tuple(t for t in tasks if training.outcome_missing_reason(full.loc[full[STATUS] == "ok"], t) is None)
    if not tasks:
        raise ValueError(f"{features}: no task can be trained (no usable recurrence or response outcome)")
    table = training.usable_patients(full, tasks)
    train_index, _ = training.split_patients(table, settings.test_fraction, settings.seed, tasks)
    icc_table = robustness.read_icc(icc)
    perturbed_table = robustness.read_perturbed(perturbed)
    if not perturbed_table[PERTURBATION].str.startswith(f"{SITE_CHAIN}-").any():
        raise ValueError(
            f"{perturbed}: no {SITE_CHAIN}-k rows, so no candidate can be scored on a simulated other "
            "scanner; set robustness.site_scanners: 3 in params.yaml and run crlm perturb (or "
            "dvc repro perturb) again"
        )
    try:
        options = robustness_choice.candidates(thresholds, augment)
    except ValueError as exc:
        raise ValueError(f"--augment: {exc}") from None
    start = time.perf_counter()
    scores = robustness_choice.site_shift_scores(
        table, perturbed_table, icc_table, options, settings, train_index, tasks, repeats=repeats, jobs=jobs
    )
    results = robustness_choice.summarise(scores)
    seconds = time.perf_counter() - start
    choice = robustness_choice.choose(results, tolerance)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / CHOICE_TABLE, index=False)
    scores.to_csv(out / FOLD_TABLE, index=False)
    record = {
        "chosen": choice.params(),
        "why": choice.why,
        "rule": "per task: same-site CV score within the tolerance of no robustness; then the simplest candidate "
        "whose site-shift CV score is within one standard error of the best (docs/robustness.md, Choice)",
        "tolerance": tolerance,
        "data": f"training split of {features} ({len(train_index)} patients) and its perturbed rows; "
        "no external cohort",
        "seconds": round(seconds, 1),
        "seconds_per_candidate": round(seconds / len(options), 2),
        "candidates": results.to_dict(orient="records"),
    }
    (out / CHOICE_FILE).write_text(json.dumps(record, indent=2, allow_nan=True, default=str))
    print(results.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for sentence in choice.why.values():
        print(f"chosen for {sentence}")
    lines = ["to use it, set in params.yaml:", "  train:", "    robustness:", "      tasks:"]
    for task, option in choice.tasks.items():
        threshold = "null" if option.icc_threshold is None else f"{option.icc_threshold:g}"
        lines.append(f"        {task}: {{icc_threshold: {threshold}, augment: {option.augment or 'false'}}}")
    print("\n".join(lines))
    return record
