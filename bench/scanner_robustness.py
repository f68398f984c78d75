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
- ``A->D``: the same on a fourth site D, defined on 2026-12-02 (`SITE_D`) after the choice rule
  had been revised in the light of B and C results (per task, one-standard-error rule, several
  simulated scanners; docs/robustness.md "Choice") and before any result of the revised rule
  existed: the one site that rule has never been judged on. Also thinner slices than A, which
  the simulated scanners never make. Reported, never used for any choice.

And per task the novelty flag (issue 13 item 5) of the chosen model: the share of patients
flagged on held-out A, B and C, and the C-index / AUC of flagged vs unflagged patients
(`pipeline.evaluate.novelty_on_cohort`; "-" when a group is too small to estimate).

Candidates (``--candidates``) are small functions that change the extraction settings
(configs/extraction.yaml) and the ``train`` block of params.yaml of a run: ``none`` (the default
run), ``norm`` (liver reference-tissue normalisation), ``icc`` (train.robustness.icc_threshold =
``--icc-threshold``, default 0.5), ``augment`` (train.robustness.augment = icc), ``site``
(train.robustness.augment = site: every training patient's simulated-scanner copies, 2026-12-06)
and ``chosen`` (``crlm choose-robustness``'s `models.robustness_choice.site_shift_cv` and `choose` on site A's
training split, then trained with the chosen setting; its run folders are named after
`CHOICE_VERSION`, so a changed candidate set is a new choice, not a cached one). The last four first run ``crlm perturb``
(`pipeline.perturb.run_perturb`) on site A's cohort of the seed, once per seed and extraction
setting (``--light``: a reduced robustness block, `LIGHT_PERTURB`), and pass its ``icc.csv`` /
``perturbed.parquet`` to `pipeline.train.run_train`. Site B and C are never used for any choice.
The ceiling is fitted without train.robustness (site B is not perturbed): it is the same for
every candidate of one extraction setting, computed once (``<work>/ceilings``), and marked
"(no robustness)" in the rows of the candidates that change training. Candidates whose extraction
settings are the same share the extracted features, and every extraction (perturbed ones too)
goes through one per-case cache (``<work>/cache``): a re-run with the same ``--work`` resumes
where it stopped (a finished step leaves a ``.done`` file).

    python bench/scanner_robustness.py [--seeds 5] [--candidates none] [--n-train 400]
        [--first-seed 0] [--n-external 200] [--folds 5] [--light] [--grid small|default] [--jobs 2]
        [--icc-threshold 0.5] [--work DIR] [--json PATH] [--write]

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
from inference import (
    LIGHT_RADIOMICS,
)  # bench/inference.py (a sibling script): a quick check, not the project's settings

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
# The fourth scanner (see the module docstring): thinner slices than A (2 mm), a smoother kernel, a positive
# offset and weaker enhancement. 1.5 x 1.5 x 2 mm costs ~1.5x site A per patient.
SITE_D = {
    "spacing_mm": [1.5, 1.5, 2.0],
    "psf_sigma_mm": 1.1,
    "noise_sd_hu": 15.0,
    "hu_offset": 15.0,
    "enhancement": 0.9,
}
SEED_A, SEED_EXTERNAL = 7, 11  # params.yaml synthesize.train.seed and synthesize.external.seed

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
    icc_threshold: float = 0.5
    choose: bool = False


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


SITE_SCANNERS = 3  # crlm perturb's robustness.site_scanners for the chosen candidate (docs/robustness.md)
ICC_THRESHOLD = 0.5  # the icc candidate's train.robustness.icc_threshold (--icc-threshold)
# --light: a reduced crlm perturb (params.yaml robustness: patients x perturbations), a plumbing check only
LIGHT_PERTURB = {"patients": 12, "perturbations": 2}


def candidate_icc(setup: Setup) -> Setup:
    """The ICC filter: imaging columns with ICC(1,1) below ``--icc-threshold`` (default 0.5) dropped
    (train.robustness.icc_threshold; the ICC from ``crlm perturb`` of site A's cohort)."""
    setup.train = {**setup.train, "robustness": {"icc_threshold": setup.icc_threshold, "augment": False}}
    setup.perturb = True
    return setup


def candidate_augment(setup: Setup) -> Setup:
    """Train-time augmentation: the training patients' perturbed ``icc-*`` copies as extra rows
    (train.robustness.augment; ``crlm perturb`` of site A's cohort)."""
    setup.train = {**setup.train, "robustness": {"icc_threshold": None, "augment": "icc"}}
    setup.perturb = True
    return setup


def candidate_site(setup: Setup) -> Setup:
    """Scanner-like augmentation: every training patient's ``site-*`` rows (the `SITE_SCANNERS`
    simulated other scanners of ``crlm perturb``) as extra rows (train.robustness.augment = site)."""
    setup.train = {**setup.train, "robustness": {"icc_threshold": None, "augment": "site"}}
    setup.perturb = True
    return setup


# The choice's candidate set: v4 (2026-12-02) thresholds x {no copies, icc copies}; v5 (2026-12-06)
# also the site copies, scored leaving one scanner out. A run folder of one version is never reused for another.
CHOICE_VERSION = "v5"


def candidate_chosen(setup: Setup) -> Setup:
    """What ``crlm choose-robustness`` chooses on site A's training split alone
    (`models.robustness_choice.site_shift_cv` and `choose`, thresholds 0.5 / 0.75 / 0.9 and none,
    each without copies, with the icc copies and with the site copies); the choice is made in
    `run_one`, after ``crlm perturb``."""
    setup.perturb = True
    setup.choose = True
    return setup


CANDIDATES: dict[str, Callable[[Setup], Setup]] = {
    "none": candidate_none,
    "icc": candidate_icc,
    "norm": candidate_norm,
    "augment": candidate_augment,
    "site": candidate_site,
    "chosen": candidate_chosen,
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
    """configs/world.yaml plus sites C and D, in the work folder."""
    world = yaml.safe_load((REPO / "configs" / "world.yaml").read_text())
    world["sites"]["C"] = SITE_C
    world["sites"]["D"] = SITE_D
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


def perturbed_features(
    work: Path, cohort_dir: Path, table: Path, radiomics: Path, robustness: dict[str, Any], jobs: int
) -> tuple[Path, Path]:
    """``crlm perturb`` (`pipeline.perturb.run_perturb`) of a cohort whose features are ``table``,
    under the same extraction settings, through the per-case cache; (perturbed.parquet, icc.csv)."""
    from pipeline.perturb import run_perturb

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # the site chain always: the chosen candidate's crlm choose-robustness scores on it
    block = {**params["robustness"], "site_scanners": SITE_SCANNERS, **robustness, "jobs": jobs}
    params["robustness"] = block
    from features.perturbation import RobustnessConfig, draw_perturbations

    chains = RobustnessConfig(**yaml.safe_load((REPO / "configs" / "robustness.yaml").read_text()))
    # keyed by the drawn perturbations themselves, so a change of how they are drawn is a new folder
    drawn = [
        p.record()
        for chain, count in (("icc", block["perturbations"]), ("site", block["site_scanners"]))
        for p in draw_perturbations(chains, chain, count, block["seed"])
    ]
    folder = table.parent / f"perturb-{digest({**block, 'jobs': None, 'drawn': drawn})}"

    def make() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        params_path = folder / "params.yaml"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        block = params["robustness"]
        log(
            f"perturb {cohort_dir.name} ({block['patients']} patients x {block['perturbations']} + "
            f"{block['site_scanners']} simulated scanners)"
        )
        quiet(
            run_perturb, cohort_dir / "clinical.csv", table, folder / "perturbed.parquet", folder / "icc.csv",
            params_path, REPO / "configs" / "robustness.yaml", radiomics, table.parent.parent / "extraction.yaml",
            REPO / "configs" / "labels.yaml", jobs=jobs, cache=work / "cache", progress=False,
        )  # fmt: skip

    once(folder, make)
    return folder / "perturbed.parquet", folder / "icc.csv"


def choose_on_site_a(
    table: Path, perturbed: Path, icc: Path, params_path: Path, out: Path, jobs: int = 1
) -> dict[str, Any]:
    """``crlm choose-robustness``'s functions on site A's training split (the split run_train takes):
    `models.robustness_choice.site_shift_cv`, then `choose`. Site B and C are never read."""
    from models import robustness, robustness_choice, training
    from pipeline.choose_robustness import DEFAULT_THRESHOLDS
    from pipeline.settings import load_params

    record = out / "robustness_choice.json"
    if record.is_file():
        return json.loads(record.read_text())
    settings = load_params(params_path, "train").train
    full = pd.read_parquet(table)
    table_a = training.usable_patients(full, TASKS)
    train_index, _ = training.split_patients(table_a, settings.test_fraction, settings.seed, TASKS)
    options = robustness_choice.candidates(DEFAULT_THRESHOLDS)
    start = time.perf_counter()
    scores = robustness_choice.site_shift_scores(
        table_a, robustness.read_perturbed(perturbed), robustness.read_icc(icc), options, settings, train_index, TASKS,
        jobs=jobs,
    )  # fmt: skip
    results = robustness_choice.summarise(scores)
    choice = robustness_choice.choose(results)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "robustness_choice.csv", index=False)
    scores.to_csv(out / "robustness_choice_folds.csv", index=False)
    value = {
        "chosen": choice.params(),
        "why": choice.sentence(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    record.write_text(json.dumps(value, indent=2))
    return value


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


def params_file(folder: Path, train: dict[str, Any], name: str = "params.yaml") -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"] = train
    params["evaluate"]["bootstrap"] = BOOTSTRAP
    path = folder / name
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
    from models.robustness import RobustnessSettings
    from pipeline.evaluate import load_predictors, run_evaluate
    from pipeline.settings import load_params
    from pipeline.train import run_train

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    train = dict(params["train"], jobs=args.jobs)
    if args.grid == "small":
        train.update(SMALL_GRID)
    base_extraction = yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())
    setup = CANDIDATES[candidate](Setup(extraction=base_extraction, train=train, icc_threshold=args.icc_threshold))

    n_split_train = args.n_train - math.ceil(train["test_fraction"] * args.n_train)
    n_ceiling = math.ceil(n_split_train * args.folds / (args.folds - 1))
    seed_a, seed_ext = SEED_A + seed_index, SEED_EXTERNAL + seed_index
    cohorts = {
        "A": cohort(work, world, "A", args.n_train, seed_a, args.jobs),
        "B": cohort(work, world, "B", n_ceiling, seed_ext, args.jobs),
    }
    if args.n_external:
        cohorts["C"] = cohort(work, world, "C", args.n_external, seed_ext, args.jobs)
    if args.site_d:
        cohorts["D"] = cohort(work, world, "D", args.n_external, seed_ext, args.jobs)
    tables = {site: features(work, folder, radiomics, setup.extraction, args.jobs) for site, folder in cohorts.items()}
    truths = {site: pd.read_csv(folder / "truth.csv", dtype={PATIENT_ID: str}) for site, folder in cohorts.items()}

    label = {"icc": f"icc{args.icc_threshold:g}", "chosen": f"chosen-{CHOICE_VERSION}"}.get(candidate, candidate)
    run = work / "runs" / f"seed{seed_index}-{label}-{radiomics.stem}-{args.grid}-n{args.n_train}-{args.folds}folds"
    run.mkdir(parents=True, exist_ok=True)
    robust_inputs: dict[str, Path] = {}
    if setup.perturb:  # crlm perturb of site A's cohort only (the training site)
        block = LIGHT_PERTURB if args.light else {}
        perturbed, icc = perturbed_features(work, cohorts["A"], tables["A"], radiomics, block, args.jobs)
        robust_inputs = {"perturbed": perturbed, "icc": icc}
    if setup.choose:
        log(f"seed {seed_index} {candidate}: choose train.robustness on site A's training split")
        choice = quiet(
            choose_on_site_a, tables["A"], perturbed, icc, params_file(run, setup.train), run / "choice", args.jobs
        )
        log(f"seed {seed_index} {candidate}: chose {choice['why']}")
        setup.train = {**setup.train, "robustness": choice["chosen"]}
        setup.notes.append(f"{candidate}, seed {seed_index}: chose {choice['why']}")
    params_path = params_file(run, setup.train)
    models = run / "models"

    def train_a() -> None:
        log(f"seed {seed_index} {candidate}: train on site A ({args.n_train} patients)")
        quiet(
            run_train, tables["A"], run / "train", models, params_path, TASKS,
            truth=cohorts["A"] / "truth.csv", track=False, jobs=args.jobs, **robust_inputs,
        )  # fmt: skip

    once(run / "train", train_a)
    best = read_best(models)
    split = pd.read_csv(run / "train" / "split.csv", dtype={PATIENT_ID: str})
    held_out = run / "heldout_A.parquet"
    full_a = pd.read_parquet(tables["A"])
    full_a.loc[full_a[PATIENT_ID].isin(split.loc[split["split"] == "test", PATIENT_ID])].to_parquet(held_out)

    rows: list[dict[str, Any]] = []
    targets = {"held-out A": (held_out, "A"), "A->B": (tables["B"], "B")}
    for site in ("C", "D"):
        if site in tables:
            targets[f"A->{site}"] = (tables[site], site)
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
                    "notes": setup.notes,
                }
            )

    # The no-shift ceiling: the same fitting on site B by CV; and the A model on the same folds. The
    # ceiling is fitted WITHOUT train.robustness (no crlm perturb of site B): for the candidates that
    # change only training (icc, augment, chosen) it is the same as none's and is computed once per
    # extraction setting (``<work>/ceilings``); the A->B per fold rows are each candidate's own.
    settings = load_params(params_path, "train").train
    table_b = training.usable_patients(pd.read_parquet(tables["B"]), TASKS)
    folds = cv_folds(table_b, args.folds, settings.seed)
    a_predictors = load_predictors(str(models))
    no_robustness = {**setup.train, "robustness": {"icc_threshold": None, "augment": False}}
    no_robustness.pop("jobs", None)
    ceiling_file = work / "ceilings" / f"{digest([str(tables['B']), no_robustness, args.folds])}.json"
    ceiling_file.parent.mkdir(parents=True, exist_ok=True)
    ceilings = json.loads(ceiling_file.read_text()) if ceiling_file.is_file() else {}
    ceiling_settings = load_params(
        params_file(run, no_robustness | {"jobs": args.jobs}, "params-ceiling.yaml"), "train"
    )
    per_fold = run / "ceiling_folds.json"
    done = json.loads(per_fold.read_text()) if per_fold.is_file() else {}
    for k, test_index in enumerate(folds):
        train_index = np.setdiff1d(np.arange(len(table_b)), test_index)
        for task in TASKS:
            key = f"{task}/{k}"
            known = training.has_outcome(table_b, task).to_numpy()
            tr, te = train_index[known[train_index]], test_index[known[test_index]]
            test = table_b.iloc[te]
            if key not in ceilings and key in done:  # a run folder from before the shared ceilings
                ceilings[key] = {k: done[key][k] for k in ("n_train", "n_test", "model", "ceiling", "oracle")}
                ceiling_file.write_text(json.dumps(ceilings, indent=2))
            if key not in ceilings:
                log(
                    f"seed {seed_index} {candidate}: ceiling fold {k + 1}/{args.folds}, {task} "
                    f"({len(train_index)} site B patients; no robustness)"
                )
                predictor, name = quiet(fit_fold, table_b, task, tr, te, ceiling_settings.train, args.jobs)
                ceilings[key] = {
                    "n_train": len(tr),
                    "n_test": len(te),
                    "model": name,
                    "ceiling": discrimination(task, model_score(task, predictor, test), test),
                    "oracle": discrimination(task, oracle_score(task, truths["B"], test), test),
                }
                ceiling_file.write_text(json.dumps(ceilings, indent=2))
            if key not in done:
                done[key] = {
                    **ceilings[key],
                    "a_to_b": discrimination(task, model_score(task, a_predictors[task][best[task]], test), test),
                }
                per_fold.write_text(json.dumps(done, indent=2))
    robust = RobustnessSettings(**(setup.train.get("robustness") or {})).active
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
                    + (" (no robustness)" if robust else "") if key == "ceiling" else best[task],
                }
            )  # fmt: skip
    return rows


