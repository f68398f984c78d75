"""A small, fast reader of DICOM headers (elements before the pixel data).

`crlm validate --images` reads the header of every slice of every series: pydicom spends
about 1-3 ms per CT slice file building its Dataset, which for a 200-patient cohort of
100-slice series is minutes. This reader walks the elements of the common transfer syntaxes
(implicit and explicit VR little endian, and the compressed ones, whose headers are explicit
VR little endian) and keeps the raw bytes of each element, sequences as lists of items. It
returns None for anything it is not sure about (big endian, deflated, malformed, a header
longer than it read); the caller then uses pydicom. `tests/features/test_dicom_header.py`
checks it against pydicom.
"""

from __future__ import annotations

import struct
from pathlib import Path

Tag = tuple[int, int]
Element = bytes | list  # raw value, or a sequence: a list of items (dicts)
Header = dict[Tag, Element]

PIXEL_DATA: Tag = (0x7FE0, 0x0010)
_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_IMPLICIT = "1.2.840.10008.1.2"
_EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
_UNDEFINED = 0xFFFFFFFF
_READ_BYTES = 1 << 14  # first read; grown 4x while the header goes on


class _Unsure(Exception):
    """The bytes are not what this reader handles: let pydicom read the file."""


def _walk(
    data: bytes,
    offset: int,
    end: int,
    implicit: bool,
    stop_at_pixels: bool,
    until_item_end: bool = False,
    until: Tag | None = None,
) -> tuple[Header, int]:
    """Elements from ``offset`` to ``end`` (or an item delimiter); returns them and the offset after."""
    elements: Header = {}
    while offset < end:
        if offset + 8 > len(data):
            raise _Unsure("header longer than read")
        group, number = struct.unpack_from("<HH", data, offset)
        tag = (group, number)
        if tag == _ITEM_END:
            if not until_item_end:
                raise _Unsure("unexpected item delimiter")
            return elements, offset + 8
        if stop_at_pixels and (tag >= PIXEL_DATA or (until is not None and tag > until)):
            return elements, offset
        if implicit or group == 0xFFFE:
            vr = b"SQ" if not implicit else None
            length = struct.unpack_from("<I", data, offset + 4)[0]
            offset += 8
        else:
            vr = data[offset + 4 : offset + 6]
            if not vr.isalpha() or not vr.isupper():
                raise _Unsure(f"no VR at element {tag}")
            if vr in _LONG_VRS:
                length = struct.unpack_from("<I", data, offset + 8)[0]
                offset += 12
            else:
                length = struct.unpack_from("<H", data, offset + 6)[0]
                offset += 8
        is_sequence = vr == b"SQ" or (implicit and length == _UNDEFINED)
        if is_sequence:
            items, offset = _sequence(data, offset, length, implicit)
            elements[tag] = items
            continue
        if length == _UNDEFINED:
            raise _Unsure(f"undefined length at element {tag}")
        if offset + length > len(data):
            raise _Unsure("header longer than read")
        elements[tag] = data[offset : offset + length]
        offset += length
    if until_item_end:
        raise _Unsure("item without delimiter")
    return elements, offset


def _sequence(data: bytes, offset: int, length: int, implicit: bool) -> tuple[list, int]:
    items: list[Header] = []
    end = offset + length if length != _UNDEFINED else None
    while end is None or offset < end:
        if offset + 8 > len(data):
            raise _Unsure("header longer than read")
        group, number = struct.unpack_from("<HH", data, offset)
        item_length = struct.unpack_from("<I", data, offset + 4)[0]
        offset += 8
        if (group, number) == _SEQUENCE_END:
            if end is not None:
                raise _Unsure("sequence delimiter in a defined-length sequence")
            return items, offset
        if (group, number) != _ITEM:
            raise _Unsure(f"no item in a sequence at {(group, number)}")
        if item_length == _UNDEFINED:
            item, offset = _walk(data, offset, len(data), implicit, False, until_item_end=True)
        else:
            item, _ = _walk(data, offset, offset + item_length, implicit, False)
            offset += item_length
        items.append(item)
    return items, offset


def read_header(path: Path, max_bytes: int = 1 << 24, until: Tag | None = None) -> Header | None:
    """The elements of a DICOM file before its pixel data (or only up to tag ``until``), or
    None if this reader is unsure (not DICOM, big endian, deflated, malformed, or a header
    beyond ``max_bytes``)."""
    read = _READ_BYTES
    while True:
        with open(path, "rb") as stream:
            data = stream.read(read)
        try:
            return _parse(data, complete=len(data) < read, until=until)
        except _Unsure as exc:
            if str(exc) != "header longer than read" or len(data) < read or read >= max_bytes:
                return None
            read *= 4
        except (struct.error, UnicodeDecodeError, ValueError):
            return None


def _parse(data: bytes, complete: bool, until: Tag | None = None) -> Header:
    offset, implicit = 0, None
    header: Header = {}
    if data[128:132] == b"DICM":
        offset, meta = 132, {}
        while offset + 8 <= len(data) and struct.unpack_from("<H", data, offset)[0] == 0x0002:
            part, offset = _walk_one(data, offset)
            meta.update(part)
        syntax = meta.get((0x0002, 0x0010), b"").decode("ascii", "replace").strip("\x00 ")
        if syntax == _EXPLICIT_BIG_ENDIAN or syntax in _DEFLATED:
            raise _Unsure(f"transfer syntax {syntax}")
        implicit = syntax == _IMPLICIT
        header.update(meta)
    else:  # no preamble: guess the VR encoding from the first element
        if len(data) < 8:
            raise _Unsure("too short")
        implicit = not (data[4:6].isalpha() and data[4:6].isupper())
    try:
        elements, _ = _walk(data, offset, len(data), implicit, True, until=until)
    except _Unsure as exc:
        if complete and str(exc) == "header longer than read":
            raise _Unsure("truncated") from exc
        raise
    header.update(elements)
    return header


def _walk_one(data: bytes, offset: int) -> tuple[Header, int]:
    """One explicit-VR little-endian element (the file meta group)."""
    group, number = struct.unpack_from("<HH", data, offset)
    vr = data[offset + 4 : offset + 6]
    if vr in _LONG_VRS:
        length = struct.unpack_from("<I", data, offset + 8)[0]
        offset += 12
    else:
        length = struct.unpack_from("<H", data, offset + 6)[0]
        offset += 8
    if length == _UNDEFINED or offset + length > len(data):
        raise _Unsure("file meta element")
    return {(group, number): data[offset : offset + length]}, offset + length


def text(header: Header, tag: Tag) -> str:
    """A text element (UI, DS, IS, CS, LO, SH, ...) as stored, stripped; '' if absent."""
    value = header.get(tag)
    if not isinstance(value, bytes):
        return ""
    return value.decode("latin-1").strip("\x00 ")


def unsigned_short(header: Header, tag: Tag, default: int) -> int:
    """A US element (little endian); ``default`` if absent or empty."""
    value = header.get(tag)
    if not isinstance(value, bytes) or len(value) < 2:
        return default
    return struct.unpack_from("<H", value)[0]
