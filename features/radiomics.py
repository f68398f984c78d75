"""Per-lesion radiomics with pyradiomics, on a crop around each lesion (docs/design.md section 6).

Each connected lesion is cropped from the image with a margin (``crop_margin_mm``) before
pyradiomics sees it, so the cost of filtering (LoG, wavelet) follows the lesion's size, not
the CT's. With resampling on, pyradiomics itself keeps only the lesion's bounding box plus
``padDistance`` voxels; a margin that covers that pad plus the interpolation support gives
features identical to uncropped extraction (tested on real CT).

Settings come as pyradiomics' own parameter dictionary (``configs/radiomics.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml
from scipy import ndimage

from features.morphology import LabelSummary, max_feret_diameter_mm, summary_for, voxel_volume_ml

# Columns of the per-lesion table besides the radiomics features.
LESION = "lesion"
LESION_LABEL = "lesion_label"
LESION_VOXELS = "lesion_voxels"
LESION_VOLUME_ML = "lesion_volume_ml"
LESION_DIAMETER_MM = "lesion_max_diameter_mm"
CENTROID_MM = ("lesion_centroid_x_mm", "lesion_centroid_y_mm", "lesion_centroid_z_mm")
# Cubic B-spline pre-filter pole |z| = 2 - sqrt(3) = 0.268: 0.268^26 < 1e-14 (double precision).
BSPLINE_EXACT_MARGIN_VOXELS = 26
FEATURE_PREFIXES = (
    "original_",
    "log-sigma-",
    "wavelet-",
    "square",
    "squareroot",
    "logarithm",
    "exponential",
    "gradient",
    "lbp-",
)


def load_radiomics_params(path: str | Path) -> dict[str, Any]:
    """Read a pyradiomics parameter file and check it with pyradiomics' own validator."""
    from radiomics import featureextractor

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"radiomics parameter file not found: {path}")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        featureextractor.RadiomicsFeatureExtractor(dict(params))
    except Exception as exc:  # pyradiomics raises pykwalify's SchemaError and ValueError
        raise ValueError(f"{path}: not a valid pyradiomics parameter file: {exc}") from exc
    return params


# pyradiomics image type (parameter file key) of a feature name's first part, by prefix; the
# longest prefix that matches wins ("squareroot" before "square").
_IMAGE_TYPE_PREFIXES = (
    ("original", "Original"),
    ("wavelet", "Wavelet"),
    ("log-sigma-", "LoG"),
    ("squareroot", "SquareRoot"),
    ("square", "Square"),
    ("logarithm", "Logarithm"),
    ("exponential", "Exponential"),
    ("gradient", "Gradient"),
    ("lbp-2D", "LBP2D"),
    ("lbp-3D", "LBP3D"),
)


def _log_image_name(sigma: Any) -> str:
    """pyradiomics' name of the LoG image of one sigma (``imageoperations.getLoGImage``)."""
    return f"log-sigma-{str(sigma).replace('.', '-')}-mm-3D"


def params_for_features(params: Mapping[str, Any], feature_names: Sequence[str]) -> dict[str, Any] | None:
    """pyradiomics parameters that compute ``feature_names`` (pyradiomics names, e.g.
    ``wavelet-LLH_glcm_Contrast``) and as little else as the parameters allow: only the image
    types they come from (for LoG only their sigmas) and only their feature classes; the
    ``setting`` section is unchanged, so every feature kept has the value the full parameters
    give it (pyradiomics computes each image type and class on its own). With no name, the
    original image and first-order statistics only (pyradiomics still checks every lesion).

    None if a name cannot be traced to these parameters (an unknown image type or class, a
    LoG sigma or feature class they do not enable): the caller then extracts everything.
    """
    from radiomics import featureextractor

    full = featureextractor.RadiomicsFeatureExtractor(json.loads(json.dumps(dict(params))))
    image_types: dict[str, dict[str, Any]] = {}
    classes: dict[str, Any] = {}
    sigmas: set[str] = set()
    for name in feature_names:
        parts = str(name).rsplit("_", 2)
        if len(parts) != 3:
            return None
        image, feature_class, _ = parts
        matches = [key for prefix, key in _IMAGE_TYPE_PREFIXES if image.startswith(prefix)]
        key = matches[0] if matches else None
        if key is None or key not in full.enabledImagetypes or feature_class not in full.enabledFeatures:
            return None
        if feature_class.startswith("shape") and key != "Original":
            return None
        image_types[key] = dict(full.enabledImagetypes[key])
        classes[feature_class] = full.enabledFeatures[feature_class]
        if key == "LoG":
            sigmas.add(image)
    if "LoG" in image_types:
        configured = list(image_types["LoG"].get("sigma", []))
        kept = [sigma for sigma in configured if _log_image_name(sigma) in sigmas]
        if len(kept) != len(sigmas):
            return None  # a LoG image these parameters do not make
        image_types["LoG"]["sigma"] = kept
    if not classes:
        image_types, classes = {"Original": {}}, {"firstorder": None}
    reduced = json.loads(json.dumps(dict(params), default=str))
    # In the full parameters' order, so that the columns come in the full extraction's order.
    reduced["imageType"] = {key: image_types[key] for key in full.enabledImagetypes if key in image_types}
    reduced["featureClass"] = {key: classes[key] for key in full.enabledFeatures if key in classes}
    return reduced


