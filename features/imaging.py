"""Reading and checking one case: a CT volume and its label mask (docs/design.md section 3).

Images: NIfTI (.nii, .nii.gz), NRRD, MHA/MHD, or a DICOM series folder. Masks: the same
formats or DICOM-SEG (BINARY, FRACTIONAL or LABELMAP; one file, or a folder holding one). A
mask comes back as a uint8 label map: ``labels.liver`` is the liver, ``labels.lesion`` a
lesion, and any other non-zero value a further lesion label. A DICOM-SEG gives every lesion
segment its own label: one lesion per segment (``seg_lesions: segments``, TCIA's convention)
or the connected components of each segment (``seg_lesions: components``). Lesions of a
label map (NIfTI, ...) are the connected components of each label value.

A DICOM series is bound to its SEG (the SEG's referenced series), checked from its headers
(missing slices, uneven spacing, mixed orientation, duplicate positions, several acquisitions)
before any voxel is read, and its voxels are HU (rescale slope and intercept applied). Every
image leaves `load_case` as float32, whatever its stored type (docs/imaging.md).

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

from features.morphology import LabelSummary, label_counts, summarize_labels
from features.settings import settings_class

logger = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_STORAGE_CLASSES = (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE)
# SOP classes a mask file may be by mistake, named in the reason when it is not a DICOM-SEG.
SOP_CLASS_NAMES: Mapping[str, str] = {
    SEGMENTATION_STORAGE: "Segmentation Storage",
    LABEL_MAP_SEGMENTATION_STORAGE: "Label Map Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
SEG_LESION_MODES = ("segments", "components")
# Series integrity (DICOM headers): slice steps may differ from the median step by this share
# of it; positions closer than DUPLICATE_MM are the same position; orientations agree within
# ORIENTATION_TOLERANCE (direction cosines).
SLICE_STEP_RTOL = 0.01
DUPLICATE_MM = 1e-3
ORIENTATION_TOLERANCE = 1e-4
# Segment roles of the TCIA "Colorectal-Liver-Metastases" DICOM-SEGs, used when none are given.
TCIA_SEGMENT_ROLES: Mapping[str, str] = {"Liver": "liver", "Tumor_*": "lesion"}
SEGMENT_ROLES = ("liver", "lesion", "ignore")


@settings_class
class LabelRoles:
    """Mask label values of the liver and of the lesions (configs/labels.yaml), how the
    segments of a DICOM-SEG map to these roles (segment name or glob -> liver/lesion/ignore),
    and what a lesion of a DICOM-SEG is: one per lesion segment (``segments``, default) or
    each connected component of a lesion segment (``components``)."""

    liver: int
    lesion: int
    segment_roles: dict[str, str] = field(default_factory=dict)
    seg_lesions: str = "segments"

    def __post_init__(self) -> None:
        if self.liver == self.lesion or min(self.liver, self.lesion) < 1:
            raise ValueError(f"liver and lesion labels must be distinct positive integers, got {self}")
        if self.seg_lesions not in SEG_LESION_MODES:
            raise ValueError(f"seg_lesions must be one of {', '.join(SEG_LESION_MODES)}, got {self.seg_lesions!r}")
        bad = {p: r for p, r in self.segment_roles.items() if r not in SEGMENT_ROLES}
        if bad:
            raise ValueError(f"segment_roles: unknown role(s) {bad}; allowed: {', '.join(SEGMENT_ROLES)}")


DEFAULT_LABELS = LabelRoles(liver=1, lesion=2)  # docs/design.md section 3; configs/labels.yaml overrides it
_ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHUNK_BYTES = 1 << 22
# What pydicom/highdicom raise on truncated or non-conforming files (seen: KeyError, OSError,
# AttributeError on a cut DICOM-SEG); only the library calls are wrapped, not our own code.
# A truncated DICOM-SEG can fail inside pydicom or highdicom with any of these (highdicom raises
# RuntimeError for a pixel data shorter than its frames, depending on where the file is cut).
# pydicom's own two are added when pydicom is first needed (`_dicom_errors`): a NIfTI-only
# extraction does not import pydicom (issue 14, start-up).
_DICOM_ERRORS = (EOFError, OSError, ValueError, KeyError, AttributeError, RuntimeError)


def _dicom_errors() -> tuple[type[BaseException], ...]:
    """`_DICOM_ERRORS` plus pydicom's InvalidDicomError and BytesLengthException (imports pydicom)."""
    from pydicom.errors import BytesLengthException, InvalidDicomError

    return (InvalidDicomError, BytesLengthException) + _DICOM_ERRORS


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
    lesions_by_label: bool = False  # one lesion per label value (DICOM-SEG segments), not components
    label_summary: LabelSummary | None = None  # the mask's label counts and lesions, found once


def _rounded(values) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in values)


# ----------------------------------------------------------------------------- files


def _require(path: Path, patient_id: str, what: str) -> None:
    if not path.exists():
        raise CaseError(patient_id, path, "missing_file", f"{what} {path} not found; fix the path in the cohort table")


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
    return max(offset, 352) + int(np.prod(dims[1 : ndim + 1], dtype=np.int64)) * bitpix // 8


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
        raise CaseError(
            patient_id, path, "unreadable", f"{path} is truncated or corrupt ({exc}); copy or export the file again"
        ) from exc
    expected = _nifti_expected_bytes(header)
    if expected is not None and size < expected:
        raise CaseError(
            patient_id,
            path,
            "unreadable",
            f"{path} is truncated: {size} of {expected} bytes; copy or export the file again",
        )


# NIfTI datatype codes -> numpy type of the stored voxels (for `_gzip_crc_matches`).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