ARMS = ("held-out A", "ceiling B (CV)", "A->B per fold", "A->B", "A->C", "A->D")


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
        if r["arm"] not in ("held-out A", "A->B", "A->C", "A->D") or r.get("flag_rate") is None:
            continue
        cohort_name = {"held-out A": "held-out A", "A->B": "B", "A->C": "C", "A->D": "D"}[r["arm"]]
        lines.append(
            f"| {r['seed']} | {r['candidate']} | {r['task']} | {cohort_name} | {pct(r['flag_rate'])} "
            f"({r['n_flagged']}/{r['n']}) | {fmt(r['flagged'])} | {fmt(r['unflagged'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="world seeds (default 5)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="index of the first seed (default 0): --first-seed 2 --seeds 3 runs 2, 3, 4",
    )
    parser.add_argument("--candidates", default="none", help=f"comma-separated, of {', '.join(CANDIDATES)}")
    parser.add_argument("--n-train", type=int, default=400, help="site A patients (default 400, as params.yaml)")
    parser.add_argument("--n-external", type=int, default=200, help="site C patients (default 200; 0: no site C)")
    parser.add_argument("--site-d", action="store_true", help="also site D (--n-external patients; SITE_D)")
    parser.add_argument("--folds", type=int, default=5, help="CV folds of the ceiling on site B (default 5)")
    parser.add_argument("--light", action="store_true", help="light radiomics (a quick check, not the numbers)")
    parser.add_argument(
        "--grid", choices=("small", "default"), default="default", help="train grid (default: params.yaml)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="workers for synthesis, extraction and fits (default 2)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crlm-scanner-robustness"), help="kept; resumes")
    parser.add_argument(
        "--icc-threshold", type=float, default=ICC_THRESHOLD, help="the icc candidate's threshold (default 0.5)"
    )
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
    for seed_index in range(args.first_seed, args.first_seed + args.seeds):
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
        f"`python bench/scanner_robustness.py --first-seed {args.first_seed} --seeds {args.seeds} --candidates {','.join(candidates)} "
        f"--n-train {args.n_train} --n-external {args.n_external} --folds {args.folds} --grid {args.grid} "
        f"--jobs {args.jobs}{' --light' if args.light else ''} --icc-threshold {args.icc_threshold:g}` "
        f"(radiomics: {radiomics.name}; evaluate.bootstrap {BOOTSTRAP}: point estimates only; crlm perturb of "
        f"site A only, robustness {LIGHT_PERTURB if args.light else 'as params.yaml'}). Ceiling: the same for "
        "every candidate of one extraction setting, measured without robustness (site B is not perturbed)"
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
            *dict.fromkeys(note for r in rows for note in r.get("notes", [])),
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
