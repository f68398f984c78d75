"""Reading and checking one case: a CT volume and its label mask (DESIGN.md 3).

Images: NIfTI (.nii, .nii.gz), NRRD, MHA/MHD, or a DICOM series folder. Masks: the same
formats or DICOM-SEG (one .dcm file, or a folder holding one). A mask comes back as a uint8
label map: ``labels.liver`` is the liver, ``labels.lesion`` a lesion, and any other non-zero
value a further lesion label. Lesions sharing a label are split later into connected
components (`features.morphology.lesion_components`).

Every failure is a `CaseError` naming the patient, the file, the cause and the fix, with a
short machine-readable ``reason`` that goes into the extraction report.
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.errors import BytesLengthException, InvalidDicomError
from scipy import ndimage

from features.morphology import FULL_CONNECTIVITY

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
# Segment roles of the TCIA "Colorectal-Liver-Metastases" DICOM-SEGs, used when none are given.
TCIA_SEGMENT_ROLES: Mapping[str, str] = {"Liver": "liver", "Tumor_*": "lesion"}
SEGMENT_ROLES = ("liver", "lesion", "ignore")
@dataclass(frozen=True)
class LabelRoles:
    """Mask label values of the liver and of the lesions (configs/labels.yaml), and how the
    segments of a DICOM-SEG map to these roles (segment name or glob -> liver/lesion/ignore)."""

    liver: int
    lesion: int
    segment_roles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.liver == self.lesion or min(self.liver, self.lesion) < 1:
            raise ValueError(f"liver and lesion labels must be distinct positive integers, got {self}")


DEFAULT_LABELS = LabelRoles(liver=1, lesion=2)  # DESIGN.md 3; configs/labels.yaml overrides it
_ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHUNK_BYTES = 1 << 22
# What pydicom/highdicom raise on truncated or non-conforming files (seen: KeyError, OSError,
# AttributeError on a cut DICOM-SEG); only the library calls are wrapped, not our own code.
# A truncated DICOM-SEG can fail inside pydicom or highdicom with any of these (highdicom raises
# RuntimeError for a pixel data shorter than its frames, depending on where the file is cut).
_DICOM_ERRORS = (InvalidDicomError, BytesLengthException, EOFError, OSError, ValueError, KeyError,
                 AttributeError, RuntimeError)


class CaseError(Exception):
    """A case that cannot be used; ``reason`` is a short code (``missing_file``, ``unreadable``, ...)."""

    def __init__(self, patient_id: str, path: str | Path, reason: str, detail: str) -> None:
        self.patient_id = str(patient_id)
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"patient {self.patient_id}: {detail}")

    def __reduce__(self):  # keeps the exception picklable across worker processes
        return type(self), (self.patient_id, self.path, self.reason, self.detail)


@dataclass(frozen=True)
class Case:
    """A loaded, checked case: the image and its uint8 label map on the same grid."""

    patient_id: str
    image: sitk.Image
    mask: sitk.Image
    mask_resampled: bool = False


def _rounded(values) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


# ----------------------------------------------------------------------------- reading

def _require(path: Path, patient_id: str, what: str) -> None:
    if not path.exists():
        raise CaseError(patient_id, path, "missing_file",
                        f"{what} {path} not found; fix the path in the cohort table")


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Header plus voxel bytes a NIfTI-1/2 file must hold, or None if the header is not NIfTI."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = min(max(int(dims[0]), 1), 7)
    return max(offset, 352) + int(np.prod(dims[1:ndim + 1], dtype=np.int64)) * bitpix // 8


def _check_nifti_complete(path: Path, patient_id: str) -> None:
    """ITK's NIfTI reader fills a truncated file with zeros without an error: count the bytes."""
    with path.open("rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"  # gzip magic, whatever the suffix says
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                header = stream.read(540)
                size = len(header)
                while chunk := stream.read(_CHUNK_BYTES):
                    size += len(chunk)
        else:
            with path.open("rb") as stream:
                header = stream.read(540)
            size = path.stat().st_size
    except (EOFError, OSError, zlib.error) as exc:
        raise CaseError(patient_id, path, "unreadable",
                        f"{path} is truncated or corrupt ({exc}); copy or export the file again") from exc
    expected = _nifti_expected_bytes(header)
    if expected is not None and size < expected:
        raise CaseError(patient_id, path, "unreadable",
                        f"{path} is truncated: {size} of {expected} bytes; copy or export the file again")


def _dicom_series(folder: Path, patient_id: str) -> list[str]:
    """File names of the largest DICOM series in ``folder`` (a warning if there are several)."""
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise CaseError(patient_id, folder, "unreadable",
                        f"folder {folder} holds no DICOM series; point the cohort table at the series folder")
    series = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in ids}
    chosen = max(series, key=lambda uid: len(series[uid]))
    if len(series) > 1:
        logger.warning("patient %s: folder %s holds %d DICOM series; using %s (%d files), the largest",
                       patient_id, folder, len(series), chosen, len(series[chosen]))
    return list(series[chosen])


