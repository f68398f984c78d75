"""Batch inference (``crlm predict``) throughput and peak memory at two cohort sizes.

    python bench/inference.py [--sizes 50 400] [--jobs 1] [--chunk-size 32] [--models artifacts/models]
                              [--light] [--keep DIR] [--json PATH]

Synthesizes one external-site cohort (``pipeline.cohort.write_cohort``, site B) of the largest
size in a temporary folder; each smaller size is its first rows. Each size then runs in a fresh
spawned process (``run_predict`` with an empty extraction cache, so every case is extracted),
which reports seconds, the share spent extracting images, and peak memory: ``VmHWM`` of the
process (Linux carries ``ru_maxrss`` over the fork + exec, see bench/extraction.py) and the
peak of its resident memory plus its workers' (sampled with psutil), so peaks are comparable
between sizes. Prints patients per minute and the ratio of the peaks (target: within 15%,
i.e. memory does not grow with the cohort). A benchmark, not a test: nothing is asserted.

``--models`` defaults to ``artifacts/models`` (from ``make repro``, with ``configs/radiomics.yaml``);
``--light`` instead trains a small model on light radiomics settings (original image, shape,
first order, GLCM) in the temporary folder: quick, but cheaper extraction than the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SIZES = (50, 400)
DEFAULT_MODELS = REPO / "artifacts" / "models"
SITE, SEED = "B", 101
PEAK_RATIO_TARGET = 1.15  # largest size's peak / smallest size's peak
SAMPLE_SECONDS = 0.1  # resident-memory sampling period of a benchmark process
MIB = 1024 * 1024
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
LIGHT_TRAIN_PATIENTS = 160
LIGHT_GRID = {
    "seed": 3,
    "cv_folds": 3,
    "correlation_threshold": 0.95,
    "k_features": [8],
    "test_fraction": 0.3,
    "jobs": 1,
    "grids": {
        "coxnet": {"alphas": [[0.05]]},
        "logistic": {"C": [0.1]},
        "xgb_cox": {"max_depth": [1], "n_estimators": [50]},
        "xgb_aft": {"max_depth": [1], "n_estimators": [50]},
        "xgb": {"max_depth": [1], "n_estimators": [50]},
    },
}


# --------------------------------------------------------------------------- child process


def _vm_hwm_mib() -> float:
    """Peak resident memory of this process (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class TreePeak:
    """Samples the resident memory of this process plus its children (joblib workers)."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> None:
    """One benchmark run; prints a JSON line with its measurements."""
    from pipeline.predict import SUMMARY_FILE, run_predict

    with TreePeak() as tree:
        start = time.perf_counter()
        run_predict(
            Path(args.cohort),
            [args.models],
            Path(args.out),
            jobs=args.jobs,
            chunk_size=args.chunk_size,
            cache=Path(args.out) / "cache",
            progress=False,
            radiomics_params=Path(args.radiomics),
        )
        seconds = time.perf_counter() - start
    summary = json.loads((Path(args.out) / SUMMARY_FILE).read_text())
    print(
        json.dumps(
            {
                "patients": summary["patients"],
                "ok": summary["ok"],
                "seconds": seconds,
                "extraction_seconds": summary["extraction_seconds"],
                "vm_hwm_mib": _vm_hwm_mib(),
                "tree_peak_mib": tree.peak / MIB,
            }
        )
    )


# --------------------------------------------------------------------------- parent


def _light_models(folder: Path, cohort: Path) -> tuple[Path, Path]:
    """Train a small model on light radiomics settings; return (models folder, radiomics yaml)."""
    import numpy as np
    import pandas as pd
    import yaml

    from features import extraction, radiomics
    from features.patient_table import patient_feature_table
    from features.schema import PATIENT_ID
    from models import training
    from pipeline import synthesis
    from pipeline.train import run_train
    from pipeline.world import load_labels, load_world

    params = folder / "radiomics_light.yaml"
    params.write_text(yaml.safe_dump(LIGHT_RADIOMICS))
    world, labels = load_world(REPO / "configs" / "world.yaml"), load_labels(REPO / "configs" / "labels.yaml")
    clinical = pd.read_csv(cohort, dtype={PATIENT_ID: str}).head(4)
    options = extraction.CaseOptions(radiomics.ExtractionSettings(LIGHT_RADIOMICS, 25.0), labels)
    cases = [
        extraction.CaseInput(p, cohort.parent / i, cohort.parent / m)
        for p, i, m in clinical[[PATIENT_ID, "image", "mask"]].itertuples(index=False)
    ]
    lesions, report = extraction.extract_cohort(cases, options, None, progress=False)
    imaging = patient_feature_table(clinical, pd.Series("ok", index=clinical.index), lesions, report)
    columns = [c for c in imaging if c.startswith(training.IMAGING_PREFIXES) and c != PATIENT_ID]
    train, _ = synthesis.simulate_cohort(LIGHT_TRAIN_PATIENTS, seed=SEED + 1, site="A", world=world)
    table = patient_feature_table(train, pd.Series("ok", index=train.index))
    donors = imaging[columns].to_numpy(float)[np.arange(len(table)) % len(imaging)]
    donors = donors * np.random.default_rng(0).lognormal(0.0, 0.1, donors.shape)
    table = pd.concat([table, pd.DataFrame(donors, columns=columns)], axis=1)
    table.to_parquet(folder / "light_train.parquet")
    (folder / "params.yaml").write_text(yaml.safe_dump({"train": LIGHT_GRID, "evaluate": {"bootstrap": 10, "seed": 0}}))
    run_train(
        folder / "light_train.parquet",
        folder / "light_train",
        folder / "light_models",
        folder / "params.yaml",
        training.TASKS,
        track=False,
    )
    return folder / "light_models", params


def _run_child(cohort: Path, out: Path, models: str, radiomics: Path, jobs: int, chunk_size: int) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--cohort",
        str(cohort),
        "--out",
        str(out),
        "--models",
        models,
        "--radiomics",
        str(radiomics),
        "--jobs",
        str(jobs),
        "--chunk-size",
        str(chunk_size),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark run on {cohort} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="cohort sizes (patients)")
    parser.add_argument("--jobs", type=int, default=1, help="extraction workers per run")
    parser.add_argument("--chunk-size", type=int, default=None, help="patients per chunk (default: run_predict's)")
    parser.add_argument("--models", default=str(DEFAULT_MODELS), help="models folder or models:/ URI")
    parser.add_argument(
        "--radiomics",
        type=Path,
        default=REPO / "configs" / "radiomics.yaml",
        help="radiomics parameters the models were trained with",
    )
    parser.add_argument("--light", action="store_true", help="train a small light-radiomics model instead")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the printed numbers to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cohort", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from pipeline.predict import DEFAULT_CHUNK_SIZE

    args.chunk_size = args.chunk_size or DEFAULT_CHUNK_SIZE
    if args.child:
        child(args)
        return

    import pandas as pd

    from pipeline.cohort import write_cohort
    from pipeline.world import load_labels, load_world

    sizes = sorted(set(args.sizes))
    with tempfile.TemporaryDirectory(prefix="crlm-bench-inference-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cohort_dir = work / "cohort"
        start = time.perf_counter()
        if not (cohort_dir / "clinical.csv").is_file() or len(pd.read_csv(cohort_dir / "clinical.csv")) < sizes[-1]:
            write_cohort(
                cohort_dir,
                n=sizes[-1],
                seed=SEED,
                site=SITE,
                world=load_world(REPO / "configs" / "world.yaml"),
                labels=load_labels(REPO / "configs" / "labels.yaml"),
                jobs=-1,
                progress=True,
            )
        print(f"synthesized {sizes[-1]} patients (site {SITE}) in {time.perf_counter() - start:.0f} s")
        models, radiomics = args.models, args.radiomics
        if args.light:
            folder, radiomics = _light_models(work, cohort_dir / "clinical.csv")
            models = str(folder)
        elif not models.startswith("models:/") and not Path(models).is_dir():
            raise SystemExit(f"{models} not found: run `make repro` first, or pass --light or --models")
        full = pd.read_csv(cohort_dir / "clinical.csv", dtype=str, keep_default_na=False)
        rows = []
        for n in sizes:
            cohort = cohort_dir / f"first_{n}.csv"
            full.head(n).to_csv(cohort, index=False)
            result = _run_child(cohort, work / f"out_{n}", models, radiomics, args.jobs, args.chunk_size)
            rows.append(
                {
                    "patients": n,
                    "ok": result["ok"],
                    "seconds": round(result["seconds"], 1),
                    "patients_per_min": round(n / result["seconds"] * 60, 1),
                    "extraction_share": round(result["extraction_seconds"] / result["seconds"], 3),
                    "VmHWM_MiB": round(result["vm_hwm_mib"]),
                    "tree_peak_MiB": round(result["tree_peak_mib"]),
                }
            )
        table = pd.DataFrame(rows)
    print(
        f"\ncrlm predict benchmark: {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
        f"models {models}; radiomics {Path(radiomics).name}; jobs {args.jobs}, chunk size {args.chunk_size}"
    )
    print(table.to_string(index=False))
    ratios = {}
    for column in ("VmHWM_MiB", "tree_peak_MiB"):
        ratio = table[column].iloc[-1] / table[column].iloc[0]
        ratios[column] = float(ratio)
        verdict = "within" if ratio <= PEAK_RATIO_TARGET else "ABOVE"
        print(
            f"peak {column} ratio {sizes[-1]} vs {sizes[0]} patients: {ratio:.3f} "
            f"({verdict} the {PEAK_RATIO_TARGET - 1:.0%} target)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "host": platform.node(),
                    "cpus": os.cpu_count(),
                    "models": str(models),
                    "light": args.light,
                    "radiomics": Path(radiomics).name,
                    "jobs": args.jobs,
                    "chunk_size": args.chunk_size,
                    "rows": json.loads(table.to_json(orient="records")),
                    "peak_ratio": ratios,
                    "peak_ratio_target": PEAK_RATIO_TARGET,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
