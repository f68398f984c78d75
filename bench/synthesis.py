"""Phantom synthesis per patient: this revision against another one, side by side in one run.

    python bench/synthesis.py [--against REV] [--n 12] [--site A] [--seed 7] [--repeats 2] [--json PATH]

Loads ``pipeline/phantoms.py`` as it is at git revision ``--against`` (default ``03436ab``, the
last revision before the phantom speed-up of issue 14) next to the working tree's, and renders
the first ``--n`` patients of a synthetic cohort (``--site``, ``--seed``: the clinical table of
``crlm synthesize``) with both, alternating which goes first, ``--repeats`` times. Each render
is followed by writing the CT and mask as gzip NIfTI, as ``crlm synthesize`` does. Prints the
median wall and CPU seconds per patient (render, write, both), the speed-up, and whether both
revisions produced the same bytes (image and mask arrays, geometry and the lesion records) for
every patient: they must.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import SimpleITK as sitk  # noqa: E402
from machine_info import cpu_model  # noqa: E402  (bench/ is on sys.path)

from features import schema as s  # noqa: E402
from pipeline import phantoms, synthesis  # noqa: E402
from pipeline.world import load_labels, load_world  # noqa: E402


def phantoms_at(revision: str, folder: Path):
    """``pipeline/phantoms.py`` of ``revision`` as a module (its imports resolve to this tree)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:pipeline/phantoms.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = folder / "phantoms_reference.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("phantoms_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def digest(phantom) -> str:
    h = hashlib.sha256()
    for image in (phantom.image, phantom.mask):
        h.update(sitk.GetArrayViewFromImage(image).tobytes())
        h.update(
            repr((image.GetSpacing(), image.GetOrigin(), image.GetDirection(), image.GetPixelIDTypeAsString())).encode()
        )
    h.update(
        repr(
            [
                (les.centre_mm, les.diameter_mm, les.voxels, les.lobe, tuple(vars(les.traits).values()))
                for les in phantom.lesions
            ]
        ).encode()
    )
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="03436ab", help="git revision to compare with")
    parser.add_argument("--n", type=int, default=12, help="patients")
    parser.add_argument("--site", default="A")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    world, labels = load_world(REPO / "configs" / "world.yaml"), load_labels(REPO / "configs" / "labels.yaml")
    clinical, truth = synthesis.simulate_cohort(args.n, args.seed, args.site, world)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"date     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine  {os.cpu_count()} cores, {cpu_model()}, load average {load}")
    with tempfile.TemporaryDirectory(prefix="crlm-bench-synth-") as tmp:
        folder = Path(tmp)
        sides = {args.against: phantoms_at(args.against, folder), "working tree": phantoms}
        times = {name: [] for name in sides}  # (wall render, wall write, cpu render, cpu write)
        digests = {name: {} for name in sides}
        for repeat in range(args.repeats):
            for i, row in enumerate(clinical.to_dict("records")):
                order = list(sides) if (repeat + i) % 2 == 0 else list(sides)[::-1]
                for name in order:
                    module = sides[name]
                    traits = module.LesionTraits(*(float(truth.at[i, t]) for t in synthesis.TRAITS))
                    wall, cpu = time.perf_counter(), time.process_time()
                    phantom = module.render_phantom(
                        int(row[s.N_LESIONS]),
                        float(row[s.LARGEST_CM]),
                        bool(row[s.BILOBAR]),
                        traits,
                        world.phantom,
                        world.site(args.site),
                        world.unenhanced_hu,
                        world.traits,
                        labels,
                        synthesis.patient_seed(args.seed, args.site, i),
                        row[s.PATIENT_ID],
                    )
                    wall_render, cpu_render = time.perf_counter() - wall, time.process_time() - cpu
                    wall, cpu = time.perf_counter(), time.process_time()
                    sitk.WriteImage(phantom.image, str(folder / "ct.nii.gz"), True)
                    sitk.WriteImage(phantom.mask, str(folder / "mask.nii.gz"), True)
                    times[name].append((wall_render, time.perf_counter() - wall, cpu_render, time.process_time() - cpu))
                    digests[name][row[s.PATIENT_ID]] = digest(phantom)
        identical = digests[args.against] == digests["working tree"]
    summary = {
        "n": args.n,
        "site": args.site,
        "seed": args.seed,
        "repeats": args.repeats,
        "against": args.against,
        "identical": identical,
        "sides": {},
    }
    print(
        f"{args.n} patients of site {args.site} (seed {args.seed}), {args.repeats} repeat(s), "
        "seconds per patient, median"
    )
    print(f"{'revision':<14}{'render':>8}{'write':>8}{'both':>8}{'cpu render':>12}{'cpu write':>11}{'cpu both':>10}")
    for name, rows in times.items():
        med = [statistics.median(r[k] for r in rows) for k in range(4)]
        both = statistics.median(r[0] + r[1] for r in rows)
        cpu_both = statistics.median(r[2] + r[3] for r in rows)
        summary["sides"][name] = {
            "render": med[0],
            "write": med[1],
            "both": both,
            "cpu_render": med[2],
            "cpu_write": med[3],
            "cpu_both": cpu_both,
        }
        print(f"{name:<14}{med[0]:>8.3f}{med[1]:>8.3f}{both:>8.3f}{med[2]:>12.3f}{med[3]:>11.3f}{cpu_both:>10.3f}")
    old, new = summary["sides"][args.against], summary["sides"]["working tree"]
    summary["speedup"] = {
        "wall": old["both"] / new["both"],
        "cpu": old["cpu_both"] / new["cpu_both"],
        "cpu_render": old["cpu_render"] / new["cpu_render"],
    }
    print(
        f"speed-up (render + write): wall {summary['speedup']['wall']:.2f}x, CPU {summary['speedup']['cpu']:.2f}x "
        f"(render alone, CPU: {summary['speedup']['cpu_render']:.2f}x)"
    )
    print(f"same bytes for every patient: {identical}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