def feature_selection(
    params: Mapping[str, Any], feature_names: Sequence[str]
) -> dict[str, dict[str, list[str]]] | None:
    """Per derived image (``original``, ``log-sigma-2-0-mm-3D``, ``wavelet-LHL``...), the
    feature classes and, per class, the features of ``feature_names`` computed on it: what
    `extract_lesion_features` computes when predict needs only these (issue 14).

    None if a name cannot be traced to ``params`` (`params_for_features`) or names a feature
    its class does not have (or has only as deprecated, which pyradiomics never computes in
    a full extraction): the caller then extracts everything. None for no name as well.
    """
    from radiomics import getFeatureClasses

    if not feature_names or params_for_features(params, feature_names) is None:
        return None
    classes = getFeatureClasses()
    selection: dict[str, dict[str, list[str]]] = {}
    for name in feature_names:
        image, feature_class, feature = str(name).rsplit("_", 2)
        if feature_class not in classes or feature_class == "shape2D":
            return None
        known = classes[feature_class].getFeatureNames()  # name -> deprecated
        if feature not in known or known[feature]:
            return None
        features = selection.setdefault(image, {}).setdefault(feature_class, [])
        if feature not in features:
            features.append(feature)
            features.sort(key=list(known).index)  # pyradiomics' order, as in a full extraction
    return selection


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that determines the features of a lesion, hashed for the cache.

    ``features``: if given, only these pyradiomics feature names are computed (each on its own
    derived image, `feature_selection`); ``radiomics`` must then enable every image type and
    class they come from (`params_for_features`). None (a full extraction) leaves the hash as
    it was before this field existed.
    """

    radiomics: Mapping[str, Any]
    crop_margin_mm: float
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.crop_margin_mm < 0:
            raise ValueError(f"crop_margin_mm cannot be negative, got {self.crop_margin_mm}")

    def digest(self) -> str:
        """A hash of the settings and the library versions that produce the features."""
        payload = {"radiomics": self.radiomics, "crop_margin_mm": self.crop_margin_mm, "versions": library_versions()}
        if self.features is not None:
            payload["features"] = sorted(self.features)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import radiomics

    return {
        "pyradiomics": str(radiomics.__version__),
        "simpleitk": sitk.Version_VersionString(),
        "numpy": np.__version__,
    }


@dataclass
class LesionExtractor:
    """pyradiomics, split in two: our pre-processing (normalise, crop, resample) and its
    feature computation on the pre-processed lesion (with pyradiomics' own pre-processing off).

    ``settings`` are pyradiomics' effective settings (its defaults merged with the file).
    """

    features: Any  # radiomics.featureextractor.RadiomicsFeatureExtractor
    settings: dict[str, Any]
    selection: dict[str, dict[str, list[str]]] | None = None  # `feature_selection`; None: everything enabled

    @property
    def resamples(self) -> bool:
        return self.settings.get("resampledPixelSpacing") is not None and self.settings.get("interpolator") is not None


def make_extractor(params: Mapping[str, Any], features: Sequence[str] | None = None) -> LesionExtractor:
    """A quiet pyradiomics extractor for these parameters (one per worker); with ``features``
    (pyradiomics names) it computes only those (`feature_selection`; all if one cannot be traced)."""
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(json.loads(json.dumps(params)))
    settings = dict(extractor.settings)
    # We normalise and resample ourselves (below), exactly as pyradiomics' loadImage would.
    extractor.settings["resampledPixelSpacing"] = None
    extractor.settings["normalize"] = False
    extractor.settings["preCrop"] = False
    selection = feature_selection(params, list(features)) if features is not None else None
    return LesionExtractor(extractor, settings, selection)


@dataclass(frozen=True)
class NumberedLesions:
    """Lesions numbered 1..n (largest first) inside a box of the volume: ``numbered`` holds the
    numbers of the voxels in ``box`` (0 = no lesion; every lesion voxel lies in the box),
    ``shape`` is the whole volume's, ``labels[k - 1]`` the mask label of lesion k."""

    numbered: np.ndarray
    box: tuple[slice, ...]
    shape: tuple[int, ...]
    labels: list[int]

    def window(self, region: tuple[slice, ...]) -> np.ndarray:
        """Lesion numbers inside ``region`` (slices of the whole volume, within it); 0 outside the box."""
        out = np.zeros(tuple(r.stop - r.start for r in region), dtype=self.numbered.dtype)
        inner = tuple(slice(max(r.start, b.start), min(r.stop, b.stop)) for r, b in zip(region, self.box, strict=True))
        if all(i.stop > i.start for i in inner):
            out[tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(inner, region, strict=True))] = (
                self.numbered[
                    tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, self.box, strict=True))
                ]
            )
        return out