def _gzip_crc_matches(path: Path, image: sitk.Image) -> bool:
    """Whether a gzip NIfTI file's trailer vouches for the voxels SimpleITK read from it: the
    trailer's length (ISIZE) is the header's size, and its CRC-32 is that of the header bytes
    followed by the image buffer, i.e. ITK returned the stored bytes, all of them (a truncated
    or corrupt stream fails one of the two, as gzip's own integrity check would). False
    whenever it cannot tell (big-endian or rescaled voxels, several gzip members, ...): the
    caller then decompresses the whole file (`_check_nifti_complete`). Costs a CRC over the
    voxels instead of a second decompression (issue 14)."""
    try:
        with path.open("rb") as stream:
            if stream.read(2) != b"\x1f\x8b":
                return False
            stream.seek(-8, 2)
            crc, isize = struct.unpack("<II", stream.read(8))
        with gzip.open(path, "rb") as stream:
            header = stream.read(NIFTI2_HEADER_BYTES)
            expected = _nifti_expected_bytes(header)
            if (
                expected is None
                or expected != isize
                or header[:4] not in (struct.pack("<i", 348), struct.pack("<i", 540))
            ):
                return False  # not NIfTI, over 4 GB, or big-endian: not vouched for
            nifti1 = header[:4] == struct.pack("<i", 348)
            datatype = struct.unpack("<h", header[70:72] if nifti1 else header[12:14])[0]
            offset = int(struct.unpack("<f", header[108:112])[0]) if nifti1 else struct.unpack("<q", header[168:176])[0]
            offset = max(offset, 352)
            header += stream.read(max(offset - len(header), 0))
    except (OSError, EOFError, zlib.error, struct.error):
        return False
    values = sitk.GetArrayViewFromImage(image)
    stored = _NIFTI_DTYPES.get(datatype)
    if (
        stored is None
        or values.dtype != np.dtype("<" + stored)
        or not values.flags.c_contiguous
        or offset + values.nbytes != expected
        or len(header) < offset
    ):
        return False
    return zlib.crc32(values, zlib.crc32(header[:offset])) == crc


# ----------------------------------------------------------------------------- DICOM headers

_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "Modality",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "AcquisitionNumber",
    "InstanceNumber",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "NumberOfFrames",
]


@dataclass(frozen=True)
class SliceHeader:
    """What one CT slice file says about itself (read without its pixels)."""

    path: Path
    sop_instance_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient, mm
    orientation: tuple[float, ...]  # ImageOrientationPatient, row then column cosines
    pixel_spacing: tuple[float, float]  # row spacing (y), column spacing (x), mm
    rows: int
    columns: int
    acquisition: str
    unsigned: bool
    intercept: float
    slope: float


@dataclass(frozen=True)
class SeriesHeaders:
    """One DICOM series of a folder, from its headers: identity and slices (as found)."""

    uid: str
    description: str
    slices: tuple[SliceHeader, ...]

    def describe(self) -> str:
        return f"{self.uid} ('{self.description}', {len(self.slices)} files)"

    @property
    def normal(self) -> np.ndarray:
        row, column = np.array(self.slices[0].orientation[:3]), np.array(self.slices[0].orientation[3:])
        return np.cross(row, column)

    def ordered(self) -> list[SliceHeader]:
        """Slices sorted by position along the slice normal (the stacking direction)."""
        normal = self.normal
        return sorted(self.slices, key=lambda s: float(np.dot(s.position, normal)))


def _read_header(path: Path, tags: list[str] | None = _HEADER_TAGS):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=tags)


def _text(header, keyword: str) -> str:
    """A text element's value (DS, IS, UI, LO, CS...) as stored, without pydicom's conversion
    and validation (which cost more than the file read itself over thousands of slices)."""
    element = header.get_item(keyword)
    if element is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value).strip()


