"""Image and mask perturbations for feature robustness (issue 13; docs/robustness.md).

Two chains, both pure functions of a loaded case (`features.imaging.Case`: float32 HU image,
label map on the same grid) and a `Perturbation`, deterministic given its seed:

- ``icc`` after Zwanenburg et al., Sci Rep 2019 9:614 ("Assessing robustness of radiomic features
  by image perturbation"), as MIRP does it: slice-thickness change, rotation about z, sub-voxel
  translation, Gaussian noise addition, volume adaptation of the lesions (grow/shrink by a volume
  fraction) and contour randomisation. The features' ICC(1,1) over these perturbations
  (`features.robustness`) says which features survive another reader and another acquisition.
- ``site``: simulated other scanners: a smoother reconstruction (extra Gaussian blur), thicker
  slices, extra noise, a contrast scaling HU' = c + s (HU - c) about a fixed c and an HU
  offset. ``robustness.site_scanners`` of them are drawn, each with its own magnitudes, and
  every training patient is imaged on each; they score candidates on the training site (never
  on an external site; docs/robustness.md, "Choice").

The magnitudes are drawn once per perturbation (`draw_perturbations`, ranges in
``configs/robustness.yaml``, `RobustnessConfig`) and are the same for every patient; the
random fields (noise, contour) are seeded by the perturbation's seed and the image's content
hash, so a re-run gives the same image. A lesion lost or made too small by a perturbation
raises `features.imaging.CaseError` (reason ``perturbation_lesion_lost``): the case gets that
status, nothing is extracted from a mask that no longer matches the patient's lesions.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.stats import qmc

from features import imaging
from features.morphology import summarize_labels
from features.schema import PERTURBATION_CHAINS, PERTURBATION_FAILED
from features.settings import settings_class

Chain = Literal["icc", "site"]
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.355


# ----------------------------------------------------------------------------- settings


def _range(name: str, pair: tuple[float, float], low: float | None = None, high: float | None = None) -> None:
    if pair[0] > pair[1]:
        raise ValueError(f"{name}: [{pair[0]}, {pair[1]}]; the first value must not exceed the second")
    if low is not None and pair[0] < low:
        raise ValueError(f"{name}: {pair[0]} is below {low}")
    if high is not None and pair[1] > high:
        raise ValueError(f"{name}: {pair[1]} is above {high}")


@settings_class
class IccChainConfig:
    """Ranges [low, high] of the ``icc`` chain; each perturbation draws uniformly inside them."""

    noise_sd_hu: tuple[float, float] = (5.0, 15.0)  # Gaussian noise added, HU
    rotation_deg: tuple[float, float] = (-10.0, 10.0)  # about the z axis through the image centre
    translation_voxels: tuple[float, float] = (-0.5, 0.5)  # per axis, fraction of that axis' spacing
    volume_fraction: tuple[float, float] = (-0.1, 0.1)  # lesion volume change (-0.1: shrink by 10%)
    contour_amplitude_mm: tuple[float, float] = (0.5, 1.5)  # sd of the random boundary displacement
    contour_smoothing_mm: float = 3.0  # correlation length (Gaussian sigma) of that displacement
    slice_thickness_factor: tuple[float, float] = (1.0, 1.5)  # new z spacing / old z spacing

    def __post_init__(self) -> None:
        _range("noise_sd_hu", self.noise_sd_hu, low=0.0)
        _range("rotation_deg", self.rotation_deg, -45.0, 45.0)
        _range("translation_voxels", self.translation_voxels, -1.0, 1.0)
        _range("volume_fraction", self.volume_fraction, -0.5, 1.0)
        _range("contour_amplitude_mm", self.contour_amplitude_mm, low=0.0)
        _range("slice_thickness_factor", self.slice_thickness_factor, low=1.0)
        if self.contour_smoothing_mm <= 0:
            raise ValueError(f"contour_smoothing_mm: {self.contour_smoothing_mm}; expected a positive length in mm")


@settings_class
class SiteChainConfig:
    """Ranges [low, high] of the ``site`` chain (a simulated other scanner)."""

    blur_sigma_mm: tuple[float, float] = (0.0, 1.0)  # extra isotropic Gaussian blur (smoother kernel), mm
    slice_thickness_factor: tuple[float, float] = (1.0, 2.0)  # new z spacing / old z spacing
    noise_sd_hu: tuple[float, float] = (5.0, 20.0)  # extra Gaussian noise, HU
    hu_offset: tuple[float, float] = (-15.0, 15.0)  # added after the contrast scaling, HU
    contrast_scale: tuple[float, float] = (0.8, 1.2)  # s in HU' = c + s (HU - c)
    contrast_centre_hu: float = 50.0  # c: unenhanced soft tissue, kept in place by the scaling

    def __post_init__(self) -> None:
        _range("blur_sigma_mm", self.blur_sigma_mm, 0.0, 5.0)
        _range("slice_thickness_factor", self.slice_thickness_factor, low=1.0)
        _range("noise_sd_hu", self.noise_sd_hu, low=0.0)
        _range("hu_offset", self.hu_offset)
        _range("contrast_scale", self.contrast_scale, low=0.05)


@settings_class
class RobustnessConfig:
    """``configs/robustness.yaml``: the magnitudes of both chains (docs/robustness.md)."""

    icc: IccChainConfig = IccChainConfig()
    site: SiteChainConfig = SiteChainConfig()


# ----------------------------------------------------------------------------- one perturbation


@dataclass(frozen=True)
class Perturbation:
    """One drawn perturbation: the chain, its number (1..K), its seed and its magnitudes.

    Magnitudes left at their defaults do nothing (0 noise, 0 degrees, factor 1, ...).
    """

    chain: str
    index: int
    seed: int
    noise_sd_hu: float = 0.0
    rotation_deg: float = 0.0
    translation_voxels: tuple[float, float, float] = (0.0, 0.0, 0.0)  # x, y, z
    volume_fraction: float = 0.0
    contour_amplitude_mm: float = 0.0
    contour_smoothing_mm: float = 3.0
    slice_thickness_factor: float = 1.0
    hu_offset: float = 0.0
    contrast_scale: float = 1.0
    contrast_centre_hu: float = 50.0
    blur_sigma_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.chain not in PERTURBATION_CHAINS:
            raise ValueError(f"chain {self.chain!r}; allowed: {', '.join(PERTURBATION_CHAINS)}")
        if self.index < 1:
            raise ValueError(f"index {self.index}; perturbations are numbered from 1")
        if (
            self.slice_thickness_factor < 1.0
            or self.contrast_scale <= 0
            or self.noise_sd_hu < 0
            or self.blur_sigma_mm < 0
        ):
            raise ValueError(
                f"{self}: slice_thickness_factor >= 1, contrast_scale > 0, noise_sd_hu >= 0, blur_sigma_mm >= 0 required"
            )

    @property
    def name(self) -> str:
        """``icc-1``, ``site-1``: the value of the ``perturbation`` column."""
        return f"{self.chain}-{self.index}"

    def record(self) -> dict[str, Any]:
        """JSON-ready; `from_record` reverses it. ``blur_sigma_mm`` appears only when set, so that
        perturbations drawn before it existed keep their digest (and their cache entries)."""
        record = asdict(self)
        record["translation_voxels"] = list(self.translation_voxels)
        if not self.blur_sigma_mm:
            del record["blur_sigma_mm"]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Perturbation:
        values = dict(record)
        values["translation_voxels"] = tuple(float(v) for v in values["translation_voxels"])
        return cls(**values)

    def digest(self) -> str:
        """A stable hash of the record (part of the extraction cache key)."""
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]


SITE_FACTORS = ("blur_sigma_mm", "slice_thickness_factor", "noise_sd_hu", "hu_offset", "contrast_scale")


def draw_perturbations(config: RobustnessConfig, chain: Chain, count: int, seed: int) -> list[Perturbation]:
    """``count`` perturbations of ``chain`` with magnitudes drawn uniformly in ``config``'s ranges.

    ``icc``: independent uniform draws (every perturbation is one "rater"). ``site``: a Latin
    hypercube over the `SITE_FACTORS` (McKay, Beckman & Conover, Technometrics 1979; scipy's
    ``qmc.LatinHypercube``): each factor's range is cut into ``count`` equal strata and every
    stratum holds exactly one scanner, so S simulated scanners span each range from its low to its
    high end instead of possibly falling on one side of it (independent draws did: with the
    default seed all three had a stronger contrast and a negative offset; docs/robustness.md).
    """
    rng = np.random.default_rng([int(seed), PERTURBATION_CHAINS.index(chain)])

    def uniform(pair: tuple[float, float]) -> float:
        return round(float(rng.uniform(pair[0], pair[1])), 4)

    if chain == "site" and count:
        unit = qmc.LatinHypercube(d=len(SITE_FACTORS), rng=rng).random(count)
        ranges = [getattr(config.site, name) for name in SITE_FACTORS]
        design = [
            {
                name: round(float(low + u * (high - low)), 4)
                for name, (low, high), u in zip(SITE_FACTORS, ranges, row, strict=True)
            }
            for row in unit
        ]
    drawn = []
    for index in range(1, count + 1):
        if chain == "icc":
            c = config.icc
            magnitudes = {
                "noise_sd_hu": uniform(c.noise_sd_hu),
                "rotation_deg": uniform(c.rotation_deg),
                "translation_voxels": tuple(uniform(c.translation_voxels) for _ in range(3)),
                "volume_fraction": uniform(c.volume_fraction),
                "contour_amplitude_mm": uniform(c.contour_amplitude_mm),
                "contour_smoothing_mm": c.contour_smoothing_mm,
                "slice_thickness_factor": uniform(c.slice_thickness_factor),
            }
        else:
            magnitudes = {**design[index - 1], "contrast_centre_hu": config.site.contrast_centre_hu}
        drawn.append(Perturbation(chain, index, int(rng.integers(2**31 - 1)), **magnitudes))
    return drawn


# ----------------------------------------------------------------------------- image operations


def add_noise(image: sitk.Image, sd_hu: float, rng: np.random.Generator) -> sitk.Image:
    """``image`` + white Gaussian noise of standard deviation ``sd_hu`` (HU), float32."""
    if sd_hu == 0:
        return image
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    values += rng.normal(0.0, sd_hu, values.shape).astype(np.float32)
    return _like(values, image)


def blur(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    """``image`` convolved with an isotropic Gaussian of ``sigma_mm`` (a smoother reconstruction
    kernel: the scanner's point-spread function grows from s to sqrt(s^2 + sigma_mm^2)), float32."""
    if sigma_mm == 0:
        return image
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    sigma_voxels = [sigma_mm / s for s in reversed(image.GetSpacing())]  # z, y, x
    return _like(ndimage.gaussian_filter(values, sigma_voxels, mode="nearest"), image)


def scale_contrast(image: sitk.Image, scale: float, centre_hu: float, offset_hu: float = 0.0) -> sitk.Image:
    """HU' = centre + scale (HU - centre) + offset, voxel by voxel (float32)."""
    if scale == 1 and offset_hu == 0:
        return image
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    return _like((centre_hu + scale * (values - centre_hu) + offset_hu).astype(np.float32), image)


def rotate_translate(
    image: sitk.Image, mask: sitk.Image, angle_deg: float, translation_voxels: tuple[float, float, float]
) -> tuple[sitk.Image, sitk.Image]:
    """Rotate both about the z axis through the image centre by ``angle_deg`` and shift them by
    ``translation_voxels`` (fractions of each axis' spacing), resampled on the same grid: image
    linearly (outside the field: the image's minimum), the label map by nearest neighbour."""
    if angle_deg == 0 and not any(translation_voxels):
        return image, mask
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in image.GetSize()])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    # Resampling maps output points to input points: the inverse of the motion of the content.
    shift = [t * s for t, s in zip(translation_voxels, image.GetSpacing(), strict=True)]
    transform.SetTranslation([-v for v in shift])
    transform.SetRotation(0.0, 0.0, -math.radians(angle_deg))
    fill = float(sitk.GetArrayViewFromImage(image).min())
    moved = sitk.Resample(image, image, transform, sitk.sitkLinear, fill, sitk.sitkFloat32)
    moved_mask = sitk.Resample(mask, mask, transform, sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    return moved, moved_mask


def thicken_slices(image: sitk.Image, mask: sitk.Image, factor: float) -> tuple[sitk.Image, sitk.Image]:
    """Simulate slices ``factor`` times thicker: a Gaussian slab profile along z (its FWHM grows
    from the old to the new spacing) and resampling onto a grid with that z spacing (image
    linear, label map nearest neighbour), same origin, x and y."""
    if factor == 1:
        return image, mask
    spacing = image.GetSpacing()
    new_z = spacing[2] * factor
    sigma_mm = math.sqrt(new_z**2 - spacing[2] ** 2) / FWHM_PER_SIGMA
    values = sitk.GetArrayFromImage(image).astype(np.float32)
    smoothed = ndimage.gaussian_filter1d(values, sigma_mm / spacing[2], axis=0, mode="nearest")
    blurred = _like(smoothed, image)
    size = list(image.GetSize())
    size[2] = max(1, int(math.floor((size[2] - 1) * spacing[2] / new_z)) + 1)
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    reference.SetSpacing((spacing[0], spacing[1], new_z))
    identity = sitk.Transform()
    thick = sitk.Resample(blurred, reference, identity, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    thick_mask = sitk.Resample(mask, reference, identity, sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    return thick, thick_mask


def _signed_distance(lesion: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to the lesion boundary in mm (negative inside) and, for every voxel, the
    index of its nearest lesion voxel."""
    outside, nearest = ndimage.distance_transform_edt(~lesion, sampling=spacing_zyx, return_indices=True)
    inside = ndimage.distance_transform_edt(lesion, sampling=spacing_zyx)
    return np.where(lesion, -inside, outside), nearest


def _relabel(labels: np.ndarray, lesion: np.ndarray, grown: np.ndarray, nearest: np.ndarray, liver: int) -> np.ndarray:
    """The label map with ``grown`` as the new lesion region: new lesion voxels take the label of
    their nearest old lesion voxel, removed ones become liver."""
    out = labels.copy()
    added = grown & ~lesion
    out[added] = labels[tuple(axis[added] for axis in nearest)]
    out[lesion & ~grown] = liver
    return out


def _lesion_box(lesion: np.ndarray, margin: int) -> tuple[slice, ...]:
    where = np.nonzero(lesion)
    return tuple(
        slice(max(0, int(w.min()) - margin), min(n, int(w.max()) + margin + 1))
        for w, n in zip(where, lesion.shape, strict=True)
    )


def adapt_volume(
    mask: sitk.Image, fraction: float, liver: int, amplitude_mm: float = 0.0, smoothing_mm: float = 3.0, rng=None
) -> sitk.Image:
    """Grow (``fraction`` > 0) or shrink the lesions so that their total volume changes by
    ``fraction``, by thresholding the signed distance to their boundary (MIRP's volume
    adaptation); with ``amplitude_mm`` the boundary is first displaced by a smooth random field
    (sd ``amplitude_mm``, Gaussian correlation ``smoothing_mm``): contour randomisation. Grown
    voxels take the label of the nearest lesion, removed voxels become ``liver``; liver voxels
    change only where a lesion grows into them."""
    labels = sitk.GetArrayFromImage(mask)
    lesion = (labels != 0) & (labels != liver)
    if not lesion.any() or (fraction == 0 and amplitude_mm == 0):
        return mask
    spacing = tuple(reversed(mask.GetSpacing()))
    reach_mm = max(amplitude_mm * 4.0, 0.0) + 2.0 * max(spacing) * (1 + abs(fraction) * 10)
    box = _lesion_box(lesion, int(math.ceil(reach_mm / min(spacing))) + 2)
    local = lesion[box]
    distance, nearest = _signed_distance(local, spacing)
    if amplitude_mm > 0:
        field = rng.standard_normal(local.shape)
        field = ndimage.gaussian_filter(field, [smoothing_mm / s for s in spacing], mode="reflect")
        field *= amplitude_mm / max(float(field.std()), 1e-12)
        distance = distance + field
    target = int(round(local.sum() * (1.0 + fraction)))
    # Exactly ``target`` voxels, the nearest first: grid distances tie in whole shells, so ties
    # are broken by a fixed sub-micrometre jitter (deterministic, no direction preferred).
    flat = distance.ravel() + np.random.default_rng(0).uniform(0.0, 1e-6, distance.size)
    grown = np.zeros(local.size, dtype=bool)
    if target >= 1:
        grown[np.argpartition(flat, min(target, flat.size) - 1)[: min(target, flat.size)]] = True
    grown = grown.reshape(local.shape)
    out = labels.copy()
    out[box] = _relabel(labels[box], local, grown, nearest, liver)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(mask)
    return result


def _like(values: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(reference)
    return image


# ----------------------------------------------------------------------------- the chains


def _lesion_count(summary) -> int:
    return int(sum(count for _, count in summary.components.values()))


def apply_perturbation(
    case: imaging.Case,
    perturbation: Perturbation,
    labels: imaging.LabelRoles,
    min_lesion_voxels: int = 2,
    salt: str = "",
) -> imaging.Case:
    """``case`` under ``perturbation``: a new `Case` with the perturbed image and label map and
    their label summary. The random fields are seeded by the perturbation's seed and ``salt``
    (the extraction passes the image's content hash). Raises `features.imaging.CaseError`
    (``perturbation_lesion_lost``) when a lesion vanishes or falls below ``min_lesion_voxels``."""
    p = perturbation
    entropy = [p.seed, int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)]
    rng = np.random.default_rng(entropy)
    image, mask = thicken_slices(blur(case.image, p.blur_sigma_mm), case.mask, p.slice_thickness_factor)
    image, mask = rotate_translate(image, mask, p.rotation_deg, p.translation_voxels)
    image = add_noise(image, p.noise_sd_hu, rng)
    image = scale_contrast(image, p.contrast_scale, p.contrast_centre_hu, p.hu_offset)
    mask = adapt_volume(mask, p.volume_fraction, labels.liver, p.contour_amplitude_mm, p.contour_smoothing_mm, rng)
    if mask.GetPixelID() != case.mask.GetPixelID():
        mask = sitk.Cast(mask, case.mask.GetPixelID())
    by_label = case.lesions_by_label
    summary = summarize_labels(sitk.GetArrayViewFromImage(mask), labels.liver, by_label=by_label)
    before = case.label_summary or summarize_labels(
        sitk.GetArrayViewFromImage(case.mask), labels.liver, by_label=by_label
    )
    lost = _lesion_count(before) - _lesion_count(summary)
    small = [
        label
        for label, (components, count) in summary.components.items()
        for n in np.bincount(components.ravel(), minlength=count + 1)[1:]
        if n < min_lesion_voxels
    ]
    if lost > 0 or small:
        detail = (
            f"perturbation {p.name} (seed {p.seed}) leaves {_lesion_count(summary)} of {_lesion_count(before)} "
            f"lesion(s)"
            + (f", {len(small)} below {min_lesion_voxels} voxels" if small else "")
            + "; the case is left out of this perturbation (a smaller volume_fraction or slice_thickness_factor "
            "in configs/robustness.yaml keeps small lesions)"
        )
        raise imaging.CaseError(case.patient_id, "", PERTURBATION_FAILED, detail)
    return imaging.Case(case.patient_id, image, mask, case.mask_resampled, by_label, summary)