def number_lesions(
    mask: np.ndarray, lesion_labels: tuple[int, ...], by_label: bool = False, summary: LabelSummary | None = None
) -> NumberedLesions:
    """Number the lesions of a label map 1..n, largest first (ties: first in memory), inside the
    lesions' bounding box (`features.morphology.summarize_labels`; ``summary`` if already
    computed): the 26-connected components of each label, or with ``by_label`` each label
    value as one lesion (one lesion per DICOM-SEG segment, even if drawn in several pieces)."""
    summary = summary_for(mask, tuple(lesion_labels), by_label, summary)
    box = summary.box if summary.box is not None else tuple(slice(0, 0) for _ in summary.shape)
    numbered = np.zeros(tuple(b.stop - b.start for b in box), dtype=np.int32)
    found: list[tuple[int, int, int]] = []  # (voxels, first flat index in the box, label)
    offset = 0
    for label in lesion_labels:
        components, count = summary.components[label]
        if count == 0:
            continue
        flat = components.ravel()
        sizes = np.bincount(flat, minlength=count + 1)
        first = np.full(count + 1, flat.size, dtype=np.int64)
        nonzero = np.flatnonzero(flat)
        np.minimum.at(first, flat[nonzero], nonzero)
        found.extend((int(sizes[k]), int(first[k]), label) for k in range(1, count + 1))
        numbered[components > 0] = components[components > 0] + offset
        offset += count
    # A box keeps the memory order of its voxels, so "first in memory" is the same as over the volume.
    order = sorted(range(len(found)), key=lambda i: (-found[i][0], found[i][1]))
    lookup = np.zeros(len(found) + 1, dtype=np.int32)
    lookup[[i + 1 for i in order]] = np.arange(1, len(found) + 1)
    return NumberedLesions(lookup[numbered], box, summary.shape, [found[i][2] for i in order])


def label_lesions(
    mask: np.ndarray, lesion_labels: tuple[int, ...], by_label: bool = False
) -> tuple[np.ndarray, list[int]]:
    """`number_lesions` on the whole volume: the numbered array (0 = no lesion) and the mask
    label of each lesion."""
    lesions = number_lesions(mask, lesion_labels, by_label)
    numbered = np.zeros(lesions.shape, dtype=np.int32)
    numbered[lesions.box] = lesions.numbered
    return numbered, lesions.labels


def crop_box(
    box: tuple[slice, ...],
    margin_mm: float,
    spacing_xyz: tuple[float, ...],
    shape_zyx: tuple[int, ...],
    min_voxels: int = 0,
) -> tuple[slice, ...]:
    """Grow a (z, y, x) bounding box by ``margin_mm`` (and at least ``min_voxels``) on every
    side, clipped to the image."""
    grown = []
    for sl, spacing, size in zip(box, spacing_xyz[::-1], shape_zyx, strict=True):
        pad = max(int(np.ceil(margin_mm / spacing)), min_voxels)
        grown.append(slice(max(sl.start - pad, 0), min(sl.stop + pad, size)))
    return tuple(grown)


def _sub_image(image: sitk.Image, box: tuple[slice, ...]) -> sitk.Image:
    index = [int(box[2].start), int(box[1].start), int(box[0].start)]
    size = [int(box[2].stop - box[2].start), int(box[1].stop - box[1].start), int(box[0].stop - box[0].start)]
    return sitk.RegionOfInterest(image, size, index)


