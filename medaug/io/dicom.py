"""Reading DICOM CT series: header scan, grouping, validation and pixel loading.

Reading happens in two passes so that a whole cohort can be listed quickly and one
bad file never hides the rest:

1. :func:`read_headers` parses each file up to its pixel data (pydicom,
   ``stop_before_pixels``) and checks from the file's own element lengths that the
   pixel data is all there. A classic file gives one :class:`SliceHeader`; an
   enhanced multi-frame file (Enhanced CT, Legacy Converted Enhanced CT) gives one
   per frame, its geometry taken from the per-frame and shared functional groups.
   Localizer frames are left out (with a note). Non-image objects are returned as
   :class:`Skipped`; a damaged file raises a one-line
   :class:`~medaug.errors.InputError`, whatever pydicom raised inside.
2. :func:`group_series` groups headers into series (by SeriesInstanceUID, or by
   other evidence where an anonymizer emptied it; a multi-frame file is a series of
   its own, and so are the files of one concatenation together) and
   :func:`plan_series` sorts each one's slices (or frames) along the slice normal and
   validates spacing, duplicates, gaps, tilt and a concatenation's parts. The
   resulting :class:`SeriesPlan` says exactly how :func:`read_series` builds the
   volume.

What pydicom warns about while decoding pixels comes back as one-line notes naming
the file (see :func:`read_series`), never as a bare warning.

Tolerances are constants below so that a reader can see what is accepted.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import re
import struct
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medaug.errors import InputError
from medaug.io import geometry

# ---------------------------------------------------------------------------------
# Tolerances (mm and degrees). Real exports carry float jitter of ~1e-3 mm in
# ImagePositionPatient; these thresholds sit well above that and well below a voxel.

#: Two slices closer than this along the normal occupy the same position.
DUPLICATE_TOL_MM = 0.01
#: A slice may sit this far from the uniform grid before spacing counts as irregular:
#: the larger of an absolute floor and a fraction of the slice spacing.
SPACING_TOL_MM = 0.02
SPACING_TOL_FRACTION = 0.01
#: A step this many times the median step means slices are missing.
GAP_FACTOR = 1.5
#: The uniform grid may hold at most this many slices per source slice: a stack with
#: more missing than present slices is not one volume, and interpolating it is wrong.
MAX_GRID_PER_SOURCE = 2.0
#: Stack direction further than this from the slice normal is reported as gantry tilt.
#: The affine always follows the measured positions, so geometry stays exact either way.
TILT_WARN_DEG = 0.1
#: Slice positions further than this from the straight stack line cannot be one volume.
COLLINEAR_TOL_MM = 0.1
#: Orientation cosines and pixel spacings that differ by less than this are equal.
ORIENTATION_TOL = 1e-3
SPACING_EQUAL_TOL_MM = 1e-3
#: A series needs at least this many slices to be a volume.
MIN_SLICES = 3
#: Longest problem text quoted from a library exception in a one-line error.
MAX_PROBLEM_CHARS = 160

# ---------------------------------------------------------------------------------
# SOP classes. Cross-sectional images become volumes: single-frame classes one
# slice per file, enhanced classes one slice per frame. Everything else is skipped
# with a note naming what it is.

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
VOLUME_SOP_CLASSES = {
    CT_IMAGE: "CT Image",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image",
}
MULTIFRAME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image",
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Where an enhanced image says what each frame is (FrameType, the per-frame
#: ImageType): in its per-frame functional group, or the shared one (PS3.3 C.8.15.3.1,
#: C.8.13.5.1, C.8.22.5.1).
FRAME_TYPE_SEQUENCES = (
    "CTImageFrameTypeSequence",
    "MRImageFrameTypeSequence",
    "PETFrameTypeSequence",
)

#: Type 1 UIDs that say what a file is and where it belongs. Anonymizers sometimes
#: leave them present but empty: the SOP class then comes from the file meta (or the
#: pixel data and geometry, see :func:`read_headers`), the series from other evidence
#: (see :func:`_series_key`); SOPInstanceUID is never relied on (duplicates are
#: compared by pixels). All are named in one warning per series.
IDENTIFYING_UIDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
)


@dataclass(frozen=True)
class Skipped:
    """A file that is not part of any volume, with the reason (shown as a note)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class PixelElement:
    """Where a slice's pixel values sit in its file, and how they are encoded.

    Lets :func:`read_series` read native pixels with one ``np.fromfile`` instead of
    parsing the header a second time. ``offset`` is None for compressed or unusual
    encodings, which go through pydicom's decoders; ``frame`` is the 0-based frame
    of a multi-frame file (None for a file holding one image).
    """

    offset: int | None
    bits_allocated: int
    bits_stored: int
    signed: bool
    transfer_syntax: str
    frame: int | None = None


@dataclass(frozen=True)
class Concatenation:
    """Which part of a concatenation a file is: one multi-frame image split over
    several files (PS3.3 C.7.6.16.1.7) that share ``uid`` (ConcatenationUID).

    ``total`` (InConcatenationTotalNumber) is optional in the standard: None when absent.
    """

    uid: str
    number: int
    total: int | None


@dataclass
class SliceHeader:
    """What medaug needs from one image slice (a file, or one frame of a multi-frame
    file), read without its pixel data.

    ``sop_class`` is empty when neither SOPClassUID nor the file meta's
    MediaStorageSOPClassUID says what the file is and its pixel data and geometry
    made it a slice. ``blank`` names the :data:`IDENTIFYING_UIDS` that were empty or
    missing (``{"SeriesInstanceUID": "empty"}``). ``notes`` are what reading the file
    left out (localizer frames), said once per file in its series' warnings.
    """

    path: Path
    sop_class: str
    modality: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    series_number: str
    orientation: tuple[float, ...]  # ImageOrientationPatient, 6 cosines (LPS)
    position: tuple[float, float, float]  # ImagePositionPatient (LPS mm)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    rows: int
    columns: int
    slope: float
    intercept: float
    transfer_syntax: str
    pixels: PixelElement
    blank: dict[str, str] = field(default_factory=dict)
    concatenation: Concatenation | None = None
    notes: tuple[str, ...] = ()

    @property
    def multiframe(self) -> bool:
        """A frame of a multi-frame image (one file, or the parts of a concatenation):
        its volume is named by its file, not by its folder."""
        return self.pixels.frame is not None or self.concatenation is not None


