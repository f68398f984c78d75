"""Every benchmark in bench/ plus the wall time of `dvc repro`, summarised in one markdown table.

    python bench/run_all.py [--quick] [--skip-repro] [--write] [--only NAME ...]
                            [--repeats R] [--n N] [--sizes S ...] [--jobs J] [--models DIR]
                            [--repro-set KEY=VALUE ...] [--timeout S] [--log-dir DIR]

Runs, each as its own subprocess (so every peak-memory figure belongs to one benchmark):

- ``extraction``: bench/extraction.py --repeats 3 (4 realistic cases: crlm extract vs pyradiomics default,
  whole processes and in-process, with the per-case split);
- ``scaling``:    bench/extraction_scaling.py --n 12 (jobs=1, jobs=2, a 2-worker Dask LocalCluster);
- ``inference``:  bench/inference.py --sizes 50 400 --jobs 2 (patients/minute, peak memory, peak ratio);
- ``repro``:      the wall time of the default pipeline, `dvc repro`, and its seconds per stage
  (each output line time-stamped, `stage_seconds`), in a scratch copy of the
  repository (tracked and untracked-but-not-ignored files, ``git ls-files -co --exclude-standard``),
  so the user's data/, reports/, artifacts/, mlruns/ and DVC cache are never touched.

``--quick`` shrinks everything (repeats 1, n 6, sizes 10 40) and skips ``repro``. The repro runs
first when it runs, because its fresh models are the ones the inference benchmark then uses:
models are, in order, ``--models``; the repro copy's ``artifacts/models``; the repository's
``artifacts/models`` when not empty; otherwise ``bench/inference.py --light`` (a small
light-radiomics model, which under-states the extraction share). The table says which.

Each benchmark writes a JSON summary (``--json``) and its full output to a log in ``--log-dir``
(default: a new temporary folder, kept and named on stderr). A failed benchmark is a table row
``failed: <reason>``; the others still run, and the exit code is then 1. The table goes to
stdout, and to bench/results.md with ``--write`` only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine_info import cpu_model  # bench/machine_info.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results.md"
BIN = Path(sys.executable).parent  # the project's venv (make runs $(BIN)/python)
NAMES = ("extraction", "scaling", "inference", "repro")
LABELS = {"extraction": "extraction", "scaling": "extraction scaling", "inference": "inference", "repro": "dvc repro"}
FULL = {"repeats": 3, "n": 12, "sizes": [50, 400]}
QUICK = {"repeats": 1, "n": 6, "sizes": [10, 40]}
# Nothing phones home (as in the Makefile).
QUIET_ENV = {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}

Row = tuple[str, str, str, str]


class Failed(Exception):
    """A benchmark did not produce its numbers; the message is the reason shown in the table."""


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    model = cpu_model()
    memory_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 1024**2  # kB
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "load": os.getloadavg(),
    }


def header_line(m: dict[str, Any]) -> str:
    load = ", ".join(f"{v:.2f}" for v in m["load"])
    return (
        f"{m['date']}, host {m['host']}, {m['cpu']}, {m['cores']} cores, {m['memory_gib']:.1f} GiB memory, "
        f"load average at start {load}"
    )


# --------------------------------------------------------------------------- running


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def stop_group(process: subprocess.Popen) -> None:
    """Interrupt the benchmark's process group (so its temporary folders are removed), then kill it."""
    for sig, grace in ((signal.SIGINT, 15.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


STAMP = "[t+{:.1f}s] "  # prefix of each output line with ``stamp=True`` (seconds since the start)


def run_logged(
    command: list[str],
    log_path: Path,
    timeout: float | None,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    stamp: bool = False,
) -> float:
    """Run ``command`` in its own process group, output to ``log_path``; return wall seconds.

    With ``stamp`` every output line is prefixed with the seconds since the start (`STAMP`), so
    that `stage_seconds` can split the run. On a timeout or an interrupt the whole group (the
    benchmark and its workers) is stopped."""
    start = time.perf_counter()
    with log_path.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env or {**os.environ, **QUIET_ENV},
            stdout=subprocess.PIPE if stamp else out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

        def copy_stamped() -> None:
            for raw in process.stdout:
                out.write(STAMP.format(time.perf_counter() - start) + raw.decode(errors="replace"))
                out.flush()

        reader = threading.Thread(target=copy_stamped, daemon=True) if stamp else None
        if reader is not None:
            reader.start()
        try:
            code = process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
            stop_group(process)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise Failed(f"timed out after {timeout:g} s") from None
        finally:
            if reader is not None:
                reader.join(timeout=10)
    seconds = time.perf_counter() - start
    if code != 0:
        reason = last_line(log_path)
        raise Failed(f"exit code {code}" + (f": {reason}" if reason else ""))
    return seconds


def run_script(script: str, arguments: list[str], work: Path, name: str, timeout: float | None) -> dict[str, Any]:
    """Run bench/<script> with ``--json``; return its summary."""
    summary = work / f"{name}.json"
    summary.unlink(missing_ok=True)
    run_logged([sys.executable, str(BENCH / script), *arguments, "--json", str(summary)], work / f"{name}.log", timeout)
    if not summary.is_file():
        raise Failed(f"{script} wrote no JSON summary")
    return json.loads(summary.read_text())


# --------------------------------------------------------------------------- dvc repro in a scratch copy

_STAGE = re.compile(r"^\[t\+(?P<t>[\d.]+)s\] Running stage '(?P<stage>[^']+)':")


def stage_seconds(log_text: str, total: float) -> dict[str, float]:
    """Seconds per DVC stage of a `run_logged(..., stamp=True)` log of `dvc repro`: from one
    "Running stage" line to the next (DVC's own hashing and lock-file writes count to the stage
    before), the last one to ``total``. Stages DVC skipped as unchanged print no such line."""
    starts = [(m["stage"], float(m["t"])) for m in map(_STAGE.match, log_text.splitlines()) if m]
    ends = [t for _, t in starts[1:]] + [total]
    return {stage: round(end - begin, 1) for (stage, begin), end in zip(starts, ends, strict=True)}


def _set_param(params: dict[str, Any], assignment: str) -> None:
    import yaml

    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise Failed(f"--repro-set expects KEY=VALUE, got {assignment!r}")
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def copy_repository(destination: Path) -> int:
    """Tracked and untracked-but-not-ignored files (the working tree as it is, uncommitted changes
    included; ignored data, caches and the venv left out). Read-only git. Returns the file count."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=False
    )
    if listing.returncode != 0:
        raise Failed(f"git ls-files: {listing.stderr.decode(errors='replace').strip()[-200:]}")
    count = 0
    for name in sorted({n for n in listing.stdout.decode().split("\0") if n}):
        source = REPO / name
        if not source.exists() and not source.is_symlink():  # tracked but deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        count += 1
    return count


def time_repro(work: Path, overrides: list[str], timeout: float | None, keep: list[Path]) -> dict[str, Any]:
    """Copy the repository to a scratch folder and time `dvc repro` there.

    The copy runs its own code: ``PYTHONPATH=<copy>`` puts it ahead of the venv's editable install
    (whose finder comes last on ``sys.meta_path``), so ``crlm``'s REPO_ROOT, default config paths
    and MLflow store are the copy's. DVC runs without git in the copy (``core.no_scm`` in
    ``.dvc/config.local``) and with an empty cache, so every stage runs."""
    import yaml

    copy = Path(tempfile.mkdtemp(prefix="crlm-bench-repro-")).resolve()
    keep.append(copy)
    log_path = work / "repro.log"
    files = copy_repository(copy)
    (copy / ".dvc").mkdir(exist_ok=True)
    (copy / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
    params_file = copy / "params.yaml"
    if overrides:
        params = yaml.safe_load(params_file.read_text())
        for assignment in overrides:
            _set_param(params, assignment)
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    params = yaml.safe_load(params_file.read_text())
    env = {
        **os.environ,
        **QUIET_ENV,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(copy), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{(copy / 'mlruns' / 'mlflow.db').as_posix()}",
    }
    # Safety first: the pipeline must import the copy's code, or it would write next to /work/main's.
    probe = subprocess.run(
        [str(BIN / "python"), "-c", "import pipeline.cli as c; print(c.REPO_ROOT)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or Path(probe.stdout.strip()).resolve() != copy:
        raise Failed(
            f"the copy would not run its own code (pipeline.cli.REPO_ROOT = {probe.stdout.strip()!r}"
            f"{', ' + probe.stderr.strip()[-200:] if probe.returncode else ''})"
        )
    log_path.write_text(
        f"scratch copy {copy} ({files} files); PYTHONPATH={env['PYTHONPATH']}; "
        f"MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']}\n"
    )
    seconds = run_logged([str(BIN / "dvc"), "repro"], log_path, timeout, cwd=copy, env=env, stamp=True)
    models = copy / "artifacts" / "models"
    return {
        "seconds": seconds,
        "stages": stage_seconds(log_path.read_text(errors="replace"), seconds),
        "copy": str(copy),
        "files": files,
        "overrides": overrides,
        "train_n": params["synthesize"]["train"]["n"],
        "external_n": params["synthesize"]["external"]["n"],
        "models": str(models) if models.is_dir() and any(models.iterdir()) else None,
        "metrics": (copy / "reports" / "train" / "metrics.json").is_file(),
    }


# --------------------------------------------------------------------------- table rows


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def extraction_rows(s: dict[str, Any]) -> list[Row]:
    t, met, w = s["targets"], s["targets_met"], s["whole"]["seconds"]
    ip = s["in_process"]
    label = f"extraction, {s['cases']} realistic cases"
    split = ", ".join(f"{part} {seconds:.2f}" for part, seconds in ip["mean_parts"].items() if seconds >= 0.005)
    return [
        (
            label,
            f"whole process seconds: crlm extract --jobs 1 / pyradiomics default (median of {s['repeats']})",
            f"{w['ours']:.1f} / {w['default']:.1f}",
            "",
        ),
        (
            label,
            "whole process speed-up vs pyradiomics default",
            f"{s['whole']['speedup']:.1f}x",
            f">= {t['whole process vs default']:g}x: {_met(met['whole process vs default'])}",
        ),
        (
            label,
            "start-up: crlm extract --help / imports before the first case",
            f"{w['help']:.2f} / {w['imports']:.2f} s",
            "",
        ),
        (
            label,
            "in-process seconds per case: ours / pyradiomics default",
            f"{ip['mean_total']:.2f} / {ip['default_mean_total']:.2f}",
            f"{ip['default_mean_total'] / ip['mean_total']:.1f}x",
        ),
        (label, "in-process split of a case (s)", split, ""),
        (
            label,
            "time outside pyradiomics' feature computation (whole process)",
            f"{s['outside_share']['whole_process']:.0%} (in-process {s['outside_share']['in_process']:.0%})",
            f"<= {t['outside pyradiomics share']:.0%}: {_met(met['outside pyradiomics share'])}",
        ),
        (
            label,
            "peak memory ours (pyradiomics default)",
            f"{s['peak_mb']['ours']:.0f} MB ({s['peak_mb']['default']:.0f})",
            f"< {t['peak MB']:g} MB: {_met(met['peak MB'])}",
        ),
    ]


def scaling_rows(s: dict[str, Any]) -> list[Row]:
    ideal = min(2, s.get("cpus") or os.cpu_count() or 1)
    rows: list[Row] = []
    for c in s["configurations"]:
        startup = f", start-up {c['startup_s']:.1f} s" if c["startup_s"] else ""
        target = "reference" if c["configuration"] == "jobs=1" else f"{c['speedup']:.2f}x (ideal {ideal}x)"
        rows.append(
            (
                "extraction scaling",
                f"{c['configuration']}: {s['cases']} cases",
                f"{c['extract_s']:.1f} s ({c['s_per_case']:.2f} s/case{startup})",
                target,
            )
        )
    rows.append(
        ("extraction scaling", "identical tables across configurations", str(s["identical_tables"]), "must be True")
    )
    return rows


def inference_rows(s: dict[str, Any], models_note: str) -> list[Row]:
    rows: list[Row] = [("inference", "models; jobs; chunk size", f"{models_note}; {s['jobs']}; {s['chunk_size']}", "")]
    for r in s["rows"]:
        n = r["patients"]
        rows += [
            (
                "inference",
                f"{n} patients: throughput",
                f"{r['patients_per_min']:.1f} patients/min",
                f"ok {r['ok']}/{n}, {r['seconds']:.0f} s",
            ),
            ("inference", f"{n} patients: extraction share", f"{r['extraction_share']:.0%}", ""),
            (
                "inference",
                f"{n} patients: peak memory, process + workers (VmHWM)",
                f"{r['tree_peak_MiB']} MiB ({r['VmHWM_MiB']} MiB)",
                "",
            ),
        ]
    sizes = [r["patients"] for r in s["rows"]]
    target = s["peak_ratio_target"]
    for column, label in (("tree_peak_MiB", "process + workers"), ("VmHWM_MiB", "VmHWM")):
        ratio = s["peak_ratio"][column]
        rows.append(
            (
                "inference",
                f"peak ratio {sizes[-1]} vs {sizes[0]} patients, {label}",
                f"{ratio:.3f}",
                f"<= {target:g}: {_met(ratio <= target)}",
            )
        )
    return rows


def repro_rows(s: dict[str, Any]) -> list[Row]:
    minutes = s["seconds"] / 60
    cohort = f"train {s['train_n']} + external {s['external_n']} patients"
    if s["overrides"]:
        cohort += f"; overrides {' '.join(s['overrides'])}"
    what = "wall time, params.yaml overridden" if s["overrides"] else "wall time of the default pipeline"
    rows: list[Row] = [
        ("dvc repro", f"{what} (scratch copy, empty cache)", f"{minutes:.1f} min ({s['seconds']:.0f} s)", cohort)
    ]
    if s.get("stages"):
        split = ", ".join(f"{stage} {sec:.0f}" for stage, sec in s["stages"].items())
        rows.append(("dvc repro", "seconds per stage", split, ""))
    if not s["metrics"]:
        rows.append(("dvc repro", "reports/train/metrics.json", "missing", "expected"))
    return rows


def markdown(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| benchmark | measure | value | ratio/target |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(cell(c) for c in row)} |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small run: repeats {QUICK['repeats']}, n {QUICK['n']}, "
        f"sizes {' '.join(map(str, QUICK['sizes']))}, no repro",
    )
    parser.add_argument("--skip-repro", action="store_true", help="leave out the `dvc repro` timing")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=None, help="run only these benchmarks")
    parser.add_argument("--write", action="store_true", help="also write the table to bench/results.md")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"extraction.py --repeats (default {FULL['repeats']})"
    )
    parser.add_argument("--n", type=int, default=None, help=f"extraction_scaling.py --n (default {FULL['n']})")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help=f"inference.py --sizes (default {' '.join(map(str, FULL['sizes']))})",
    )
    parser.add_argument("--jobs", type=int, default=2, help="inference.py --jobs (default 2)")
    parser.add_argument("--models", default=None, help="inference.py --models (default: see the module docstring)")
    parser.add_argument(
        "--repro-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override params.yaml in the scratch copy (e.g. synthesize.train.n=100); the default pipeline has none",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark (default: none)")
    parser.add_argument("--log-dir", type=Path, default=None, help="logs and JSON summaries (default: a new temp dir)")
    parser.add_argument("--keep-repro", action="store_true", help="keep the scratch copy of the repro")
    args = parser.parse_args(argv)

    preset = QUICK if args.quick else FULL
    repeats = args.repeats or preset["repeats"]
    n = args.n or preset["n"]
    sizes = args.sizes or preset["sizes"]
    selected = list(args.only or NAMES)
    if "repro" in selected and (args.skip_repro or (args.quick and not args.only)):
        selected.remove("repro")

    info = machine()
    work = args.log_dir or Path(tempfile.mkdtemp(prefix="crlm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"{header_line(info)}")
    log(f"running {', '.join(selected)}; logs and JSON in {work}")

    results: dict[str, list[Row]] = {}
    failed = False
    scratch: list[Path] = []

    def attempt(name: str, function: Callable[[], list[Row]]) -> None:
        nonlocal failed
        log(f"{name}: started {datetime.datetime.now().strftime('%H:%M:%S')}")
        start = time.perf_counter()
        try:
            results[name] = function()
            log(f"{name}: done in {time.perf_counter() - start:.0f} s")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a table row
            failed = True
            reason = str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"
            results[name] = [(LABELS[name], "", f"failed: {reason[:300]}", "")]
            log(f"{name}: failed after {time.perf_counter() - start:.0f} s: {reason}")

    repro: dict[str, Any] = {}

    def do_repro() -> list[Row]:
        repro.update(time_repro(work, args.repro_set, args.timeout, scratch))
        (work / "repro.json").write_text(json.dumps(repro, indent=2) + "\n")
        return repro_rows(repro)

    def do_extraction() -> list[Row]:
        return extraction_rows(
            run_script("extraction.py", ["--repeats", str(repeats)], work, "extraction", args.timeout)
        )

    def do_scaling() -> list[Row]:
        return scaling_rows(run_script("extraction_scaling.py", ["--n", str(n)], work, "scaling", args.timeout))

    def do_inference() -> list[Row]:
        repo_models = REPO / "artifacts" / "models"
        if args.models:
            choice, note = ["--models", args.models], args.models
        elif repro.get("models"):
            choice, note = ["--models", repro["models"]], "artifacts/models of the repro copy"
        elif repo_models.is_dir() and any(repo_models.iterdir()):
            choice, note = [], "artifacts/models"
        else:
            choice, note = ["--light"], "--light (no trained models; light radiomics)"
        arguments = ["--sizes", *map(str, sizes), "--jobs", str(args.jobs), *choice]
        return inference_rows(run_script("inference.py", arguments, work, "inference", args.timeout), note)

    steps = {"repro": do_repro, "extraction": do_extraction, "scaling": do_scaling, "inference": do_inference}
    try:
        for name in ("repro", "extraction", "scaling", "inference"):  # repro first: inference uses its models
            if name in selected:
                attempt(name, steps[name])
    finally:
        if not args.keep_repro:
            for folder in scratch:
                shutil.rmtree(folder, ignore_errors=True)
        elif scratch:
            log(f"scratch copy kept: {', '.join(map(str, scratch))}")

    rows = [row for name in NAMES if name in results for row in results[name]]
    described = {
        "extraction": f"extraction.py --repeats {repeats}",
        "scaling": f"extraction_scaling.py --n {n}",
        "inference": f"inference.py --sizes {' '.join(map(str, sizes))} --jobs {args.jobs}",
        "repro": "dvc repro",
    }
    settings = f"ran: {'; '.join(described[name] for name in NAMES if name in selected) or 'nothing'}"
    text = f"{header_line(info)}\n\n{settings}\n\n{markdown(rows)}\n"
    print(text)
    if args.write:
        RESULTS.write_text(f"# Benchmark results\n\nWritten by `make bench` (`bench/run_all.py`).\n\n{text}")
        log(f"wrote {RESULTS}")
    log(f"full outputs: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
