"""Scanner robustness measured (issue 13, "Measure"): the no-shift ceiling, a third site, seeds, candidates.

A benchmark, not a test: it asserts nothing and never runs in CI. For each world seed and each
robustness candidate it runs the project's own pipeline and prints, per task (recurrence:
Harrell's C-index; response: ROC AUC), the share of the oracle's gain over chance,
(metric - 0.5) / (metric of the oracle - 0.5) (`pipeline.report.oracle_gain_share`), the oracle
being the simulation's true linear predictor (recurrence) or response probability on the SAME
patients:

- ``held-out A``: trained on site A's training split exactly as the default run does
  (`pipeline.train.run_train`, params.yaml ``train``), evaluated on site A's held-out split
  (`pipeline.evaluate.run_evaluate` on those patients: the same numbers as the training run's);
- ``A->B``: the same models evaluated on a site B cohort (``run_evaluate``), pooled over all its patients;
- ``ceiling B``: the **no-shift ceiling**: the same pipeline trained and tested on site B itself by
  ``--folds``-fold cross-validation of that same site B cohort, whose size is chosen so that each
  fold trains on as many patients as site A's training split has (400 patients, test fraction
  0.3 -> 280; 5 folds -> n_B = 350). Per fold the fitting is `pipeline.train.run_train`'s own
  sequence (`models.training.plan_task`, `fit_task`, `models.comparison.build_predictors`, the
  chosen model by `pipeline.train.best_model`, i.e. the best cross-validated score inside the
  fold's training patients) with the split replaced by the fold; the share is computed from
  the MEAN over folds of the fold's metric and of the oracle's metric on the fold's patients
  (not from pooled out-of-fold predictions: risk scores of five different models are not on one
  scale). ``A->B per fold`` is the A-trained model scored the same way on the same folds, so
  the two numbers compare like with like;
- ``A->C``: the A models on a third scanner site C defined ONLY here (`SITE_C`, written into a
  copy of configs/world.yaml in the work folder; the pipeline's configs/world.yaml never has it).
  C is reported, never used for any choice.

And per task the novelty flag (issue 13 item 5) of the chosen model: the share of patients
flagged on held-out A, B and C, and the C-index / AUC of flagged vs unflagged patients
(`pipeline.evaluate.novelty_on_cohort`; "-" when a group is too small to estimate).

Candidates (``--candidates``) are small functions that change the extraction settings
(configs/extraction.yaml) and the ``train`` block of params.yaml of a run. ``none`` (the
default run) and ``norm`` are wired (``norm`` not yet run); ``icc``, ``augment`` and ``chosen`` are marked entries that
stop with "not wired into the benchmark yet": the methods (issue 13 items 1-4) were merged into
main while this benchmark was written, and connecting them (`CANDIDATES`) is the next step. Candidates whose extraction settings are the same share the extracted
features, and every extraction goes through one per-case cache (``<work>/cache``): a re-run with
the same ``--work`` resumes where it stopped (a finished step leaves a ``.done`` file).

    python bench/scanner_robustness.py [--seeds 5] [--candidates none] [--n-train 400]
        [--n-external 200] [--folds 5] [--light] [--grid small|default] [--jobs 2]
        [--work DIR] [--json PATH] [--write]

``--light`` uses light radiomics (original image; shape, first order, GLCM; as the tests'
LIGHT_RADIOMICS) and ``--grid small`` one point per model family and a 3-fold inner CV: both for
a quick end-to-end check, not for numbers. ``--write`` puts the result as a new section at the
top of bench/results.md. Seed ``i`` (0-based) draws site A with seed 7 + i and sites B and C with
seed 11 + i (the default run's seeds for i = 0; a site's name also enters its random stream, so
A, B and C patients are different people); the site definitions stay the same.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.machine_info import cpu_model  # noqa: E402
from features.schema import PATIENT_ID, TRUTH_RECURRENCE_LP, TRUTH_RESPONSE_PROBABILITY  # noqa: E402

RESULTS = REPO / "bench" / "results.md"
TASKS = ("recurrence", "response")
METRIC = {"recurrence": "c_index", "response": "roc_auc"}
METRIC_LABEL = {"recurrence": "C-index", "response": "AUC"}

# The third scanner: other slice thickness, in-plane spacing, sharpness, noise, HU offset and enhancement than
# A (1.5 x 1.5 x 3 mm, psf 0.9, noise 12, offset 0, enhancement 1.0) and B (1.25 x 1.25 x 5 mm, 1.2, 18, +8,
# 0.85). configs/world.yaml `sites` has A and B; C lives only here. Its grid is 1 x 1 x 4 mm rather than
# a sub-millimetre one: phantom rendering scales with the voxel count (0.8 x 0.8 x 2.5 mm would cost
# ~4x site A per patient, 1 x 1 x 4 mm ~1.7x), and the benchmark has to run on two shared cores.
SITE_C = {
    "spacing_mm": [1.0, 1.0, 4.0],
    "psf_sigma_mm": 0.8,
    "noise_sd_hu": 25.0,
    "hu_offset": -10.0,
    "enhancement": 1.15,
}
SEED_A, SEED_EXTERNAL = 7, 11  # params.yaml synthesize.train.seed and synthesize.external.seed

# As tests/conftest.py LIGHT_RADIOMICS: a quick check, not the project's settings.
LIGHT_RADIOMICS = {
    "setting": {
        "binWidth": 25,
        "resampledPixelSpacing": [2.0, 2.0, 2.0],
        "interpolator": "sitkBSpline",
        "padDistance": 5,
        "label": 1,
    },
    "imageType": {"Original": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None},
}
SMALL_GRID = {
    "cv_folds": 3,
    "k_features": [10, 20],
    "grids": {
        "coxnet": {"alphas": [[0.1]]},
        "xgb_cox": {"max_depth": [1], "n_estimators": [200]},
        "xgb_aft": {"max_depth": [1], "distribution_scale": [1.2]},
        "logistic": {"C": [0.01]},
        "xgb": {"max_depth": [1], "n_estimators": [200]},
    },
}
BOOTSTRAP = 20  # evaluate.bootstrap in the bench's runs: only point estimates are read here


class NotAvailable(RuntimeError):
    """A candidate whose method is not in this tree yet."""


@dataclass
class Setup:
    """What a candidate may change: configs/extraction.yaml (as a dict), params.yaml's ``train``
    block, and whether the training cohort is re-extracted under perturbations first."""

    extraction: dict[str, Any]
    train: dict[str, Any]
    perturb: bool = False
    notes: list[str] = field(default_factory=list)


def candidate_none(setup: Setup) -> Setup:
    """No robustness method: the default run."""
    return setup


def candidate_norm(setup: Setup) -> Setup:
    """Per-patient liver reference-tissue normalisation (configs/extraction.yaml ``reference_tissue``,
    docs/reference_tissue.md) switched on, its other settings as configured: an extraction change only."""
    setup.extraction = {
        **setup.extraction,
        "reference_tissue": {**setup.extraction["reference_tissue"], "enabled": True},
    }
    return setup


def _not_merged(what: str) -> Callable[[Setup], Setup]:
    def candidate(setup: Setup) -> Setup:
        raise NotAvailable(f"not wired into the benchmark yet: {what} (see CANDIDATES in bench/scanner_robustness.py)")

    return candidate


# To wire (the methods are in the tree: crlm perturb, train.robustness, reference_tissue), each becomes e.g.
#   icc:     setup.train["robustness"] = {"icc_threshold": <value>, "augment": False}; setup.perturb = True
#   augment: setup.train["robustness"] = {"icc_threshold": None, "augment": True}; setup.perturb = True
#   chosen:  the combination the site-A-only choice (issue 13 item 4) picked, read from its record.
# A candidate that changes training must also reach the ceiling's per-fold fit (`fit_fold`).
CANDIDATES: dict[str, Callable[[Setup], Setup]] = {
    "none": candidate_none,
    "icc": _not_merged("the ICC filter (crlm perturb, train.robustness.icc_threshold)"),
    "norm": candidate_norm,
    "augment": _not_merged("train-time augmentation (crlm perturb, train.robustness.augment)"),
    "chosen": _not_merged("the combination chosen on site A (issue 13 item 4)"),
}


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def crlm(*args: str, log_file: Path) -> None:
    """One ``crlm`` sub-command of this tree as a subprocess; its output goes to ``log_file``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log_file.open("a") as handle:
        handle.write(f"$ crlm {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    if done.returncode:
        tail = log_file.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"crlm {args[0]} failed (exit {done.returncode}): {tail[0]}; full output in {log_file}")


