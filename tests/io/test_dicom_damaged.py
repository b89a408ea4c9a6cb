"""Damaged DICOM files (issue #14, point 3; issue #22, item 3): each one is a one-line
error or a skipped note naming it, the good files beside it are still read, what the
decoders warn about names the file, and no command ends in a traceback. The cases the
issues reported, then a seeded fuzz test over phantom series, multi-frame files and
the small files that ship with pydicom."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from typer.testing import CliRunner

from medaug import io
from medaug.data.phantom import make_patient
from medaug.errors import MedaugError
from medaug.io import dicom
from medaug.io.dicom_write import new_series_info, write_ct_series
from medaug.io.summary import Inspection, inspect_path
from tests.conftest import SMALL, run_cli, series_files

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

WriteSeries = Callable[..., tuple[Path, np.ndarray, np.ndarray]]


def assert_no_traceback(result) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def break_file_meta(path: Path) -> None:
    """The issue's damage: the length of (0002,0000) FileMetaInformationGroupLength (UL,
    4 bytes) changed to 3, which pydicom answers with BytesLengthException."""
    data = bytearray(path.read_bytes())
    assert data[132:138] == b"\x02\x00\x00\x00UL"
    data[138] = 3
    path.write_bytes(bytes(data))


def test_damaged_file_meta_is_one_line_per_file_and_the_rest_is_read(
    write_series: WriteSeries,
) -> None:
    damaged, _, _ = write_series("damaged")
    good, image, _ = write_series("good", index=1)
    victims = series_files(damaged)[3:5]
    for path in victims:
        break_file_meta(path)
    root = damaged.parent

    result = run_cli("inspect", root, "--json", "--workers", "1")
    assert_no_traceback(result)
    assert result.returncode == 0  # the good series is usable
    data = json.loads(result.stdout)
    errors = {n["path"]: n["message"] for n in data["notes"] if n["level"] == "error"}
    assert set(errors) == {f"damaged/{p.name}" for p in victims}
    for message in errors.values():
        assert message.startswith(
            "unreadable DICOM header (BytesLengthException: Expected total bytes to be an "
            "even multiple of bytes per value."
        )
        assert "\n" not in message and len(message) < 220
    rows = {row["source"]: row for row in data["scans"]}
    assert rows["good"]["error"] is None
    assert rows["damaged"]["error"].startswith(f"damaged/{victims[0].name}: unreadable DICOM")
    assert rows["damaged"]["error"].endswith("(and 1 more broken file(s))")
    np.testing.assert_array_equal(io.load(io.discover(good)[0]).image, image)

    alone = run_cli("inspect", damaged)
    assert_no_traceback(alone)
    assert alone.returncode == 1
    assert alone.stderr.startswith("medaug: error: ")
    assert victims[0].name in alone.stdout


def test_damaged_jpeg2000_codestream_is_an_error_not_an_abort(
    write_series: WriteSeries,
) -> None:
    """Bytes cut from the codestream's main header: GDCM's JPEG 2000 decoder throws a
    C++ exception on this that aborts the process (SIGABRT); medaug decodes JPEG 2000
    with OpenJPEG, which raises, so the slice is one error line. A subprocess keeps a
    regression from taking the test run down with it."""
    folder, _, _ = write_series(transfer_syntax=JPEG2000Lossless)
    victim = series_files(folder)[3]
    ds = pydicom.dcmread(victim)
    codestream = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    del codestream[30:63]
    ds.PixelData = encapsulate([bytes(codestream)])
    ds.save_as(victim)

    result = run_cli("inspect", folder, "--json", "--workers", "1")
    assert_no_traceback(result)
    (row,) = json.loads(result.stdout)["scans"]
    assert row["error"].startswith(f"{victim.name}: cannot decode pixel data (")


def test_compressed_file_cut_short_is_found_during_discovery(
    write_series: WriteSeries,
) -> None:
    """The items of encapsulated pixel data are walked by their headers, so a cut
    codestream is reported before any decoder sees it (CharLS took seconds on one)."""
    folder, _, _ = write_series(transfer_syntax=RLELossless)
    victim = series_files(folder)[2]
    victim.write_bytes(victim.read_bytes()[:-100])
    found = io.discover(folder)
    assert [(n.path, n.message) for n in found.notes] == [
        (victim.name, "truncated inside the compressed pixel data")
    ]
    assert found[0].error == f"{victim.name}: truncated inside the compressed pixel data"


def test_broken_slice_counts_against_its_own_series_only(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    """Two series in one folder: a truncated slice of one (its SeriesInstanceUID still
    readable) makes that series unusable and leaves the other untouched."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, index in (("a", 0), ("b", 1)):
        folder, _, _ = write_series(name, index=index)
        for p in series_files(folder):
            shutil.move(p, mixed / f"{name}{p.name}")
    victim = mixed / "a1-005.dcm"
    victim.write_bytes(victim.read_bytes()[:3000])
    found = io.discover(mixed)
    a, b = found
    assert a.error is not None
    assert a.error.startswith("a1-005.dcm: truncated: pixel data declares 8192 bytes")
    assert b.usable and b.warnings == []