def _floats(text: str, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return numbers if len(numbers) == count else None


def _number(text: str, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


# (group, element) of the slice header fields, for the fast reader (features.dicom_header)
_TAGS = {
    "SOPClassUID": (0x0008, 0x0016),
    "SOPInstanceUID": (0x0008, 0x0018),
    "SeriesDescription": (0x0008, 0x103E),
    "SeriesInstanceUID": (0x0020, 0x000E),
    "AcquisitionNumber": (0x0020, 0x0012),
    "ImagePositionPatient": (0x0020, 0x0032),
    "ImageOrientationPatient": (0x0020, 0x0037),
    "Rows": (0x0028, 0x0010),
    "Columns": (0x0028, 0x0011),
    "PixelSpacing": (0x0028, 0x0030),
    "PixelRepresentation": (0x0028, 0x0103),
    "RescaleIntercept": (0x0028, 0x1052),
    "RescaleSlope": (0x0028, 0x1053),
}


def _slice_fields(path: Path) -> tuple[str, str, str, SliceHeader | None] | None:
    """(series UID, description, SOP class, slice header or None without a position) of a file,
    or None if it is not DICOM. The fast header reader first, pydicom if it is unsure."""
    from features import dicom_header

    fast = dicom_header.read_header(path)
    if fast is not None:

        def get(keyword: str) -> str:
            return dicom_header.text(fast, _TAGS[keyword])

        def get_us(keyword: str, default: int) -> int:
            return dicom_header.unsigned_short(fast, _TAGS[keyword], default)
    else:
        try:
            header = _read_header(path)
        except _dicom_errors() + (TypeError, struct.error):
            return None

        def get(keyword: str) -> str:
            return _text(header, keyword)

        def get_us(keyword: str, default: int) -> int:
            value = header.get(keyword, default)
            return default if value in (None, "") else int(value)

    uid = get("SeriesInstanceUID")
    position = _floats(get("ImagePositionPatient"), 3)
    orientation = _floats(get("ImageOrientationPatient"), 6)
    spacing = _floats(get("PixelSpacing"), 2)
    if not uid:
        return None
    slice_header = None
    if position is not None and orientation is not None and spacing is not None:
        slice_header = SliceHeader(
            path=path,
            sop_instance_uid=get("SOPInstanceUID"),
            position=position,
            orientation=orientation,
            pixel_spacing=spacing,
            rows=get_us("Rows", 0),
            columns=get_us("Columns", 0),
            acquisition=get("AcquisitionNumber"),
            unsigned=get_us("PixelRepresentation", 1) == 0,
            intercept=_number(get("RescaleIntercept"), 0.0),
            slope=_number(get("RescaleSlope"), 1.0),
        )
    return uid, get("SeriesDescription"), get("SOPClassUID"), slice_header


def scan_dicom_folder(folder: Path, patient_id: str = "") -> dict[str, SeriesHeaders]:
    """The image series of a folder (its files, not sub-folders), from their headers only.

    Files that are not DICOM, DICOM-SEGs and other objects without a slice position are left
    out. Raises `CaseError` ``unreadable`` if no image series remains.
    """
    found: dict[str, list[SliceHeader]] = {}
    descriptions: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        fields = _slice_fields(path)
        if fields is None:
            continue
        uid, description, sop_class, slice_header = fields
        if sop_class in SEG_STORAGE_CLASSES or slice_header is None:
            continue
        found.setdefault(uid, []).append(slice_header)
        descriptions.setdefault(uid, description)
    if not found:
        raise CaseError(
            patient_id,
            folder,
            "unreadable",
            f"folder {folder} holds no DICOM image series (no file with a slice position); "
            f"point the cohort table at the CT series folder",
        )
    return {uid: SeriesHeaders(uid, descriptions[uid], tuple(slices)) for uid, slices in found.items()}


def choose_series(
    folder: Path,
    series: Mapping[str, SeriesHeaders],
    patient_id: str,
    referenced: tuple[str, ...] = (),
    seg_path: Path | None = None,
) -> SeriesHeaders:
    """The series the SEG references; the only series without a reference. Else `CaseError`
    ``series_mismatch`` (the SEG references none of the folder's series) or ``ambiguous_series``."""
    listing = "; ".join(s.describe() for s in series.values())
    if referenced:
        matches = [series[uid] for uid in referenced if uid in series]
        if not matches:
            raise CaseError(
                patient_id,
                seg_path or folder,
                "series_mismatch",
                f"DICOM-SEG {seg_path} was drawn on series {', '.join(referenced)}, but folder "
                f"{folder} holds {listing}; point the cohort table at the series the SEG references",
            )
        return matches[0]
    if len(series) > 1:
        raise CaseError(
            patient_id,
            folder,
            "ambiguous_series",
            f"folder {folder} holds {len(series)} DICOM series: {listing}; nothing says which one "
            f"the mask was drawn on: move the other series out of the folder or use a DICOM-SEG "
            f"that references its series",
        )
    return next(iter(series.values()))


def check_series(series: SeriesHeaders, patient_id: str, folder: Path) -> list[SliceHeader]:
    """Check a series' slices from their headers; return them in stacking order.

    Raises `CaseError` ``mixed_orientation``, ``inconsistent_slices`` (rows, columns or pixel
    spacing differ), ``multiple_acquisitions`` (several acquisition numbers sharing positions),
    ``duplicate_positions``, ``missing_slices`` (a gap of whole slice steps) or
    ``uneven_spacing``, each naming the slice positions (mm along the slice normal).
    """
    first = series.slices[0]
    tilted = [
        s
        for s in series.slices
        if not np.allclose(s.orientation, first.orientation, rtol=0, atol=ORIENTATION_TOLERANCE)
    ]
    if tilted:
        raise CaseError(
            patient_id,
            folder,
            "mixed_orientation",
            f"series {series.uid} in {folder} mixes slice orientations: {tilted[0].path.name} has "
            f"{_rounded(tilted[0].orientation)}, {first.path.name} {_rounded(first.orientation)}; "
            f"export one reconstruction per series",
        )
    odd = [
        s
        for s in series.slices
        if (s.rows, s.columns) != (first.rows, first.columns)
        or not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=0)
    ]
    if odd:
        raise CaseError(
            patient_id,
            folder,
            "inconsistent_slices",
            f"series {series.uid} in {folder}: {odd[0].path.name} is {odd[0].rows}x{odd[0].columns} "
            f"at {_rounded(odd[0].pixel_spacing)} mm, {first.path.name} {first.rows}x{first.columns} "
            f"at {_rounded(first.pixel_spacing)} mm; export one reconstruction per series",
        )
    ordered = series.ordered()
    if len(ordered) < 2:
        return ordered
    normal = series.normal
    z = np.array([float(np.dot(s.position, normal)) for s in ordered])
    steps = np.diff(z)
    same = np.flatnonzero(steps < DUPLICATE_MM)
    if same.size:
        where = ", ".join(f"{z[i]:.2f}" for i in same[:5])
        acquisitions = sorted({s.acquisition for s in ordered})
        if len(acquisitions) > 1:
            raise CaseError(
                patient_id,
                folder,
                "multiple_acquisitions",
                f"series {series.uid} in {folder} holds acquisitions {', '.join(acquisitions)} "
                f"that share slice positions ({same.size} position(s), e.g. {where} mm); export "
                f"each acquisition as its own series",
            )
        raise CaseError(
            patient_id,
            folder,
            "duplicate_positions",
            f"series {series.uid} in {folder} has {same.size} slice position(s) taken twice "
            f"(e.g. {where} mm: {ordered[same[0]].path.name}, {ordered[same[0] + 1].path.name}); "
            f"remove the duplicated files",
        )
    step = float(np.median(steps))
    tolerance = SLICE_STEP_RTOL * step
    off = np.flatnonzero(np.abs(steps - step) > tolerance)
    if off.size:
        multiples = np.round(steps[off] / step)
        if np.all(multiples >= 2) and np.all(np.abs(steps[off] - multiples * step) <= tolerance):
            gaps = ", ".join(
                f"{int(m) - 1} between {z[i]:.2f} and {z[i + 1]:.2f} mm"
                for i, m in zip(off[:5], multiples[:5], strict=True)
            )
            raise CaseError(
                patient_id,
                folder,
                "missing_slices",
                f"series {series.uid} in {folder} is missing {int((multiples - 1).sum())} slice(s) of its "
                f"{step:.3f} mm step: {gaps}; export the complete series (resampling the mask "
                f"would not repair the image grid)",
            )
        where = ", ".join(f"{steps[i]:.3f} mm between {z[i]:.2f} and {z[i + 1]:.2f} mm" for i in off[:5])
        raise CaseError(
            patient_id,
            folder,
            "uneven_spacing",
            f"series {series.uid} in {folder} has uneven slice spacing (median {step:.3f} mm; "
            f"{where}); export a reconstruction with even spacing",
        )
    return ordered


def check_series_hu(series: SeriesHeaders, patient_id: str, folder: Path) -> None:
    """Raise `CaseError` ``not_hu`` if no stored value can map below 0 HU (unsigned pixels and a
    non-negative rescale): such a CT has no air at -1000 HU, so its values are not HU."""
    if all(s.unsigned and s.slope > 0 and s.intercept >= 0 for s in series.slices):
        first = series.slices[0]
        raise CaseError(
            patient_id,
            folder,
            "not_hu",
            f"series {series.uid} in {folder} stores unsigned pixels with rescale slope "
            f"{first.slope:g} and intercept {first.intercept:g}, so no voxel can be below 0 HU "
            f"(air is -1000 HU); set the Rescale Intercept (usually -1024) and export it again",
        )


def series_geometry(ordered: list[SliceHeader]) -> dict[str, tuple]:
    """Size, spacing, origin and direction (SimpleITK's conventions) of checked, ordered slices."""
    first = ordered[0]
    row, column = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row, column)
    if len(ordered) > 1:
        step = float(np.median(np.diff([np.dot(s.position, normal) for s in ordered])))
    else:
        step = 1.0
    direction = np.column_stack([row, column, normal])
    return {
        "size": (first.columns, first.rows, len(ordered)),
        "spacing": (first.pixel_spacing[1], first.pixel_spacing[0], step),
        "origin": first.position,
        "direction": tuple(direction.ravel()),
    }


