"""What the synthetic phantoms' file format costs: write (synthesis), read (extraction), disk.

    python bench/phantom_format.py [--cohort DIR] [--n 8] [--repeats 3] [--json PATH]

Takes the first ``--n`` phantoms of a cohort written by ``crlm synthesize`` (``--cohort``: its
folder; default: synthesizes the first ``--n`` patients of the default training cohort, site A
seed 7, with one process in a temporary folder, and reports seconds per patient) and, per CT:

1. writes it as SimpleITK writes it today (``sitk.WriteImage(image, path, True)``: gzip NIfTI,
   ITK's default level), with gzip level 1 (``compressionLevel=1``) and uncompressed (``.nii``):
   seconds to write, bytes on disk;
2. reads each variant with the project's reader (``features.imaging.read_image``, which also
   checks the gzip CRC), alternating the variants, median of ``--repeats``;
3. runs ``features.extraction.extract_case`` on the phantom as written today with the project's
   ``configs/radiomics.yaml`` and splits the case (bench/extraction.py's ``Split``): read
   (CT and mask) vs pyradiomics' feature computation vs the rest.

A benchmark, not a test: nothing is asserted. It answers whether a cheaper compression of the
phantoms would buy a measurable share of ``dvc repro`` or ``crlm predict`` (bench/results.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("gzip default (today)", "gzip level 1", "uncompressed .nii")


def _write(image, path: Path, variant: str) -> float:
    import SimpleITK as sitk

    start = time.perf_counter()
    if variant == VARIANTS[0]:
        sitk.WriteImage(image, str(path), True)
    elif variant == VARIANTS[1]:
        sitk.WriteImage(image, str(path), True, 1)
    else:
        sitk.WriteImage(image, str(path), False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, default=None, help="folder written by crlm synthesize")
    parser.add_argument("--n", type=int, default=8, help="phantoms to measure")
    parser.add_argument("--repeats", type=int, default=3, help="reads per variant and phantom")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))
    import SimpleITK as sitk
    from extraction import Split  # bench/extraction.py

    from features import extraction, imaging
    from pipeline.cohort import IMAGE_NAME, IMAGES_DIR, MASK_NAME, write_cohort
    from pipeline.inputs import case_options
    from pipeline.world import load_labels, load_world

    with tempfile.TemporaryDirectory(prefix="crlm-bench-phantom-") as tmp:
        work = Path(tmp)
        cohort, synthesis_seconds = args.cohort, None
        if cohort is None:
            cohort = work / "cohort"
            start = time.perf_counter()
            write_cohort(
                cohort,
                n=args.n,
                seed=7,
                site="A",
                world=load_world(REPO / "configs" / "world.yaml"),
                labels=load_labels(REPO / "configs" / "labels.yaml"),
                progress=False,
            )
            synthesis_seconds = (time.perf_counter() - start) / args.n
            print(f"synthesized {args.n} phantoms (jobs 1): {synthesis_seconds:.2f} s per patient (CT + mask written)")
        folders = sorted(p for p in (cohort / IMAGES_DIR).iterdir() if (p / IMAGE_NAME).is_file())[: args.n]
        first = sitk.ReadImage(str(folders[0] / IMAGE_NAME))
        shape = first.GetSize()
        print(
            f"{len(folders)} phantoms; CT {shape} voxels, spacing {first.GetSpacing()} mm, {first.GetPixelIDTypeAsString()}"
        )

        writes = {v: [] for v in VARIANTS}
        sizes = {v: [] for v in VARIANTS}
        paths = []
        for k, folder in enumerate(folders):
            image = sitk.ReadImage(str(folder / IMAGE_NAME))
            mine = {}
            for variant, suffix in zip(VARIANTS, ("default.nii.gz", "level1.nii.gz", "raw.nii"), strict=True):
                path = work / f"{k}-{suffix}"
                writes[variant].append(_write(image, path, variant))
                sizes[variant].append(path.stat().st_size)
                mine[variant] = path
            paths.append(mine)
        reads = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for mine in paths:
                for variant in VARIANTS:
                    start = time.perf_counter()
                    imaging.read_image(mine[variant], "bench")
                    reads[variant].append(time.perf_counter() - start)

        split = Split()
        split.install()
        options, _ = case_options(
            REPO / "configs" / "radiomics.yaml", REPO / "configs" / "extraction.yaml", REPO / "configs" / "labels.yaml"
        )
        cases = []
        for folder in folders:
            split.seconds = dict.fromkeys(split.seconds, 0.0)
            case = extraction.CaseInput(folder.name, folder / IMAGE_NAME, folder / MASK_NAME)
            start = time.perf_counter()
            extraction.extract_case(case, options, None)
            total = time.perf_counter() - start
            cases.append({"total": total, "read": split.seconds["read"], "pyradiomics": split.seconds["pyradiomics"]})

    rows = [
        {
            "variant": v,
            "MB on disk": round(statistics.mean(sizes[v]) / 1e6, 2),
            "write s": round(statistics.median(writes[v]), 3),
            "read s": round(statistics.median(reads[v]), 3),
        }
        for v in VARIANTS
    ]
    extract = {k: round(statistics.median(c[k] for c in cases), 3) for k in ("total", "read", "pyradiomics")}
    for row in rows:
        print(row)
    print(f"extract_case per phantom (median of {len(cases)}, gzip default): {extract}")
    if synthesis_seconds:
        share = rows[0]["write s"] / synthesis_seconds
        print(f"writing the CT as today: {share:.0%} of synthesizing a patient ({synthesis_seconds:.2f} s)")
    record = {"shape": shape, "variants": rows, "extract_case": extract, "synthesis_s_per_patient": synthesis_seconds}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
