"""``crlm predict`` extracting what the model uses (issue 14, item 3): full against reduced extraction.

    python bench/predict_subset.py [--n 60] [--repeats 3] [--jobs 2] [--k 20] [--cases 8] [--json PATH]

Synthesizes ``--n`` external-site patients (site B), trains a model on the project's own
``configs/radiomics.yaml`` features (4 phantoms extracted with it, their values jittered over
160 simulated training patients, as ``inference.py --light`` does with light settings;
``--k`` imaging features selected, as ``params.yaml`` selects 20-80), then runs
``pipeline.predict.run_predict`` with a cold cache in fresh processes, alternating the full
extraction (``extraction.options_for_columns`` replaced by the identity, as the test does) and
the reduced one (per derived image only the classes and features the models use). Prints
patients per minute, the extraction share, peak memory (VmHWM of the process; with ``--jobs 1``
it is the worker), whether both predicted the same numbers (they must, to 1e-12), and, in one
process, the seconds per case of ``extraction.extract_case`` (no cache) full and reduced for
``--cases`` patients, with the reduced case split into read/checks, pyradiomics' filters and
the feature classes (cProfile of one case).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED, SITE, TRAIN_PATIENTS = 23, "B", 160


def child(mode: str, cohort: str, models: str, out: str, jobs: int) -> None:
    sys.path.insert(0, str(REPO))
    from features import extraction
    from pipeline.predict import SUMMARY_FILE, run_predict

    if mode == "full":
        extraction.options_for_columns = lambda options, columns: options
    start = time.perf_counter()
    run_predict(
        Path(cohort),
        [models],
        Path(out),
        jobs=jobs,
        cache=Path(out) / "cache",
        progress=False,
        radiomics_params=REPO / "configs" / "radiomics.yaml",
    )
    seconds = time.perf_counter() - start
    summary = json.loads((Path(out) / SUMMARY_FILE).read_text())
    hwm = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "patients": summary["patients"],
                "ok": summary["ok"],
                "extraction_seconds": summary["extraction_seconds"],
                "vm_hwm_mib": hwm,
            }
        )
    )


def train_models(work: Path, cohort: Path, k: int) -> Path:
    import numpy as np
    import pandas as pd
    import yaml

    from features import extraction
    from features.patient_table import patient_feature_table
    from features.schema import PATIENT_ID
    from models import training
    from pipeline import synthesis
    from pipeline.extract import case_options
    from pipeline.world import load_world

    options, _ = case_options(
        REPO / "configs" / "radiomics.yaml", REPO / "configs" / "extraction.yaml", REPO / "configs" / "labels.yaml"
    )
    clinical = pd.read_csv(cohort, dtype={PATIENT_ID: str}).head(4)
    cases = [
        extraction.CaseInput(p, cohort.parent / i, cohort.parent / m)
        for p, i, m in clinical[[PATIENT_ID, "image", "mask"]].itertuples(index=False)
    ]
    lesions, report = extraction.extract_cohort(cases, options, None, progress=False)
    imaging = patient_feature_table(clinical, pd.Series("ok", index=clinical.index), lesions, report)
    columns = [c for c in imaging if c.startswith(training.IMAGING_PREFIXES) and c != PATIENT_ID]
    train, _ = synthesis.simulate_cohort(
        TRAIN_PATIENTS, seed=SEED + 1, site="A", world=load_world(REPO / "configs" / "world.yaml")
    )
    table = patient_feature_table(train, pd.Series("ok", index=train.index))
    donors = imaging[columns].to_numpy(float)[np.arange(len(table)) % len(imaging)]
    donors = donors * np.random.default_rng(0).lognormal(0.0, 0.1, donors.shape)
    pd.concat([table, pd.DataFrame(donors, columns=columns)], axis=1).to_parquet(work / "train.parquet")
    grid = {
        "seed": 3,
        "cv_folds": 3,
        "correlation_threshold": 0.95,
        "k_features": [k],
        "test_fraction": 0.3,
        "select_among": "imaging",
        "jobs": 1,
        "grids": {
            "coxnet": {"alphas": [[0.05]]},
            "xgb_cox": {"max_depth": [1], "n_estimators": [50]},
            "xgb_aft": {"max_depth": [1], "n_estimators": [50]},
            "logistic": {"C": [0.1]},
            "xgb": {"max_depth": [1], "n_estimators": [50]},
        },
    }
    (work / "params.yaml").write_text(yaml.safe_dump({"train": grid, "evaluate": {"bootstrap": 10, "seed": 0}}))
    from pipeline.train import run_train

    run_train(
        work / "train.parquet", work / "train", work / "models", work / "params.yaml", training.TASKS, track=False
    )
    return work / "models"


def per_case(cohort: Path, used: list[str], cases: int) -> dict:
    """Seconds of ``extract_case`` (no cache) per case, full and reduced, alternating, in this
    process; and a cProfile split of one reduced case (cumulative seconds of its parts)."""
    import cProfile
    import pstats

    import pandas as pd

    from features import extraction
    from features.schema import PATIENT_ID
    from pipeline.extract import case_options

    full, _ = case_options(
        REPO / "configs" / "radiomics.yaml", REPO / "configs" / "extraction.yaml", REPO / "configs" / "labels.yaml"
    )
    reduced = extraction.options_for_columns(full, used)
    assert reduced.settings.features is not None, "the model's columns could not be traced"
    table = pd.read_csv(cohort, dtype={PATIENT_ID: str}).dropna(subset=["image", "mask"]).head(cases)
    inputs = [
        extraction.CaseInput(p, cohort.parent / i, cohort.parent / m)
        for p, i, m in table[[PATIENT_ID, "image", "mask"]].itertuples(index=False)
    ]
    extraction.extract_case(inputs[0], full, None)  # warm imports
    seconds: dict[str, list[float]] = {"full": [], "reduced": []}
    for k, case in enumerate(inputs):
        for side in ("full", "reduced") if k % 2 == 0 else ("reduced", "full"):
            start = time.perf_counter()
            extraction.extract_case(case, full if side == "full" else reduced, None)
            seconds[side].append(time.perf_counter() - start)
    profile = cProfile.Profile()
    profile.enable()
    extraction.extract_case(inputs[0], reduced, None)
    profile.disable()
    stats = pstats.Stats(profile).stats
    parts = {
        "load_case (read, cast, checks)": "load_case",
        "wavelet decomposition (_swt3)": "_swt3",
        "LoG filter": "getLoGImage",
        "feature classes (execute)": "execute",
        "resample": "resampleImage",
        "whole case": "extract_case",
    }
    split = {
        label: round(max((v[3] for (_, _, fn), v in stats.items() if fn == name), default=0.0), 3)
        for label, name in parts.items()
    }
    result = {side: {"median_s": statistics.median(values), "cases": len(values)} for side, values in seconds.items()}
    result["speedup"] = result["full"]["median_s"] / result["reduced"]["median_s"]
    result["reduced_split_s"] = split
    print(json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:4], int(args.child[4]))
        return
    sys.path.insert(0, str(REPO))
    import numpy as np
    import pandas as pd

    from pipeline.cohort import write_cohort
    from pipeline.world import load_labels, load_world

    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="crlm-bench-predict-") as tmp:
        work = Path(tmp)
        write_cohort(
            work / "cohort",
            n=args.n,
            seed=SEED,
            site=SITE,
            world=load_world(REPO / "configs" / "world.yaml"),
            labels=load_labels(REPO / "configs" / "labels.yaml"),
            jobs=args.jobs,
            progress=False,
        )
        cohort = work / "cohort" / "clinical.csv"
        models = train_models(work, cohort, args.k)
        from models.predictor import used_columns
        from pipeline.predict import load_models

        loaded = load_models([str(models)], REPO)
        inputs = sorted({c for m in loaded for c in m.feature_columns if c.startswith("rad_")})
        used = sorted(
            {c for m in loaded for c in used_columns(m.predictor.pipeline, m.feature_columns) if c.startswith("rad_")}
        )
        print(f"models take {len(inputs)} radiomics inputs and use {len(used)}: {used}")
        runs: dict[str, list[dict]] = {"full": [], "reduced": []}
        tables: dict[str, pd.DataFrame] = {}
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
        for repeat in range(args.repeats):
            order = ("full", "reduced") if repeat % 2 == 0 else ("reduced", "full")
            for side in order:
                out = work / f"out_{side}_{repeat}"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", side, str(cohort), str(models), str(out), str(args.jobs)],
                    capture_output=True,
                    text=True,
                    env={**env, "PYTHONPATH": str(REPO)},
                    cwd=REPO,
                )
                if done.returncode:
                    raise RuntimeError(done.stderr[-3000:])
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[side].append(result)
                tables[side] = pd.read_csv(out / "predictions.csv")
                print(
                    f"{side:7s} repeat {repeat + 1}: {result['seconds']:.1f} s, "
                    f"{result['patients'] / result['seconds'] * 60:.1f} patients/min, "
                    f"extraction {result['extraction_seconds'] / result['seconds']:.0%}, "
                    f"VmHWM {result['vm_hwm_mib']:.0f} MiB, ok {result['ok']}/{result['patients']}",
                    flush=True,
                )
        numbers = [c for c in tables["reduced"] if pd.api.types.is_float_dtype(tables["reduced"][c])]
        gap = float(
            np.nanmax(np.abs(tables["reduced"][numbers].to_numpy(float) - tables["full"][numbers].to_numpy(float)))
        )
        same = tables["reduced"]["status"].equals(tables["full"]["status"]) and gap <= 1e-12
        summary = {
            side: {
                "seconds": statistics.median(r["seconds"] for r in rs),
                "patients_per_minute": statistics.median(r["patients"] / r["seconds"] * 60 for r in rs),
                "extraction_share": statistics.median(r["extraction_seconds"] / r["seconds"] for r in rs),
                "vm_hwm_mib": max(r["vm_hwm_mib"] for r in rs),
            }
            for side, rs in runs.items()
        }
        summary.update(
            {
                "speedup": summary["reduced"]["patients_per_minute"] / summary["full"]["patients_per_minute"],
                "max_abs_difference": gap,
                "identical": same,
                "n": args.n,
                "jobs": args.jobs,
                "radiomics_inputs": len(used),
                "load_average": os.getloadavg(),
                "per_case": per_case(cohort, used, args.cases),
            }
        )
        print(json.dumps(summary, indent=1))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
