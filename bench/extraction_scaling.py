"""Cohort extraction time with 1 and 2 local processes and on a 2-worker Dask LocalCluster.

    python bench/extraction_scaling.py [--n N] [--repeats R] [--radiomics configs/radiomics.yaml] [--no-dask]
                                       [--json PATH]

Writes one small synthetic cohort (site B, seed 11) to a temporary folder, then extracts it
(no cache) through ``pipeline.execution.map_cases`` three ways: ``jobs=1``, ``jobs=2`` and a
``distributed.LocalCluster`` with 2 single-threaded worker processes. Start-up (joblib's process
pool, the cluster) is timed apart from the extraction and excluded from the ratios; each
extraction time is the best of ``--repeats``. Prints the machine, seconds per configuration,
seconds per case and the speed-up over ``jobs=1``, and whether every configuration produced the
same tables. Nothing is asserted; on a shared machine look at the load average first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from features import extraction, radiomics  # noqa: E402
from pipeline import cohort  # noqa: E402
from pipeline.execution import map_cases  # noqa: E402
from pipeline.inputs import load_extraction_config  # noqa: E402
from pipeline.world import load_labels, load_world  # noqa: E402

TIMING_COLUMNS = [extraction.SECONDS, extraction.CACHED]


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, load average {load}"


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def best_of(repeats: int, function) -> tuple[float, object]:
    runs = [timed(function) for _ in range(repeats)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="patients in the cohort")
    parser.add_argument("--repeats", type=int, default=1, help="extractions per configuration (best kept)")
    parser.add_argument(
        "--radiomics",
        "--params",
        dest="params",
        type=Path,
        default=REPO / "configs" / "radiomics.yaml",
        help="pyradiomics parameter file (--params: its old name, as crlm extract)",
    )
    parser.add_argument("--no-dask", action="store_true", help="local processes only")
    parser.add_argument("--json", type=Path, default=None, help="also write the printed numbers to this JSON file")
    args = parser.parse_args()

    labels = load_labels(REPO / "configs" / "labels.yaml")
    config = load_extraction_config(REPO / "configs" / "extraction.yaml")
    options = extraction.CaseOptions(
        settings=radiomics.ExtractionSettings(radiomics.load_radiomics_params(args.params), config.crop_margin_mm),
        labels=labels,
        min_lesion_voxels=config.min_lesion_voxels,
    )
    summary = {"machine": machine(), "n": args.n, "repeats": args.repeats, "params": args.params.name}
    print(f"machine: {summary['machine']}")
    with tempfile.TemporaryDirectory(prefix="crlm-bench-") as tmp:
        seconds, _ = timed(
            lambda: cohort.write_cohort(
                tmp,
                n=args.n,
                seed=11,
                site="B",
                world=load_world(REPO / "configs" / "world.yaml"),
                labels=labels,
                jobs=2,
                progress=False,
            )
        )
        cases = extraction.read_manifest(Path(tmp) / cohort.CLINICAL_FILE)
        print(
            f"cohort: {args.n} patients, site B, written in {seconds:.1f} s; settings {args.params.name}; "
            f"best of {args.repeats}\n"
        )

        rows, tables = [], {}

        def run(name: str, startup: float, **where) -> None:
            seconds, result = best_of(
                args.repeats,
                lambda: extraction.extract_cohort(cases, options, None, progress=False, map_cases=map_cases, **where),
            )
            tables[name] = result
            rows.append((name, startup, seconds))

        run("jobs=1", 0.0, jobs=1)
        startup, _ = timed(lambda: list(map_cases(abs, range(2), jobs=2, progress=False)))
        run("jobs=2", startup, jobs=2)
        if not args.no_dask:
            from distributed import Client, LocalCluster

            start = time.perf_counter()
            with (
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
                Client(cluster, set_as_default=False) as client,
            ):
                list(map_cases(abs, range(2), scheduler=client, progress=False))
                run("dask 2 workers", time.perf_counter() - start, scheduler=client)

    reference = rows[0][2]
    print(f"{'configuration':<16} {'start-up s':>10} {'extract s':>10} {'s/case':>8} {'speed-up':>9}")
    for name, startup, seconds in rows:
        print(f"{name:<16} {startup:>10.1f} {seconds:>10.1f} {seconds / len(cases):>8.2f} {reference / seconds:>8.2f}x")
    lesions, report = tables["jobs=1"]
    same = all(
        lesions.equals(other_lesions)
        and report.drop(columns=TIMING_COLUMNS).equals(other_report.drop(columns=TIMING_COLUMNS))
        for other_lesions, other_report in tables.values()
    )
    print(f"\n{len(lesions)} lesions; identical tables across configurations: {same}")
    if args.json:
        summary.update(
            cases=len(cases),
            lesions=len(lesions),
            identical_tables=bool(same),
            configurations=[
                {
                    "configuration": name,
                    "startup_s": startup,
                    "extract_s": seconds,
                    "s_per_case": seconds / len(cases),
                    "speedup": reference / seconds,
                }
                for name, startup, seconds in rows
            ],
        )
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
