"""Lesion morphology from label masks, by voxel counting and geometry (no mesh).

Arrays are in SimpleITK's numpy order (z, y, x); spacings are given in (x, y, z) mm as
SimpleITK reports them. Diameters are measured between voxel centres, in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

# 26-connectivity: voxels touching by a corner belong to the same lesion.
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
# Below this many points the exact pairwise maximum is cheap enough without a hull.
_BRUTE_FORCE_POINTS = 2000


def _counts_of(values: np.ndarray) -> dict[int, int]:
    """Voxels per value of a 1-D array of label values, ascending."""
    if values.dtype == np.uint8:
        counts = np.bincount(values, minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    found, counts = np.unique(values, return_counts=True)
    return {int(v): int(c) for v, c in zip(found, counts, strict=True)}


def label_counts(mask: np.ndarray) -> dict[int, int]:
    """Voxels per non-zero label value of a label map, in ascending value order. Only the
    non-zero voxels (liver and lesions, a tenth of a CT) are counted, so no int64 copy of the
    whole volume is made."""
    mask = np.asarray(mask)
    return {v: c for v, c in _counts_of(mask[mask != 0]).items() if v != 0}


@dataclass(frozen=True)
class LabelSummary:
    """One pass over a label map (issue 14): voxels per label value, the bounding box of the
    lesion labels' voxels, and the lesions of each lesion label as connected components inside
    that box, computed once and shared by the mask checks (`features.imaging.check_mask`), the
    lesion numbering (`features.radiomics.lesion_rows`) and the morphology (`lesion_components`).

    ``components[label]`` is (component numbers inside ``box``, count): 26-connected
    components numbered in memory order (as ``scipy.ndimage.label`` numbers them over the whole
    volume, since a box keeps the order of its voxels), or with ``by_label`` the whole label as
    component 1. ``box`` is None when no lesion label has a voxel.
    """

    shape: tuple[int, ...]
    counts: dict[int, int]
    lesion_labels: tuple[int, ...]
    box: tuple[slice, ...] | None
    components: dict[int, tuple[np.ndarray, int]]
    by_label: bool = False

    @property
    def offset(self) -> tuple[int, ...]:
        """Index of the box's first voxel in the whole volume."""
        return tuple(int(s.start) for s in self.box) if self.box is not None else (0,) * len(self.shape)

    def voxels(self, label: int | None) -> int:
        """Voxels of a label value (0 for None or an absent value)."""
        return self.counts.get(int(label), 0) if label is not None else 0


