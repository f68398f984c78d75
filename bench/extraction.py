"""Per-lesion extraction cost: pyradiomics on the whole CT, with preCrop, and ours (lesion_rows).

    python bench/extraction.py [--repeats N] [--threads T] [--margin-mm M] [--json PATH]

Builds a deterministic 512 x 512 x 100 CT (int16 HU, 0.78 x 0.78 x 2.5 mm: body, fat, spine,
liver, portal vein, correlated noise) with one ~15,000-voxel lesion, and gets the same
original + LoG + wavelet features three ways:

1. ``default``: pyradiomics with configs/radiomics.yaml on the full image and a full-size lesion mask;
2. ``preCrop``: the same with pyradiomics' ``preCrop: true``;
3. ``ours``: ``features.radiomics.lesion_rows`` with configs/radiomics.yaml and crop_margin_mm from
   configs/extraction.yaml.

Each run is a fresh spawned process that reads the image, then times the extraction (building
the lesion mask included) and reports its own peak resident memory (``VmHWM``: Linux carries
``ru_maxrss`` over the fork + exec that spawns a child, so it would report the parent's size). The whole
thing runs twice: with the project settings (1.5 mm isotropic resampling, during which
pyradiomics already crops to the lesion's bounding box + padDistance) and with
``resampledPixelSpacing`` removed, where pyradiomics filters the whole CT. Prints the machine,
the tables, and how far each method's features are from ``default``. Targets are reported,
not asserted. The no-resampling ``default`` run peaks at a few GB (whole-CT wavelets).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from machine_info import cpu_model   # bench/machine_info.py (this folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent
SHAPE_ZYX = (100, 512, 512)
SPACING_XYZ = (0.78, 0.78, 2.5)
LIVER, LESION = 1, 2
TARGET_LESION_VOXELS = 15_000
METHODS = ("default", "preCrop", "ours")
FILTERED_RTOL = 0.01
FILTERED_ABS_FLOOR = 1e-6  # as in tests/features/test_radiomics_real_ct.py
TARGETS = {"vs default": 20.0, "vs preCrop": 4.0, "peak MB": 600.0}


# ----------------------------------------------------------------------------- the phantom
def build_ct(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic abdominal CT (int16 HU, z y x) and its label map (liver 1, lesion 2)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = SHAPE_ZYX
    sx, sy, sz = SPACING_XYZ
    x = ((np.arange(nx) - nx / 2 + 0.5) * sx).astype(np.float32)[None, None, :]
    y = ((np.arange(ny) - ny / 2 + 0.5) * sy).astype(np.float32)[None, :, None]
    z = ((np.arange(nz) - nz / 2 + 0.5) * sz).astype(np.float32)[:, None, None]

    axial = np.full((ny, nx), -1000.0, dtype=np.float32)                     # air
    axial[((x / 175.0) ** 2 + (y / 125.0) ** 2 <= 1.0)[0]] = -100.0          # subcutaneous fat
    axial[((x / 163.0) ** 2 + (y / 113.0) ** 2 <= 1.0)[0]] = 40.0            # muscle, bowel
    axial[((x ** 2 + (y - 80.0) ** 2) <= 18.0 ** 2)[0]] = 450.0              # vertebra
    ct = np.repeat(axial[None], nz, axis=0)
    liver = ((x + 60.0) / 85.0) ** 2 + ((y + 5.0) / 70.0) ** 2 + (z / 100.0) ** 2 <= 1.0
    ct[liver] = 100.0                                                    # portal venous phase
    portal = ((x + 45.0) ** 2 + (y + 10.0) ** 2 <= 6.0 ** 2) & liver
    ct[portal] = 180.0

    # lesion: irregular sphere inside the liver, enhancing rim, darker core, own texture
    centre = np.array([-75.0, -20.0, 10.0], dtype=np.float32)  # x, y, z mm
    box = tuple(slice(int(np.floor((c - 30.0) / s + n / 2)), int(np.ceil((c + 30.0) / s + n / 2)))
                for c, s, n in zip(centre[::-1], (sz, sy, sx), SHAPE_ZYX))
    lz, ly, lx = z[box[0]] - centre[2], y[:, box[1]] - centre[1], x[:, :, box[2]] - centre[0]
    r = np.sqrt(lx ** 2 + ly ** 2 + lz ** 2)
    theta, phi = np.arccos(np.clip(lz / np.maximum(r, 1e-6), -1, 1)), np.arctan2(ly, lx)
    bumps = 1.0 + 0.12 * np.sin(3 * phi) * np.sin(2 * theta) + 0.08 * np.cos(5 * phi + 1.0) * np.sin(theta)
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


def write_ct(folder: Path) -> tuple[Path, Path, int]:
    """Build the CT and write it as NIfTI (run in a child, so the parent stays small)."""
    import SimpleITK as sitk

    image, labels = build_ct()
    paths = []
    for array, name in ((image, "ct.nii"), (labels, "labels.nii")):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing(SPACING_XYZ)
        itk.SetOrigin((-200.0, -200.0, -125.0))
        sitk.WriteImage(itk, str(folder / name))
        paths.append(folder / name)
    return paths[0], paths[1], int((labels == LESION).sum())


# ----------------------------------------------------------------------------- the methods
def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (VmHWM)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB
    except (OSError, IndexError):  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settings(variant: str) -> tuple[dict[str, Any], float]:
    import yaml

    from features.radiomics import load_radiomics_params

    params = load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    if variant == "no resampling":
        params["setting"].pop("resampledPixelSpacing", None)
    margin = float(yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())["crop_margin_mm"])
    return params, margin


def run_method(method: str, variant: str, image_path: str, labels_path: str, threads: int,
               margin_mm: float | None) -> dict[str, Any]:
    """In a fresh process: read, then time one lesion's extraction; peak memory of this process."""
    import SimpleITK as sitk

    import radiomics
    from radiomics import featureextractor

    from features.radiomics import FEATURE_PREFIXES, ExtractionSettings, label_lesions, lesion_rows, make_extractor

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    params, margin = settings(variant)
    margin = margin if margin_mm is None else margin_mm
    if method == "preCrop":
        params["setting"]["preCrop"] = True
    image = sitk.ReadImage(image_path)
    labels = sitk.ReadImage(labels_path)
    radiomics.setVerbosity(logging.ERROR)
    # default and preCrop: plain pyradiomics; ours: the project's wrapper
    extractor = (make_extractor(params) if method == "ours"
                 else featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(params)))
    before_mb = peak_rss_mb()

    start = time.perf_counter()
    if method == "ours":
        rows = lesion_rows(image, labels, (LESION,), ExtractionSettings(params, margin), extractor)
        assert len(rows) == 1 and not rows[0]["error"], rows[0].get("error")
        features = {k: float(v) for k, v in rows[0].items() if k.startswith(FEATURE_PREFIXES)}
    else:
        numbered, _ = label_lesions(sitk.GetArrayViewFromImage(labels), (LESION,))
        lesion_mask = sitk.GetImageFromArray((numbered == 1).astype(np.uint8))
        lesion_mask.CopyInformation(image)
        result = extractor.execute(image, lesion_mask, label=1)
        features = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"seconds": seconds, "peak_mb": peak_mb, "before_mb": before_mb, "features": features}


