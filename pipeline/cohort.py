"""Writing a synthetic cohort to disk: tables, and phantoms rendered in parallel.

Layout (docs/design.md section 3)::

    <out>/clinical.csv              canonical columns + patient_id, image, mask
    <out>/truth.csv                 true linear predictors and latent traits (never for models)
    <out>/truth_lesions.csv         what was drawn per lesion (centre, diameter, traits)
    <out>/images/<patient_id>/ct.nii.gz, mask.nii.gz
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from features import schema as s
from features.imaging import LabelRoles
from pipeline import phantoms, synthesis
from pipeline.execution import map_cases
from pipeline.world import World

CLINICAL_FILE = "clinical.csv"
TRUTH_FILE = "truth.csv"
TRUTH_LESIONS_FILE = "truth_lesions.csv"
IMAGES_DIR = "images"
IMAGE_NAME = "ct.nii.gz"
MASK_NAME = "mask.nii.gz"
_OUR_FILES = (CLINICAL_FILE, TRUTH_FILE, TRUTH_LESIONS_FILE, IMAGES_DIR)


def _write_image_atomically(image: sitk.Image, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    sitk.WriteImage(image, str(tmp), True)
    os.replace(tmp, path)


def _render_draw(draw: tuple, world: World, site: str, seed: int, labels: LabelRoles, out: Path) -> list[dict]:
    """``_render_patient`` for one ``(index, patient_id, n_lesions, largest_cm, bilobar, traits)``."""
    return _render_patient(*draw, world, site, seed, labels, out)


def _render_patient(
    index: int,
    patient_id: str,
    n_lesions: int,
    largest_cm: float,
    bilobar: bool,
    traits: phantoms.LesionTraits,
    world: World,
    site: str,
    seed: int,
    labels: LabelRoles,
    out: Path,
) -> list[dict]:
    """Render and write one patient's CT and mask; return one record per lesion."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    phantom = phantoms.render_phantom(
        n_lesions=n_lesions,
        largest_cm=largest_cm,
        bilobar=bilobar,
        traits=traits,
        phantom=world.phantom,
        site=world.site(site),
        unenhanced=world.unenhanced_hu,
        trait_params=world.traits,
        labels=labels,
        seed=synthesis.patient_seed(seed, site, index),
        patient_id=patient_id,
    )
    folder = out / IMAGES_DIR / patient_id
    folder.mkdir(parents=True, exist_ok=True)
    _write_image_atomically(phantom.image, folder / IMAGE_NAME)
    _write_image_atomically(phantom.mask, folder / MASK_NAME)
    records = []
    for number, lesion in enumerate(phantom.lesions, start=1):
        record = {
            s.PATIENT_ID: patient_id,
            "lesion": number,
            "lobe": lesion.lobe,
            "diameter_mm": lesion.diameter_mm,
            "voxels": lesion.voxels,
            "centre_x_mm": lesion.centre_mm[0],
            "centre_y_mm": lesion.centre_mm[1],
            "centre_z_mm": lesion.centre_mm[2],
        }
        record.update({f"trait_{k}": v for k, v in asdict(lesion.traits).items()})
        records.append(record)
    return records


def _prepare_output(out: Path) -> None:
    """Create ``out``; clear a previous cohort there, refuse to touch anything else."""
    if out.exists():
        foreign = [p.name for p in out.iterdir() if p.name not in _OUR_FILES and not p.name.startswith(".")]
        if foreign:
            raise FileExistsError(
                f"{out} holds files that are not a synthetic cohort ({', '.join(sorted(foreign)[:5])}); "
                "choose an empty or new --out folder"
            )
        for name in _OUR_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_cohort(
    out: str | Path,
    n: int,
    seed: int,
    site: str,
    world: World,
    labels: LabelRoles,
    images: bool = True,
    jobs: int = 1,
    progress: bool = True,
    scheduler: Any = None,
) -> pd.DataFrame:
    """Simulate a cohort of ``n`` patients from ``site`` and write it under ``out``.

    Returns the clinical table as written. With ``images=False`` only the tables are written
    (``image`` and ``mask`` columns are then empty). Phantoms are rendered by ``jobs`` local
    processes or on the Dask cluster named by ``scheduler`` (see ``pipeline.execution``); Dask
    workers write the images themselves, so ``out`` must then be on a file system they share,
    mounted at the same path. The bytes written are the same either way.
    """
    out = Path(out).absolute()
    world.site(site)  # fail early on an unknown site
    clinical, truth = synthesis.simulate_cohort(n, seed, site, world)
    _prepare_output(out)
    ids = clinical[s.PATIENT_ID].tolist()
    if images:
        clinical[s.IMAGE] = [f"{IMAGES_DIR}/{pid}/{IMAGE_NAME}" for pid in ids]
        clinical[s.MASK] = [f"{IMAGES_DIR}/{pid}/{MASK_NAME}" for pid in ids]
        draws = [
            (
                i,
                pid,
                int(row[s.N_LESIONS]),
                float(row[s.LARGEST_CM]),
                bool(row[s.BILOBAR]),
                phantoms.LesionTraits(
                    heterogeneity=float(truth.at[i, synthesis.TRAIT_HETEROGENEITY]),
                    irregularity=float(truth.at[i, synthesis.TRAIT_IRREGULARITY]),
                    rim=float(truth.at[i, synthesis.TRAIT_RIM]),
                    necrosis=float(truth.at[i, synthesis.TRAIT_NECROSIS]),
                ),
            )
            for i, (pid, row) in enumerate(zip(ids, clinical.to_dict("records"), strict=True))
        ]
        render = partial(_render_draw, world=world, site=site, seed=seed, labels=labels, out=out)
        results = map_cases(
            render,
            draws,
            jobs=jobs,
            scheduler=scheduler,
            progress=progress,
            desc=f"phantoms site {site}",
            unit="patient",
        )
        lesion_records = [record for records in results for record in records]
        pd.DataFrame(lesion_records).to_csv(out / TRUTH_LESIONS_FILE, index=False)
    else:
        clinical[s.IMAGE] = np.nan
        clinical[s.MASK] = np.nan
    clinical = clinical[[c.name for c in s.COLUMNS if c.name in clinical]]
    clinical.to_csv(out / CLINICAL_FILE, index=False)
    truth.to_csv(out / TRUTH_FILE, index=False)
    return clinical
