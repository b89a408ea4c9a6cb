"""Reading DICOM CT series: header scan, grouping, validation and pixel loading.

Reading happens in two passes so that a whole cohort can be listed quickly and one
bad file never hides the rest:

1. :func:`read_header` parses each file up to its pixel data (pydicom,
   ``stop_before_pixels``) and checks from the file's own element lengths that the
   pixel data is all there. Non-image objects are returned as :class:`Skipped`.
2. :func:`plan_series` groups headers into series, sorts slices along the slice
   normal and validates spacing, duplicates, gaps and tilt. The resulting
   :class:`SeriesPlan` says exactly how :func:`read_series` builds the volume.

Tolerances are constants below so that a reader can see what is accepted.
"""

from __future__ import annotations

import os
import struct
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
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

# ---------------------------------------------------------------------------------
# SOP classes. Only single-frame cross-sectional images become volumes; everything
# else is skipped with a note naming what it is.

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
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class Skipped:
    """A file that is not part of any volume, with the reason (shown as a note)."""

    path: Path
    reason: str


@dataclass
class SliceHeader:
    """What medaug needs from one image file, read without its pixel data."""

    path: Path
    sop_class: str
    modality: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    orientation: tuple[float, ...]  # ImageOrientationPatient, 6 cosines (LPS)
    position: tuple[float, float, float]  # ImagePositionPatient (LPS mm)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) mm
    rows: int
    columns: int
    slope: float
    intercept: float
    transfer_syntax: str
    image_type: tuple[str, ...]
    gantry_tilt: float
    pixels: PixelElement