@dataclass
class SeriesPlan:
    """How to build one volume from its files; produced by :func:`plan_series`.

    Attributes:
        files: the file of each source slice, sorted along the normal (duplicates
            removed); a multi-frame file appears once per frame.
        pixels: where each source slice's pixels sit (file offset or frame).
        slopes, intercepts: RescaleSlope/Intercept of each slice (they may differ).
        source_offsets: each slice's distance along the normal from the first, mm.
        n_slices: number of output slices on the uniform grid.
        slice_spacing: the uniform step along the normal, mm (from positions, never
            from SliceThickness).
        affine: (4, 4) RAS affine of the output volume.
        resampled: True when output slices are interpolated from the sources
            (missing slices or irregular spacing); recorded in provenance.
    """

    files: tuple[Path, ...]
    pixels: tuple[PixelElement, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    source_offsets: tuple[float, ...]
    rows: int
    columns: int
    n_slices: int
    slice_spacing: float
    affine: np.ndarray
    modality: str
    transfer_syntaxes: tuple[str, ...]
    resampled: bool = False
    warnings: list[str] = field(default_factory=list)


def _printable(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """``text`` as part of a one-line message: control characters escaped, bounded."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    """``Type: message`` of a library exception, first line only, bounded in length."""
    lines = str(exc).strip().splitlines()
    message = _printable(lines[0]) if lines else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    """``n`` finite floats from a multi-valued element, or None."""
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _number(value: object, default: float) -> float | None:
    """A finite float from a single-valued element (``default`` when absent or empty),
    or None when it is not a number."""
    if value is None or value == "":
        return default
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _uid(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip("\x00 ")


def _blank_uids(ds: Dataset) -> dict[str, str]:
    return {
        name: "empty" if name in ds else "missing"
        for name in IDENTIFYING_UIDS
        if not _uid(ds, name)
    }


#: Transfer syntaxes whose pixel data medaug reads directly from the file.
NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
PIXEL_DATA_TAG = {"<": b"\xe0\x7f\x10\x00", ">": b"\x7f\xe0\x00\x10"}


def _has_pixel_data(fp: BinaryIO, pos: int) -> bool:
    fp.seek(pos)
    return fp.read(4) in PIXEL_DATA_TAG.values()


def _pixel_element(
    fp: BinaryIO, pos: int, size: int, ds: Dataset, ts: str, frames: int
) -> tuple[PixelElement | None, str | None]:
    """Check the PixelData element at ``pos`` against the file size.

    Returns (its location, None) when complete, else (None, a one-line problem).
    For ``frames`` > 1 the location is the first frame's; frames follow each other.
    """
    uid = UID(ts)
    order = "<" if uid.is_little_endian else ">"
    fp.seek(pos)
    head = fp.read(12)
    if len(head) < 8 or head[:4] != PIXEL_DATA_TAG[order]:
        return None, "no pixel data"
    if uid.is_implicit_VR:
        (length,) = struct.unpack(f"{order}I", head[4:8])
        header_len = 8
    else:
        if len(head) < 12:
            return None, "truncated inside the pixel data header"
        (length,) = struct.unpack(f"{order}I", head[8:12])
        header_len = 12
    bits = int(ds.get("BitsAllocated", 16))
    element = PixelElement(
        offset=None,
        bits_allocated=bits,
        bits_stored=int(ds.get("BitsStored", bits)),
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
        transfer_syntax=ts,
    )
    if length == 0xFFFFFFFF:  # encapsulated (compressed): items checked now, decoded later
        problem = _items_problem(fp, pos + header_len, size)
        return (None, problem) if problem else (element, None)
    available = size - pos - header_len
    if available < length:
        return (
            None,
            f"truncated: pixel data declares {length} bytes, file holds {max(available, 0)}",
        )
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    spp = int(ds.get("SamplesPerPixel", 1))
    expected = rows * cols * spp * bits // 8 * frames
    if length < expected:
        pixels = f"{rows}x{cols}" + (f"x{frames}" if frames > 1 else "")
        return None, f"pixel data holds {length} bytes, {pixels} pixels need {expected}"
    if ts in NATIVE_LITTLE_ENDIAN and bits == 16 and spp == 1:
        element = replace(element, offset=pos + header_len)
    return element, None


ITEM, SEQUENCE_DELIMITER = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"


def _items_problem(fp: BinaryIO, pos: int, size: int) -> str | None:
    """Walk the items of encapsulated pixel data from ``pos`` to the sequence
    delimiter by their 8-byte headers; a one-line problem if they do not get there.

    A decoder handed a cut codestream may spend seconds failing (CharLS) or read
    past it; this finds the cut during discovery, as the native length check does.
    """
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            return "truncated inside the compressed pixel data"
        (length,) = struct.unpack("<I", head[4:])
        if head[:4] == SEQUENCE_DELIMITER:
            return None
        if head[:4] != ITEM or length == 0xFFFFFFFF:
            return f"compressed pixel data is damaged (no item at byte {pos})"
        pos += 8 + length
        if pos > size:
            return "truncated inside the compressed pixel data"


def read_headers(path: Path) -> list[SliceHeader] | Skipped | None:
    """Read one file's header: one :class:`SliceHeader` per image it holds.

    A file is judged an image slice by its SOP class: SOPClassUID, or the file
    meta's MediaStorageSOPClassUID where an anonymizer left SOPClassUID empty. When
    both are empty, a file with pixel data and image geometry (orientation, position,
    pixel spacing or functional groups) is taken as a slice of unknown class.

    Returns:
        one header for a classic slice file, one per frame for an enhanced
        multi-frame file (geometry and rescale from its functional groups), a
        :class:`Skipped` for a DICOM object that is not a volume slice, or None when
        the file is not DICOM at all (no preamble and not parseable as a dataset).

    Raises:
        InputError: a DICOM file that is broken (damaged header, truncated, no pixel
            data, missing geometry, undecodable transfer syntax), one line naming it.
    """
    if path.name.upper() == "DICOMDIR":
        return Skipped(path, "DICOMDIR index file")
    preamble = False
    try:
        # pydicom warns about every odd value it meets; the problems that matter
        # come back as one InputError instead.
        with warnings.catch_warnings(), open(path, "rb") as fp:
            warnings.simplefilter("ignore")
            head = fp.read(132)
            preamble = len(head) == 132 and head[128:] == b"DICM"
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not preamble)
            pixel_pos = fp.tell()
            size = os.fstat(fp.fileno()).st_size
            sop = _uid(ds, "SOPClassUID") or _uid(ds.file_meta, "MediaStorageSOPClassUID")
            if not sop and not (_has_pixel_data(fp, pixel_pos) and _has_geometry(ds)):
                if not preamble:
                    return None
                raise InputError(
                    path, "no SOP class, no pixel data with image geometry: not an image"
                )
            return _image_headers(path, ds, sop, fp, pixel_pos, size)
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged bytes; each is one line
        if not preamble:
            return None
        raise InputError(path, f"unreadable DICOM header ({_one_line(exc)})") from None


def series_uid_of(path: Path) -> str:
    """The SeriesInstanceUID of a damaged file, read as far as the file is intact;
    "" when the damage comes first (or the UID is empty). Tells which series a file
    that :func:`read_headers` rejected belonged to."""

    def past_series_uid(tag: int, vr: object, length: int) -> bool:
        return tag > 0x0020000E

    try:
        with warnings.catch_warnings(), open(path, "rb") as fp:
            warnings.simplefilter("ignore")
            ds = pydicom.filereader.read_partial(fp, stop_when=past_series_uid, force=True)
            return _uid(ds, "SeriesInstanceUID")
    except Exception:  # damage before the UID: nothing to learn
        return ""


def uids_in(path: Path, uids: Iterable[str]) -> set[str]:
    """Which of ``uids`` occur in a file's bytes, each as a whole UID.

    Where damage hides a file's SeriesInstanceUID from pydicom (a broken file meta
    that swallows the dataset, a flipped byte before the UID), the value itself is
    usually still in the file: this tells which series beside it the file belonged
    to without parsing it. Empty set when the file cannot be read.
    """
    try:
        with open(path, "rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return {
                uid for uid in uids if re.search(re.escape(uid.encode()) + rb"(?![0-9.])", data)
            }
    except (OSError, ValueError):  # unreadable, or empty (mmap cannot map 0 bytes)
        return set()


def sop_class_in_bytes(path: Path, head: int = 4096) -> str:
    """The first storage SOP class UID in a file's first ``head`` bytes, else "".

    The file meta's MediaStorageSOPClassUID comes right after the preamble, before any
    UID the dataset references, so for a file whose header is damaged this is still
    its own class (a CT slice cut short in its header says CT Image Storage; a damaged
    Legacy Converted CT says its own class, though it references CT images later on).
    """
    try:
        with open(path, "rb") as fp:
            data = fp.read(head)
    except OSError:
        return ""
    found = re.search(rb"1\.2\.840\.10008\.5\.1\.4\.[0-9.]*[0-9]", data)
    return found.group().decode() if found else ""


def _transfer_syntax(ds: Dataset) -> str:
    """The file meta's TransferSyntaxUID, or for a bare dataset (no file meta) the
    encoding pydicom found when it read the file."""
    ts = _uid(ds.file_meta, "TransferSyntaxUID")
    if ts:
        return ts
    implicit, little = ds.original_encoding
    if implicit:
        return str(pydicom.uid.ImplicitVRLittleEndian)
    return str(pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)


def _has_geometry(ds: Dataset) -> bool:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return True
    return all(
        k in ds for k in ("Rows", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
    )


def _image_headers(
    path: Path, ds: Dataset, sop: str, fp: BinaryIO, pixel_pos: int, size: int
) -> list[SliceHeader] | Skipped:
    """The slice headers of a parsed file whose SOP class is ``sop`` (may be empty)."""
    if sop == MEDIA_STORAGE_DIRECTORY:
        return Skipped(path, "DICOMDIR index file")
    if sop and sop not in VOLUME_SOP_CLASSES and sop not in MULTIFRAME_SOP_CLASSES:
        name = UID(sop).name if UID(sop).is_valid else f"SOP class {_printable(sop, 64)}"
        return Skipped(path, f"not an image slice ({name})")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    localizers = _localizer_frames(ds, per_frame, shared)
    if localizers and len(localizers) == (1 if per_frame is None else len(per_frame)):
        return Skipped(path, "localizer (scout) image")
    frames = _number(ds.get("NumberOfFrames"), 1.0)
    if frames is None or frames < 1 or frames != int(frames):
        raise InputError(path, f"NumberOfFrames {ds.get('NumberOfFrames')!r} is not a count")
    n_frames = int(frames)
    if n_frames > 1 and per_frame is None:
        return Skipped(path, "multi-frame image without per-frame functional groups")
    rows, columns = _number(ds.get("Rows"), 0), _number(ds.get("Columns"), 0)
    if not rows or not columns or rows < 1 or columns < 1:
        found = f"Rows {ds.get('Rows')!r}, Columns {ds.get('Columns')!r}"
        raise InputError(path, f"image size missing or not a count ({found})")
    ts = _transfer_syntax(ds)
    if not UID(ts).is_transfer_syntax:
        raise InputError(path, f"unknown transfer syntax {ts!r}")
    if UID(ts).is_deflated:
        raise InputError(path, f"deflated transfer syntax {ts} is not read")
    pixels, problem = _pixel_element(fp, pixel_pos, size, ds, ts, n_frames)
    if problem is not None or pixels is None:
        raise InputError(path, problem or "no pixel data")
    _check_decodable(path, ts)
    header = SliceHeader(
        path=path,
        sop_class=sop,
        modality=str(ds.get("Modality", "") or ""),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        study_uid=_uid(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_uid(ds, "FrameOfReferenceUID"),
        series_number=str(ds.get("SeriesNumber", "") or ""),
        orientation=(),
        position=(0.0, 0.0, 0.0),
        pixel_spacing=(0.0, 0.0),
        rows=int(rows),
        columns=int(columns),
        slope=1.0,
        intercept=0.0,
        transfer_syntax=ts,
        pixels=pixels,
        blank=_blank_uids(ds),
        concatenation=None if per_frame is None else _concatenation(path, ds),
        notes=_left_out(localizers, n_frames),
    )
    if per_frame is None:
        return [_with_geometry(header, [ds], "")]
    if len(per_frame) != n_frames:
        raise InputError(
            path, f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items, {n_frames} frames"
        )
    frame_bytes = header.rows * header.columns * pixels.bits_allocated // 8
    out = []
    left_out = set(localizers)
    for k, item in enumerate(per_frame):
        if k in left_out:
            continue
        located = replace(
            pixels,
            offset=None if pixels.offset is None else pixels.offset + k * frame_bytes,
            frame=k if n_frames > 1 else None,
        )
        where = f"frame {k + 1}: " if n_frames > 1 else ""
        out.append(_with_geometry(replace(header, pixels=located), [item, shared, ds], where))
    return out


def _is_localizer(image_type: object) -> bool:
    """ImageType or FrameType says LOCALIZER: value 3 by the standard, any value here
    because some vendors write it later."""
    if isinstance(image_type, str):
        values: Iterable[object] = image_type.split("\\")
    else:
        values = image_type if isinstance(image_type, Iterable) else ()
    return "LOCALIZER" in (str(v).strip().upper() for v in values)


def _localizer_frames(
    ds: Dataset, per_frame: Sequence[Dataset] | None, shared: Dataset
) -> list[int]:
    """The 0-based frames that are localizers: by each frame's FrameType (its own
    functional group, else the shared one), else by the file's ImageType. An enhanced
    file's ImageType only sums its frames up (value 3 is the commonest frame's), so it
    decides only for frames that carry no FrameType."""
    if per_frame is None:
        return [0] if _is_localizer(ds.get("ImageType")) else []
    return [
        k
        for k, item in enumerate(per_frame)
        if _is_localizer(_frame_type(item, shared) or ds.get("ImageType"))
    ]


def _frame_type(item: Dataset, shared: Dataset) -> object:
    for group in (item, shared):
        for keyword in FRAME_TYPE_SEQUENCES:
            types = group.get(keyword)
            if types and types[0].get("FrameType"):
                return types[0].FrameType
    return None


def _left_out(localizers: Sequence[int], n_frames: int, shown: int = 5) -> tuple[str, ...]:
    """The note on a multi-frame file whose ``localizers`` (0-based) are left out:
    ``frames 1, 2, 3, 4, 5 and 9 more of 300 are localizers (scout images); ...``."""
    if not localizers:
        return ()
    names = ", ".join(str(k + 1) for k in localizers[:shown])
    more = f" and {len(localizers) - shown} more" if len(localizers) > shown else ""
    which = f"frames {names}{more} of {n_frames} are localizers (scout images)"
    if len(localizers) == 1:
        which = f"frame {names} of {n_frames} is a localizer (scout image)"
    return (f"{which}; left out of the volume",)


def _count(value: object) -> int | None:
    """A positive whole number from a single-valued element, or None."""
    number = _number(value, 0.0)
    return int(number) if number is not None and number >= 1 and number == int(number) else None


def _concatenation(path: Path, ds: Dataset) -> Concatenation | None:
    """The concatenation part an enhanced file is (None when it is whole); part
    numbers that are not counts are one InputError."""
    uid = _uid(ds, "ConcatenationUID")
    if not uid:
        return None
    number = _count(ds.get("InConcatenationNumber"))
    if number is None:
        found = ds.get("InConcatenationNumber")
        raise InputError(path, f"concatenation part with InConcatenationNumber {found!r}")
    total = ds.get("InConcatenationTotalNumber")
    if total is None or total == "":
        return Concatenation(uid, number, None)
    parts = _count(total)
    if parts is None or parts < number:
        raise InputError(
            path, f"concatenation part {number} of InConcatenationTotalNumber {total!r}"
        )
    return Concatenation(uid, number, parts)


#: Where each attribute sits in an enhanced image's functional groups (PS3.3 C.7.6.16).
FUNCTIONAL_GROUPS = {
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
}


def _find(sources: Sequence[Dataset], keyword: str) -> object:
    """``keyword`` from the first source that has it: in its functional group sequence
    (a per-frame item, then the shared item), else at the top level (a classic file)."""
    group = FUNCTIONAL_GROUPS[keyword]
    for ds in sources:
        items = ds.get(group)
        if items and keyword in items[0] and items[0].get(keyword) not in (None, ""):
            return items[0].get(keyword)
        if keyword in ds and ds.get(keyword) not in (None, ""):
            return ds.get(keyword)
    return None


def _with_geometry(header: SliceHeader, sources: Sequence[Dataset], where: str) -> SliceHeader:
    """``header`` with orientation, position, spacing and rescale from ``sources``;
    ``where`` prefixes problems (``"frame 3: "``)."""
    iop = _floats(_find(sources, "ImageOrientationPatient"), 6)
    ipp = _floats(_find(sources, "ImagePositionPatient"), 3)
    ps = _floats(_find(sources, "PixelSpacing"), 2)
    missing = [
        name
        for name, value in (
            ("ImageOrientationPatient", iop),
            ("ImagePositionPatient", ipp),
            ("PixelSpacing", ps),
        )
        if value is None
    ]
    path = header.path
    if missing:
        raise InputError(path, f"{where}missing or malformed {', '.join(missing)}")
    assert iop is not None and ipp is not None and ps is not None
    if min(ps) <= 0:
        raise InputError(path, f"{where}PixelSpacing {list(ps)} is not positive")
    slope = _number(_find(sources, "RescaleSlope"), 1.0)
    intercept = _number(_find(sources, "RescaleIntercept"), 0.0)
    if slope is None or intercept is None:
        raise InputError(path, f"{where}RescaleSlope or RescaleIntercept is not a number")
    if slope == 0:
        raise InputError(path, f"{where}RescaleSlope is 0")
    return replace(
        header,
        orientation=iop,
        position=(ipp[0], ipp[1], ipp[2]),
        pixel_spacing=(ps[0], ps[1]),
        slope=slope,
        intercept=intercept,
    )


def _check_decodable(path: Path, transfer_syntax: str) -> None:
    uid = UID(transfer_syntax)
    if not uid.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        name = f" ({uid.name})" if uid.is_valid and uid.name != str(uid) else ""
        raise InputError(path, f"no decoder installed for transfer syntax {transfer_syntax}{name}")


# ---------------------------------------------------------------------------------
# Grouping and validation


def _grid_key(h: SliceHeader) -> tuple[object, ...]:
    q = round(1 / ORIENTATION_TOL)
    s = round(1 / SPACING_EQUAL_TOL_MM)
    return (
        tuple(round(v * q) for v in h.orientation),
        h.rows,
        h.columns,
        tuple(round(v * s) for v in h.pixel_spacing),
    )


def _series_key(h: SliceHeader) -> tuple[str, ...]:
    """Which series a slice belongs to, before splitting by grid.

    SeriesInstanceUID when there is one. Without it (missing, or emptied by an
    anonymizer) the folder, StudyInstanceUID, FrameOfReferenceUID and SeriesNumber
    stand in: a series is normally one folder, and two series of one study in one
    folder still differ in SeriesNumber. The frames of a multi-frame file form their
    own series (one file, one volume), whatever their UIDs; so do the frames of the
    files of one concatenation, together.
    """
    if h.series_uid:
        key: tuple[str, ...] = (h.series_uid,)
    else:
        key = ("", str(h.path.parent), h.study_uid, h.frame_of_reference_uid, h.series_number)
    if h.concatenation is not None:
        key += ("concatenation", h.concatenation.uid)
    elif h.pixels.frame is not None:
        key += (str(h.path),)
    return key


def _blank_warning(
    where: Path, members: Sequence[SliceHeader], describe: Callable[[Path], str]
) -> str | None:
    """One warning naming the identifying UIDs that are empty or missing in a series,
    and what stood in for them (and the files, when only a few lack them); None when
    all are there."""
    blank = [h for h in members if h.blank]
    if not blank:
        return None
    states = {name: {h.blank[name] for h in blank if name in h.blank} for name in IDENTIFYING_UIDS}
    empty = [name for name in IDENTIFYING_UIDS if "empty" in states[name]]
    missing = [name for name in IDENTIFYING_UIDS if "missing" in states[name]]
    parts = []
    if empty:
        parts.append(f"have empty {', '.join(empty)}")
    if missing:
        parts.append(f"lack {', '.join(missing)}")
    instead = []
    if states["SOPClassUID"]:
        if all(h.sop_class for h in blank):
            instead.append("SOP class taken from the file meta (MediaStorageSOPClassUID)")
        else:
            instead.append("taken as image slices by their pixel data and geometry")
    if states["SeriesInstanceUID"] and not members[0].multiframe:
        instead.append(
            "grouped by folder, study, frame of reference, series number, orientation "
            "and pixel grid"
        )
    files = sorted({h.path for h in blank})
    few = len(files) <= 3 and len(files) < len({h.path for h in members})  # else: all
    which = f" ({', '.join(map(describe, files))})" if few else ""
    said = f"{describe(where)}: {len(files)} file(s){which} {' and '.join(parts)}"
    return said + "".join(f"; {s}" for s in instead)


def group_series(
    headers: Sequence[SliceHeader], describe: Callable[[Path], str] = str
) -> list[tuple[list[SliceHeader], list[str]]]:
    """Group slice headers into series, each with its grouping warnings.

    Files group by SeriesInstanceUID (see :func:`_series_key` for files without
    one), split further when orientation, pixel grid or pixel spacing differ inside
    one series. Empty or missing identifying UIDs give one warning per series; what
    reading a file left out (its :attr:`SliceHeader.notes`) one warning per file.

    Args:
        headers: slice headers from :func:`read_headers`.
        describe: turns a path into the text used in messages (relative paths).
    """
    by_key: dict[tuple[str, ...], list[SliceHeader]] = defaultdict(list)
    for h in headers:
        by_key[_series_key(h)].append(h)
    groups = []
    for members in by_key.values():
        members.sort(key=_file_order)
        where = members[0].path if members[0].multiframe else members[0].path.parent
        warnings = []
        blank = _blank_warning(where, members, describe)
        if blank:
            warnings.append(blank)
        for path, note in dict.fromkeys((h.path, note) for h in members for note in h.notes):
            warnings.append(f"{describe(path)}: {note}")
        by_grid: dict[tuple[object, ...], list[SliceHeader]] = defaultdict(list)
        for h in members:
            by_grid[_grid_key(h)].append(h)
        if len(by_grid) > 1 and members[0].series_uid:  # without a UID, grids group
            warnings.append(
                f"{describe(where)}: mixed orientations or pixel grids within one series; "
                f"split into {len(by_grid)} scans"
            )
        for sub in by_grid.values():
            groups.append((sub, list(warnings)))
    return groups


def _file_order(h: SliceHeader) -> tuple[int, str, int]:
    """Concatenation part, file, frame: the first is the file a volume is named by."""
    part = h.concatenation.number if h.concatenation is not None else 0
    return (part, str(h.path), h.pixels.frame or 0)


def _missing_parts(headers: Sequence[SliceHeader], describe: Callable[[Path], str]) -> str | None:
    """What is wrong with the parts of a concatenation (the parts present, the
    numbers missing or disagreeing), or None when all parts are there."""
    concatenated = [(h.concatenation, h.path) for h in headers if h.concatenation is not None]
    if not concatenated:
        return None
    parts = {c.number: path for c, path in concatenated}
    totals = sorted({c.total for c, _ in concatenated if c.total is not None})
    names = ", ".join(f"{n}: {describe(parts[n])}" for n in sorted(parts))
    if len(totals) > 1:
        said = " and ".join(map(str, totals))
        return f"concatenation parts ({names}) disagree on InConcatenationTotalNumber ({said})"
    total = totals[0] if totals else max(parts)
    missing = [n for n in range(1, total + 1) if n not in parts]
    if not missing:
        return None
    which = ", ".join(map(str, missing))
    return (
        f"concatenation of {total} parts has {len(parts)} ({names}); "
        f"part{'s' if len(missing) > 1 else ''} {which} missing"
    )


def _slice_name(h: SliceHeader, describe: Callable[[Path], str] = str) -> str:
    """A slice as messages name it: its file, and its frame in a multi-frame file."""
    name = describe(h.path)
    return name if h.pixels.frame is None else f"{name} frame {h.pixels.frame + 1}"


def _same_pixels(a: SliceHeader, b: SliceHeader) -> bool:
    return bool(
        np.array_equal(
            _read_slice(a.path, a.rows, a.columns, a.pixels),
            _read_slice(b.path, b.rows, b.columns, b.pixels),
        )
    )


def _stray(positions: np.ndarray, rel: np.ndarray) -> int:
    """The slice furthest from the stack line through the median step, so that one
    damaged position is named rather than a neighbour it pulls the first-to-last line
    towards (with five or more slices)."""
    direction = np.median(np.diff(positions, axis=0) / np.diff(rel)[:, None], axis=0)
    anchors = positions - np.outer(rel, direction)
    return int(np.argmax(np.linalg.norm(anchors - np.median(anchors, axis=0), axis=1)))


def plan_series(
    headers: Sequence[SliceHeader], describe: Callable[[Path], str] = str
) -> SeriesPlan:
    """Sort and validate the slices of one series; say how to build its volume.

    Slices (files, or frames of a multi-frame file) are sorted by
    ImagePositionPatient projected on the slice normal, never by file name,
    InstanceNumber or frame number, and the slice spacing comes from those positions,
    never from SliceThickness. Missing slices and irregular spacing are accepted by
    interpolating onto a uniform grid (with a warning); duplicate positions with
    equal pixels are dropped (with a warning). The frames of a concatenation are
    sorted like any others, once all its parts are there.

    Raises:
        InputError: fewer than 3 slices, two different slices at one position,
            positions that do not lie on one line, more missing than present, or a
            concatenation that lacks parts.
    """
    first = headers[0]
    folder = describe(first.path if first.multiframe else first.path.parent)
    incomplete = _missing_parts(headers, describe)
    if incomplete:
        raise InputError(folder, incomplete)
    if len(headers) < MIN_SLICES:
        names = ", ".join(_slice_name(h, describe) for h in headers)
        raise InputError(
            folder, f"series has {len(headers)} slice(s) ({names}); a volume needs {MIN_SLICES}"
        )
    iop = np.asarray(first.orientation)
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 0.5:
        raise InputError(folder, f"ImageOrientationPatient {list(iop)} is degenerate")
    normal /= norm
    positions = np.array([h.position for h in headers])
    offsets = positions @ normal
    order = np.argsort(offsets, kind="stable")
    headers = [headers[i] for i in order]
    positions, offsets = positions[order], offsets[order]
    warnings: list[str] = []

    # Duplicates: same position along the normal.
    keep = [0]
    for i in range(1, len(headers)):
        if offsets[i] - offsets[keep[-1]] < DUPLICATE_TOL_MM:
            a, b = _slice_name(headers[keep[-1]], describe), _slice_name(headers[i], describe)
            with _file_warnings(warnings, describe):
                same = _same_pixels(headers[keep[-1]], headers[i])
            if not same:
                raise InputError(
                    folder,
                    f"{a} and {b} sit at the same position "
                    f"({offsets[i]:.2f} mm along the normal) with different pixels",
                )
            warnings.append(f"{b}: duplicate of {a}; ignored")
            continue
        keep.append(i)
    headers = [headers[i] for i in keep]
    positions, offsets = positions[keep], offsets[keep]
    if len(headers) < MIN_SLICES:
        raise InputError(
            folder,
            f"series has {len(headers)} distinct slice positions; a volume needs {MIN_SLICES}",
        )

    # Collinearity: positions must lie on the line from first to last.
    rel = offsets - offsets[0]
    direction = (positions[-1] - positions[0]) / rel[-1]
    predicted = positions[0] + np.outer(rel, direction)
    off_line = float(np.max(np.linalg.norm(positions - predicted, axis=1)))
    if off_line > COLLINEAR_TOL_MM:
        worst = _slice_name(headers[_stray(positions, rel)], describe)
        raise InputError(
            folder,
            f"slice positions stray {off_line:.2f} mm from one straight stack (furthest: {worst})",
        )

    # Spacing: from positions, on a uniform grid at the median step.
    steps = np.diff(rel)
    spacing_mm = float(np.median(steps))
    grid_slices = rel[-1] / spacing_mm + 1
    if grid_slices > MAX_GRID_PER_SOURCE * len(headers):
        raise InputError(
            folder,
            f"{len(headers)} slices spread over {rel[-1]:.4g} mm at a {spacing_mm:.3g} mm step: "
            "more slices missing than present",
        )
    n_slices = round(grid_slices)
    grid_index = rel / spacing_mm
    deviation = float(np.max(np.abs(grid_index - np.round(grid_index)))) * spacing_mm
    tolerance = max(SPACING_TOL_MM, SPACING_TOL_FRACTION * spacing_mm)
    resampled = False
    if n_slices != len(headers):
        gap_after = [i for i, s in enumerate(steps) if s > GAP_FACTOR * spacing_mm]
        missing = n_slices - len(headers)
        where = ", ".join(
            f"{rel[i]:.1f}-{rel[i + 1]:.1f} mm (after {_slice_name(headers[i], describe)})"
            for i in gap_after[:3]
        )
        warnings.append(
            f"{folder}: {missing} missing slice(s) at {where}; filled by linear interpolation"
        )
        resampled = True
    elif deviation > tolerance:
        warnings.append(
            f"{folder}: non-uniform slice spacing "
            f"(steps {steps.min():.3f} to {steps.max():.3f} mm); "
            f"resampled to {spacing_mm:.3f} mm"
        )
        resampled = True
    # the grid step that puts the last slice exactly on the last position
    spacing_mm = float(rel[-1] / (n_slices - 1))
    step = direction * spacing_mm
    tilt = float(
        np.degrees(np.arccos(np.clip(abs(direction @ normal) / np.linalg.norm(direction), -1, 1)))
    )
    if tilt > TILT_WARN_DEG:
        warnings.append(
            f"{folder}: stack is tilted {tilt:.2f} deg against the slice normal (gantry tilt); "
            "the affine is sheared to keep every voxel at its true position"
        )
    modality = first.modality
    if modality != "CT":
        warnings.append(
            f"{folder}: modality {modality or 'missing'}, not CT: values are not Hounsfield units"
        )
    affine = geometry.dicom_affine(iop, positions[0], first.pixel_spacing, step)
    return SeriesPlan(
        files=tuple(h.path for h in headers),
        pixels=tuple(h.pixels for h in headers),
        slopes=tuple(h.slope for h in headers),
        intercepts=tuple(h.intercept for h in headers),
        source_offsets=tuple(float(v) for v in rel),
        rows=first.rows,
        columns=first.columns,
        n_slices=n_slices,
        slice_spacing=spacing_mm,
        affine=affine,
        modality=modality,
        transfer_syntaxes=tuple(sorted({h.transfer_syntax for h in headers})),
        resampled=resampled,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------
# Pixels


#: The file each thread is decoding, so that a warning raised inside a decoder can be
#: said about that file (see :func:`_file_warnings` and :func:`_decode_frames`).
_decoding = threading.local()


class _FileNotes(logging.Filter):
    """What a decoding thread's decoder says (warnings, and pydicom's log records,
    which repeat its warnings or say that a plugin failed), kept by message with the
    files it was said about; anything said on another thread passes on unchanged."""

    def __init__(self, describe: Callable[[Path], str], passed: Callable[..., Any]):
        super().__init__()
        self.describe, self.passed = describe, passed
        self.files: dict[str, list[str]] = {}  # message -> files, in the order said
        self.lock = threading.Lock()

    def note(self, text: str) -> bool:
        """Keep ``text`` about the file this thread decodes; False when it decodes none."""
        path = getattr(_decoding, "path", None)
        if path is None:
            return False
        name = self.describe(path)
        with self.lock:
            files = self.files.setdefault(_printable(text), [])
            if name not in files:
                files.append(name)
        return True

    def lines(self) -> list[str]:
        """One line per message, naming its first file (and how many more said it)."""
        out = []
        for message, files in self.files.items():
            more = f" (and {len(files) - 1} more file(s))" if len(files) > 1 else ""
            out.append(f"{files[0]}{more}: {message}")
        return out

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.note(record.getMessage())

    def showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not self.note(str(message)):
            self.passed(message, category, filename, lineno, file, line)


@contextmanager
def _file_warnings(notes: list[str], describe: Callable[[Path], str] = str) -> Iterator[None]:
    """While pixels are decoded, what the decoders warn or log (pydicom's "The decoded
    RLE segment contains non-conformant padding" on damaged data, odd values it meets
    on the way) becomes one-line ``notes`` naming the file: one per message, so that a
    remark about every file of a long series is one line, not hundreds.

    ``warnings.catch_warnings`` changes process-wide state and cannot be entered by
    several threads at once, so it is entered once here, by the thread that starts
    the decoding; each decoding thread names its file in :data:`_decoding`.
    """
    said = _FileNotes(describe, warnings.showwarning)
    logger = logging.getLogger("pydicom")
    logger.addFilter(said)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every file's problem, not only the first one's
            warnings.showwarning = said.showwarning
            yield
    finally:
        logger.removeFilter(said)
        notes.extend(line for line in said.lines() if line not in notes)


def _read_native(path: Path, element: PixelElement, rows: int, columns: int) -> np.ndarray:
    """16-bit native little-endian pixels straight from the file, as pydicom would
    return them: bits above BitsStored masked off, or sign-extended when signed."""
    dtype = np.dtype("<i2" if element.signed else "<u2")
    try:
        pixels = np.fromfile(path, dtype=dtype, count=rows * columns, offset=element.offset or 0)
    except OSError as exc:
        raise InputError(path, f"cannot read pixel data ({exc.strerror})") from None
    if pixels.size != rows * columns:
        raise InputError(path, "pixel data ends early")
    spare = 16 - element.bits_stored
    if 0 < spare < 16:
        if element.signed:
            pixels = (pixels << spare) >> spare  # arithmetic shift sign-extends
        else:
            pixels &= (1 << element.bits_stored) - 1
    return pixels.reshape(rows, columns)


#: Decoders for JPEG 2000, in the order medaug picks one. GDCM is left out where one of
#: these is installed: on some damaged JPEG 2000 codestreams it throws a C++ exception
#: that aborts the whole process (found by tests/io/test_dicom_damaged.py), where
#: OpenJPEG through pylibjpeg raises a Python error that becomes one line.
JPEG2000_PLUGINS = ("pylibjpeg", "pillow")


def _decoding_plugin(transfer_syntax: str) -> str:
    """The pydicom decoding plugin to use; "" lets pydicom try all it has."""
    if transfer_syntax not in pydicom.uid.JPEG2000TransferSyntaxes:
        return ""
    from pydicom.pixels import get_decoder

    available = get_decoder(UID(transfer_syntax)).available_plugins
    return next((p for p in JPEG2000_PLUGINS if p in available), "")


def _decode_frames(
    path: Path, rows: int, columns: int, transfer_syntax: str | None, frames: list[int] | None
) -> Iterator[np.ndarray]:
    """Stored pixel values of ``frames`` (all when None) of a file, each (rows, columns),
    through pydicom's decoders. ``transfer_syntax`` is the one its header was read with
    (None: read it again). Any decoder failure is one InputError naming the file."""
    from pydicom.pixels import iter_pixels

    named, _decoding.path = getattr(_decoding, "path", None), path
    try:
        if transfer_syntax is None:
            transfer_syntax = _transfer_syntax(pydicom.dcmread(path, stop_before_pixels=True))
        plugin = _decoding_plugin(transfer_syntax)
        pixel_arrays = iter_pixels(
            path, indices=frames, decoding_plugin=plugin, transfer_syntax_uid=UID(transfer_syntax)
        )
        for pixels in pixel_arrays:
            if pixels.shape != (rows, columns):
                raise InputError(
                    path, f"pixel array is {pixels.shape}, header says {(rows, columns)}"
                )
            yield pixels
    except InputError:
        raise
    except Exception as exc:  # decoders raise many types; each becomes one line
        raise InputError(path, f"cannot decode pixel data ({_one_line(exc)})") from None
    finally:
        _decoding.path = named


def _read_slice(
    path: Path, rows: int, columns: int, element: PixelElement | None = None
) -> np.ndarray:
    """Stored pixel values of one slice (a file, or one frame of it), (rows, columns)."""
    if element is not None and element.offset is not None:
        return _read_native(path, element, rows, columns)
    syntax = None if element is None else element.transfer_syntax
    frames = None if element is None or element.frame is None else [element.frame]
    for pixels in _decode_frames(path, rows, columns, syntax, frames):
        return pixels
    raise InputError(path, "no pixel data decoded")


def read_series(
    plan: SeriesPlan,
    workers: int | None = None,
    *,
    notes: list[str] | None = None,
    describe: Callable[[Path], str] = str,
) -> np.ndarray:
    """Build the (X, Y, Z) float32 HU volume that ``plan`` describes.

    Pixels fill a (Z, Y, X) C-ordered buffer slice by slice, so the returned
    (X, Y, Z) array is a transposed view of it with no extra copy; peak memory is
    the float32 volume plus a few slices in flight. The compressed frames of a
    multi-frame file are decoded in a few runs over the file rather than one parse
    of its (large) header per frame.

    Args:
        plan: from :func:`plan_series`.
        workers: threads decoding files in parallel (default: CPU count, at most 4).
        notes: where what the decoders warn about goes, one line per file and
            problem, the file named by ``describe`` (``"a/1-003.dcm: The decoded RLE
            segment contains non-conformant padding - 4098 vs. 4096 bytes
            expected"``). None: each line is warned (UserWarning) instead.
        describe: turns a path into the text used in notes.
    """
    said: list[str] = [] if notes is None else notes
    with _file_warnings(said, describe):
        volume = _read_volume(plan, workers)
    if notes is None:
        for note in said:
            warnings.warn(note, UserWarning, stacklevel=2)
    return volume


def _read_volume(plan: SeriesPlan, workers: int | None) -> np.ndarray:
    """:func:`read_series` without the notes: decoding threads and resampling."""
    n_src = len(plan.files)
    workers = workers or min(4, os.cpu_count() or 1)
    src = np.empty((n_src, plan.rows, plan.columns), dtype=np.float32)

    def store(k: int, pixels: np.ndarray) -> None:
        out = src[k]
        np.multiply(pixels, np.float32(plan.slopes[k]), out=out, casting="unsafe")
        out += np.float32(plan.intercepts[k])

    # A job is a list of source slices: one for a file, a run of frames of one file.
    jobs: list[list[int]] = []
    frames_of: dict[Path, list[int]] = defaultdict(list)
    for k, element in enumerate(plan.pixels):
        if element.frame is not None and element.offset is None:
            frames_of[plan.files[k]].append(k)
        else:
            jobs.append([k])
    for ks in frames_of.values():
        ks.sort(key=lambda k: plan.pixels[k].frame or 0)
        run = -(-len(ks) // workers)
        jobs.extend(ks[i : i + run] for i in range(0, len(ks), run))

    def fill(job: list[int]) -> None:
        if len(job) == 1:
            k = job[0]
            store(k, _read_slice(plan.files[k], plan.rows, plan.columns, plan.pixels[k]))
            return
        path, syntax = plan.files[job[0]], plan.pixels[job[0]].transfer_syntax
        frames = [plan.pixels[k].frame or 0 for k in job]
        done = 0
        decoded = _decode_frames(path, plan.rows, plan.columns, syntax, frames)
        for k, pixels in zip(job, decoded, strict=False):  # a short run is counted below
            store(k, pixels)
            done += 1
        if done != len(job):
            raise InputError(path, f"{done} of {len(job)} frames decoded")

    if workers > 1 and n_src > 8:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, jobs))
    else:
        for job in jobs:
            fill(job)
    if plan.resampled:
        src = _resample_slices(
            src, np.asarray(plan.source_offsets), plan.n_slices, plan.slice_spacing
        )
    return src.transpose(2, 1, 0)


def _resample_slices(
    src: np.ndarray, offsets: np.ndarray, n_out: int, spacing_mm: float
) -> np.ndarray:
    """Linear interpolation along axis 0 from slices at ``offsets`` onto a uniform grid."""
    out = np.empty((n_out, *src.shape[1:]), dtype=np.float32)
    targets = np.arange(n_out) * spacing_mm
    upper = np.clip(np.searchsorted(offsets, targets, side="left"), 1, len(offsets) - 1)
    lower = upper - 1
    span = offsets[upper] - offsets[lower]
    w = np.clip((targets - offsets[lower]) / span, 0.0, 1.0).astype(np.float32)
    for m in range(n_out):
        np.multiply(src[lower[m]], 1 - w[m], out=out[m])
        out[m] += w[m] * src[upper[m]]
    return out
