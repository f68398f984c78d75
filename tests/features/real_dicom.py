"""Real CT (tests/data/real_ct/STS_002, cropped) written as DICOM series and highdicom SEGs.

The SEGs follow TCIA's "Colorectal-Liver-Metastases" layout: segments ``Liver``,
``Liver_Remnant``, ``Hepatic``, ``Portal``, ``Tumor_1``, ``Tumor_2``, where the organ segments
contain the tumours (segments overlap) and ``Tumor_2`` touches ``Tumor_1``. ``Tumor_1`` is the
real gross tumour mask; the liver is a box around it. The same case is also written as NIfTI
(the CT as stored, float32 HU, and a label map), so both paths can be compared.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from scipy import ndimage

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tests" / "data" / "real_ct" / "STS_002"
CROP_ZYX = (slice(12, 36), slice(44, 100), slice(44, 116))  # 24 x 56 x 72 voxels around the tumour
SEGMENTS = ("Liver", "Liver_Remnant", "Hepatic", "Portal", "Tumor_1", "Tumor_2")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LABELS = {"liver": 1, "lesion": 2}


def load_crop() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """The cropped CT (int16 HU, z y x), the tumour mask, spacing and origin (x, y, z)."""
    image = sitk.ReadImage(str(SOURCE / "CT_image.nii.gz"))
    mask = sitk.ReadImage(str(SOURCE / "CT_mask.nii.gz"))
    ct = sitk.GetArrayFromImage(image)[CROP_ZYX]
    assert np.array_equal(ct, np.round(ct))  # integer HU stored as float32
    origin = image.TransformIndexToPhysicalPoint([CROP_ZYX[2].start, CROP_ZYX[1].start, CROP_ZYX[0].start])
    # Geometry that DICOM text (DS) and NIfTI (float32) both hold exactly, so the two paths can
    # be compared bit for bit: 0.9765625 mm (500 mm / 512) for 0.976562, 3.25 for 3.27 mm.
    spacing = (0.9765625, 0.9765625, 3.25)
    origin = tuple(round(v * 4) / 4 for v in origin)
    return ct.astype(np.int16), sitk.GetArrayFromImage(mask)[CROP_ZYX] > 0, spacing, origin


def segment_stack(tumour: np.ndarray) -> np.ndarray:
    """(z, y, x, segment) binary segments in the order of SEGMENTS, overlapping as in TCIA."""
    stack = np.zeros((*tumour.shape, len(SEGMENTS)), np.uint8)
    z, y, x = np.nonzero(tumour)
    liver = np.zeros(tumour.shape, bool)
    liver[max(z.min() - 2, 0) : z.max() + 3, max(y.min() - 6, 0) : y.max() + 7, max(x.min() - 6, 0) : x.max() + 12] = (
        True
    )
    stack[..., 0] = liver
    remnant = liver.copy()
    remnant[:, :, : (x.min() + x.max()) // 2] = False
    stack[..., 1] = remnant
    stack[z.min() : z.max(), y.min() - 3, x.min() : x.max(), 2] = 1  # a hepatic vein strip
    stack[z.min() : z.max(), (y.min() + y.max()) // 2, x.min() - 4 : x.max(), 3] = 1  # a portal strip
    stack[..., 4] = tumour
    # Tumor_2 touches Tumor_1 on its right side at the middle slice.
    zc, yc = int(np.median(z)), int(np.median(y))
    xm = int(np.nonzero(tumour[zc, yc])[0].max())
    second = np.zeros(tumour.shape, bool)
    second[zc - 2 : zc + 2, yc - 3 : yc + 3, xm + 1 : xm + 7] = True
    second &= ~tumour
    assert ndimage.label(second)[1] == 1
    stack[..., 5] = second
    return stack


def label_map(stack: np.ndarray) -> np.ndarray:
    """The NIfTI equivalent of a SEG: liver 1, Tumor_1 2, Tumor_2 3 (further lesion label)."""
    labels = np.zeros(stack.shape[:3], np.uint8)
    labels[stack[..., 0] > 0] = LABELS["liver"]
    labels[stack[..., 4] > 0] = 2
    labels[stack[..., 5] > 0] = 3
    return labels


def write_series(
    ct: np.ndarray,
    spacing,
    origin,
    folder: Path,
    *,
    study_uid: str,
    frame_uid: str,
    series_uid: str | None = None,
    description: str = "CT",
    stored: str = "int16",
    intercept: float = 0.0,
    slice_indices=None,
    positions_z=None,
    acquisitions=None,
    implicit_vr: bool = False,
    suffix: str = ".dcm",
    reverse_numbers: bool = False,
    prefix: str = "ct",
) -> list[Dataset]:
    """One CT slice per file (pydicom), values ``stored`` = (HU - intercept) as ``stored`` type.

    ``slice_indices``: which slices of ``ct`` to write (default all); ``positions_z``: override
    their z positions (mm); ``acquisitions``: Acquisition Number per written slice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    indices = list(range(ct.shape[0])) if slice_indices is None else list(slice_indices)
    datasets = []
    for n, k in enumerate(indices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "STS_002", "STS^002", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = (
            "20260101",
            "120000",
            "",
            "",
            "1",
        )
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "CT", description, 1
        ds.Manufacturer = "test"
        ds.InstanceNumber = (len(indices) - n) if reverse_numbers else n + 1
        ds.AcquisitionNumber = 1 if acquisitions is None else acquisitions[n]
        z = origin[2] + k * spacing[2] if positions_z is None else positions_z[n]
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{z:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{spacing[1]:.7f}", f"{spacing[0]:.7f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0 if stored == "uint16" else 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", "1", "HU"
        ds.PixelData = (ct[k].astype(np.int32) - int(intercept)).astype(stored).tobytes()
        name = folder / f"{prefix}_{n:03d}{suffix}"
        ds.save_as(name, enforce_file_format=True)
        datasets.append(ds)
    return datasets


def write_seg(sources: list[Dataset], stack: np.ndarray, path: Path, kind: str = "BINARY") -> Path:
    """A highdicom SEG of ``stack`` (z, y, x, segment; source slice order) on ``sources``."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in enumerate(SEGMENTS, start=1)
    ]
    pixels = stack
    if kind == "FRACTIONAL":
        pixels = stack.astype(np.float32) * 0.8
    elif kind == "LABELMAP":  # one segment per voxel: the last segment drawn wins
        pixels = np.zeros(stack.shape[:3], np.uint8)
        for number in range(1, len(SEGMENTS) + 1):
            pixels[stack[..., number - 1] > 0] = number
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def read_sources(folder: Path) -> list[Dataset]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]
    return sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