def in_child(function, *args: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# ----------------------------------------------------------------------------- reporting
def relative_difference(a: float, b: float) -> float:
    return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))


def agreement(reference: dict[str, float], other: dict[str, float]) -> str:
    original = [relative_difference(reference[k], other[k]) for k in reference if k.startswith("original_")]
    filtered = [k for k in reference if not k.startswith("original_")]
    outside = [k for k in filtered if abs(reference[k] - other[k])
               > max(FILTERED_RTOL * max(abs(reference[k]), abs(other[k])), FILTERED_ABS_FLOOR)]
    worst = max((relative_difference(reference[k], other[k]), k) for k in filtered)
    return (f"original max rel diff {max(original):.1e}; filtered: {len(outside)}/{len(filtered)} "
            f"outside 1% (worst {worst[0]:.1e}, {worst[1]})")


def machine() -> str:
    model = cpu_model()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}, load average {load}"


def versions() -> str:
    import pywt
    import radiomics
    import SimpleITK as sitk

    return (f"Python {platform.python_version()}, pyradiomics {radiomics.__version__}, "
            f"SimpleITK {sitk.Version_VersionString()}, PyWavelets {pywt.__version__}, numpy {np.__version__}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (median time, max memory)")
    parser.add_argument("--threads", type=int, default=1, help="SimpleITK threads per run (workers use 1)")
    parser.add_argument("--margin-mm", type=float, default=None, help="override crop_margin_mm for 'ours'")
    parser.add_argument("--json", type=Path, default=None, help="also write the printed numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    summary: dict[str, Any] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                               "machine": machine(), "software": versions(), "repeats": args.repeats,
                               "threads": args.threads, "targets": TARGETS, "variants": {}}
    print(f"date     {summary['date']}")
    print(f"machine  {summary['machine']}")
    print(f"software {summary['software']}")
    with tempfile.TemporaryDirectory(prefix="crlm-bench-") as tmp:
        start = time.perf_counter()
        image_path, labels_path, lesion_voxels = in_child(write_ct, Path(tmp))
        _, margin = settings("project")
        margin = margin if args.margin_mm is None else args.margin_mm
        print(f"CT       {SHAPE_ZYX[2]} x {SHAPE_ZYX[1]} x {SHAPE_ZYX[0]} int16, {SPACING_XYZ} mm, lesion "
              f"{lesion_voxels} voxels (built in {time.perf_counter() - start:.1f} s); "
              f"ours: crop margin {margin:g} mm; {args.threads} SimpleITK thread(s); {args.repeats} repeat(s)")
        summary.update(lesion_voxels=lesion_voxels, margin_mm=margin)
        print("time: extraction of the lesion after reading the image; peak: max RSS of that process "
              "(baseline = after imports and reading)")

        for variant in ("project", "no resampling"):
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
            for _ in range(args.repeats):
                for method in METHODS:
                    runs[method].append(in_child(run_method, method, variant, str(image_path), str(labels_path),
                                                 args.threads, args.margin_mm))
            seconds = {m: statistics.median(r["seconds"] for r in runs[m]) for m in METHODS}
            peak = {m: max(r["peak_mb"] for r in runs[m]) for m in METHODS}
            base = {m: max(r["before_mb"] for r in runs[m]) for m in METHODS}
            title = ("configs/radiomics.yaml (resampled to 1.5 mm)" if variant == "project"
                     else "configs/radiomics.yaml without resampledPixelSpacing (native 0.78 x 0.78 x 2.5 mm)")
            print(f"\n== {title}")
            print(f"{'method':<9}{'seconds':>9}{'peak MB':>9}{'baseline MB':>13}{'vs default':>12}{'vs preCrop':>12}")
            for m in METHODS:
                print(f"{m:<9}{seconds[m]:>9.2f}{peak[m]:>9.0f}{base[m]:>13.0f}"
                      f"{seconds['default'] / seconds[m]:>11.1f}x{seconds['preCrop'] / seconds[m]:>11.1f}x")
            reference = runs["default"][0]["features"]
            print(f"features: {len(reference)} per method")
            agreements = {m: agreement(reference, runs[m][0]["features"]) for m in ("preCrop", "ours")}
            for m in ("preCrop", "ours"):
                print(f"  {m:<8} vs default: {agreements[m]}")
            speedups = (seconds["default"] / seconds["ours"], seconds["preCrop"] / seconds["ours"])
            summary["variants"][variant] = {
                "title": title, "seconds": seconds, "peak_mb": peak, "baseline_mb": base,
                "vs_default": {m: seconds["default"] / seconds[m] for m in METHODS},
                "vs_preCrop": {m: seconds["preCrop"] / seconds[m] for m in METHODS},
                "features": len(reference), "agreement": agreements,
                "targets_met": {"vs default": speedups[0] >= TARGETS["vs default"],
                                "vs preCrop": speedups[1] >= TARGETS["vs preCrop"],
                                "peak MB": peak["ours"] < TARGETS["peak MB"]}}
            print(f"targets (ours, reported not asserted): >= {TARGETS['vs default']:g}x vs default "
                  f"{'met' if speedups[0] >= TARGETS['vs default'] else 'NOT met'}; "
                  f">= {TARGETS['vs preCrop']:g}x vs preCrop "
                  f"{'met' if speedups[1] >= TARGETS['vs preCrop'] else 'NOT met'}; "
                  f"peak < {TARGETS['peak MB']:g} MB {'met' if peak['ours'] < TARGETS['peak MB'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")

if __name__ == "__main__":
    main()
