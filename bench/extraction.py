"""Extraction on realistic cases: ``crlm extract`` against pyradiomics' default, whole processes
and in-process, with the per-case split of where the time goes.

    python bench/extraction.py [--repeats N] [--cases 4] [--json PATH]

Builds ``--cases`` deterministic CTs of 512 x 512 x 100 voxels (int16 HU, 0.78 x 0.78 x 2.5 mm;
body, fat, spine, liver, portal vein, correlated noise), each with a liver label of ~3 million
voxels (label 1) and one ~15,000-voxel lesion (label 2) placed differently per case, written
as gzip NIfTI with a cohort table, as a user's data would be. Then, with the project's own
``configs/radiomics.yaml`` for both sides:

1. **whole processes** (wall time, start-up included, alternated ``--repeats`` times, median):
   ``crlm extract --jobs 1`` over the cases (empty cache), against a fresh Python process that
   runs pyradiomics' ``RadiomicsFeatureExtractor(configs/radiomics.yaml).execute(ct, mask,
   label=2)`` on each case; plus the start-up alone (``crlm extract --help`` and the imports
   ``crlm extract`` needs before its first case);
2. **in-process** (after imports, one fresh spawned process per side and repeat):
   ``features.extraction.extract_case`` per case, split into read, checks, label values,
   components, morphology, crop/resample, pyradiomics, write (cache), file hashing (the cache
   key), pyradiomics' set-up and the rest, by timing
   wrappers around the functions the extraction calls (nothing in ``features/`` changes; a
   function that is renamed simply stops being split out and its time lands in ``other``);
   and pyradiomics' default per case (read, execute). Peak resident memory (``VmHWM``) of each
   process.

Targets (issue 14), reported, not asserted: whole process >= 5x faster than pyradiomics'
default; time outside pyradiomics' feature computation <= 25% of a case; peak < 600 MB.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from machine_info import cpu_model  # bench/machine_info.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
SHAPE_ZYX = (100, 512, 512)
SPACING_XYZ = (0.78, 0.78, 2.5)
ORIGIN_XYZ = (-200.0, -200.0, -125.0)
LIVER, LESION = 1, 2
LIVER_CENTRE_MM = (-60.0, -15.0, 0.0)  # x, y, z
LIVER_SEMI_AXES_MM = (110.0, 88.0, 112.0)  # ~3.0 million voxels of 0.78 x 0.78 x 2.5 mm
LESION_CENTRES_MM = (
    (-75.0, -20.0, 10.0),
    (-30.0, -45.0, -35.0),
    (-110.0, 5.0, 40.0),
    (-50.0, 25.0, -55.0),
    (-90.0, -50.0, -20.0),
    (-20.0, 10.0, 30.0),
)
TARGET_LESION_VOXELS = 15_000
TARGETS = {"whole process vs default": 5.0, "outside pyradiomics share": 0.25, "peak MB": 600.0}
# The split of one case. Each function below is timed exclusively (time in a nested timed call
# goes to the nested part); the rest of extract_case is "other".
PARTS = (
    "read",
    "checks",
    "label values",
    "components",
    "morphology",
    "crop/resample",
    "pyradiomics",
    "write",
    "hash",
    "setup",
    "other",
)
INSTRUMENTED = {  # (module, attribute) -> part
    ("features.imaging", "read_image"): "read",
    ("features.imaging", "read_mask"): "read",
    ("features.imaging", "check_nifti_values"): "checks",
    ("features.imaging", "check_image_values"): "checks",
    ("features.imaging", "check_mask"): "checks",
    ("features.imaging", "geometry_differences"): "checks",
    ("features.imaging", "lesion_labels_present"): "label values",  # which lesion labels occur
    ("features.morphology", "summarize_labels"): "label values",  # counts and lesion box, once (issue 14)
    ("features.imaging", "summarize_labels"): "label values",  # the same, as load_case calls it
    ("features.radiomics", "label_lesions"): "components",
    ("features.radiomics", "number_lesions"): "components",
    ("features.morphology", "lesion_components"): "components",
    ("scipy.ndimage", "label"): "components",  # also check_mask's labelling
    ("features.extraction", "patient_morphology"): "morphology",
    ("features.radiomics", "max_feret_diameter_mm"): "morphology",
    ("features.morphology", "max_feret_diameter_mm"): "morphology",
    ("features.radiomics", "_preprocess_lesion"): "crop/resample",
    ("features.radiomics", "extract_lesion_features"): "pyradiomics",
    ("features.radiomics", "make_extractor"): "setup",
    ("features.radiomics", "file_digest"): "hash",
    ("features.extraction", "_write_json_atomically"): "write",
}


# ----------------------------------------------------------------------------- the cases
def build_case(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Case ``index``: a deterministic abdominal CT (int16 HU, z y x) and its label map."""
    from scipy import ndimage

    rng = np.random.default_rng(7 + index)
    nz, ny, nx = SHAPE_ZYX
    sx, sy, sz = SPACING_XYZ
    x = (ORIGIN_XYZ[0] + sx * np.arange(nx)).astype(np.float32)[None, None, :]
    y = (ORIGIN_XYZ[1] + sy * np.arange(ny)).astype(np.float32)[None, :, None]
    z = (ORIGIN_XYZ[2] + sz * np.arange(nz)).astype(np.float32)[:, None, None]

    axial = np.full((ny, nx), -1000.0, dtype=np.float32)  # air
    axial[((x / 190.0) ** 2 + (y / 135.0) ** 2 <= 1.0)[0]] = -100.0  # subcutaneous fat
    axial[((x / 178.0) ** 2 + (y / 123.0) ** 2 <= 1.0)[0]] = 40.0  # muscle, bowel
    axial[((x - 20.0) ** 2 + (y - 95.0) ** 2 <= 18.0**2)[0]] = 450.0  # vertebra
    ct = np.repeat(axial[None], nz, axis=0)
    (cx, cy, cz), (ax, ay, az) = LIVER_CENTRE_MM, LIVER_SEMI_AXES_MM
    liver = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
    ct[liver] = 100.0  # portal venous phase
    portal = ((x - cx - 15.0) ** 2 + (y - cy + 5.0) ** 2 <= 6.0**2) & liver
    ct[portal] = 180.0

    # lesion: irregular sphere inside the liver, enhancing rim, darker core, own texture
    centre = np.array(LESION_CENTRES_MM[index % len(LESION_CENTRES_MM)], dtype=np.float32)
    box = tuple(
        slice(int(np.floor((c - 30.0 - o) / s)), int(np.ceil((c + 30.0 - o) / s)))
        for c, o, s in zip(centre[::-1], ORIGIN_XYZ[::-1], (sz, sy, sx), strict=True)
    )
    lz, ly, lx = z[box[0]] - centre[2], y[:, box[1]] - centre[1], x[:, :, box[2]] - centre[0]
    r = np.sqrt(lx**2 + ly**2 + lz**2)
    theta, phi = np.arccos(np.clip(lz / np.maximum(r, 1e-6), -1, 1)), np.arctan2(ly, lx)
    twist = 1.0 + index
    bumps = 1.0 + 0.12 * np.sin(3 * phi + twist) * np.sin(2 * theta) + 0.08 * np.cos(5 * phi + twist) * np.sin(theta)
    radius = 17.6
    for _ in range(4):  # scale the radius to the target voxel count
        inside = r <= radius * bumps
        radius *= (TARGET_LESION_VOXELS / inside.sum()) ** (1 / 3)
    inside = r <= radius * bumps
    texture = ndimage.gaussian_filter(rng.normal(0, 1, inside.shape).astype(np.float32), 1.5) * 40.0
    depth = radius * bumps - r
    lesion_hu = np.where(depth < 3.0, 85.0, np.where(r < 0.45 * radius, 20.0, 45.0)) + texture
    ct[box] = np.where(inside, lesion_hu, ct[box])

    noise = rng.normal(0, 14.0, SHAPE_ZYX).astype(np.float32)
    ct += ndimage.gaussian_filter(noise, (0, 0.7, 0.7)) * 1.6
    image = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)

    labels = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    labels[np.broadcast_to(liver, SHAPE_ZYX)] = LIVER
    labels[box][inside] = LESION
    return image, labels


