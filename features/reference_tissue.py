"""Per-patient reference-tissue normalisation: HU relative to the patient's own liver parenchyma.

The reference region is the liver label of the mask (lesions carry other labels, so they are
already out) eroded by ``erosion_mm`` in millimetres (a Euclidean distance on the voxel grid
with its spacing, so anisotropic voxels erode the same distance in every direction): it keeps
away from the liver surface, the lesions, their rim and the partial-volume voxels between them.
Its median is the patient's reference; the image becomes ``HU - median``, so a scanner HU
offset cancels exactly (every voxel and the reference move together). Why only the offset, what
it assumes and where it fails: docs/reference_tissue.md.

Per patient, no neighbours: a patient's features never depend on the rest of the cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from features.imaging import CaseError
from features.schema import NO_LIVER_LABEL, REFERENCE_TISSUE_TOO_SMALL
from features.settings import settings_class

METHODS = ("subtract_median",)


@settings_class
class ReferenceTissue:
    """``reference_tissue:`` of configs/extraction.yaml (docs/reference_tissue.md).

    ``erosion_mm``: distance (mm) the liver region is eroded by before its statistics;
    ``min_voxels``: fewest voxels left after erosion for a usable reference (else the case gets
    the status ``reference_tissue_too_small``); ``method``: ``subtract_median`` (HU - the
    region's median HU)."""

    enabled: bool = False
    erosion_mm: float = 5.0
    min_voxels: int = 1000
    method: Literal["subtract_median"] = "subtract_median"

    def __post_init__(self) -> None:
        if not np.isfinite(self.erosion_mm) or self.erosion_mm < 0:
            raise ValueError(f"erosion_mm must be a finite distance >= 0 (mm), got {self.erosion_mm}")
        if self.min_voxels < 1:
            raise ValueError(f"min_voxels must be at least 1, got {self.min_voxels}")

    def record(self) -> dict[str, object]:
        """The settings as JSON (the extraction settings record and the digest)."""
        return {
            "enabled": self.enabled,
            "erosion_mm": float(self.erosion_mm),
            "min_voxels": int(self.min_voxels),
            "method": self.method,
        }


@dataclass(frozen=True)
class ReferenceStats:
    """Statistics of a patient's reference region (HU of the image as loaded)."""

    median_hu: float
    mad_hu: float  # median absolute deviation, reported only (noise inflates it: not used to scale)
    voxels: int  # after erosion
    liver_voxels: int  # before erosion


def reference_region(
    mask_array: np.ndarray, liver_label: int, spacing_xyz: tuple[float, ...], erosion_mm: float
) -> np.ndarray:
    """Boolean (z, y, x) array: liver-label voxels farther than ``erosion_mm`` (mm, centre to
    centre) from every voxel that is not liver (lesions, other tissue, outside the image).

    ``spacing_xyz``: SimpleITK's spacing (x, y, z), mm. A voxel next to a non-liver voxel along
    x is ``spacing_x`` away from it, so with 1.5 x 1.5 x 3 mm voxels 5 mm removes three voxels in
    plane and one across slices."""
    liver = np.asarray(mask_array) == liver_label
    if erosion_mm <= 0 or not liver.any():
        return liver
    box = ndimage.find_objects(liver.astype(np.uint8))[0]
    inner = np.pad(liver[box], 1)  # outside the box, and outside the image, is not liver
    distance = ndimage.distance_transform_edt(inner, sampling=tuple(float(s) for s in spacing_xyz[::-1]))
    region = np.zeros_like(liver)
    region[box] = distance[1:-1, 1:-1, 1:-1] > erosion_mm
    return region


def liver_reference(
    image_array: np.ndarray,
    mask_array: np.ndarray,
    liver_label: int,
    spacing_xyz: tuple[float, ...],
    erosion_mm: float,
) -> ReferenceStats:
    """Median and MAD (HU) of the image over `reference_region`; ``voxels`` 0 when it is empty."""
    region = reference_region(mask_array, liver_label, spacing_xyz, erosion_mm)
    liver_voxels = int(np.count_nonzero(np.asarray(mask_array) == liver_label))
    values = np.asarray(image_array)[region].astype(np.float64)
    if values.size == 0:
        return ReferenceStats(float("nan"), float("nan"), 0, liver_voxels)
    median = float(np.median(values))
    return ReferenceStats(median, float(np.median(np.abs(values - median))), int(values.size), liver_voxels)


def normalise_to_reference(image: sitk.Image, stats: ReferenceStats, method: str = "subtract_median") -> sitk.Image:
    """The image relative to the reference: ``HU - median`` (float32, same grid). With integer
    HU the median is a whole or half number, so the subtraction is exact in float32 and an
    integer HU offset of the scanner cancels to the last bit."""
    if method not in METHODS:
        raise ValueError(f"reference-tissue method {method!r} is not known; allowed: {', '.join(METHODS)}")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    out = sitk.GetImageFromArray(array - np.float32(stats.median_hu))
    out.CopyInformation(image)
    return out


def normalise_case(
    patient_id: str,
    image: sitk.Image,
    mask: sitk.Image,
    liver_label: int,
    settings: ReferenceTissue,
    mask_path: str | Path = "",
) -> tuple[sitk.Image, ReferenceStats]:
    """`normalise_to_reference` for one loaded case; raises `CaseError` (``no_liver_label``,
    ``reference_tissue_too_small``) naming the patient, the label and the fix."""
    mask_array = sitk.GetArrayViewFromImage(mask)
    stats = liver_reference(
        sitk.GetArrayViewFromImage(image), mask_array, liver_label, image.GetSpacing(), settings.erosion_mm
    )
    if stats.liver_voxels == 0:
        raise CaseError(
            patient_id,
            mask_path,
            NO_LIVER_LABEL,
            f"mask {mask_path} has no liver voxels (label {liver_label}), needed as the reference tissue "
            f"(reference_tissue.enabled in configs/extraction.yaml); add the liver to the mask, set the liver "
            f"label (--liver-label), or disable reference_tissue",
        )
    if stats.voxels < settings.min_voxels:
        raise CaseError(
            patient_id,
            mask_path,
            REFERENCE_TISSUE_TOO_SMALL,
            f"mask {mask_path}: the liver (label {liver_label}, {stats.liver_voxels} voxels) eroded by "
            f"{settings.erosion_mm:g} mm leaves {stats.voxels} reference voxels, fewer than min_voxels "
            f"{settings.min_voxels}; check the liver contour (lesion-only or partial liver?), or lower "
            f"reference_tissue.erosion_mm / min_voxels in configs/extraction.yaml",
        )
    return normalise_to_reference(image, stats, settings.method), stats
