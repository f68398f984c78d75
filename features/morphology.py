"""Lesion morphology from label masks, by voxel counting and geometry (no mesh).

Arrays are in SimpleITK's numpy order (z, y, x); spacings are given in (x, y, z) mm as
SimpleITK reports them. Diameters are measured between voxel centres, in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

# 26-connectivity: voxels touching by a corner belong to the same lesion.
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
# Below this many points the exact pairwise maximum is cheap enough without a hull.
_BRUTE_FORCE_POINTS = 2000


@dataclass(frozen=True)
class Lesion:
    """One connected lesion: voxel count, volume (mL), max diameter (mm), centroid (index)."""

    label: int
    voxels: int
    volume_ml: float
    max_diameter_mm: float
    centroid_zyx: tuple[float, float, float]


def voxel_volume_ml(spacing_xyz: tuple[float, float, float]) -> float:
    """Volume of one voxel in mL (cm^3) from a spacing in mm."""
    return float(np.prod(spacing_xyz)) / 1000.0


def max_feret_diameter_mm(mask: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float:
    """Largest distance (mm) between the centres of two voxels of ``mask``.

    Only surface voxels can realise the maximum, and among them only convex-hull vertices,
    so the cost follows the lesion's surface, not its volume.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("max_feret_diameter_mm: the mask is empty")
    surface = mask & ~ndimage.binary_erosion(mask)
    points = np.argwhere(surface) * np.asarray(spacing_xyz[::-1], dtype=float)
    if len(points) < 2:
        return 0.0
    if len(points) > _BRUTE_FORCE_POINTS:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # a flat lesion (one slice): joggle the input to get a hull
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
    return float(pdist(points).max())


def lesion_components(mask: np.ndarray, lesion_labels: tuple[int, ...],
                      spacing_xyz: tuple[float, float, float], by_label: bool = False) -> list[Lesion]:
    """Split the lesion label(s) of a label map into connected lesions, largest first.

    Lesions sharing a label are separated by 26-connectivity; different labels are never
    merged. With ``by_label`` each label value is one lesion (one per DICOM-SEG segment).
    Returns one `Lesion` per component (or label).
    """
    lesions: list[Lesion] = []
    unit = voxel_volume_ml(spacing_xyz)
    for label in lesion_labels:
        if by_label:
            components = (mask == label).astype(np.int32)
            count = int(components.any())
        else:
            components, count = ndimage.label(mask == label, structure=FULL_CONNECTIVITY)
        if count == 0:
            continue
        boxes = ndimage.find_objects(components)
        for index, box in enumerate(boxes, start=1):
            local = components[box] == index
            voxels = int(local.sum())
            centre = ndimage.center_of_mass(local)
            lesions.append(Lesion(
                label=int(label),
                voxels=voxels,
                volume_ml=voxels * unit,
                max_diameter_mm=max_feret_diameter_mm(local, spacing_xyz),
                centroid_zyx=tuple(float(c + s.start) for c, s in zip(centre, box)),
            ))
    lesions.sort(key=lambda les: (-les.voxels, les.centroid_zyx))
    return lesions


# Per-patient morphology columns (DESIGN.md 6): counts by connected components, volumes by
# voxel counting, no mesh.
LESION_COUNT = "lesion_count"
LARGEST_DIAMETER_MM = "largest_lesion_diameter_mm"
LARGEST_VOLUME_ML = "largest_lesion_volume_ml"
TOTAL_TUMOUR_VOLUME_ML = "total_tumour_volume_ml"
LIVER_VOLUME_ML = "liver_volume_ml"
TUMOUR_BURDEN_PERCENT = "tumour_burden_percent"
IMAGING_TBS = "imaging_tbs"
PATIENT_MORPHOLOGY_COLUMNS = (LESION_COUNT, LARGEST_DIAMETER_MM, LARGEST_VOLUME_ML, TOTAL_TUMOUR_VOLUME_ML,
                              LIVER_VOLUME_ML, TUMOUR_BURDEN_PERCENT, IMAGING_TBS)


def patient_morphology(mask_array: np.ndarray, spacing_xyz: tuple[float, float, float],
                       liver_label: int | None, lesion_labels: tuple[int, ...],
                       by_label: bool = False) -> dict[str, float]:
    """Per-patient lesion and liver morphology from a label map (z, y, x; spacing x, y, z in mm).

    - lesion count: 26-connected components of the lesion labels (labels never merge), or
      with ``by_label`` one lesion per label value (DICOM-SEG segments);
    - largest diameter (mm): the largest max-Feret diameter of any lesion; largest volume
      (mL): the volume of the lesion with the most voxels; total tumour volume (mL);
    - liver volume (mL): the whole organ, liver label plus every lesion voxel (tumours
      included), so the burden is the share of the organ taken by tumour:
      ``100 * total tumour / liver volume``. NaN for both when the liver label is absent;
    - imaging TBS = sqrt(largest diameter [cm]^2 + count^2) from the measured values
      (Sasaki et al., Ann Surg 2018;267:132; `features.scores` computes it from the
      clinical table). No lesions give zeros.
    """
    unit = voxel_volume_ml(spacing_xyz)
    lesions = lesion_components(mask_array, tuple(lesion_labels), spacing_xyz, by_label)
    tumour_voxels = sum(les.voxels for les in lesions)
    liver_voxels = int(np.count_nonzero(mask_array == liver_label)) if liver_label is not None else 0
    largest_diameter = max((les.max_diameter_mm for les in lesions), default=0.0)
    liver_ml = (liver_voxels + tumour_voxels) * unit if liver_voxels else float("nan")
    tumour_ml = tumour_voxels * unit
    return {
        LESION_COUNT: len(lesions),
        LARGEST_DIAMETER_MM: float(largest_diameter),
        LARGEST_VOLUME_ML: lesions[0].volume_ml if lesions else 0.0,
        TOTAL_TUMOUR_VOLUME_ML: float(tumour_ml),
        LIVER_VOLUME_ML: float(liver_ml),
        TUMOUR_BURDEN_PERCENT: float(100.0 * tumour_ml / liver_ml) if liver_voxels else float("nan"),
        IMAGING_TBS: float(np.hypot(largest_diameter / 10.0, len(lesions))),
    }
