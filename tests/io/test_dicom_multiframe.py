"""Enhanced CT and Legacy Converted Enhanced CT (issue #14, point 2): a whole series in
one multi-frame file reads voxel for voxel like the same slices as a classic series,
with the same validation (order, gaps, duplicates, tilt) and the same affine. Its edge
cases (issue #22, item 3): localizer frames left out, and a concatenation (one
multi-frame image split over several files) read as one volume."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from medaug import io
from tests.conftest import series_files

WriteSeries = Callable[..., tuple[Path, np.ndarray, np.ndarray]]


def item(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def enhanced_ct(
    sources: Sequence[Dataset],
    path: Path,
    *,
    order: Sequence[int] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    per_frame_rescale: bool = False,
) -> Path:
    """Write an Enhanced CT Image file whose frames are the slices ``sources`` in
    ``order``: plane position per frame; orientation, pixel measures and rescale in
    the shared group. With ``per_frame_rescale`` each frame has its own intercept and
    stored values shifted to match, so the HU stay the same."""
    order = list(range(len(sources))) if order is None else list(order)
    first = sources[0]
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, uid
    for keyword in (
        "PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality",
        "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation",
    ):  # fmt: skip
        setattr(ds, keyword, getattr(first, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 7, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(order)
    shared = item(
        PlaneOrientationSequence=[item(ImageOrientationPatient=first.ImageOrientationPatient)],
        PixelMeasuresSequence=[
            item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)
        ],
    )
    rescale = {"RescaleSlope": first.RescaleSlope, "RescaleType": "HU"}
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = [
            item(RescaleIntercept=first.RescaleIntercept, **rescale)
        ]
    frames, groups = [], []
    for n, k in enumerate(order):
        group = item(
            PlanePositionSequence=[item(ImagePositionPatient=sources[k].ImagePositionPatient)],
            FrameContentSequence=[item(InStackPositionNumber=n + 1)],
        )
        pixels = sources[k].pixel_array
        if per_frame_rescale:
            shift = 10 * (n % 4)
            pixels = pixels + shift
            intercept = float(sources[k].RescaleIntercept) - shift
            group.PixelValueTransformationSequence = [
                item(RescaleIntercept=f"{intercept:g}", **rescale)
            ]
        frames.append(pixels.astype(sources[k].pixel_array.dtype))
        groups.append(group)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = np.stack(frames).tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def legacy_converted(folder: Path, path: Path, transfer_syntax: str | None = None) -> Path:
    """The classic series in ``folder`` as one Legacy Converted Enhanced CT (highdicom)."""
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    image = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        sources, generate_uid(), 2, generate_uid(), 1, transfer_syntax_uid=transfer_syntax
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    return path


def load_one(path: Path) -> io.Scan:
    found = io.discover(path)
    assert len(found) == 1, [r.error for r in found]
    return io.load(found[0])


def assert_same_scan(got: io.Scan, want: io.Scan) -> None:
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-6)


@pytest.mark.parametrize(
    "syntax", [None, JPEG2000Lossless, RLELossless], ids=["native", "j2k", "rle"]
)
def test_legacy_converted_enhanced_ct_reads_like_the_classic_series(
    write_series: WriteSeries, tmp_path: Path, syntax: str | None
) -> None:
    folder, image, affine = write_series()
    path = legacy_converted(folder, tmp_path / "lce" / "lce.dcm", syntax)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.2" and ds.NumberOfFrames == 12
    found = io.discover(path.parent)
    assert len(found) == 1 and found[0].source == path and found[0].files == (path,)
    scan = io.load(found[0])
    assert_same_scan(scan, load_one(folder))
    np.testing.assert_array_equal(scan.image, image)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    assert scan.warnings == []
    assert scan.provenance["files"] == 1
    assert scan.provenance["transfer_syntaxes"] == [syntax or ExplicitVRLittleEndian]


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], ids=["native", "rle", "j2k"]
)
def test_enhanced_ct_with_frames_out_of_order_and_rescale_per_frame(
    write_series: WriteSeries, tmp_path: Path, syntax: str
) -> None:
    folder, image, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    order = np.random.default_rng(3).permutation(len(sources))
    path = enhanced_ct(
        sources,
        tmp_path / "enh" / "ct",
        order=order,
        transfer_syntax=syntax,
        per_frame_rescale=True,
    )
    scan = load_one(path.parent)
    assert_same_scan(scan, load_one(folder))
    np.testing.assert_array_equal(scan.image, image)


def tilted() -> np.ndarray:
    affine = np.diag([-6.25, -6.25, 2.5, 1.0])
    affine[1, 2] = 2.5 * np.tan(np.radians(15))
    return affine


def oblique() -> np.ndarray:
    a = np.radians(25)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    ) @ np.diag([-6.25, -6.25, 2.5])
    affine[:3, 3] = [40.0, -12.5, 7.0]
    return affine


def drop_slice(sources: list[Dataset]) -> list[Dataset]:
    return sources[:5] + sources[6:]


def nudge(ds: Dataset, axis: int, mm: float) -> None:
    position = [float(v) for v in ds.ImagePositionPatient]
    position[axis] += mm
    ds.ImagePositionPatient = position


def shift_slice(sources: list[Dataset]) -> list[Dataset]:
    nudge(sources[4], 2, 0.5)
    return sources


def repeat_slice(sources: list[Dataset]) -> list[Dataset]:
    copy = pydicom.dcmread(sources[2].filename)
    copy.SOPInstanceUID = generate_uid()
    return [*sources, copy]


def repeat_position(sources: list[Dataset]) -> list[Dataset]:
    other = repeat_slice(sources)
    other[-1].PixelData = (other[-1].pixel_array + 7).astype(np.uint16).tobytes()
    return other


def move_off_line(sources: list[Dataset]) -> list[Dataset]:
    nudge(sources[7], 0, 3.0)
    return sources


def keep(sources: list[Dataset]) -> list[Dataset]:
    return sources


#: What each deviation leaves in a scan's warnings or error, whichever path read it.
MARKERS = (
    "missing slice",
    "non-uniform slice spacing",
    "tilted 15.00 deg",
    "duplicate of",
    "with different pixels",
    "from one straight stack",
)


def markers(ref: io.ScanRef) -> list[str]:
    said = [ref.error or "", *ref.warnings]
    return [m for m in MARKERS if any(m in s for s in said)]


@pytest.mark.parametrize(
    ("affine", "change", "marker"),
    [
        (None, drop_slice, "missing slice"),
        (None, shift_slice, "non-uniform slice spacing"),
        (None, repeat_slice, "duplicate of"),
        (None, repeat_position, "with different pixels"),
        (None, move_off_line, "from one straight stack"),
        ("tilted", keep, "tilted 15.00 deg"),
        ("oblique", keep, None),
    ],
    ids=["gap", "irregular", "duplicate", "duplicate-different", "off-line", "tilt", "oblique"],
)
def test_multiframe_deviations_are_handled_like_the_classic_series(
    write_series: WriteSeries,
    tmp_path: Path,
    affine: str | None,
    change: Callable[[list[Dataset]], list[Dataset]],
    marker: str | None,
) -> None:
    chosen = {"tilted": tilted, "oblique": oblique}[affine]() if affine else None
    folder, _, _ = write_series(affine=chosen)
    sources = change([pydicom.dcmread(p) for p in series_files(folder)])
    classic = tmp_path / "classic"
    classic.mkdir()
    for k, ds in enumerate(sources):
        ds.save_as(classic / f"{k:03d}.dcm")
    order = list(np.random.default_rng(1).permutation(len(sources)))
    enhanced = enhanced_ct(sources, tmp_path / "enhanced" / "ct.dcm", order=order)

    (ours,) = io.discover(enhanced.parent)
    (theirs,) = io.discover(classic)
    assert markers(ours) == markers(theirs) == ([marker] if marker else [])
    if marker == "from one straight stack":
        assert theirs.error is not None and "(furthest: 007.dcm)" in theirs.error
        assert ours.error == theirs.error.replace("classic: ", "ct.dcm: ").replace(
            "007.dcm", f"ct.dcm frame {order.index(7) + 1}"
        )
    assert (ours.error is None) == (theirs.error is None)
    if ours.error is not None:
        assert ours.error.startswith("ct.dcm: ") and "ct.dcm frame " in ours.error
        return
    assert_same_scan(io.load(ours), io.load(theirs))
    if chosen is not None:
        np.testing.assert_allclose(io.load(ours).affine, chosen, atol=1e-4)


def test_frame_named_in_errors_and_warnings(write_series: WriteSeries, tmp_path: Path) -> None:
    folder, _, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    path = enhanced_ct(repeat_slice(sources), tmp_path / "enh" / "ct.dcm")
    (ref,) = io.discover(path.parent)
    assert "ct.dcm frame 13: duplicate of ct.dcm frame 3; ignored" in ref.warnings
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence
    ds.save_as(path)
    found = io.discover(path.parent)
    assert [(n.path, n.message) for n in found.notes] == [
        ("ct.dcm", "frame 5: missing or malformed ImagePositionPatient")
    ]


def test_frame_count_must_match_the_functional_groups(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    folder, _, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    path = enhanced_ct(sources, tmp_path / "enh" / "ct.dcm")
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[-1]
    ds.save_as(path)
    (note,) = io.discover(path.parent).notes
    assert note.message == "PerFrameFunctionalGroupsSequence has 11 items, 12 frames"


def scout(ds: Dataset) -> Dataset:
    """A copy of slice ``ds`` made a coronal localizer (ImageType LOCALIZER)."""
    out = copy.deepcopy(ds)
    out.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    out.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    out.SOPInstanceUID = generate_uid()
    return out


def test_localizer_frames_are_left_out_with_a_note(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    """Two scouts converted with the axial slices into one Legacy Converted Enhanced
    CT (highdicom writes each source's ImageType as the frame's FrameType): the volume
    is the axial series, and one warning names the frames left out. The file's own
    ImageType only sums its frames up, so it does not decide, even when it says
    LOCALIZER."""
    folder, image, affine = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    lce = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        [scout(sources[0]), *sources, scout(sources[5])], generate_uid(), 2, generate_uid(), 1
    )
    path = tmp_path / "lce" / "lce.dcm"
    path.parent.mkdir()
    lce.save_as(path)
    frame_types = [
        item.CTImageFrameTypeSequence[0].FrameType[2]
        for item in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence
    ]
    scouts = [k + 1 for k, value in enumerate(frame_types) if value == "LOCALIZER"]
    assert len(scouts) == 2 and len(frame_types) == 14
    note = (
        f"lce.dcm: frames {scouts[0]}, {scouts[1]} of 14 are localizers (scout images); "
        "left out of the volume"
    )

    (ref,) = io.discover(path.parent)
    assert ref.error is None and ref.warnings == [note]
    scan = io.load(ref)
    np.testing.assert_array_equal(scan.image, image)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    assert note in scan.warnings

    ds = pydicom.dcmread(path)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "MIXED"]
    ds.save_as(path)
    (ref,) = io.discover(path.parent)
    assert ref.warnings == [note]
    np.testing.assert_array_equal(io.load(ref).image, image)


def test_multiframe_file_of_localizer_frames_only_is_skipped(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    """FrameType LOCALIZER in the shared functional group: every frame is a scout."""
    folder, _, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    path = enhanced_ct(sources, tmp_path / "enh" / "scouts.dcm")
    ds = pydicom.dcmread(path)
    ds.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence = [
        item(FrameType=["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"])
    ]
    ds.save_as(path)
    found = io.discover(path.parent)
    assert list(found) == []
    assert [(n.path, n.message) for n in found.notes] == [
        ("scouts.dcm", "skipped: localizer (scout) image")
    ]


def concatenation(
    whole: Path,
    sizes: Sequence[int],
    names: Sequence[str],
    *,
    total: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """The native multi-frame file ``whole`` split into a concatenation (PS3.3
    C.7.6.16.1.7): part k, written to ``names[k]`` beside ``whole``'s folder, holds
    the next ``sizes[k]`` frames with their functional groups. Without ``total`` the
    parts leave out the optional InConcatenationTotalNumber."""
    source = pydicom.dcmread(whole)
    frames = source.pixel_array
    uid, offset, paths = generate_uid(), 0, []
    folder = whole.parent.parent / "parts"
    folder.mkdir(exist_ok=True)
    for number, (size, name) in enumerate(zip(sizes, names, strict=True), 1):
        part = copy.deepcopy(source)
        part.SOPInstanceUID = part.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        part.SOPInstanceUIDOfConcatenationSource = source.SOPInstanceUID
        part.ConcatenationUID = uid
        part.InConcatenationNumber = number
        if total:
            part.InConcatenationTotalNumber = len(sizes)
        part.ConcatenationFrameOffsetNumber = offset
        part.NumberOfFrames = size
        part.PerFrameFunctionalGroupsSequence = list(
            source.PerFrameFunctionalGroupsSequence[offset : offset + size]
        )
        part.PixelData = frames[offset : offset + size].tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            part.compress(transfer_syntax, generate_instance_uid=False)
        paths.append(folder / name)
        part.save_as(paths[-1], enforce_file_format=True)
        offset += size
    return paths


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless], ids=["native", "rle"])
def test_concatenation_reads_like_the_same_frames_in_one_file(
    write_series: WriteSeries, tmp_path: Path, syntax: str
) -> None:
    """Frames out of order, split 5 + 4 + 3 over three files named against their part
    order: one scan, named by part 1, equal voxel for voxel and in geometry to the
    file they came from."""
    folder, image, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    order = np.random.default_rng(5).permutation(len(sources))
    whole = enhanced_ct(sources, tmp_path / "whole" / "ct.dcm", order=order)
    parts = concatenation(whole, [5, 4, 3], ["c.dcm", "b.dcm", "a.dcm"], transfer_syntax=syntax)

    (ref,) = io.discover(parts[0].parent)
    assert ref.error is None and ref.warnings == []
    assert ref.source == parts[0] and sorted(ref.files) == sorted(parts)
    scan = io.load(ref)
    assert_same_scan(scan, load_one(whole.parent))
    np.testing.assert_array_equal(scan.image, image)
    assert scan.provenance["files"] == 3


@pytest.mark.parametrize(
    ("total", "removed", "problem"),
    [
        (True, 1, "concatenation of 3 parts has 2 (1: p1.dcm, 3: p3.dcm); part 2 missing"),
        (True, 2, "concatenation of 3 parts has 2 (1: p1.dcm, 2: p2.dcm); part 3 missing"),
        (False, 1, "concatenation of 3 parts has 2 (1: p1.dcm, 3: p3.dcm); part 2 missing"),
    ],
    ids=["middle", "last", "middle-without-total"],
)
def test_concatenation_with_a_part_missing_is_one_line_naming_the_parts(
    write_series: WriteSeries, tmp_path: Path, total: bool, removed: int, problem: str
) -> None:
    folder, _, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    whole = enhanced_ct(sources, tmp_path / "whole" / "ct.dcm")
    parts = concatenation(whole, [4, 4, 4], ["p1.dcm", "p2.dcm", "p3.dcm"], total=total)
    parts[removed].unlink()
    (ref,) = io.discover(parts[0].parent)
    first = parts[1 if removed == 0 else 0].name
    assert ref.error == f"{first}: {problem}"


def test_concatenation_parts_that_disagree_on_their_number(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    folder, _, _ = write_series()
    sources = [pydicom.dcmread(p) for p in series_files(folder)]
    whole = enhanced_ct(sources, tmp_path / "whole" / "ct.dcm")
    parts = concatenation(whole, [6, 6], ["p1.dcm", "p2.dcm"])
    ds = pydicom.dcmread(parts[1])
    ds.InConcatenationTotalNumber = 3
    ds.save_as(parts[1])
    (ref,) = io.discover(parts[0].parent)
    assert ref.error == (
        "p1.dcm: concatenation parts (1: p1.dcm, 2: p2.dcm) disagree on "
        "InConcatenationTotalNumber (2 and 3)"
    )
    ds.InConcatenationNumber = 0
    ds.save_as(parts[1])
    found = io.discover(parts[0].parent)
    assert [(n.path, n.message) for n in found.notes] == [
        ("p2.dcm", "concatenation part with InConcatenationNumber 0")
    ]


def test_two_multiframe_files_in_one_folder_are_two_scans(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    first, image0, _ = write_series("a", index=0)
    second, image1, _ = write_series("b", index=1)
    both = tmp_path / "both"
    legacy_converted(first, both / "a.dcm")
    legacy_converted(second, both / "b.dcm")
    found = io.discover(both)
    assert [r.source.name for r in found] == ["a.dcm", "b.dcm"]
    np.testing.assert_array_equal(io.load(found[0]).image, image0)
    np.testing.assert_array_equal(io.load(found[1]).image, image1)


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
@pytest.mark.parametrize("syntax", [None, JPEG2000Lossless], ids=["native", "j2k"])
def test_legacy_converted_matches_dcm2niix(
    write_series: WriteSeries, tmp_path: Path, syntax: str | None
) -> None:
    from tests.io.test_dcm2niix import assert_same_world_voxels, dcm2niix

    folder, _, _ = write_series(affine=oblique())
    path = legacy_converted(folder, tmp_path / "lce" / "lce.dcm", syntax)
    try:
        ref, ref_affine = dcm2niix(path.parent, tmp_path / "ref")
    except subprocess.CalledProcessError as exc:
        # Debian's dcm2niix v1.0.20220720 reads no compressed multi-frame file ("stored
        # as 13 fragments: decompress with gdcmconv"); newer builds do
        if syntax is not None and b"fragments" in exc.stdout + exc.stderr:
            pytest.skip("this dcm2niix build reads no compressed multi-frame file")
        raise
    scan = load_one(path.parent)
    assert_same_world_voxels(scan.image, scan.affine, ref, ref_affine)