def swallow_dataset_into_file_meta(path: Path) -> None:
    """The damage that made a good series unusable (found by the fuzz test's approach,
    seed 14, mutation 94): the high byte of the length of (0002,0003)
    MediaStorageSOPInstanceUID set to 0x83, so the file meta swallows the dataset and
    pydicom finds neither image size nor SeriesInstanceUID, while the UID's bytes are
    still in the file."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x02\x00\x03\x00UI")
    data[at + 7] = 0x83
    path.write_bytes(bytes(data))


def test_damaged_object_beside_a_good_series_leaves_it_usable(write_series: WriteSeries) -> None:
    """A damaged multi-frame file of another series in the folder of a good series:
    the damage hides its SeriesInstanceUID, and the good series, the only one left in
    the folder, used to take the blame. Its UID is not in the damaged file's bytes, so
    now it is read, with a warning naming the file beside it."""
    good, image, _ = write_series("good")
    other, _, _ = write_series("other", index=1)
    sources = [pydicom.dcmread(p) for p in series_files(other)]
    lce = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        sources, generate_uid(), 2, generate_uid(), 1
    )
    victim = good / "lce.dcm"
    lce.save_as(victim)
    swallow_dataset_into_file_meta(victim)
    assert dicom.series_uid_of(victim) == ""

    found = io.discover(good)
    assert [(n.path, n.level) for n in found.notes] == [("lce.dcm", "error")]
    assert found.notes[0].message.startswith("image size missing or not a count")
    (ref,) = found
    assert ref.error is None
    assert ref.warnings == ["good: 1 unreadable file(s) beside this series (lce.dcm)"]
    np.testing.assert_array_equal(io.load(ref).image, image)


def test_slice_whose_damage_hides_its_series_uid_counts_against_its_series(
    write_series: WriteSeries, tmp_path: Path
) -> None:
    """The same damage to a slice of one of two series in a folder: pydicom reads no
    SeriesInstanceUID, but the file's bytes hold its series' UID, so that series is
    unusable (not interpolated over the lost slice) and the other one is untouched."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, index in (("a", 0), ("b", 1)):
        folder, _, _ = write_series(name, index=index)
        for p in series_files(folder):
            shutil.move(p, mixed / f"{name}{p.name}")
    victim = mixed / "a1-005.dcm"
    swallow_dataset_into_file_meta(victim)
    assert dicom.series_uid_of(victim) == ""
    a, b = io.discover(mixed)
    assert a.error is not None and a.error.startswith("a1-005.dcm: image size missing")
    assert b.usable and b.warnings == []


def pad_rle_segment(path: Path) -> None:
    """One literal byte added to the last RLE segment of a slice: pydicom still decodes
    it and warns "The decoded RLE segment contains non-conformant padding"."""
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame + b"\x00\x07"])
    ds.save_as(path)