def _read_itk(path: Path, patient_id: str) -> sitk.Image:
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_series(path, patient_id))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()  # ITK's last line names the cause
        raise CaseError(patient_id, path, "unreadable",
                        f"{path} cannot be read ({lines[-1] if lines else exc}); "
                        f"check the file is a complete NIfTI, NRRD, MHA or DICOM series") from exc
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path, patient_id)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(patient_id, path, "unsupported_image",
                        f"{path} has {image.GetDimension()} dimensions and "
                        f"{image.GetNumberOfComponentsPerPixel()} components per voxel; "
                        f"a 3-D scalar volume is needed")
    return image


def read_image(path: str | Path, patient_id: str = "") -> sitk.Image:
    """Read a CT volume: NIfTI, NRRD, MHA/MHD, or a DICOM series folder (the largest series)."""
    path = Path(path)
    _require(path, patient_id, "image")
    return _read_itk(path, patient_id)


def _is_dicom_seg(path: Path) -> bool:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except _DICOM_ERRORS:
        return False
    return str(header.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def _find_dicom_seg(path: Path, patient_id: str) -> Path | None:
    """The DICOM-SEG file at ``path`` (a file, or a folder holding exactly one), else None."""
    if path.is_file():
        if path.name.lower().endswith(_ITK_SUFFIXES):
            return None
        return path if _is_dicom_seg(path) else None
    segs = [p for p in sorted(path.iterdir()) if p.is_file() and _is_dicom_seg(p)]
    if len(segs) > 1:
        raise CaseError(patient_id, path, "ambiguous_file",
                        f"folder {path} holds {len(segs)} DICOM-SEG files ({segs[0].name}, {segs[1].name}, ...); "
                        f"point the cohort table at one of them")
    return segs[0] if segs else None


def _segment_role(label: str, segment_roles: Mapping[str, str]) -> str:
    """Role of a segment: the first pattern (exact or glob) that matches its label, else ``ignore``."""
    for pattern, role in segment_roles.items():
        if fnmatch.fnmatchcase(label, pattern):
            return role
    return "ignore"


def _unreadable_seg(path: Path, patient_id: str, exc: Exception) -> CaseError:
    return CaseError(patient_id, path, "unreadable",
                     f"DICOM-SEG {path} cannot be read ({type(exc).__name__}: {exc}); "
                     f"check it is a complete Segmentation Storage object")


def _read_dicom_seg(path: Path, reference: sitk.Image | None, patient_id: str,
                    segment_roles: Mapping[str, str], labels: LabelRoles,
                    separate_lesion_segments: bool) -> sitk.Image:
    import highdicom as hd

    bad_roles = {p: r for p, r in segment_roles.items() if r not in SEGMENT_ROLES}
    if bad_roles:
        raise ValueError(f"segment_roles: unknown role(s) {bad_roles}; allowed: {', '.join(SEGMENT_ROLES)}")
    try:
        seg = hd.seg.segread(path)
        names = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    except _DICOM_ERRORS as exc:
        raise _unreadable_seg(path, patient_id, exc) from exc
    roles = {n: _segment_role(name, segment_roles) for n, name in names.items()}
    liver = [n for n, role in roles.items() if role == "liver"]
    lesions = [n for n, role in roles.items() if role == "lesion"]
    if not lesions:
        raise CaseError(patient_id, path, "missing_lesion_label",
                        f"DICOM-SEG {path} has segments {sorted(names.values())}, none of which is a "
                        f"lesion under the segment roles {dict(segment_roles)}; map the lesion segments "
                        f"to 'lesion' in the configuration")
    try:
        volume = seg.get_volume(segment_numbers=liver + lesions, combine_segments=False)
    except _DICOM_ERRORS as exc:
        raise _unreadable_seg(path, patient_id, exc) from exc
    on_reference = False
    if reference is not None:
        try:
            grid = hd.VolumeGeometry.from_components(  # axes x, y, z as in Volume.from_simpleitk
                reference.GetSize(), spacing=reference.GetSpacing(), position=reference.GetOrigin(),
                direction=np.reshape(reference.GetDirection(), (3, 3)), coordinate_system="PATIENT")
            volume = volume.match_geometry(grid)
            on_reference = True
        except RuntimeError:  # another grid: the caller's geometry check reports or resamples it
            pass
    channels = volume.array > (0.5 if volume.array.dtype.kind == "f" else 0)
    further = iter(range(max(labels.liver, labels.lesion) + 1, 256))
    label_map = np.zeros(volume.spatial_shape, np.uint8)
    label_map[channels[..., :len(liver)].any(axis=-1)] = labels.liver
    for k in range(len(lesions)):             # lesions are painted over the liver
        value = labels.lesion if k == 0 or not separate_lesion_segments else next(further, None)
        if value is None:
            raise CaseError(patient_id, path, "invalid_labels",
                            f"DICOM-SEG {path} has more lesion segments than fit in a uint8 label map; "
                            f"do not ask for separate lesion segment labels")
        label_map[channels[..., len(liver) + k]] = value
    mask = volume.with_array(label_map, channels={}).to_simpleitk()
    if on_reference:
        mask.CopyInformation(reference)
    return mask


def _as_label_map(mask: sitk.Image, path: Path, patient_id: str) -> sitk.Image:
    """Cast a mask to uint8, refusing negative, too large or fractional values."""
    if mask.GetPixelID() == sitk.sitkUInt8:
        return mask
    values = sitk.GetArrayViewFromImage(mask)
    low, high = float(values.min()), float(values.max())
    fractional = values.dtype.kind == "f" and not np.array_equal(values, np.round(values))
    if low < 0 or high > 255 or fractional:
        raise CaseError(patient_id, path, "invalid_labels",
                        f"mask {path} holds values in [{low:g}, {high:g}]"
                        f"{' that are not integers' if fractional else ''}; a label map of integers "
                        f"0-255 is needed (threshold a probability map first)")
    return sitk.Cast(mask, sitk.sitkUInt8)


def read_mask(path: str | Path, reference: sitk.Image | None = None, patient_id: str = "",
              segment_roles: Mapping[str, str] | None = None, labels: LabelRoles | None = None,
              separate_lesion_segments: bool = False) -> sitk.Image:
    """Read a mask as a uint8 label map.

    NIfTI/NRRD/MHA/DICOM series are read as stored. A DICOM-SEG is converted on the grid of
    ``reference`` (the CT it annotates; empty frames are filled in): segments are given roles
    by ``segment_roles`` (segment label or glob pattern -> ``liver`` | ``lesion`` |
    ``ignore``; first match wins; unmapped segments are ignored; default
    `TCIA_SEGMENT_ROLES`). Liver segments get ``labels.liver``; lesion segments are painted
    over the liver with ``labels.lesion``, so touching tumours merge into one lesion. With
    ``separate_lesion_segments`` the k-th lesion segment (k >= 2) gets its own label
    ``max(liver, lesion) + k - 1`` instead, which keeps touching tumours apart. ``labels``
    defaults to `DEFAULT_LABELS` (liver 1, lesion 2).
    """
    path = Path(path)
    _require(path, patient_id, "mask")
    seg_file = _find_dicom_seg(path, patient_id)
    if seg_file is not None:
        roles = TCIA_SEGMENT_ROLES if segment_roles is None else segment_roles
        return _read_dicom_seg(seg_file, reference, patient_id, roles, labels or DEFAULT_LABELS,
                               separate_lesion_segments)
    return _as_label_map(_read_itk(path, patient_id), path, patient_id)


# ----------------------------------------------------------------------------- geometry

def geometry_differences(image: sitk.Image, mask: sitk.Image, tolerance: float = 1e-3) -> list[str]:
    """Descriptions of how the mask's grid differs from the image's (empty if they agree).

    Sizes must be equal; spacings equal within ``tolerance`` relative; origins within
    ``tolerance`` mm; direction cosines within ``tolerance``.
    """
    differences = []
    if image.GetSize() != mask.GetSize():
        differences.append(f"size {mask.GetSize()} vs {image.GetSize()}")
    if not np.allclose(mask.GetSpacing(), image.GetSpacing(), rtol=tolerance, atol=0):
        differences.append(f"spacing {_rounded(mask.GetSpacing())} vs {_rounded(image.GetSpacing())} mm")
    if not np.allclose(mask.GetOrigin(), image.GetOrigin(), rtol=0, atol=tolerance):
        differences.append(f"origin {_rounded(mask.GetOrigin())} vs {_rounded(image.GetOrigin())} mm")
    if not np.allclose(mask.GetDirection(), image.GetDirection(), rtol=0, atol=tolerance):
        differences.append(f"direction {_rounded(mask.GetDirection())} vs {_rounded(image.GetDirection())}")
    return differences


def check_geometry(image: sitk.Image, mask: sitk.Image, patient_id: str = "", tolerance: float = 1e-3,
                   mask_path: str | Path = "") -> None:
    """Raise `CaseError` ``geometry_mismatch`` unless the mask lies on the image's grid."""
    differences = geometry_differences(image, mask, tolerance)
    if differences:
        raise CaseError(patient_id, mask_path, "geometry_mismatch",
                        f"mask {mask_path} is on another grid than the image ({'; '.join(differences)}, "
                        f"mask vs image); resample it onto the image or pass --resample-mask")


def resample_mask_to_image(mask: sitk.Image, image: sitk.Image, patient_id: str = "") -> sitk.Image:
    """The mask resampled onto the image grid by nearest neighbour (labels are kept, not blended)."""
    logger.info("patient %s: resampling the mask onto the image grid (size %s -> %s, spacing %s -> %s mm)",
                patient_id, mask.GetSize(), image.GetSize(), _rounded(mask.GetSpacing()),
                _rounded(image.GetSpacing()))
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


# ----------------------------------------------------------------------------- content checks

def lesion_labels_present(mask_array: np.ndarray, labels: LabelRoles) -> tuple[int, ...]:
    """Lesion label values in the mask, ascending: every non-zero value except the liver's."""
    if mask_array.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(mask_array.ravel(), minlength=256))
    else:
        values = np.unique(mask_array)
    return tuple(int(v) for v in values if v != 0 and v != labels.liver)