COMPLEX_TOLERANCE = 1e-3  # largest imaginary part taken as rounding (see `feature_value`)


def feature_value(value: Any) -> float:
    """One pyradiomics feature value as a float.

    pyradiomics computes GLCM Imc2 as ``(1 - e^(-2 (HXY2 - HXY))) ** 0.5``; when rounding makes
    HXY2 a hair below HXY (a uniform region) the radicand is a tiny negative number and Python
    returns a complex number with real part 0 and an imaginary part of sqrt(|radicand|). The
    exact value is 0 (HXY2 >= HXY always holds), so a complex value whose imaginary part is at
    most `COMPLEX_TOLERANCE` is its real part, said and tested here instead of numpy's silent
    cast; a larger imaginary part is not rounding: NaN (the feature is missing for that lesion,
    never a made-up number).
    """
    if isinstance(value, complex) or np.iscomplexobj(value):
        value = complex(np.asarray(value).item())
        return float(value.real) if abs(value.imag) <= COMPLEX_TOLERANCE else float("nan")
    return float(value)


def extract_lesion_features(image: sitk.Image, lesion_mask: sitk.Image, extractor: LesionExtractor) -> dict[str, float]:
    """pyradiomics features of one pre-processed binary lesion mask (value 1) on ``image``.

    Returns feature name -> value (diagnostics dropped). Raises ValueError from pyradiomics
    for lesions it cannot handle (e.g. too small after resampling).
    """
    if extractor.selection is not None:
        return _execute_selected(extractor.features, image, lesion_mask, extractor.selection)
    result = extractor.features.execute(image, lesion_mask, label=1)
    return {name: feature_value(value) for name, value in result.items() if not name.startswith("diagnostics_")}


def _execute_selected(
    features: Any, image: sitk.Image, lesion_mask: sitk.Image, selection: Mapping[str, Mapping[str, list[str]]]
) -> dict[str, float]:
    """pyradiomics' ``RadiomicsFeatureExtractor.execute`` (segment-based, label 1, no
    diagnostics), step for step with its own functions, except that each derived image (an
    image type's generator output: ``original``, one LoG sigma, one wavelet sub-band) gets only
    the classes and features ``selection`` names for it, and an image it names nothing for is
    skipped before any feature is computed on it. Values equal ``execute``'s (tested to 1e-12):
    the same pre-processing, bounding box, filters, crop and class settings; pyradiomics
    computes each class of each image on its own. Order: image types, then classes, as
    ``execute``. The wavelet decomposition itself is computed whole (pyradiomics' ``_swt3``
    makes every sub-band at once)."""
    from radiomics import featureextractor, getFeatureClasses, imageoperations

    settings = features.settings.copy()
    settings["label"] = 1
    if featureextractor.geometryTolerance != settings.get("geometryTolerance"):
        features._setTolerance()
    image, mask = features.loadImage(image, lesion_mask, None, **settings)
    box, corrected = imageoperations.checkMask(image, mask, **settings)
    if corrected is not None:
        mask = corrected
    resegmented = None
    if settings.get("resegmentRange") is not None:
        resegmented = imageoperations.resegmentMask(image, mask, **settings)
        box, _ = imageoperations.checkMask(image, resegmented, **settings)
    if settings.get("resegmentShape", False) and resegmented is not None:
        mask = resegmented
    classes = getFeatureClasses()
    values: dict[str, float] = {}

    def compute(name: str, feature_class: str, cropped_image: sitk.Image, cropped_mask: sitk.Image, **kwargs) -> None:
        calculator = classes[feature_class](cropped_image, cropped_mask, **kwargs)
        for feature in selection[name][feature_class]:
            calculator.enableFeatureByName(feature)
        for feature, value in calculator.execute().items():
            values[f"{name}_{feature_class}_{feature}"] = feature_value(value)

    shape = [c for c in features.enabledFeatures if c == "shape" and c in selection.get("original", {})]
    if shape:
        if mask.GetDimension() != 3:
            raise ValueError(f"shape features need a 3D mask, got {mask.GetDimension()}D")
        cropped_image, cropped_mask = imageoperations.cropToTumorMask(image, mask, box)
        compute("original", "shape", cropped_image, cropped_mask, **settings)
    if resegmented is not None and not settings.get("resegmentShape", False):
        mask = resegmented
    for image_type, custom in features.enabledImagetypes.items():
        arguments = {**settings, **custom}
        generator = getattr(imageoperations, f"get{image_type}Image")(image, mask, **arguments)
        for derived, name, kwargs in generator:
            wanted = [c for c in features.enabledFeatures if not c.startswith("shape") and c in selection.get(name, {})]
            if not wanted:
                continue
            cropped_image, cropped_mask = imageoperations.cropToTumorMask(derived, mask, box, padDistance=0)
            for feature_class in wanted:
                compute(name, feature_class, cropped_image, cropped_mask, **kwargs)
    return values