def test_decoder_warnings_name_the_file(
    write_series: WriteSeries, caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom's warning about a padded RLE segment (which it also logs) comes back
    as one line of the scan's warnings naming the file, never as a bare warning or
    log record: when the volume is read, by threads, and when two slices are compared
    during discovery (a duplicate; the same words about both files are one line).
    ``read_series`` without notes warns it, naming the file."""
    folder, image, _ = write_series(transfer_syntax=RLELossless)
    victim = series_files(folder)[4]
    pad_rle_segment(victim)
    padding = "The decoded RLE segment contains non-conformant padding - 4097 vs. 4096 bytes"
    said = f"{victim.name}: {padding} expected"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (ref,) = io.discover(folder)
        scan = io.load(ref)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name == "pydicom"] == []
    assert ref.warnings == []  # discovery decodes nothing here
    assert scan.warnings == [said]
    np.testing.assert_array_equal(scan.image, image)

    shutil.copy(victim, folder / "copy.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (ref,) = io.discover(folder)
    assert [str(w.message) for w in caught] == []
    assert ref.warnings == [  # both slices decoded to compare them: one line
        f"{victim.name} (and 1 more file(s)): {padding} expected",
        f"copy.dcm: duplicate of {victim.name}; ignored",
    ]
    with pytest.warns(UserWarning, match=f"^{re.escape(str(folder / said))}$") as warned:
        dicom.read_series(ref.series, workers=4)
    assert len(warned) == 1


def test_file_with_a_damaged_preamble_is_a_skipped_note(write_series: WriteSeries) -> None:
    folder, _, _ = write_series()
    victim = series_files(folder)[4]
    data = bytearray(victim.read_bytes())
    data[128:132] = b"DIXM"
    victim.write_bytes(bytes(data))
    found = io.discover(folder)
    assert [(n.path, n.level) for n in found.notes] == [(victim.name, "note")]
    assert found.notes[0].message.startswith("skipped: not a DICOM file")
    assert any("1 missing slice(s)" in w for w in found[0].warnings)


def test_collinearity_error_names_the_damaged_slice(write_series: WriteSeries) -> None:
    """The first slice pulled sideways tilts the first-to-last line towards it; the
    error still names the first slice, not a middle one."""
    folder, _, _ = write_series()
    victim = series_files(folder)[0]
    ds = pydicom.dcmread(victim)
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 4, *ds.ImagePositionPatient[1:]]
    ds.save_as(victim)
    (ref,) = io.discover(folder)
    assert ref.error is not None and ref.error.endswith(f"(furthest: {victim.name})")


# ---------------------------------------------------------------------------------
# Fuzz: seeded random damage through inspect, convert and preprocess

SEED = 14
#: Damaged files put through ``inspect`` (each one), ``convert`` (every 10th, by
#: typer's CliRunner) and, on a labelled cohort, ``preprocess``.
MUTATIONS = 300
CONVERT_EVERY = 10
PREPROCESS_MUTATIONS = 20
#: pydicom's own small files: slices (made into three-slice series) and other objects.
SHIPPED_SLICES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
)
SHIPPED_OBJECTS = (
    "rtdose.dcm",
    "JPEG2000.dcm",
    "liver_1frame.dcm",
    "SC_rgb_rle_2frame.dcm",
    "no_meta.dcm",
    "ExplVR_LitEndNoMeta.dcm",
)
KINDS = ("flip header", "flip file meta", "flip pixels", "truncate", "zero run", "cut run")


def damage(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random kind of damage to a file's bytes; returns the bytes and the kind."""
    out = bytearray(data)
    kind = KINDS[rng.integers(len(KINDS))]
    pixels = data.rfind(b"\xe0\x7f\x10\x00")
    pixels = len(data) if pixels < 0 else pixels
    at = int(rng.integers(len(out)))
    run = int(rng.integers(1, 65))
    if kind == "flip header":
        for _ in range(rng.integers(1, 5)):
            out[rng.integers(max(pixels, 1))] ^= 1 << int(rng.integers(8))
    elif kind == "flip file meta":
        for _ in range(rng.integers(1, 4)):
            out[rng.integers(128, min(len(out), 340))] = rng.integers(256)
    elif kind == "flip pixels":
        for _ in range(rng.integers(1, 9)):
            out[rng.integers(min(pixels, len(out) - 1), len(out))] = rng.integers(256)
    elif kind == "truncate":
        del out[at:]
    elif kind == "zero run":
        out[at : at + run] = bytes(len(out[at : at + run]))
    else:
        del out[at : at + run]
    return bytes(out), kind


@dataclass
class Corpus:
    """Files to damage, by name, and good series to find intact beside them."""

    root: Path
    sets: dict[str, list[Path]]
    beside: list[Path]  # a good series copied into the victim's folder
    sibling: Path  # a good series in a folder of its own


def series_of(index: int, n: int, folder: Path, tag: str, syntax: str | None = None) -> list[Path]:
    scan, _ = make_patient(index, seed=0, config=SMALL)
    info = new_series_info("FUZZ^TEST", "FUZZ", entropy=["fuzz", tag])
    kwargs = {"transfer_syntax": syntax} if syntax else {}
    return write_ct_series(scan.image[:, :, :n], scan.affine, folder, info, **kwargs)


def shipped_series(name: str, folder: Path) -> list[Path]:
    """Three slices of a shipped file, 2 mm apart along its normal."""
    source = get_testdata_file(name, download=False)
    assert source is not None
    folder.mkdir(parents=True)
    paths = []
    for k in range(3):
        ds = pydicom.dcmread(source)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        ds.ImagePositionPatient = [*(ipp + 2.0 * k * np.cross(iop[:3], iop[3:]))]
        ds.SOPInstanceUID = generate_uid()
        paths.append(folder / f"{k}_{name}")
        ds.save_as(paths[-1])
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("fuzz")
    sets: dict[str, list[Path]] = {}
    for syntax in (None, JPEG2000Lossless, RLELossless):
        tag = str(syntax or "native")
        sets[f"phantom {tag}"] = series_of(0, 6, root / "phantom" / tag, tag, syntax)
        sources = [pydicom.dcmread(p) for p in sets[f"phantom {tag}"]]
        lce = highdicom.legacy.LegacyConvertedEnhancedCTImage(
            sources, generate_uid(), 2, generate_uid(), 1
        )
        path = root / "lce" / f"{tag}.dcm"
        path.parent.mkdir(exist_ok=True)
        lce.save_as(path)
        sets[f"legacy converted {tag}"] = [path]
    for name in SHIPPED_SLICES:
        sets[name] = shipped_series(name, root / "shipped" / name)
    for name in SHIPPED_OBJECTS:
        source = get_testdata_file(name, download=False)
        assert source is not None, name
        sets[name] = [Path(shutil.copy(source, root / name))]
    beside = series_of(1, 4, root / "beside", "beside")
    sibling = root / "sibling"
    series_of(2, 4, sibling, "sibling")
    return Corpus(root, sets, beside, sibling)


def said(result: Inspection) -> set[str]:
    """Everything an inspection says: scan errors, warnings and notes."""
    lines = {s.error for s in result.scans if s.error}
    lines |= {w for s in result.scans for w in s.warnings}
    return lines | {str(n) for n in result.notes}


def summary_of(result: Inspection, source: str) -> tuple[object, ...] | None:
    rows = [s for s in result.scans if s.source == source]
    if len(rows) != 1 or rows[0].error:
        return None
    return (rows[0].shape, rows[0].hu_min, rows[0].hu_max)


def prepare(work: Path, corpus: Corpus, files: list[Path]) -> Path:
    """``work/victims`` holding ``files`` and the good series beside them."""
    folder = work / "victims"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in [*files, *corpus.beside]:
        shutil.copy(p, folder / (p.name if p in files else f"beside-{p.name}"))
    return folder


def mutations(corpus: Corpus, n: int, seed: int) -> Iterator[tuple[str, int, str, bytes]]:
    """``n`` damaged files: (set name, which file of the set, kind of damage, bytes)."""
    rng = np.random.default_rng(seed)
    names = sorted(corpus.sets)
    for _ in range(n):
        name = names[rng.integers(len(names))]
        k = int(rng.integers(len(corpus.sets[name])))
        data, kind = damage(corpus.sets[name][k].read_bytes(), rng)
        yield name, k, kind, data


def test_fuzz_damaged_files_never_raise(corpus: Corpus, tmp_path: Path) -> None:
    """Every damaged file: ``inspect`` raises nothing and warns nothing (what pydicom
    warns about is a line of the scan's warnings), says everything in one line per
    problem with a path first, notes name the damaged file, and the good series beside
    it (same folder) and in the next folder read as before. Every 10th also goes
    through ``medaug convert`` (CliRunner): exit 0 or 1, no exception."""
    from medaug.cli import app

    work = tmp_path / "work"
    shutil.copytree(corpus.sibling, work / "sibling")
    runner = CliRunner()
    baseline: dict[str, set[str]] = {}
    sibling: tuple[object, ...] | None = None
    kinds: Counter[str] = Counter()
    changed = named = 0
    for i, (name, k, kind, data) in enumerate(mutations(corpus, MUTATIONS, SEED)):
        files = corpus.sets[name]
        folder = prepare(work, corpus, files)
        if name not in baseline:
            clean = inspect_path(work, workers=1)
            baseline[name] = said(clean)
            sibling = summary_of(clean, "sibling")
            assert sibling is not None
        victim = folder / files[k].name
        victim.write_bytes(data)
        kinds[kind] += 1

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = inspect_path(work, workers=1)
        assert [str(w.message) for w in caught] == [], (name, kind)  # notes instead
        lines = said(result)
        for line in lines:
            assert "\n" not in line and "\r" not in line, line
            assert line.split(": ", 1)[0].split("/")[0] in {"victims", "sibling", "work"}, line
        for note in result.notes:
            assert note.path == f"victims/{victim.name}", (name, kind, note)
        assert summary_of(result, "sibling") == sibling, (name, kind)
        beside = [s for s in result.scans if s.source == "victims" and s.shape == (64, 64, 4)]
        assert [s.error for s in beside] == [None], (name, kind, lines)
        new = lines - baseline[name]
        changed += bool(new)
        named += any(victim.name in line for line in new)

        if i % CONVERT_EVERY == 0:
            out = tmp_path / f"converted_{i}"
            converted = runner.invoke(app, ["convert", str(work), str(out), "--workers", "1"])
            assert converted.exit_code in (0, 1), (name, kind, converted.output)
            assert converted.exception is None or isinstance(converted.exception, SystemExit)
            assert (out / "images").is_dir()  # the sibling series at least
    assert sum(kinds.values()) == MUTATIONS and set(kinds) == set(KINDS)
    assert changed > MUTATIONS // 3 and named == changed, (changed, named)


def test_fuzz_preprocess_skips_the_damaged_patient(dicom_cohort: Path, tmp_path: Path) -> None:
    """Damaged slices of the first patient of a labelled TCIA-style cohort: preprocess
    raises nothing and the other two patients are always done; then ``medaug
    preprocess`` (CliRunner) over the issue's damaged file meta exits 0."""
    from medaug.preprocess import PreprocessConfig, preprocess

    cohort = tmp_path / "cohort"
    shutil.copytree(dicom_cohort, cohort)
    slices = series_files(cohort / "PANCREAS_0001")
    originals = [p.read_bytes() for p in slices]
    rng = np.random.default_rng(SEED)
    config = PreprocessConfig(grid_2d=(16, 16))
    for i in range(PREPROCESS_MUTATIONS):
        k = int(rng.integers(len(slices)))
        slices[k].write_bytes(damage(originals[k], rng)[0])
        try:
            result = preprocess(cohort, tmp_path / "cache", config, workers=1, overwrite=True)
        except MedaugError as exc:
            pytest.fail(f"mutation {i}: the good patients should be done ({exc})")
        assert {"patient_0001", "patient_0002"} <= {r.patient for r in result.done}
        slices[k].write_bytes(originals[k])

    from medaug.cli import app

    break_file_meta(slices[5])
    args = ["preprocess", str(cohort), str(tmp_path / "cli"), "--dims", "2", "--grid", "16"]
    preprocessed = CliRunner().invoke(app, [*args, "--workers", "1"])
    assert preprocessed.exit_code == 0, preprocessed.output
    assert preprocessed.exception is None or isinstance(preprocessed.exception, SystemExit)


def test_fuzz_commands_exit_cleanly(corpus: Corpus, tmp_path: Path) -> None:
    """A few real ``medaug`` processes over a tree of damaged files: exit 0 or 1 and no
    traceback on stderr."""
    tree = tmp_path / "tree"
    shutil.copytree(corpus.sibling, tree / "sibling")
    for j, (name, k, _, data) in enumerate(mutations(corpus, 12, SEED + 1)):
        folder = tree / f"damaged_{j:02d}"
        folder.mkdir()
        for p in corpus.sets[name]:
            shutil.copy(p, folder / p.name)
        (folder / corpus.sets[name][k].name).write_bytes(data)
    inspected = run_cli("inspect", tree, "--workers", "1")
    assert_no_traceback(inspected)
    assert inspected.returncode == 0  # the sibling series is usable
    converted = run_cli("convert", tree, tmp_path / "out", "--workers", "1")
    assert_no_traceback(converted)
    assert list((tmp_path / "out" / "images").glob("*.nii.gz"))  # the sibling series