def check_mask(mask_array: np.ndarray, labels: LabelRoles, patient_id: str, path: str | Path,
               require_liver: bool = False, min_lesion_voxels: int = 2) -> None:
    """Raise `CaseError` for an empty mask, a missing liver (if required), no lesion label, or
    a lesion (26-connected component) with fewer than ``min_lesion_voxels`` voxels."""
    if not mask_array.any():
        raise CaseError(patient_id, path, "empty_mask",
                        f"mask {path} is empty (all voxels 0); check it is the right file for this patient")
    if require_liver and not (mask_array == labels.liver).any():
        raise CaseError(patient_id, path, "no_liver_label",
                        f"mask {path} has no liver voxels (label {labels.liver}); add the liver or set the "
                        f"liver label (--liver-label)")
    lesion_labels = lesion_labels_present(mask_array, labels)
    if not lesion_labels:
        raise CaseError(patient_id, path, "missing_lesion_label",
                        f"mask {path} holds only the liver label {labels.liver}, no lesion (label "
                        f"{labels.lesion} or any other value); set the lesion label (--lesion-label) or "
                        f"check the mask")
    for label in lesion_labels:
        components, _ = ndimage.label(mask_array == label, structure=FULL_CONNECTIVITY)
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes[1:] < min_lesion_voxels) + 1
        if small.size:
            where = np.argwhere(components == small[0])[0][::-1]
            raise CaseError(patient_id, path, "lesion_too_small",
                            f"mask {path}: a lesion of label {label} has {sizes[small[0]]} voxel(s) "
                            f"(at index x,y,z {tuple(int(i) for i in where)}), fewer than {min_lesion_voxels}; "
                            f"remove it from the mask or lower the minimum lesion size")