def _preprocess_lesion(
    image: sitk.Image,
    lesions: NumberedLesions,
    number: int,
    box: tuple[slice, ...],
    margin_mm: float,
    extractor: LesionExtractor,
) -> tuple[sitk.Image, sitk.Image]:
    """Crop (and resample) one lesion as pyradiomics would on the whole image.

    pyradiomics places its resampled grid relative to the corner of the *mask* image, so the
    mask keeps the whole image's geometry (a cheap uint8 array) while the image is cropped with
    a margin; the resampled grid, and hence every feature, is the one uncropped extraction uses.
    """
    from radiomics import imageoperations

    # B-spline interpolation pre-filters the whole image it is given with a recursive filter
    # whose influence decays by 0.268 per voxel: enough voxels make the crop exact.
    min_voxels = BSPLINE_EXACT_MARGIN_VOXELS if extractor.resamples else 0
    crop = crop_box(box, margin_mm, image.GetSpacing(), lesions.shape, min_voxels)
    crop_image = _sub_image(image, crop)
    if extractor.resamples:
        full = np.zeros(lesions.shape, dtype=np.uint8)
        full[box][lesions.window(box) == number] = 1
        mask = sitk.GetImageFromArray(full)
        mask.CopyInformation(image)
        settings = {**extractor.settings, "label": 1}
        return imageoperations.resampleImage(crop_image, mask, **settings)
    crop_mask = sitk.GetImageFromArray((lesions.window(crop) == number).astype(np.uint8))
    crop_mask.CopyInformation(crop_image)
    return crop_image, crop_mask


def lesion_rows(
    image: sitk.Image,
    mask: sitk.Image,
    lesion_labels: tuple[int, ...],
    settings: ExtractionSettings,
    extractor: LesionExtractor | None = None,
    by_label: bool = False,
    summary: LabelSummary | None = None,
) -> list[dict[str, Any]]:
    """One row per lesion (`number_lesions`): morphology and radiomics on a crop around it.

    ``summary``: the mask's `features.morphology.summarize_labels`, if already computed (the
    lesions are then not labelled again). A lesion that pyradiomics cannot process gets
    ``error`` set instead of features.
    """
    from radiomics import imageoperations

    extractor = extractor or make_extractor(settings.radiomics, settings.features)
    if extractor.settings.get("normalize"):
        image = imageoperations.normalizeImage(image, **extractor.settings)  # whole-image statistics
    lesions = number_lesions(sitk.GetArrayViewFromImage(mask), tuple(lesion_labels), by_label, summary)
    offset = tuple(int(b.start) for b in lesions.box)
    spacing = image.GetSpacing()
    unit = voxel_volume_ml(spacing)
    rows = []
    for number, inner in enumerate(ndimage.find_objects(lesions.numbered), start=1):
        local = lesions.numbered[inner] == number
        box = tuple(slice(s.start + o, s.stop + o) for s, o in zip(inner, offset, strict=True))  # in the whole volume
        centre = ndimage.center_of_mass(local)
        index_xyz = [float(c + s.start) for c, s in zip(centre, box, strict=True)][::-1]
        row: dict[str, Any] = {
            LESION: number,
            LESION_LABEL: lesions.labels[number - 1],
            LESION_VOXELS: int(local.sum()),
            LESION_VOLUME_ML: float(local.sum()) * unit,
            LESION_DIAMETER_MM: max_feret_diameter_mm(local, spacing),
        }
        row.update(dict(zip(CENTROID_MM, image.TransformContinuousIndexToPhysicalPoint(index_xyz), strict=True)))
        try:
            lesion_image, lesion_mask = _preprocess_lesion(
                image, lesions, number, box, settings.crop_margin_mm, extractor
            )
            row.update(extract_lesion_features(lesion_image, lesion_mask, extractor))
            row["error"] = ""
        except (ValueError, RuntimeError) as exc:
            row["error"] = f"pyradiomics: {exc}"
        rows.append(row)
    return rows


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of every file in a folder (a DICOM series), in name order."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        h.update(file.name.encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                h.update(block)
    return h.hexdigest()