@dataclass
class SeriesPlan:
    """How to build one volume from its files; produced by :func:`plan_series`.

    Attributes:
        files: slice files sorted along the normal (duplicates removed).
        slopes, intercepts: RescaleSlope/Intercept of each file (they may differ).
        source_offsets: each file's distance along the normal from the first, mm.
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


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


@dataclass(frozen=True)
class PixelElement:
    """Where a slice's native (uncompressed) pixel values sit in its file.

    Lets :func:`read_series` read them with one ``np.fromfile`` instead of parsing the
    header a second time. ``offset`` is None for compressed or unusual encodings,
    which go through pydicom's decoders.
    """

    offset: int | None
    bits_allocated: int
    bits_stored: int
    signed: bool


#: Transfer syntaxes whose pixel data medaug reads directly from the file.
NATIVE_LITTLE_ENDIAN = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _pixel_element(
    fp: BinaryIO, pos: int, size: int, ds: pydicom.Dataset, ts: str
) -> tuple[PixelElement | None, str | None]:
    """Check the PixelData element at ``pos`` against the file size.

    Returns (its location, None) when complete, else (None, a one-line problem).
    """
    fp.seek(pos)
    head = fp.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":
        return None, "no pixel data"
    if UID(ts).is_implicit_VR:
        (length,) = struct.unpack("<I", head[4:8])
        header_len = 8
    else:
        if len(head) < 12:
            return None, "truncated inside the pixel data header"
        (length,) = struct.unpack("<I", head[8:12])
        header_len = 12
    bits = int(ds.get("BitsAllocated", 16))
    element = PixelElement(
        offset=None,
        bits_allocated=bits,
        bits_stored=int(ds.get("BitsStored", bits)),
        signed=int(ds.get("PixelRepresentation", 0)) == 1,
    )
    if length == 0xFFFFFFFF:
        return element, None  # encapsulated (compressed) fragments: checked when decoded
    available = size - pos - header_len
    if available < length:
        return (
            None,
            f"truncated: pixel data declares {length} bytes, file holds {max(available, 0)}",
        )
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    spp = int(ds.get("SamplesPerPixel", 1))
    expected = rows * cols * spp * bits // 8
    if length < expected:
        return None, f"pixel data holds {length} bytes, {rows}x{cols} pixels need {expected}"
    if ts in NATIVE_LITTLE_ENDIAN and bits == 16 and spp == 1:
        element = PixelElement(pos + header_len, bits, element.bits_stored, element.signed)
    return element, None


def read_header(path: Path) -> SliceHeader | Skipped | None:
    """Read one file's header.

    Returns:
        a :class:`SliceHeader` for a usable image slice, a :class:`Skipped` for a
        DICOM object that is not a volume slice, or None when the file is not DICOM
        at all (no preamble and not parseable).

    Raises:
        InputError: a DICOM file that is broken (truncated, no pixel data, missing
            geometry, undecodable transfer syntax).
    """
    if path.name.upper() == "DICOMDIR":
        return Skipped(path, "DICOMDIR index file")
    preamble = False
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
            preamble = len(head) == 132 and head[128:] == b"DICM"
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not preamble)
            pixel_pos = fp.tell()
            if "SOPClassUID" not in ds:
                if not preamble:
                    return None
                raise InputError(path, "no SOPClassUID: not a DICOM storage object")
            sop = str(ds.SOPClassUID)
            if sop == MEDIA_STORAGE_DIRECTORY:
                return Skipped(path, "DICOMDIR index file")
            if sop in MULTIFRAME_SOP_CLASSES:
                return Skipped(path, f"{MULTIFRAME_SOP_CLASSES[sop]} (multi-frame) is not read yet")
            if sop not in VOLUME_SOP_CLASSES:
                name = UID(sop).name if UID(sop).is_valid else sop
                return Skipped(path, f"not an image slice ({name})")
            image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
            if "LOCALIZER" in image_type:
                return Skipped(path, "localizer (scout) image")
            ts = str(ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian))
            pixels, problem = _pixel_element(fp, pixel_pos, os.fstat(fp.fileno()).st_size, ds, ts)
    except InputError:
        raise
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error) as exc:
        if not preamble:
            return None
        raise InputError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
    if problem is not None or pixels is None:
        raise InputError(path, problem or "no pixel data")

    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return Skipped(path, "multi-frame image is not read yet")
    _check_decodable(path, ts)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    ps = _floats(ds.get("PixelSpacing"), 2)
    missing = [
        name
        for name, value in (
            ("ImageOrientationPatient", iop),
            ("ImagePositionPatient", ipp),
            ("PixelSpacing", ps),
        )
        if value is None
    ]
    if missing:
        raise InputError(path, f"missing or malformed {', '.join(missing)}")
    assert iop is not None and ipp is not None and ps is not None
    if min(ps) <= 0:
        raise InputError(path, f"PixelSpacing {list(ps)} is not positive")
    tilt = ds.get("GantryDetectorTilt")
    return SliceHeader(
        path=path,
        sop_class=sop,
        modality=str(ds.get("Modality", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        orientation=iop,
        position=(ipp[0], ipp[1], ipp[2]),
        pixel_spacing=(ps[0], ps[1]),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        transfer_syntax=ts,
        image_type=image_type,
        gantry_tilt=float(tilt) if tilt not in (None, "") else 0.0,
        pixels=pixels,
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


def group_series(
    headers: Sequence[SliceHeader], describe: Callable[[Path], str] = str
) -> list[tuple[list[SliceHeader], list[str]]]:
    """Group slice headers into series, each with its grouping warnings.

    Files group by SeriesInstanceUID, split further when orientation, pixel grid or
    pixel spacing differ inside one UID. Files without a SeriesInstanceUID group by
    study, frame of reference, orientation and grid instead, with a warning.

    Args:
        headers: slice headers from :func:`read_header`.
        describe: turns a path into the text used in messages (relative paths).
    """
    by_uid: dict[tuple[str, ...], list[SliceHeader]] = defaultdict(list)
    for h in headers:
        key: tuple[str, ...] = (
            (h.series_uid,) if h.series_uid else ("", h.study_uid, h.frame_of_reference_uid)
        )
        by_uid[key].append(h)
    groups = []
    for key, members in by_uid.items():
        members.sort(key=lambda h: str(h.path))
        warnings = []
        if not key[0]:
            folder = describe(members[0].path.parent)
            warnings.append(
                f"{folder}: {len(members)} files lack SeriesInstanceUID; grouped by study, "
                "frame of reference, orientation and pixel grid"
            )
        by_grid: dict[tuple[object, ...], list[SliceHeader]] = defaultdict(list)
        for h in members:
            by_grid[_grid_key(h)].append(h)
        if len(by_grid) > 1 and key[0]:
            folder = describe(members[0].path.parent)
            warnings.append(
                f"{folder}: mixed orientations or pixel grids within one series; "
                f"split into {len(by_grid)} scans"
            )
        for sub in by_grid.values():
            groups.append((sub, list(warnings)))
    return groups


def _same_pixels(a: Path, b: Path) -> bool:
    return bool(np.array_equal(pydicom.dcmread(a).pixel_array, pydicom.dcmread(b).pixel_array))


def plan_series(
    headers: Sequence[SliceHeader], describe: Callable[[Path], str] = str
) -> SeriesPlan:
    """Sort and validate the slices of one series; say how to build its volume.

    Slices are sorted by ImagePositionPatient projected on the slice normal, never
    by file name or InstanceNumber, and the slice spacing comes from those
    positions, never from SliceThickness. Missing slices and irregular spacing are
    accepted by interpolating onto a uniform grid (with a warning); duplicate
    positions with equal pixels are dropped (with a warning).

    Raises:
        InputError: fewer than 3 slices, two different slices at one position, or
            positions that do not lie on one line.
    """
    folder = describe(headers[0].path.parent)
    if len(headers) < MIN_SLICES:
        raise InputError(folder, f"series has {len(headers)} slice(s); a volume needs {MIN_SLICES}")
    iop = np.asarray(headers[0].orientation)
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
            a, b = headers[keep[-1]].path, headers[i].path
            if not _same_pixels(a, b):
                raise InputError(
                    folder,
                    f"{describe(a)} and {describe(b)} sit at the same position "
                    f"({offsets[i]:.2f} mm along the normal) with different pixels",
                )
            warnings.append(f"{describe(b)}: duplicate of {describe(a)}; ignored")
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
        raise InputError(folder, f"slice positions stray {off_line:.2f} mm from one straight stack")

    # Spacing: from positions, on a uniform grid at the median step.
    steps = np.diff(rel)
    spacing_mm = float(np.median(steps))
    n_slices = round(rel[-1] / spacing_mm) + 1
    grid_index = rel / spacing_mm
    deviation = float(np.max(np.abs(grid_index - np.round(grid_index)))) * spacing_mm
    tolerance = max(SPACING_TOL_MM, SPACING_TOL_FRACTION * spacing_mm)
    resampled = False
    if n_slices != len(headers):
        gap_after = [i for i, s in enumerate(steps) if s > GAP_FACTOR * spacing_mm]
        missing = n_slices - len(headers)
        where = ", ".join(
            f"{rel[i]:.1f}-{rel[i + 1]:.1f} mm (after {describe(headers[i].path)})"
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
    modality = headers[0].modality
    if modality != "CT":
        warnings.append(
            f"{folder}: modality {modality or 'missing'}, not CT: values are not Hounsfield units"
        )
    affine = geometry.dicom_affine(iop, positions[0], headers[0].pixel_spacing, step)
    return SeriesPlan(
        files=tuple(h.path for h in headers),
        pixels=tuple(h.pixels for h in headers),
        slopes=tuple(h.slope for h in headers),
        intercepts=tuple(h.intercept for h in headers),
        source_offsets=tuple(float(v) for v in rel),
        rows=headers[0].rows,
        columns=headers[0].columns,
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


def _read_native(path: Path, element: PixelElement, rows: int, columns: int) -> np.ndarray:
    """16-bit native little-endian pixels straight from the file, as pydicom would
    return them: bits above BitsStored masked off, or sign-extended when signed."""
    dtype = np.dtype("<i2" if element.signed else "<u2")
    pixels = np.fromfile(path, dtype=dtype, count=rows * columns, offset=element.offset or 0)
    if pixels.size != rows * columns:
        raise InputError(path, "pixel data ends early")
    spare = 16 - element.bits_stored
    if spare > 0:
        if element.signed:
            pixels = (pixels << spare) >> spare  # arithmetic shift sign-extends
        else:
            pixels &= (1 << element.bits_stored) - 1
    return pixels.reshape(rows, columns)


def _read_slice(
    path: Path, rows: int, columns: int, element: PixelElement | None = None
) -> np.ndarray:
    """Stored pixel values of one slice, (rows, columns)."""
    if element is not None and element.offset is not None:
        return _read_native(path, element, rows, columns)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types; each becomes one line
        raise InputError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from None
    if pixels.shape != (rows, columns):
        raise InputError(path, f"pixel array is {pixels.shape}, header says {(rows, columns)}")
    return pixels


def read_series(plan: SeriesPlan, workers: int | None = None) -> np.ndarray:
    """Build the (X, Y, Z) float32 HU volume that ``plan`` describes.

    Pixels fill a (Z, Y, X) C-ordered buffer slice by slice, so the returned
    (X, Y, Z) array is a transposed view of it with no extra copy; peak memory is
    the float32 volume plus a few slices in flight.

    Args:
        plan: from :func:`plan_series`.
        workers: threads decoding files in parallel (default: CPU count, at most 4).
    """
    n_src = len(plan.files)
    workers = workers or min(4, os.cpu_count() or 1)
    src = np.empty((n_src, plan.rows, plan.columns), dtype=np.float32)

    def fill(k: int) -> None:
        pixels = _read_slice(plan.files[k], plan.rows, plan.columns, plan.pixels[k])
        out = src[k]
        np.multiply(pixels, np.float32(plan.slopes[k]), out=out, casting="unsafe")
        out += np.float32(plan.intercepts[k])

    if workers > 1 and n_src > 8:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, range(n_src)))
    else:
        for k in range(n_src):
            fill(k)
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
