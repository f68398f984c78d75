"""``crlm predict`` extracting what the model uses (issue 14, item 3), against another revision.

    python bench/predict_subset.py [--against REV] [--n 60] [--repeats 2] [--jobs 2] [--k 20] [--json PATH]

Synthesizes ``--n`` external-site patients (site B), trains a model on the project's own
``configs/radiomics.yaml`` features (4 phantoms extracted with it, their values jittered over
160 simulated training patients, as ``inference.py --light`` does with light settings;
``--k`` imaging features selected, as ``params.yaml`` selects 20-80), then runs
``pipeline.predict.run_predict`` with a cold cache in fresh processes, alternating this working
tree and revision ``--against`` (default ``33211ea``, before issue 14 items 1-3; exported with
``git archive``). Prints patients per minute, the extraction share, peak memory (VmHWM of the
process; with ``--jobs 1`` it is the worker) and whether both revisions predicted the same
numbers (they must, to 1e-12).
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


def child(tree: str, cohort: str, models: str, out: str, jobs: int) -> None:
    sys.path.insert(0, tree)
    from pipeline.predict import SUMMARY_FILE, run_predict

    start = time.perf_counter()
    run_predict(
        Path(cohort),
        [models],
        Path(out),
        jobs=jobs,
        cache=Path(out) / "cache",
        progress=False,
        radiomics_params=Path(tree) / "configs" / "radiomics.yaml",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="33211ea")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--k", type=int, default=20)
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
        old = work / "against"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.against], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
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
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        tables: dict[str, pd.DataFrame] = {}
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
        for repeat in range(args.repeats):
            order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
            for side in order:
                tree = str(old if side == "before" else REPO)
                out = work / f"out_{side}_{repeat}"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", tree, str(cohort), str(models), str(out), str(args.jobs)],
                    capture_output=True,
                    text=True,
                    env={**env, "PYTHONPATH": tree},
                    cwd=tree,
                )
                if done.returncode:
                    raise RuntimeError(done.stderr[-3000:])
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[side].append(result)
                tables[side] = pd.read_csv(out / "predictions.csv")
                print(
                    f"{side:6s} repeat {repeat + 1}: {result['seconds']:.1f} s, "
                    f"{result['patients'] / result['seconds'] * 60:.1f} patients/min, "
                    f"extraction {result['extraction_seconds'] / result['seconds']:.0%}, "
                    f"VmHWM {result['vm_hwm_mib']:.0f} MiB, ok {result['ok']}/{result['patients']}",
                    flush=True,
                )
        numbers = [c for c in tables["after"] if pd.api.types.is_float_dtype(tables["after"][c])]
        gap = float(
            np.nanmax(np.abs(tables["after"][numbers].to_numpy(float) - tables["before"][numbers].to_numpy(float)))
        )
        same = tables["after"]["status"].equals(tables["before"]["status"]) and gap <= 1e-12
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
                "speedup": summary["after"]["patients_per_minute"] / summary["before"]["patients_per_minute"],
                "max_abs_difference": gap,
                "identical": same,
                "n": args.n,
                "jobs": args.jobs,
                "radiomics_inputs": len(used),
                "load_average": os.getloadavg(),
            }
        )
        print(json.dumps(summary, indent=1))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