def _bounding_box(inside: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel, or None. The first axis is found on the whole
    array, the others only on the slab it spans."""
    first = np.flatnonzero(inside.any(axis=tuple(range(1, inside.ndim))))
    if first.size == 0:
        return None
    slab = inside[first[0] : first[-1] + 1]
    box = [slice(int(first[0]), int(first[-1]) + 1)]
    for axis in range(1, inside.ndim):
        hits = np.flatnonzero(slab.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def summarize_labels(
    mask: np.ndarray, liver_label: int | None = None, lesion_labels: Sequence[int] | None = None, by_label: bool = False
) -> LabelSummary:
    """Count the label values of ``mask`` and find its lesions once (`LabelSummary`).

    ``lesion_labels``: the lesion label values; by default every non-zero value present except
    ``liver_label``. Connected-component labelling runs only inside the lesions' bounding box,
    so its cost follows the lesions, not the volume (a liver label needs a count, not components).
    """
    mask = np.asarray(mask)
    nonzero = mask != 0
    counts = {v: c for v, c in _counts_of(mask[nonzero]).items() if v != 0}
    if lesion_labels is None:
        lesion_labels = tuple(v for v in counts if v != liver_label)
    lesion_labels = tuple(int(v) for v in lesion_labels)
    present = [v for v in lesion_labels if counts.get(v, 0)]
    box = None
    if present:
        others = [v for v in counts if v not in present]
        if not others:  # every non-zero voxel is a lesion's
            inside = nonzero
        elif others == [liver_label]:  # a label map: liver and lesions
            inside = nonzero & (mask != liver_label)
        else:
            inside = np.isin(mask, present)
        box = _bounding_box(inside)
    crop = mask[box] if box is not None else None
    components: dict[int, tuple[np.ndarray, int]] = {}
    for label in lesion_labels:
        if crop is None or not counts.get(label, 0):
            components[label] = (np.zeros((0,) * mask.ndim, dtype=np.int32), 0)
        elif by_label:
            components[label] = ((crop == label).astype(np.int32), 1)
        else:
            numbers, count = ndimage.label(crop == label, structure=FULL_CONNECTIVITY)
            components[label] = (numbers, int(count))
    return LabelSummary(tuple(mask.shape), counts, lesion_labels, box, components, by_label)


def summary_for(
    mask: np.ndarray, lesion_labels: tuple[int, ...], by_label: bool, summary: LabelSummary | None
) -> LabelSummary:
    """``summary`` if it covers these lesion labels the same way, else a new one."""
    if (
        summary is not None
        and summary.by_label == by_label
        and summary.shape == tuple(np.shape(mask))
        and all(label in summary.components for label in lesion_labels)
    ):
        return summary
    return summarize_labels(mask, lesion_labels=lesion_labels, by_label=by_label)


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


def lesion_components(
    mask: np.ndarray,
    lesion_labels: tuple[int, ...],
    spacing_xyz: tuple[float, float, float],
    by_label: bool = False,
    summary: LabelSummary | None = None,
) -> list[Lesion]:
    """Split the lesion label(s) of a label map into connected lesions, largest first.

    Lesions sharing a label are separated by 26-connectivity; different labels are never
    merged. With ``by_label`` each label value is one lesion (one per DICOM-SEG segment).
    ``summary``: the map's `summarize_labels`, if already computed (else it is computed here).
    Returns one `Lesion` per component (or label).
    """
    lesions: list[Lesion] = []
    unit = voxel_volume_ml(spacing_xyz)
    summary = summary_for(mask, tuple(lesion_labels), by_label, summary)
    offset = summary.offset
    for label in lesion_labels:
        components, count = summary.components[label]
        if count == 0:
            continue
        boxes = ndimage.find_objects(components)
        for index, box in enumerate(boxes, start=1):
            local = components[box] == index
            voxels = int(local.sum())
            centre = ndimage.center_of_mass(local)
            lesions.append(
                Lesion(
                    label=int(label),
                    voxels=voxels,
                    volume_ml=voxels * unit,
                    max_diameter_mm=max_feret_diameter_mm(local, spacing_xyz),
                    centroid_zyx=tuple(float(c + (s.start + o)) for c, s, o in zip(centre, box, offset, strict=True)),
                )
            )
    lesions.sort(key=lambda les: (-les.voxels, les.centroid_zyx))
    return lesions


# Per-patient morphology columns (docs/design.md section 6): counts by connected components, volumes by
# voxel counting, no mesh.
LESION_COUNT = "lesion_count"
LARGEST_DIAMETER_MM = "largest_lesion_diameter_mm"
LARGEST_VOLUME_ML = "largest_lesion_volume_ml"
TOTAL_TUMOUR_VOLUME_ML = "total_tumour_volume_ml"
LIVER_VOLUME_ML = "liver_volume_ml"
TUMOUR_BURDEN_PERCENT = "tumour_burden_percent"
IMAGING_TBS = "imaging_tbs"
PATIENT_MORPHOLOGY_COLUMNS = (
    LESION_COUNT,
    LARGEST_DIAMETER_MM,
    LARGEST_VOLUME_ML,
    TOTAL_TUMOUR_VOLUME_ML,
    LIVER_VOLUME_ML,
    TUMOUR_BURDEN_PERCENT,
    IMAGING_TBS,
)


def patient_morphology(
    mask_array: np.ndarray,
    spacing_xyz: tuple[float, float, float],
    liver_label: int | None,
    lesion_labels: tuple[int, ...],
    by_label: bool = False,
    summary: LabelSummary | None = None,
) -> dict[str, float]:
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

    ``summary``: the map's `summarize_labels` (one pass over the volume), if already computed.
    """
    unit = voxel_volume_ml(spacing_xyz)
    summary = summary_for(mask_array, tuple(lesion_labels), by_label, summary)
    lesions = lesion_components(mask_array, tuple(lesion_labels), spacing_xyz, by_label, summary)
    tumour_voxels = sum(les.voxels for les in lesions)
    liver_voxels = summary.voxels(liver_label)
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