# ITK's NIfTI reader turns NaN voxels into 0 (a float32 .nii.gz with NaN reads back without
# any through SimpleITK; NRRD keeps them), so NIfTI files are checked on their stored bytes.
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}   # NIfTI datatype codes of float32 / float64 voxels
NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES = 348, 540
_READ_BYTES = 1 << 22


def _open_nifti(path: Path):
    import gzip

    with path.open("rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else path.open("rb")


def nifti_nonfinite_voxels(path: Path) -> tuple[int, tuple[int, int, int] | None]:
    """Number of NaN or infinite voxels stored in a float NIfTI file and the first one's x,y,z
    index; (0, None) for integer images (nothing to check) or files that are not NIfTI."""
    with _open_nifti(path) as stream:
        header = stream.read(NIFTI2_HEADER_BYTES)
        for endian in "<>":
            size = int(np.frombuffer(header[:4], endian + "i4")[0]) if len(header) >= 4 else 0
            if size == NIFTI1_HEADER_BYTES:
                datatype = int(np.frombuffer(header[70:72], endian + "i2")[0])
                dims = np.frombuffer(header[40:56], endian + "i2").astype(int)
                offset = int(np.frombuffer(header[108:112], endian + "f4")[0])
                break
            if size == NIFTI2_HEADER_BYTES:
                datatype = int(np.frombuffer(header[12:14], endian + "i2")[0])
                dims = np.frombuffer(header[16:80], endian + "i8").astype(int)
                offset = int(np.frombuffer(header[168:176], endian + "i8")[0])
                break
        else:
            return 0, None
        if datatype not in NIFTI_FLOAT_TYPES:
            return 0, None
        dtype = np.dtype(endian + NIFTI_FLOAT_TYPES[datatype])
        shape = [max(int(d), 1) for d in dims[1:4]]
        stream.seek(offset)
        count, first, position = 0, None, 0
        leftover = b""
        while block := stream.read(_READ_BYTES):
            block = leftover + block
            usable = len(block) - len(block) % dtype.itemsize
            values, leftover = np.frombuffer(block[:usable], dtype), block[usable:]
            bad = ~np.isfinite(values)
            if bad.any():
                if first is None:
                    flat = position + int(np.flatnonzero(bad)[0])   # x fastest (NIfTI order)
                    first = (flat % shape[0], flat // shape[0] % shape[1], flat // (shape[0] * shape[1]))
                count += int(bad.sum())
            position += len(values)
    return count, first


def check_nifti_values(path: Path, patient_id: str) -> None:
    """Raise `CaseError` ``nan_voxels`` if a float NIfTI file stores NaN or infinite voxels."""
    if not path.name.lower().endswith((".nii", ".nii.gz")) or not path.is_file():
        return
    try:
        count, first = nifti_nonfinite_voxels(path)
    except (OSError, EOFError, ValueError):
        return   # unreadable: read_image reports it with its own reason
    if count:
        raise CaseError(patient_id, path, "nan_voxels",
                        f"image {path} has {count} NaN or infinite voxel(s) (first at index x,y,z {first}); "
                        f"fill them (e.g. with -1000 HU) and export it again")


def check_image_values(image_array: np.ndarray, patient_id: str, path: str | Path) -> None:
    """Raise `CaseError` ``nan_voxels`` if a floating-point image holds NaN or infinite voxels."""
    if image_array.dtype.kind != "f":
        return
    bad = ~np.isfinite(image_array)
    if bad.any():
        where = np.argwhere(bad)[0][::-1]
        raise CaseError(patient_id, path, "nan_voxels",
                        f"image {path} has {int(bad.sum())} NaN or infinite voxel(s) (first at index x,y,z "
                        f"{tuple(int(i) for i in where)}); fill them (e.g. with -1000 HU) and export it again")


def load_case(patient_id: str, image_path: str | Path, mask_path: str | Path, labels: LabelRoles,
              resample_mask: bool = False, segment_roles: Mapping[str, str] | None = None,
              separate_lesion_segments: bool = False, min_lesion_voxels: int = 2,
              require_liver: bool = False, tolerance: float = 1e-3) -> Case:
    """Read and check one case: image, mask on the image grid (resampled only if allowed),
    finite image values and a usable label map. Raises `CaseError` on any problem."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    check_nifti_values(image_path, patient_id)
    image = read_image(image_path, patient_id)
    mask = read_mask(mask_path, image, patient_id, segment_roles, labels, separate_lesion_segments)
    resampled = False
    if geometry_differences(image, mask, tolerance):
        if not resample_mask:
            check_geometry(image, mask, patient_id, tolerance, mask_path)
        mask, resampled = resample_mask_to_image(mask, image, patient_id), True
    else:
        mask.CopyInformation(image)  # equal within tolerance: share the exact grid downstream
    check_image_values(sitk.GetArrayViewFromImage(image), patient_id, image_path)
    check_mask(sitk.GetArrayViewFromImage(mask), labels, patient_id, mask_path, require_liver, min_lesion_voxels)
    return Case(str(patient_id), image, mask, resampled)
