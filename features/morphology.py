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
_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
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
                      spacing_xyz: tuple[float, float, float]) -> list[Lesion]:
    """Split the lesion label(s) of a label map into connected lesions, largest first.

    Lesions sharing a label are separated by 26-connectivity; different labels are never
    merged. Returns one `Lesion` per component.
    """
    lesions: list[Lesion] = []
    unit = voxel_volume_ml(spacing_xyz)
    for label in lesion_labels:
        components, count = ndimage.label(mask == label, structure=_FULL_CONNECTIVITY)
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