# ----------------------------------------------------------------------------- reading


def _read_itk(path: Path, patient_id: str, files: list[SliceHeader] | None = None) -> sitk.Image:
    try:
        if files is not None:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(s.path) for s in files])
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()  # ITK's last line names the cause
        raise CaseError(
            patient_id,
            path,
            "unreadable",
            f"{path} cannot be read ({lines[-1] if lines else exc}){_dicom_kind(path)}; "
            f"tried it as a NIfTI, NRRD or MHA file and as a DICOM series (SimpleITK): check it "
            f"is one of these, complete",
        ) from exc
    if path.name.lower().endswith((".nii", ".nii.gz")) and not _gzip_crc_matches(path, image):
        _check_nifti_complete(path, patient_id)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(
            patient_id,
            path,
            "unsupported_image",
            f"{path} has {image.GetDimension()} dimensions and "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel; "
            f"a 3-D scalar volume is needed",
        )
    return image


def _dicom_kind(path: Path) -> str:
    """', a DICOM <SOP class> file' if ``path`` is a DICOM file, else ''."""
    if not path.is_file():
        return ""
    try:
        header = _read_header(path, ["SOPClassUID", "Modality"])
    except _dicom_errors() + (TypeError, struct.error):
        return ""
    uid = str(header.get("SOPClassUID", ""))
    if not uid:
        return ""
    return f", a DICOM {SOP_CLASS_NAMES.get(uid, 'object of SOP class ' + uid)} file"


def read_image(
    path: str | Path, patient_id: str = "", referenced_series: tuple[str, ...] = (), seg_path: Path | None = None
) -> sitk.Image:
    """Read a CT volume: NIfTI, NRRD, MHA/MHD, or a DICOM series folder.

    In a folder: the series a DICOM-SEG references (``referenced_series``), else the only one;
    its headers are checked (`check_series`, `check_series_hu`) before its voxels are read in
    stacking order, with the rescale slope and intercept applied (HU).
    """
    path = Path(path)
    _require(path, patient_id, "image")
    if not path.is_dir():
        return _read_itk(path, patient_id)
    series = choose_series(path, scan_dicom_folder(path, patient_id), patient_id, referenced_series, seg_path)
    ordered = check_series(series, patient_id, path)
    check_series_hu(series, patient_id, path)
    return _read_itk(path, patient_id, ordered)


def _is_dicom_seg(path: Path) -> bool:
    from features import dicom_header

    fast = dicom_header.read_header(path, until=_TAGS["SOPClassUID"])
    if fast is not None:
        return dicom_header.text(fast, _TAGS["SOPClassUID"]) in SEG_STORAGE_CLASSES
    try:
        header = _read_header(path, ["SOPClassUID"])
    except _dicom_errors() + (TypeError, struct.error):
        return False
    return str(header.get("SOPClassUID", "")) in SEG_STORAGE_CLASSES


def find_dicom_seg(path: Path, patient_id: str) -> Path | None:
    """The DICOM-SEG file at ``path`` (a file, or a folder holding exactly one), else None."""
    if path.is_file():
        if path.name.lower().endswith(_ITK_SUFFIXES):
            return None
        return path if _is_dicom_seg(path) else None
    segs = [p for p in sorted(path.iterdir()) if p.is_file() and _is_dicom_seg(p)]
    if len(segs) > 1:
        raise CaseError(
            patient_id,
            path,
            "ambiguous_file",
            f"folder {path} holds {len(segs)} DICOM-SEG files ({segs[0].name}, {segs[1].name}, ...); "
            f"point the cohort table at one of them",
        )
    return segs[0] if segs else None


def seg_referenced_series(seg_file: Path, patient_id: str, fast=None) -> tuple[str, ...]:
    """Series Instance UIDs a DICOM-SEG references (Referenced Series Sequence), from its header
    (``fast``: the header already read by `features.dicom_header`)."""
    from features import dicom_header

    fast = fast if fast is not None else dicom_header.read_header(seg_file, until=(0x0008, 0x1115))
    items = fast.get((0x0008, 0x1115)) if fast is not None else None
    if isinstance(items, list):
        return tuple(uid for item in items if (uid := dicom_header.text(item, _TAGS["SeriesInstanceUID"])))
    try:
        header = _read_header(seg_file, ["ReferencedSeriesSequence"])
        return tuple(
            str(item.SeriesInstanceUID)
            for item in header.get("ReferencedSeriesSequence", [])
            if "SeriesInstanceUID" in item
        )
    except _dicom_errors() as exc:
        raise _unreadable_seg(seg_file, patient_id, exc) from exc


