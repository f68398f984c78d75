"""The fast DICOM header reader agrees with pydicom, and hands over when it is unsure."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from features import dicom_header
from tests.features import real_dicom as rd


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("headers")
    ct, tumour, spacing, origin = rd.load_crop()
    ct, tumour = ct[:6], tumour[:6]
    tumour[2:4, 20:30, 20:30] = True
    explicit = rd.write_series(
        ct, spacing, origin, root / "explicit", study_uid=generate_uid(), frame_uid=generate_uid()
    )
    rd.write_series(
        ct,
        spacing,
        origin,
        root / "implicit",
        study_uid=generate_uid(),
        frame_uid=generate_uid(),
        implicit_vr=True,
        suffix="",
    )
    seg = rd.write_seg(explicit, rd.segment_stack(tumour), root / "seg.dcm")
    return {
        "explicit": sorted((root / "explicit").iterdir())[2],
        "implicit": sorted((root / "implicit").iterdir())[2],
        "seg": seg,
        "root": root,
    }


def _pydicom_texts(dataset) -> dict:
    out = {}
    for element in dataset:
        if element.VR in ("SQ", "OB", "OW", "US", "UL", "SS", "SL", "FL", "FD", "AT") or element.tag.group == 0x7FE0:
            continue
        value = element.value
        text = (
            "\\".join(str(v) for v in value) if isinstance(value, (list, pydicom.multival.MultiValue)) else str(value)
        )
        out[(element.tag.group, element.tag.element)] = text
    return out


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_text_and_us_elements_match_pydicom(files, kind):
    header = dicom_header.read_header(files[kind])
    reference = pydicom.dcmread(files[kind], stop_before_pixels=True)
    for tag, text in _pydicom_texts(reference).items():
        if tag in header:
            got = dicom_header.text(header, tag)
            if reference[tag].VR in ("DS", "IS"):
                assert np.allclose([float(v) for v in got.split("\\")], [float(v) for v in text.split("\\")]), tag
            else:
                assert got == text.strip(), tag
    assert dicom_header.unsigned_short(header, (0x0028, 0x0010), 0) == reference.Rows
    assert dicom_header.unsigned_short(header, (0x0028, 0x0103), 9) == reference.PixelRepresentation


def test_seg_sequences_come_back_as_items(files):
    header = dicom_header.read_header(files["seg"])
    reference = pydicom.dcmread(files["seg"], stop_before_pixels=True)
    frames = header[(0x5200, 0x9230)]
    assert len(frames) == len(reference.PerFrameFunctionalGroupsSequence)
    for frame, expected in zip(frames, reference.PerFrameFunctionalGroupsSequence, strict=True):
        position = dicom_header.text(frame[(0x0020, 0x9113)][0], (0x0020, 0x0032))
        assert [float(v) for v in position.split("\\")] == [
            float(v) for v in expected.PlanePositionSequence[0].ImagePositionPatient
        ]
    labels = [dicom_header.text(item, (0x0062, 0x0005)) for item in header[(0x0062, 0x0002)]]
    assert labels == [s.SegmentLabel for s in reference.SegmentSequence]


def test_not_dicom_truncated_or_big_endian_is_handed_to_pydicom(files, tmp_path):
    (tmp_path / "text.txt").write_bytes(b"hello, this is not DICOM at all" * 10)
    assert dicom_header.read_header(tmp_path / "text.txt") is None
    data = files["seg"].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:3000])
    assert dicom_header.read_header(tmp_path / "cut.dcm") is None
    data = files["explicit"].read_bytes()
    little, big = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00"  # the transfer syntax, same length
    assert data.count(little) == 1
    (tmp_path / "big.dcm").write_bytes(data.replace(little, big))
    assert dicom_header.read_header(tmp_path / "big.dcm") is None
