"""Reference-tissue normalisation (issue 13 item 2): site A vs another scanner, same patients.

    python bench/reference_tissue.py [--n 20] [--seed 7] [--out /tmp/crlm-reftissue] [--json PATH]

Draws ``--n`` patients (clinical table, traits, lesion count and size) once, with site A's
stream, and renders each of them on four scanners: site A; ``A+offset``: site A with site B's
HU offset (+8 HU) only; ``A+shift``: site A's grid, blur and noise with site B's HU offset and
contrast enhancement (0.85); both with the same random draws as A, so the images differ only by
what normalisation is meant to undo; and site B itself (other
spacing, blur and noise too: its random texture and noise are another realisation, because
they are drawn on another grid). ``crlm synthesize`` cannot do this: its random stream
depends on the site, so the same ``--seed`` at two sites gives other patients.

Each cohort is extracted (``--jobs 1``, no cache) with light settings (original image,
first-order and GLCM, 2 mm isotropic resampling, bin width 25 HU) without and with
``reference_tissue`` (5 mm erosion). For the largest lesion of each patient and every
feature: mean |A - other| / between-patient sd at A (the sd of the A values over patients,
of the same extraction); printed per feature and as the median per class. Assertion-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd
from inference import LIGHT_RADIOMICS  # bench/inference.py (a sibling script)

REPO = Path(__file__).resolve().parent.parent
LIGHT = LIGHT_RADIOMICS  # bench/inference.py: original image; shape, first order, GLCM
SCANNERS = ("A", "A+offset", "A+shift", "B")
SHOWN = ("Mean", "Median", "10Percentile", "90Percentile", "Variance", "InterquartileRange", "Entropy", "Uniformity")


def render(out: Path, n: int, seed: int, scanner: str, world, labels) -> Path:
    """Write the patients of (seed, site A) imaged by ``scanner``; return the manifest."""
    import SimpleITK as sitk

    from features.schema import IMAGE, MASK, N_LESIONS, PATIENT_ID
    from pipeline import phantoms, synthesis

    clinical, truth = synthesis.simulate_cohort(n, seed, "A", world)
    a, b = world.site("A"), world.site("B")
    site = {
        "A": a,
        "B": b,
        "A+offset": dataclasses.replace(a, hu_offset=b.hu_offset),
        "A+shift": dataclasses.replace(a, hu_offset=b.hu_offset, enhancement=b.enhancement),
    }[scanner]
    manifest = out / f"{scanner}.csv"
    if (
        manifest.is_file() and len(pd.read_csv(manifest)) == n
    ):  # rendered before (same n; pass a new --out for another seed)
        return manifest
    rows = []
    for index, row in enumerate(clinical.to_dict("records")):
        pid = row[PATIENT_ID]
        phantom = phantoms.render_phantom(
            n_lesions=int(row[N_LESIONS]),
            largest_cm=float(row["largest_lesion_cm"]),
            bilobar=bool(row["bilobar"]),
            traits=phantoms.LesionTraits(
                heterogeneity=float(truth.at[index, synthesis.TRAIT_HETEROGENEITY]),
                irregularity=float(truth.at[index, synthesis.TRAIT_IRREGULARITY]),
                rim=float(truth.at[index, synthesis.TRAIT_RIM]),
                necrosis=float(truth.at[index, synthesis.TRAIT_NECROSIS]),
            ),
            phantom=world.phantom,
            site=site,
            unenhanced=world.unenhanced_hu,
            trait_params=world.traits,
            labels=labels,
            seed=synthesis.patient_seed(seed, "A", index),  # site A's patient, whatever the scanner
            patient_id=pid,
        )
        folder = out / scanner / pid
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(phantom.image, str(folder / "ct.nii.gz"))
        sitk.WriteImage(phantom.mask, str(folder / "mask.nii.gz"))
        rows.append({PATIENT_ID: pid, IMAGE: str(folder / "ct.nii.gz"), MASK: str(folder / "mask.nii.gz")})
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def largest_lesions(manifest: Path, normalised: bool, labels) -> pd.DataFrame:
    from features import extraction, radiomics
    from features.reference_tissue import ReferenceTissue
    from features.schema import PATIENT_ID

    options = extraction.CaseOptions(
        settings=radiomics.ExtractionSettings(LIGHT, 25.0),
        labels=labels,
        reference_tissue=ReferenceTissue(enabled=True, erosion_mm=5.0, min_voxels=1000) if normalised else None,
    )
    lesions, report = extraction.extract_cohort(extraction.read_manifest(manifest), options, None, progress=False)
    bad = report[report["status"] != "ok"]
    if len(bad):
        print(bad[[PATIENT_ID, "status", "reason"]].to_string(), file=sys.stderr)
    largest = lesions.sort_values(radiomics.LESION_VOXELS).groupby(PATIENT_ID).tail(1).set_index(PATIENT_ID)
    return largest.sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/tmp/crlm-reftissue"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from pipeline.world import load_labels, load_world

    world, labels = load_world(REPO / "configs" / "world.yaml"), load_labels(REPO / "configs" / "labels.yaml")
    start = time.perf_counter()
    manifests = {s: render(args.out, args.n, args.seed, s, world, labels) for s in SCANNERS}
    print(f"rendered {len(SCANNERS)} x {args.n} patients in {time.perf_counter() - start:.0f} s")
    tables = {(s, norm): largest_lesions(m, norm, labels) for s, m in manifests.items() for norm in (False, True)}
    print(f"extracted in {time.perf_counter() - start:.0f} s")
    features = [c for c in tables["A", False] if c.startswith(("original_firstorder_", "original_glcm_"))]
    results = {}
    for other in SCANNERS[1:]:
        for norm in (False, True):
            a, x = tables["A", norm], tables[other, norm]
            common = a.index.intersection(x.index)
            sd = a.loc[common, features].std(ddof=1)
            ratio = (a.loc[common, features] - x.loc[common, features]).abs().mean() / sd
            results[f"{other}|{'normalised' if norm else 'raw'}"] = {
                "patients": int(len(common)),
                "median_firstorder": float(ratio[[c for c in features if "firstorder" in c]].median()),
                "median_glcm": float(ratio[[c for c in features if "glcm" in c]].median()),
                "features": {c: float(v) for c, v in ratio.items()},
            }
    print("\nmean |A - other| / between-patient sd at A, largest lesion per patient")
    header = f"{'feature':<38}" + "".join(f"{k:>20}" for k in results)
    print(header)
    for name in SHOWN:
        column = f"original_firstorder_{name}"
        print(f"{column[9:]:<38}" + "".join(f"{r['features'][column]:>20.3f}" for r in results.values()))
    for key in ("median_firstorder", "median_glcm"):
        print(f"{key:<38}" + "".join(f"{r[key]:>20.3f}" for r in results.values()))
    medians = {s: tables[s, True]["reference_liver_median_hu"].median() for s in SCANNERS}
    print(
        "\nreference (liver) median HU, median over patients: " + ", ".join(f"{s} {v:.1f}" for s, v in medians.items())
    )
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