def _segment_role(label: str, segment_roles: Mapping[str, str]) -> str:
    """Role of a segment: the first pattern (exact or glob) that matches its label, else ``ignore``."""
    for pattern, role in segment_roles.items():
        if fnmatch.fnmatchcase(label, pattern):
            return role
    return "ignore"


def _unreadable_seg(path: Path, patient_id: str, exc: Exception) -> CaseError:
    return CaseError(
        patient_id,
        path,
        "unreadable",
        f"DICOM-SEG {path} cannot be read ({type(exc).__name__}: {exc}); tried it with highdicom "
        f"as a BINARY, FRACTIONAL or LABELMAP Segmentation: check it is a complete Segmentation "
        f"Storage object",
    )


def segment_roles_of(
    names: Mapping[int, str], segment_roles: Mapping[str, str], patient_id: str, path: Path
) -> tuple[list[int], list[int]]:
    """Segment numbers of the liver and of the lesions; `CaseError` if there is no lesion segment."""
    roles = {n: _segment_role(name, segment_roles) for n, name in names.items()}
    liver = [n for n, role in roles.items() if role == "liver"]
    lesions = [n for n, role in roles.items() if role == "lesion"]
    if not lesions:
        raise CaseError(
            patient_id,
            path,
            "missing_lesion_label",
            f"DICOM-SEG {path} has segments {sorted(names.values())}, none of which is a "
            f"lesion under the segment roles {dict(segment_roles)}; map the lesion segments "
            f"to 'lesion' in configs/labels.yaml (segment_roles)",
        )
    return liver, lesions