def once(folder: Path, step: Callable[[], None]) -> Path:
    """Run ``step`` unless ``folder/.done`` says it already ran; mark it done afterwards."""
    marker = folder / ".done"
    if not marker.is_file():
        step()
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(dt.datetime.now(dt.UTC).isoformat() + "\n")
    return folder


def digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def world_file(work: Path) -> Path:
    """configs/world.yaml plus site C, in the work folder."""
    world = yaml.safe_load((REPO / "configs" / "world.yaml").read_text())
    world["sites"]["C"] = SITE_C
    path = work / "world.yaml"
    path.write_text(yaml.safe_dump(world, sort_keys=False))
    return path


def cohort(work: Path, world: Path, site: str, n: int, seed: int, jobs: int) -> Path:
    folder = work / "cohorts" / f"{site}-n{n}-seed{seed}"

    def make() -> None:
        log(f"synthesize site {site}, {n} patients, seed {seed}")
        crlm(
            "synthesize", "--n", str(n), "--seed", str(seed), "--site", site, "--jobs", str(jobs),
            "--out", str(folder), "--world", str(world), "--labels", "configs/labels.yaml",
            log_file=work / "logs.txt",
        )  # fmt: skip

    return once(folder, make)


def features(work: Path, cohort_dir: Path, radiomics: Path, extraction: dict[str, Any], jobs: int) -> Path:
    """``crlm extract`` and ``crlm featurize`` of a cohort under the given settings; the features path."""
    key = f"{radiomics.stem}-{digest(extraction)}"
    folder = work / "features" / key / cohort_dir.name
    config = work / "features" / key / "extraction.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(extraction, sort_keys=False))

    def make() -> None:
        log(f"extract and featurize {cohort_dir.name} ({key})")
        clinical = str(cohort_dir / "clinical.csv")
        crlm(
            "extract", "--cohort", clinical, "--out", str(folder / "extraction"), "--jobs", str(jobs),
            "--cache", str(work / "cache"), "--radiomics", str(radiomics), "--config", str(config),
            "--labels", "configs/labels.yaml", log_file=work / "logs.txt",
        )  # fmt: skip
        crlm(
            "featurize", "--cohort", clinical, "--extraction", str(folder / "extraction"),
            "--out", str(folder / "features.parquet"), "--config", str(config), log_file=work / "logs.txt",
        )  # fmt: skip

    once(folder, make)
    return folder / "features.parquet"