def write_cases(folder: Path, n: int) -> dict[str, Any]:
    """Write ``n`` cases as gzip NIfTI and a cohort table (run in a child: the parent stays small)."""
    import SimpleITK as sitk

    rows, liver, lesion, megabytes = [], [], [], []
    for index in range(n):
        image, labels = build_case(index)
        pid = f"case{index + 1}"
        for array, name in ((image, f"{pid}_ct.nii.gz"), (labels, f"{pid}_mask.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(SPACING_XYZ)
            itk.SetOrigin(ORIGIN_XYZ)
            sitk.WriteImage(itk, str(folder / name), True)
        rows.append(f"{pid},{pid}_ct.nii.gz,{pid}_mask.nii.gz")
        liver.append(int((labels == LIVER).sum()))
        lesion.append(int((labels == LESION).sum()))
        megabytes.append((folder / f"{pid}_ct.nii.gz").stat().st_size / 1e6)
    (folder / "cohort.csv").write_text("patient_id,image,mask\n" + "\n".join(rows) + "\n")
    return {"liver_voxels": liver, "lesion_voxels": lesion, "ct_megabytes": megabytes}


# ----------------------------------------------------------------------------- measuring
def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


class Split:
    """Exclusive time per part: a timed call nested in another is charged to the inner part."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.stack: list[list[Any]] = []  # [part, start, time of nested parts]

    def wrap(self, part: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if self.stack and self.stack[-1][0] == "pyradiomics":
                return function(*args, **kwargs)  # pyradiomics' own labelling stays pyradiomics
            self.stack.append([part, time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                name, start, nested = self.stack.pop()
                spent = time.perf_counter() - start
                self.seconds[name] += spent - nested
                if self.stack:
                    self.stack[-1][2] += spent

        return timed

    def install(self) -> list[str]:
        """Wrap every function of INSTRUMENTED that exists; return the ones that do not."""
        import importlib

        missing = []
        for (module_name, attribute), part in INSTRUMENTED.items():
            module = importlib.import_module(module_name)
            if not callable(getattr(module, attribute, None)):
                missing.append(f"{module_name}.{attribute}")
                continue
            setattr(module, attribute, self.wrap(part, getattr(module, attribute)))
        return missing


def ours_in_process(folder: str, cache: str) -> dict[str, Any]:
    """In a fresh process: imports, then extract_case per case with its split."""
    start = time.perf_counter()
    import pyarrow.parquet  # noqa: F401  (crlm extract writes parquet; imported before the cases)

    from features import extraction
    from pipeline.inputs import case_options

    imports = time.perf_counter() - start
    split = Split()
    missing = split.install()
    options, _ = case_options(
        REPO / "configs" / "radiomics.yaml", REPO / "configs" / "extraction.yaml", REPO / "configs" / "labels.yaml"
    )
    cases = extraction.read_manifest(Path(folder) / "cohort.csv")
    per_case = []
    for case in cases:
        split.seconds = dict.fromkeys(PARTS, 0.0)
        begin = time.perf_counter()
        result = extraction.extract_case(case, options, cache)
        total = time.perf_counter() - begin
        assert [r[extraction.STATUS] for r in result.report] == [extraction.OK], result.report
        parts = dict(split.seconds)
        parts["other"] = total - sum(v for k, v in parts.items() if k != "other")
        per_case.append({"total": total, "parts": parts, "lesions": len(result.lesions)})
    return {"imports": imports, "cases": per_case, "peak_mb": peak_rss_mb(), "missing": missing}


def default_in_process(folder: str) -> dict[str, Any]:
    """In a fresh process: pyradiomics' default extractor, per case: read, execute."""
    start = time.perf_counter()
    import radiomics
    import SimpleITK as sitk
    from radiomics import featureextractor

    imports = time.perf_counter() - start
    radiomics.setVerbosity(logging.ERROR)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    extractor = featureextractor.RadiomicsFeatureExtractor(str(REPO / "configs" / "radiomics.yaml"))
    per_case = []
    for line in (Path(folder) / "cohort.csv").read_text().splitlines()[1:]:
        _, ct, mask = line.split(",")
        begin = time.perf_counter()
        image, labels = sitk.ReadImage(str(Path(folder) / ct)), sitk.ReadImage(str(Path(folder) / mask))
        read = time.perf_counter() - begin
        features = extractor.execute(image, labels, label=LESION)
        total = time.perf_counter() - begin
        per_case.append(
            {
                "total": total,
                "parts": {"read": read, "pyradiomics": total - read},
                "features": sum(not k.startswith("diagnostics_") for k in features),
            }
        )
    return {"imports": imports, "cases": per_case, "peak_mb": peak_rss_mb()}


DEFAULT_PROCESS = """
import logging, sys
import radiomics, SimpleITK as sitk
from radiomics import featureextractor
radiomics.setVerbosity(logging.ERROR)
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
folder, params = sys.argv[1], sys.argv[2]
extractor = featureextractor.RadiomicsFeatureExtractor(params)
for line in open(folder + "/cohort.csv").read().splitlines()[1:]:
    _, ct, mask = line.split(",")
    extractor.execute(folder + "/" + ct, folder + "/" + mask, label=2)
"""


def environment() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def wall(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=environment(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def ours_command(folder: Path, run: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "extract",
        "--cohort",
        str(folder / "cohort.csv"),
        "--out",
        str(folder / f"out{run}"),
        "--cache",
        str(folder / f"cache{run}"),
        "--jobs",
        "1",
        "--scheduler",
        "local",
    ]


def in_child(function, *args: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ----------------------------------------------------------------------------- reporting
def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}, load average {load}"


def versions() -> str:
    import pywt
    import radiomics
    import SimpleITK as sitk

    return (
        f"Python {platform.python_version()}, pyradiomics {radiomics.__version__}, "
        f"SimpleITK {sitk.Version_VersionString()}, PyWavelets {pywt.__version__}, numpy {np.__version__}"
    )


def median_parts(runs: list[dict[str, Any]], n_cases: int) -> list[dict[str, float]]:
    """Per case: the median over repeats of each part and of the total."""
    out = []
    for k in range(n_cases):
        cases = [run["cases"][k] for run in runs]
        parts = {p: statistics.median(c["parts"].get(p, 0.0) for c in cases) for p in cases[0]["parts"]}
        out.append({"total": statistics.median(c["total"] for c in cases), "parts": parts})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per side (median time, max memory)")
    parser.add_argument("--cases", type=int, default=4, help="realistic cases (512 x 512 x 100, liver + lesion)")
    parser.add_argument("--json", type=Path, default=None, help="also write the printed numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cases < 1:
        parser.error("--repeats and --cases must be at least 1")

    summary: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "software": versions(),
        "repeats": args.repeats,
        "cases": args.cases,
        "targets": TARGETS,
    }
    print(f"date     {summary['date']}")
    print(f"machine  {summary['machine']}")
    print(f"software {summary['software']}")
    with tempfile.TemporaryDirectory(prefix="crlm-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        built = in_child(write_cases, folder, args.cases)
        summary["built"] = built
        print(
            f"cases    {args.cases} x {SHAPE_ZYX[2]} x {SHAPE_ZYX[1]} x {SHAPE_ZYX[0]} int16, {SPACING_XYZ} mm, "
            f"gzip NIfTI {statistics.mean(built['ct_megabytes']):.0f} MB per CT; liver "
            f"{statistics.mean(built['liver_voxels']) / 1e6:.2f} M voxels, lesion "
            f"{min(built['lesion_voxels'])}-{max(built['lesion_voxels'])} voxels "
            f"(built in {time.perf_counter() - start:.0f} s); configs/radiomics.yaml for both sides; "
            f"{args.repeats} repeat(s), SimpleITK on 1 thread"
        )

        # 1. whole processes, alternated
        params = str(REPO / "configs" / "radiomics.yaml")
        whole: dict[str, list[float]] = {"ours": [], "default": [], "help": [], "imports": []}
        imports = (
            "import pyarrow.parquet, radiomics.featureextractor, joblib; "
            "import pipeline.cli, pipeline.extract, pipeline.execution"
        )
        for run in range(args.repeats):
            order = ("ours", "default") if run % 2 == 0 else ("default", "ours")
            for side in order:
                command = (
                    ours_command(folder, run)
                    if side == "ours"
                    else [sys.executable, "-c", DEFAULT_PROCESS, str(folder), params]
                )
                whole[side].append(wall(command, REPO))
            whole["help"].append(wall([sys.executable, "-m", "pipeline.cli", "extract", "--help"], REPO))
            whole["imports"].append(wall([sys.executable, "-c", imports], REPO))
        w = {k: statistics.median(v) for k, v in whole.items()}
        speedup = w["default"] / w["ours"]
        print(f"\n== whole processes, {args.cases} cases (wall seconds, median of {args.repeats})")
        print(f"crlm extract --jobs 1          {w['ours']:7.2f}   ({w['ours'] / args.cases:.2f} s per case)")
        print(f"pyradiomics default process    {w['default']:7.2f}   ({w['default'] / args.cases:.2f} s per case)")
        print(
            f"speed-up                       {speedup:7.2f}x  (target >= {TARGETS['whole process vs default']:g}x: "
            f"{'met' if speedup >= TARGETS['whole process vs default'] else 'NOT met'})"
        )
        print(f"start-up: crlm extract --help {w['help']:.2f} s; imports crlm extract needs {w['imports']:.2f} s")

        # 2. in-process, with the split
        ours_runs, default_runs = [], []
        for run in range(args.repeats):
            ours_runs.append(in_child(ours_in_process, str(folder), str(folder / f"incache{run}")))
            default_runs.append(in_child(default_in_process, str(folder)))
        ours_cases, default_cases = median_parts(ours_runs, args.cases), median_parts(default_runs, args.cases)
        missing = sorted({m for r in ours_runs for m in r["missing"]})
        print(
            f"\n== in-process, per case after imports (seconds, median of {args.repeats}); "
            f"imports: ours {statistics.median(r['imports'] for r in ours_runs):.2f} s, "
            f"pyradiomics {statistics.median(r['imports'] for r in default_runs):.2f} s"
        )
        print(
            f"{'case':<7}{'ours':>7}" + "".join(f"{p:>14}" for p in PARTS) + f"{'default':>9}{'(read)':>8}{'ratio':>7}"
        )
        for k in range(args.cases):
            o, d = ours_cases[k], default_cases[k]
            print(
                f"case{k + 1:<3}{o['total']:>7.2f}"
                + "".join(f"{o['parts'][p]:>14.3f}" for p in PARTS)
                + f"{d['total']:>9.2f}{d['parts']['read']:>8.2f}{d['total'] / o['total']:>6.1f}x"
            )
        mean_parts = {p: statistics.mean(c["parts"][p] for c in ours_cases) for p in PARTS}
        mean_total = statistics.mean(c["total"] for c in ours_cases)
        default_total = statistics.mean(c["total"] for c in default_cases)
        outside = 1.0 - mean_parts["pyradiomics"] / mean_total
        whole_outside = 1.0 - args.cases * mean_parts["pyradiomics"] / w["ours"]
        peak = {"ours": max(r["peak_mb"] for r in ours_runs), "default": max(r["peak_mb"] for r in default_runs)}
        print(
            f"mean   {mean_total:>7.2f}"
            + "".join(f"{mean_parts[p]:>14.3f}" for p in PARTS)
            + f"{default_total:>9.2f}{statistics.mean(c['parts']['read'] for c in default_cases):>8.2f}"
            f"{default_total / mean_total:>6.1f}x"
        )
        if missing:
            print(f"not split out (renamed or gone, counted in 'other'): {', '.join(missing)}")
        print(
            f"time outside pyradiomics' feature computation: {outside:.0%} of a case in-process, "
            f"{whole_outside:.0%} of the whole process (target <= {TARGETS['outside pyradiomics share']:.0%}: "
            f"{'met' if whole_outside <= TARGETS['outside pyradiomics share'] else 'NOT met'})"
        )
        print(
            f"peak memory: ours {peak['ours']:.0f} MB, pyradiomics default {peak['default']:.0f} MB "
            f"(target < {TARGETS['peak MB']:g} MB: {'met' if peak['ours'] < TARGETS['peak MB'] else 'NOT met'})"
        )
        summary.update(
            whole={"seconds": w, "runs": whole, "speedup": speedup},
            in_process={
                "ours": ours_cases,
                "default": default_cases,
                "mean_parts": mean_parts,
                "mean_total": mean_total,
                "default_mean_total": default_total,
                "imports": {
                    "ours": statistics.median(r["imports"] for r in ours_runs),
                    "default": statistics.median(r["imports"] for r in default_runs),
                },
                "not_split": missing,
            },
            outside_share={"in_process": outside, "whole_process": whole_outside},
            peak_mb=peak,
            targets_met={
                "whole process vs default": speedup >= TARGETS["whole process vs default"],
                "outside pyradiomics share": whole_outside <= TARGETS["outside pyradiomics share"],
                "peak MB": peak["ours"] < TARGETS["peak MB"],
            },
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