def _outside_voxels(volume, reference: sitk.Image) -> tuple[int, float, float]:
    """Non-zero SEG voxels (any channel) that fall outside the reference grid, and the range of
    their positions along the reference's slice axis (mm from its origin). The corners of the
    non-zero voxels' bounding box are checked first (an affine map keeps a box convex): only if
    one falls outside is every voxel mapped."""
    drawn = volume.array.reshape(*volume.spatial_shape, -1).any(axis=-1)
    direction = np.reshape(reference.GetDirection(), (3, 3))
    origin, spacing = np.array(reference.GetOrigin()), np.array(reference.GetSpacing())
    size = np.array(reference.GetSize())

    def outside(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        physical = indices @ volume.affine[:3, :3].T + volume.affine[:3, 3]
        index = (physical - origin) @ direction / spacing
        return np.any((index < -0.5 - 1e-3) | (index > size - 0.5 + 1e-3), axis=1), index

    spans = [np.flatnonzero(drawn.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(span.size == 0 for span in spans):
        return 0, 0.0, 0.0
    corners = np.array([[i, j, k] for i in spans[0][[0, -1]] for j in spans[1][[0, -1]] for k in spans[2][[0, -1]]])
    if not outside(corners)[0].any():
        return 0, 0.0, 0.0
    flags, index = outside(np.argwhere(drawn))
    if not flags.any():
        return 0, 0.0, 0.0
    along = index[flags, 2] * spacing[2]
    return int(flags.sum()), float(along.min()), float(along.max())


def _read_dicom_seg(
    path: Path,
    reference: sitk.Image | None,
    patient_id: str,
    segment_roles: Mapping[str, str],
    labels: LabelRoles,
    separate_lesion_segments: bool,
) -> sitk.Image:
    import highdicom as hd

    bad_roles = {p: r for p, r in segment_roles.items() if r not in SEGMENT_ROLES}
    if bad_roles:
        raise ValueError(f"segment_roles: unknown role(s) {bad_roles}; allowed: {', '.join(SEGMENT_ROLES)}")
    try:
        seg = hd.seg.segread(path)
        names = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    except _dicom_errors() as exc:
        raise _unreadable_seg(path, patient_id, exc) from exc
    liver, lesions = segment_roles_of(names, segment_roles, patient_id, path)
    try:
        volume = seg.get_volume(segment_numbers=liver + lesions, combine_segments=False)
    except _dicom_errors() as exc:
        raise _unreadable_seg(path, patient_id, exc) from exc
    if volume.array.ndim == 3:  # one segment asked for: no channel axis
        volume = volume.with_array(volume.array[..., None], channels={})
    on_reference = False
    if reference is not None:
        count, low, high = _outside_voxels(volume, reference)
        if count:
            extent = (reference.GetSize()[2] - 1) * reference.GetSpacing()[2]
            raise CaseError(
                patient_id,
                path,
                "seg_outside_image",
                f"DICOM-SEG {path}: {count} segment voxel(s) lie outside the CT, from {low:.1f} to "
                f"{high:.1f} mm along its slice axis while the CT covers 0 to {extent:.1f} mm; "
                f"the CT series is incomplete (cut short) or is not the one the SEG was drawn on",
            )
        try:
            grid = hd.VolumeGeometry.from_components(  # axes x, y, z as in Volume.from_simpleitk
                reference.GetSize(),
                spacing=reference.GetSpacing(),
                position=reference.GetOrigin(),
                direction=np.reshape(reference.GetDirection(), (3, 3)),
                coordinate_system="PATIENT",
            )
            volume = volume.match_geometry(grid)
            on_reference = True
        except RuntimeError:  # another grid: the caller's geometry check reports or resamples it
            pass
    channels = volume.array > (0.5 if volume.array.dtype.kind == "f" else 0)
    further = iter(range(max(labels.liver, labels.lesion) + 1, 256))
    label_map = np.zeros(volume.spatial_shape, np.uint8)
    label_map[channels[..., : len(liver)].any(axis=-1)] = labels.liver
    for k in range(len(lesions)):  # lesions are painted over the liver
        value = labels.lesion if k == 0 or not separate_lesion_segments else next(further, None)
        if value is None:
            raise CaseError(
                patient_id,
                path,
                "invalid_labels",
                f"DICOM-SEG {path} has more lesion segments than fit in a uint8 label map "
                f"({len(lesions)}); merge lesion segments or set seg_lesions: components",
            )
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
        raise CaseError(
            patient_id,
            path,
            "invalid_labels",
            f"mask {path} holds values in [{low:g}, {high:g}]"
            f"{' that are not integers' if fractional else ''}; a label map of integers "
            f"0-255 is needed (threshold a probability map first)",
        )
    return sitk.Cast(mask, sitk.sitkUInt8)


def read_mask(
    path: str | Path,
    reference: sitk.Image | None = None,
    patient_id: str = "",
    segment_roles: Mapping[str, str] | None = None,
    labels: LabelRoles | None = None,
    separate_lesion_segments: bool = True,
) -> sitk.Image:
    """Read a mask as a uint8 label map.

    NIfTI/NRRD/MHA/DICOM series are read as stored. A DICOM-SEG (BINARY, FRACTIONAL thresholded
    at 0.5, or LABELMAP) is placed on the grid of ``reference`` (the CT it annotates) by frame
    position: empty frames are filled in, and segment voxels outside the CT are `CaseError`
    ``seg_outside_image``. Segments get roles by ``segment_roles`` (segment label or glob ->
    ``liver`` | ``lesion`` | ``ignore``; first match wins; unmapped segments are ignored;
    default `TCIA_SEGMENT_ROLES`). Liver segments get ``labels.liver``; lesion segments are
    painted over the liver, the first with ``labels.lesion`` and the k-th (k >= 2) with
    ``max(liver, lesion) + k - 1``, which keeps touching tumours apart. With
    ``separate_lesion_segments=False`` every lesion segment gets ``labels.lesion`` (touching
    tumours merge). ``labels`` defaults to `DEFAULT_LABELS` (liver 1, lesion 2).
    """
    path = Path(path)
    _require(path, patient_id, "mask")
    seg_file = find_dicom_seg(path, patient_id)
    if seg_file is not None:
        roles = TCIA_SEGMENT_ROLES if segment_roles is None else segment_roles
        return _read_dicom_seg(
            seg_file, reference, patient_id, roles, labels or DEFAULT_LABELS, separate_lesion_segments
        )
    kind = _dicom_kind(path) if not path.name.lower().endswith(_ITK_SUFFIXES) else ""
    if kind:
        raise CaseError(
            patient_id,
            path,
            "unreadable",
            f"mask {path} is{kind.removeprefix(',')}, not a DICOM-SEG (Segmentation or Label Map "
            f"Segmentation Storage); tried it as a DICOM-SEG: point the cohort table at the "
            f"segmentation, or convert it (e.g. an RT Structure Set with dcmrtstruct2nii)",
        )
    if path.is_dir():
        series = choose_series(path, scan_dicom_folder(path, patient_id), patient_id)
        return _as_label_map(_read_itk(path, patient_id, check_series(series, patient_id, path)), path, patient_id)
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


def check_geometry(
    image: sitk.Image, mask: sitk.Image, patient_id: str = "", tolerance: float = 1e-3, mask_path: str | Path = ""
) -> None:
    """Raise `CaseError` ``geometry_mismatch`` unless the mask lies on the image's grid."""
    differences = geometry_differences(image, mask, tolerance)
    if differences:
        raise CaseError(
            patient_id,
            mask_path,
            "geometry_mismatch",
            f"mask {mask_path} is on another grid than the image ({'; '.join(differences)}, "
            f"mask vs image); resample it onto the image or pass --resample-mask",
        )


def resample_mask_to_image(mask: sitk.Image, image: sitk.Image, patient_id: str = "") -> sitk.Image:
    """The mask resampled onto the image grid by nearest neighbour (labels are kept, not blended)."""
    logger.info(
        "patient %s: resampling the mask onto the image grid (size %s -> %s, spacing %s -> %s mm)",
        patient_id,
        mask.GetSize(),
        image.GetSize(),
        _rounded(mask.GetSpacing()),
        _rounded(image.GetSpacing()),
    )
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


# ----------------------------------------------------------------------------- content checks


def lesion_labels_present(mask_array: np.ndarray, labels: LabelRoles) -> tuple[int, ...]:
    """Lesion label values in the mask, ascending: every non-zero value except the liver's."""
    return tuple(v for v in label_counts(mask_array) if v != labels.liver)


def check_mask(
    mask_array: np.ndarray,
    labels: LabelRoles,
    patient_id: str,
    path: str | Path,
    require_liver: bool = False,
    min_lesion_voxels: int = 2,
    by_label: bool = False,
    summary: LabelSummary | None = None,
) -> None:
    """Raise `CaseError` for an empty mask, a missing liver (if required), no lesion label, or
    a lesion with fewer than ``min_lesion_voxels`` voxels: a 26-connected component, or with
    ``by_label`` a whole label value (one lesion per DICOM-SEG segment).

    ``summary``: the mask's `features.morphology.summarize_labels` with ``labels.liver`` and
    ``by_label`` (one pass over the volume, shared with the extraction), if already computed."""
    if (
        summary is None
        or summary.by_label != by_label
        or summary.shape != tuple(mask_array.shape)
        or summary.lesion_labels != tuple(v for v in summary.counts if v != labels.liver)
    ):
        summary = summarize_labels(mask_array, labels.liver, by_label=by_label)
    if not summary.counts:
        raise CaseError(
            patient_id,
            path,
            "empty_mask",
            f"mask {path} is empty (all voxels 0); check it is the right file for this patient",
        )
    if require_liver and not summary.voxels(labels.liver):
        raise CaseError(
            patient_id,
            path,
            "no_liver_label",
            f"mask {path} has no liver voxels (label {labels.liver}); add the liver or set the "
            f"liver label (--liver-label)",
        )
    lesion_labels = summary.lesion_labels
    if not lesion_labels:
        raise CaseError(
            patient_id,
            path,
            "missing_lesion_label",
            f"mask {path} holds only the liver label {labels.liver}, no lesion (label "
            f"{labels.lesion} or any other value); set the lesion label (--lesion-label) or "
            f"check the mask",
        )
    for label in lesion_labels:
        components, _ = summary.components[label]  # inside the lesions' box, in memory order
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes[1:] < min_lesion_voxels) + 1
        if small.size:
            where = (np.argwhere(components == small[0])[0] + np.array(summary.offset))[::-1]
            raise CaseError(
                patient_id,
                path,
                "lesion_too_small",
                f"mask {path}: a lesion of label {label} has {sizes[small[0]]} voxel(s) "
                f"(at index x,y,z {tuple(int(i) for i in where)}), fewer than {min_lesion_voxels}; "
                f"remove it from the mask or lower the minimum lesion size",
            )


def check_hu(image_array: np.ndarray, patient_id: str, path: str | Path) -> None:
    """Raise `CaseError` ``not_hu`` if a CT's minimum over the whole volume is 0 or more: a CT
    in HU has air (about -1000 HU) around the body; stored values shifted by +1024 (unsigned
    storage without its rescale intercept) would otherwise give every feature a silent offset."""
    low = float(image_array.min())
    if low >= 0:
        raise CaseError(
            patient_id,
            path,
            "not_hu",
            f"image {path} holds values in [{low:g}, {float(image_array.max()):g}]: no air below 0, "
            f"so they are not HU (e.g. HU + 1024 stored without a rescale); export it in HU",
        )


# ITK's NIfTI reader turns NaN voxels into 0 (a float32 .nii.gz with NaN reads back without
# any through SimpleITK; NRRD keeps them), so NIfTI files are checked on their stored bytes.
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64 voxels
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
                    flat = position + int(np.flatnonzero(bad)[0])  # x fastest (NIfTI order)
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
        return  # unreadable: read_image reports it with its own reason
    if count:
        raise CaseError(
            patient_id,
            path,
            "nan_voxels",
            f"image {path} has {count} NaN or infinite voxel(s) (first at index x,y,z {first}); "
            f"fill them (e.g. with -1000 HU) and export it again",
        )


def check_image_values(image_array: np.ndarray, patient_id: str, path: str | Path) -> None:
    """Raise `CaseError` ``nan_voxels`` if a floating-point image holds NaN or infinite voxels."""
    if image_array.dtype.kind != "f":
        return
    bad = ~np.isfinite(image_array)
    if bad.any():
        where = np.argwhere(bad)[0][::-1]
        raise CaseError(
            patient_id,
            path,
            "nan_voxels",
            f"image {path} has {int(bad.sum())} NaN or infinite voxel(s) (first at index x,y,z "
            f"{tuple(int(i) for i in where)}); fill them (e.g. with -1000 HU) and export it again",
        )


def load_case(
    patient_id: str,
    image_path: str | Path,
    mask_path: str | Path,
    labels: LabelRoles,
    resample_mask: bool = False,
    segment_roles: Mapping[str, str] | None = None,
    separate_lesion_segments: bool = True,
    min_lesion_voxels: int = 2,
    require_liver: bool = False,
    tolerance: float = 1e-3,
    require_hu: bool = True,
) -> Case:
    """Read and check one case: image, mask on the image grid (resampled only if allowed),
    finite HU values (``require_hu``: `check_hu`) and a usable label map. Raises `CaseError`.

    A DICOM-SEG mask picks its series in an image folder (`choose_series`). The image comes
    back as float32 whatever its stored type, so the features do not depend on it (HU are
    integers, exact in float32). ``labels.seg_lesions`` decides the lesions of a DICOM-SEG
    (``Case.lesions_by_label``); ``segment_roles`` defaults to ``labels.segment_roles`` or TCIA's.
    """
    image_path, mask_path = Path(image_path), Path(mask_path)
    _require(image_path, patient_id, "image")
    _require(mask_path, patient_id, "mask")
    seg_file = find_dicom_seg(mask_path, patient_id)
    referenced = seg_referenced_series(seg_file, patient_id) if seg_file is not None and image_path.is_dir() else ()
    check_nifti_values(image_path, patient_id)
    image = read_image(image_path, patient_id, referenced, seg_file)
    roles = segment_roles if segment_roles is not None else (labels.segment_roles or None)
    mask = read_mask(seg_file or mask_path, image, patient_id, roles, labels, separate_lesion_segments)
    resampled = False
    if geometry_differences(image, mask, tolerance):
        if not resample_mask:
            check_geometry(image, mask, patient_id, tolerance, mask_path)
        mask, resampled = resample_mask_to_image(mask, image, patient_id), True
    else:
        mask.CopyInformation(image)  # equal within tolerance: share the exact grid downstream
    stored_float = image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)  # once, before any filter (docs/imaging.md)
    values = sitk.GetArrayViewFromImage(image)
    if stored_float:  # integers cast to float32 cannot be NaN or infinite
        check_image_values(values, patient_id, image_path)
    if require_hu:
        check_hu(values, patient_id, image_path)
    by_label = seg_file is not None and labels.seg_lesions == "segments"
    mask_values = sitk.GetArrayViewFromImage(mask)
    summary = summarize_labels(mask_values, labels.liver, by_label=by_label)  # the one pass over the mask
    check_mask(
        mask_values, labels, patient_id, mask_path, require_liver, min_lesion_voxels, by_label=by_label, summary=summary
    )
    return Case(str(patient_id), image, mask, resampled, by_label, summary)


# ----------------------------------------------------------------------------- from headers only


@dataclass(frozen=True)
class Geometry:
    """A volume's grid as SimpleITK states it (x, y, z order; mm)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    # The accessors `geometry_differences` uses, so a header's grid compares without any voxels.
    def GetSize(self) -> tuple[int, ...]:  # noqa: N802 - SimpleITK's names
        return tuple(int(v) for v in self.size)

    def GetSpacing(self) -> tuple[float, ...]:  # noqa: N802
        return tuple(self.spacing)

    def GetOrigin(self) -> tuple[float, ...]:  # noqa: N802
        return tuple(self.origin)

    def GetDirection(self) -> tuple[float, ...]:  # noqa: N802
        return tuple(self.direction)

    def as_image(self, pixel=sitk.sitkUInt8) -> sitk.Image:
        """An empty image on this grid (for the geometry functions above)."""
        image = sitk.Image([int(v) for v in self.size], pixel)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _gzip_size_matches(path: Path, expected: int) -> bool:
    """Whether a gzip file's trailer (uncompressed size mod 2^32) says it holds ``expected`` bytes."""
    with path.open("rb") as stream:
        stream.seek(-4, 2)
        return struct.unpack("<I", stream.read(4))[0] == expected % (1 << 32)


def _file_geometry(path: Path, patient_id: str) -> Geometry:
    """The grid of a NIfTI/NRRD/MHA file from its header; a truncated NIfTI is ``unreadable``."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CaseError(
            patient_id,
            path,
            "unreadable",
            f"{path} cannot be read ({lines[-1] if lines else exc}){_dicom_kind(path)}; tried its "
            f"header as a NIfTI, NRRD or MHA file (SimpleITK): check it is one of these, complete",
        ) from exc
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise CaseError(
            patient_id,
            path,
            "unsupported_image",
            f"{path} has {reader.GetDimension()} dimensions and {reader.GetNumberOfComponents()} "
            f"components per voxel; a 3-D scalar volume is needed",
        )
    if path.name.lower().endswith((".nii", ".nii.gz")):
        with _open_nifti(path) as stream:
            expected = _nifti_expected_bytes(stream.read(540))
        with path.open("rb") as stream:
            gzipped = stream.read(2) == b"\x1f\x8b"
        if expected is None or not gzipped or not _gzip_size_matches(path, expected):
            _check_nifti_complete(path, patient_id)  # the whole file only when the trailer disagrees
    return Geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def _image_geometry(path: Path, patient_id: str, referenced: tuple[str, ...], seg_file: Path | None) -> Geometry:
    if not path.is_dir():
        return _file_geometry(path, patient_id)
    series = choose_series(path, scan_dicom_folder(path, patient_id), patient_id, referenced, seg_file)
    ordered = check_series(series, patient_id, path)
    check_series_hu(series, patient_id, path)
    grid = series_geometry(ordered)
    return Geometry(grid["size"], grid["spacing"], grid["origin"], grid["direction"])


def _seg_frames_fast(header) -> tuple[dict[int, str] | None, np.ndarray | None]:
    """Segment labels and frame positions of a SEG header read by `features.dicom_header`;
    (None, None) if it cannot tell (pydicom then reads the header)."""
    from features import dicom_header

    if header is None:
        return None, None
    segments, frames = header.get((0x0062, 0x0002)), header.get((0x5200, 0x9230))
    if not isinstance(segments, list) or not isinstance(frames, list):
        return None, None
    names = {
        dicom_header.unsigned_short(item, (0x0062, 0x0004), 0): dicom_header.text(item, (0x0062, 0x0005))
        for item in segments
    }
    positions = []
    for frame in frames:
        plane = frame.get((0x0020, 0x9113))
        position = (
            _floats(dicom_header.text(plane[0], _TAGS["ImagePositionPatient"]), 3)
            if isinstance(plane, list) and plane
            else None
        )
        if position is None:
            return None, None
        positions.append(position)
    return names, np.array(positions, dtype=float).reshape(-1, 3)


def _check_seg_headers(seg_file: Path, grid: Geometry, patient_id: str, labels: LabelRoles, fast=None) -> None:
    """Segment roles and frame positions of a DICOM-SEG from its header; the frames are decoded
    only if some lie outside the CT (they may be empty: then the SEG is fine)."""
    names, positions = _seg_frames_fast(fast)
    if names is None:
        try:
            header = _read_header(seg_file, None)
            names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in header.SegmentSequence}
            positions = np.array(
                [
                    [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
                    for frame in header.PerFrameFunctionalGroupsSequence
                ]
            )
        except (AttributeError, IndexError, TypeError) + _dicom_errors() as exc:
            raise _unreadable_seg(seg_file, patient_id, exc) from exc
    roles = labels.segment_roles or TCIA_SEGMENT_ROLES
    segment_roles_of(names, roles, patient_id, seg_file)
    direction = np.reshape(grid.direction, (3, 3))
    index = (positions - np.array(grid.origin)) @ direction / np.array(grid.spacing)
    outside = (index < -0.5 - 1e-3) | (index > np.array(grid.size) - 0.5 + 1e-3)
    if outside.any():  # decode: the same check (and message) as extraction
        _read_dicom_seg(seg_file, grid.as_image(), patient_id, roles, labels, True)


def check_case_headers(
    patient_id: str,
    image_path: str | Path,
    mask_path: str | Path,
    labels: LabelRoles,
    resample_mask: bool = False,
    tolerance: float = 1e-3,
) -> None:
    """Check one image/mask pair from file headers, with the statuses of `load_case`: existence,
    format, DICOM series choice and integrity (`choose_series`, `check_series`), stored values
    that cannot be HU (DICOM), DICOM-SEG segment roles and frame positions, and the mask's grid
    (``geometry_mismatch`` unless ``resample_mask``). Raises `CaseError`.

    Not checked here (they need every voxel; extraction checks them): NaN voxels, HU of
    NIfTI/NRRD images, label values of label-map masks, lesion sizes.
    """
    image_path, mask_path = Path(image_path), Path(mask_path)
    _require(image_path, patient_id, "image")
    _require(mask_path, patient_id, "mask")
    from features import dicom_header

    seg_file = find_dicom_seg(mask_path, patient_id)
    fast = dicom_header.read_header(seg_file) if seg_file is not None else None
    referenced = (
        seg_referenced_series(seg_file, patient_id, fast) if seg_file is not None and image_path.is_dir() else ()
    )
    grid = _image_geometry(image_path, patient_id, referenced, seg_file)
    if seg_file is not None:
        _check_seg_headers(seg_file, grid, patient_id, labels, fast)
        return
    kind = _dicom_kind(mask_path) if not mask_path.name.lower().endswith(_ITK_SUFFIXES) else ""
    if kind:
        raise CaseError(
            patient_id,
            mask_path,
            "unreadable",
            f"mask {mask_path} is{kind.removeprefix(',')}, not a DICOM-SEG; point the cohort table at the segmentation",
        )
    mask_grid = _image_geometry(mask_path, patient_id, (), None)
    if not resample_mask:
        check_geometry(grid, mask_grid, patient_id, tolerance, mask_path)