def quiet(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with its printed progress kept out of the benchmark's table."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def share(value: float, oracle: float) -> float:
    from pipeline.report import oracle_gain_share

    result = oracle_gain_share(value, oracle)
    return math.nan if result is None else float(result)


def discrimination(task: str, score: np.ndarray, table: pd.DataFrame) -> float:
    """Harrell's C (recurrence) or the ROC AUC (response), as `models.evaluation` computes them."""
    from sklearn.metrics import roc_auc_score
    from sksurv.metrics import concordance_index_censored

    from models import outcomes

    if task == "recurrence":
        y = outcomes.recurrence_outcome(table)
        return float(concordance_index_censored(y["event"], y["time"], np.asarray(score, float))[0])
    return float(roc_auc_score(outcomes.response_outcome(table), np.asarray(score, float)))


def oracle_score(task: str, truth: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    column = TRUTH_RECURRENCE_LP if task == "recurrence" else TRUTH_RESPONSE_PROBABILITY
    return truth.set_index(PATIENT_ID)[column].reindex(table[PATIENT_ID]).to_numpy(float)


def model_score(task: str, predictor: Any, table: pd.DataFrame) -> np.ndarray:
    return predictor.risk(table) if task == "recurrence" else predictor.probability(table)


def cv_folds(table: pd.DataFrame, folds: int, seed: int) -> list[np.ndarray]:
    """Test positions of ``folds`` folds, stratified by both outcomes (rare strata pooled, as
    `models.training.split_patients` does)."""
    from sklearn.model_selection import StratifiedKFold

    from models import training

    strata = training.outcome_strata(table, TASKS)
    counts = strata.value_counts()
    strata = strata.where(strata.map(counts) >= folds, "rare")
    if strata.value_counts().min() < folds:
        strata = pd.Series("all", index=strata.index)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(test) for _, test in splitter.split(np.zeros(len(table)), strata)]


def fit_fold(table: pd.DataFrame, task: str, train_index: np.ndarray, test_index: np.ndarray, settings, jobs: int):
    """The chosen predictor of ``task`` trained on ``train_index`` (run_train's own fitting sequence)."""
    from models import comparison, training
    from pipeline.train import best_model

    plan = training.plan_task(table, task, train_index, test_index, settings)
    fitted = training.fit_task(table, task, train_index, test_index, settings, jobs=jobs, plan=plan)
    best = best_model(fitted.cv_scores, task)
    return comparison.build_predictors(fitted, table)[best], best


def params_file(folder: Path, train: dict[str, Any]) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"] = train
    params["evaluate"]["bootstrap"] = BOOTSTRAP
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def chosen_entry(metrics: dict[str, Any], task: str, best: str) -> dict[str, Any]:
    """The chosen model's and the oracle's metric and the novelty entry of an evaluate run."""
    from models.comparison import ORACLE

    entry = metrics[task]
    novelty = metrics["notes"][task].get("novelty", {}).get(best, {})
    value, oracle = entry[best][METRIC[task]]["value"], entry[ORACLE][METRIC[task]]["value"]
    return {
        "metric": value,
        "oracle": oracle,
        "share": share(value, oracle),
        "n": metrics["notes"][task]["n_patients"],
        "flag_rate": novelty.get("value"),
        "n_flagged": novelty.get("n_flagged"),
        "flagged": (novelty.get("by_flag", {}).get("flagged") or {}).get("value"),
        "unflagged": (novelty.get("by_flag", {}).get("unflagged") or {}).get("value"),
        "model": best,
    }


def run_one(
    seed_index: int, candidate: str, args: argparse.Namespace, work: Path, world: Path, radiomics: Path
) -> list[dict[str, Any]]:
    """Every arm of one (seed, candidate); one row per (arm, task)."""
    from models import training
    from models.registry import read_best
    from pipeline.evaluate import load_predictors, run_evaluate
    from pipeline.settings import load_params
    from pipeline.train import run_train

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = dict(params["train"], jobs=args.jobs)
    if args.grid == "small":
        train.update(SMALL_GRID)
    base_extraction = yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())
    setup = CANDIDATES[candidate](Setup(extraction=base_extraction, train=train))
    if setup.perturb:
        raise NotAvailable("not wired into the benchmark yet: crlm perturb before training (issue 13 item 1)")

    n_split_train = args.n_train - math.ceil(train["test_fraction"] * args.n_train)
    n_ceiling = math.ceil(n_split_train * args.folds / (args.folds - 1))
    seed_a, seed_ext = SEED_A + seed_index, SEED_EXTERNAL + seed_index
    cohorts = {
        "A": cohort(work, world, "A", args.n_train, seed_a, args.jobs),
        "B": cohort(work, world, "B", n_ceiling, seed_ext, args.jobs),
    }
    if args.n_external:
        cohorts["C"] = cohort(work, world, "C", args.n_external, seed_ext, args.jobs)
    tables = {site: features(work, folder, radiomics, setup.extraction, args.jobs) for site, folder in cohorts.items()}
    truths = {site: pd.read_csv(folder / "truth.csv", dtype={PATIENT_ID: str}) for site, folder in cohorts.items()}

    run = work / "runs" / f"seed{seed_index}-{candidate}-{radiomics.stem}-{args.grid}-n{args.n_train}-{args.folds}folds"
    run.mkdir(parents=True, exist_ok=True)
    params_path = params_file(run, setup.train)
    models = run / "models"

    def train_a() -> None:
        log(f"seed {seed_index} {candidate}: train on site A ({args.n_train} patients)")
        quiet(
            run_train, tables["A"], run / "train", models, params_path, TASKS,
            truth=cohorts["A"] / "truth.csv", track=False, jobs=args.jobs,
        )  # fmt: skip

    once(run / "train", train_a)
    best = read_best(models)
    split = pd.read_csv(run / "train" / "split.csv", dtype={PATIENT_ID: str})
    held_out = run / "heldout_A.parquet"
    full_a = pd.read_parquet(tables["A"])
    full_a.loc[full_a[PATIENT_ID].isin(split.loc[split["split"] == "test", PATIENT_ID])].to_parquet(held_out)

    rows: list[dict[str, Any]] = []
    targets = {"held-out A": (held_out, "A"), "A->B": (tables["B"], "B")}
    if "C" in tables:
        targets["A->C"] = (tables["C"], "C")
    for arm, (path, site) in targets.items():
        folder = run / f"evaluate_{arm.replace('->', '_to_').replace(' ', '_')}_{cohorts[site].name}"
        metrics_path = folder / "metrics.json"
        if not metrics_path.is_file():
            log(f"seed {seed_index} {candidate}: evaluate {arm}")
            quiet(run_evaluate, str(models), path, folder, params_path, truth=cohorts[site] / "truth.csv", track=False)
        metrics = json.loads(metrics_path.read_text())
        for task in TASKS:
            rows.append(
                {
                    "seed": seed_index,
                    "candidate": candidate,
                    "arm": arm,
                    "task": task,
                    **chosen_entry(metrics, task, best[task]),
                }
            )

    # The no-shift ceiling: the same fitting on site B by CV; and the A model on the same folds.
    settings = load_params(params_path, "train").train
    table_b = training.usable_patients(pd.read_parquet(tables["B"]), TASKS)
    folds = cv_folds(table_b, args.folds, settings.seed)
    a_predictors = load_predictors(str(models))
    per_fold = run / "ceiling_folds.json"
    done = json.loads(per_fold.read_text()) if per_fold.is_file() else {}
    for k, test_index in enumerate(folds):
        train_index = np.setdiff1d(np.arange(len(table_b)), test_index)
        for task in TASKS:
            key = f"{task}/{k}"
            if key in done:
                continue
            log(
                f"seed {seed_index} {candidate}: ceiling fold {k + 1}/{args.folds}, {task} ({len(train_index)} site B patients)"
            )
            known = training.has_outcome(table_b, task).to_numpy()
            tr, te = train_index[known[train_index]], test_index[known[test_index]]
            predictor, name = quiet(fit_fold, table_b, task, tr, te, settings, args.jobs)
            test = table_b.iloc[te]
            oracle = oracle_score(task, truths["B"], test)
            done[key] = {
                "n_train": len(tr),
                "n_test": len(te),
                "model": name,
                "ceiling": discrimination(task, model_score(task, predictor, test), test),
                "a_to_b": discrimination(task, model_score(task, a_predictors[task][best[task]], test), test),
                "oracle": discrimination(task, oracle, test),
            }
            per_fold.write_text(json.dumps(done, indent=2))
    for task in TASKS:
        entries = [done[f"{task}/{k}"] for k in range(args.folds)]
        oracle = float(np.mean([e["oracle"] for e in entries]))
        for arm, key in (("ceiling B (CV)", "ceiling"), ("A->B per fold", "a_to_b")):
            value = float(np.mean([e[key] for e in entries]))
            rows.append(
                {
                    "seed": seed_index, "candidate": candidate, "arm": arm, "task": task, "metric": value,
                    "oracle": oracle, "share": share(value, oracle), "n": sum(e["n_test"] for e in entries),
                    "n_train": entries[0]["n_train"], "model": ",".join(sorted({e["model"] for e in entries}))
                    if key == "ceiling" else best[task],
                }
            )  # fmt: skip
    return rows


ARMS = ("held-out A", "ceiling B (CV)", "A->B per fold", "A->B", "A->C")


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def pct(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.0f}%"


def per_run_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | candidate | task | arm | n | model | metric | oracle | share of the oracle's gain |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {arm: i for i, arm in enumerate(ARMS)}
    for r in sorted(rows, key=lambda r: (r["seed"], r["candidate"], r["task"], order[r["arm"]])):
        lines.append(
            f"| {r['seed']} | {r['candidate']} | {r['task']} | {r['arm']} | {r['n']} | {r['model']} | "
            f"{METRIC_LABEL[r['task']]} {fmt(r['metric'])} | {fmt(r['oracle'])} | {pct(r['share'])} |"
        )
    return "\n".join(lines)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Mean, sd and min-max over seeds of the oracle-gain share per (candidate, task, arm)."""
    lines = [
        "| candidate | task | arm | seeds | mean share | sd | min-max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["candidate"], r["task"], r["arm"]), []).append(r["share"])
    order = {arm: i for i, arm in enumerate(ARMS)}
    for (candidate, task, arm), values in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        lines.append(
            f"| {candidate} | {task} | {arm} | {len(values)} | {pct(statistics.fmean(values))} | "
            f"{pct(sd)} | {pct(min(values))} to {pct(max(values))} |"
        )
    return "\n".join(lines)


def novelty_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | candidate | task | cohort | flagged | metric flagged | metric unflagged |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["arm"] not in ("held-out A", "A->B", "A->C") or r.get("flag_rate") is None:
            continue
        cohort_name = {"held-out A": "held-out A", "A->B": "B", "A->C": "C"}[r["arm"]]
        lines.append(
            f"| {r['seed']} | {r['candidate']} | {r['task']} | {cohort_name} | {pct(r['flag_rate'])} "
            f"({r['n_flagged']}/{r['n']}) | {fmt(r['flagged'])} | {fmt(r['unflagged'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="world seeds (default 5)")
    parser.add_argument("--candidates", default="none", help=f"comma-separated, of {', '.join(CANDIDATES)}")
    parser.add_argument("--n-train", type=int, default=400, help="site A patients (default 400, as params.yaml)")
    parser.add_argument("--n-external", type=int, default=200, help="site C patients (default 200; 0: no site C)")
    parser.add_argument("--folds", type=int, default=5, help="CV folds of the ceiling on site B (default 5)")
    parser.add_argument("--light", action="store_true", help="light radiomics (a quick check, not the numbers)")
    parser.add_argument(
        "--grid", choices=("small", "default"), default="default", help="train grid (default: params.yaml)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="workers for synthesis, extraction and fits (default 2)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crlm-scanner-robustness"), help="kept; resumes")
    parser.add_argument("--json", type=Path, default=None, help="write every row as JSON")
    parser.add_argument("--write", action="store_true", help="add the result at the top of bench/results.md")
    args = parser.parse_args(argv)
    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; choose among {', '.join(CANDIDATES)}")

    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    world = world_file(work)
    radiomics = REPO / "configs" / "radiomics.yaml"
    if args.light:
        radiomics = work / "radiomics-light.yaml"
        radiomics.write_text(yaml.safe_dump(LIGHT_RADIOMICS))
    started = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    log(f"work folder {work}; load average {load[0]:.1f}")
    rows: list[dict[str, Any]] = []
    unavailable: dict[str, str] = {}
    for seed_index in range(args.seeds):
        for candidate in candidates:
            if candidate in unavailable:
                continue
            start = time.perf_counter()
            try:
                rows += run_one(seed_index, candidate, args, work, world, radiomics)
            except NotAvailable as exc:
                unavailable[candidate] = str(exc)
                log(f"{candidate}: {exc}")
                continue
            log(f"seed {seed_index} {candidate}: done in {time.perf_counter() - start:.0f} s")
    finished = dt.datetime.now(dt.UTC)
    header = (
        f"{started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, {platform.node()}, {cpu_model()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    settings = (
        f"`python bench/scanner_robustness.py --seeds {args.seeds} --candidates {','.join(candidates)} "
        f"--n-train {args.n_train} --n-external {args.n_external} --folds {args.folds} --grid {args.grid} "
        f"--jobs {args.jobs}{' --light' if args.light else ''}` (radiomics: {radiomics.name}; "
        f"evaluate.bootstrap {BOOTSTRAP}: point estimates only)"
    )
    text = "\n\n".join(
        [
            header,
            settings,
            "Share of the oracle's gain over chance, mean and spread over seeds:",
            summary_table(rows) if rows else "(no run finished)",
            "Per seed:",
            per_run_table(rows) if rows else "",
            "Novelty flag of the chosen model (metric = C-index / AUC; '-' too few to estimate):",
            novelty_table(rows) if rows else "",
            *[f"{c}: {why}" for c, why in unavailable.items()],
        ]
    )
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"header": header, "settings": settings, "rows": rows, "unavailable": unavailable},
                indent=2,
                default=str,
            )
        )
    if args.write:
        current = RESULTS.read_text()
        title, _, rest = current.partition("\n## ")
        section = f"## {started:%Y-%m-%d}: scanner robustness (issue 13, bench/scanner_robustness.py)\n\n{text}\n"
        RESULTS.write_text(f"{title.rstrip()}\n\n{section}\n## {rest}" if rest else f"{current.rstrip()}\n\n{section}")
        log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
