"""Finding scans under a path: DICOM series, NIfTI files and the common dataset layouts.

Layouts understood:

- any folder tree of DICOM files, one or several series per folder, nested freely;
- the TCIA Pancreas-CT tree: ``PANCREAS_0001/<study>/<series>/1-001.dcm`` beside a
  label folder ``TCIA_pancreas_labels-*/label0001.nii.gz`` (paired by number);
- a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``,
  ``labelsTr/``, ``imagesTs/``) and an nnU-Net raw folder (``imagesTr/case_0000.nii.gz``
  with ``labelsTr/case.nii.gz``);
- plain NIfTI files, with labels from ``--labels DIR`` matched by file stem, or found
  beside them in a folder named like ``labels``/``masks``/``segmentations`` or as
  ``<stem>_seg.nii.gz`` / ``_label`` / ``_mask``.

Nothing here reads pixel data except to compare two slices at the same position.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from medaug.errors import InputError, MedaugError
from medaug.io import dicom
from medaug.io.atomic import is_temporary
from medaug.io.nifti import is_nifti, nifti_stem, open_nifti
from medaug.io.scan import ScanRef

#: Files never worth opening as DICOM.
NOT_DICOM_SUFFIXES = {
    ".json", ".txt", ".md", ".csv", ".tsv", ".xml", ".html", ".png", ".jpg", ".jpeg",
    ".gif", ".pdf", ".py", ".sh", ".yaml", ".yml", ".zip", ".tar", ".mha", ".mhd",
    ".nrrd", ".raw", ".log", ".ini", ".pkl", ".npz", ".npy", ".pt", ".safetensors",
}  # fmt: skip
LABEL_DIR = re.compile(r"label|mask|seg", re.IGNORECASE)
LABEL_SUFFIX = re.compile(r"[_-](seg|label|labels|mask|gt)$", re.IGNORECASE)
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
DIGITS = re.compile(r"\d+")
#: Why a file that is neither DICOM nor NIfTI is skipped (a damaged preamble lands here).
NOT_DICOM = "not a DICOM file (no DICM marker at byte 128, not readable as a bare dataset)"
#: Below this many candidate files, header reading stays in this process.
PARALLEL_MIN_FILES = 256


@dataclass(frozen=True)
class Note:
    """Something found on the way that is not a scan: a skipped object, an empty
    folder, a file that could not be read. ``level`` is note, warning or error."""

    path: str
    message: str
    level: str = "note"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Discovery(list[ScanRef]):
    """The scans found under a root, in a stable order, plus the notes.

    A list of :class:`ScanRef`, so ``for ref in discover(path)`` just works.
    """

    def __init__(self, root: Path, refs: Iterable[ScanRef] = (), notes: Iterable[Note] = ()):
        super().__init__(refs)
        self.root = root
        self.notes: list[Note] = list(notes)

    @property
    def usable(self) -> list[ScanRef]:
        return [r for r in self if r.usable]


@dataclass(frozen=True)
class _Broken:
    """A DICOM file that cannot be read, and the series it names before the damage."""

    problem: str
    series_uid: str = ""


@dataclass
class _Found:
    root: Path
    notes: list[Note] = field(default_factory=list)
    images: list[ScanRef] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)

    def rel(self, p: Path) -> str:
        return display_path(p, self.root)


def display_path(p: Path, root: Path) -> str:
    """``p`` relative to ``root`` for messages and reports (its name if it is the root;
    the full path if it lies outside)."""
    try:
        r = p.relative_to(root)
    except ValueError:
        return str(p)
    return str(r) if str(r) != "." else p.name


def display_error(exc: MedaugError, root: Path) -> str:
    """An error's one line, with the file it names relative to ``root``."""
    if isinstance(exc, InputError):
        return f"{display_path(Path(exc.path), root)}: {exc.problem}"
    return str(exc)


def discover(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Discovery:
    """Find every scan under ``path``.

    Args:
        path: a folder (any of the layouts in the module docstring) or one NIfTI file.
        labels: a folder of label NIfTI files matched to scans by file stem (or by
            case number, as TCIA's ``label0001`` to ``PANCREAS_0001``).
        workers: processes reading DICOM headers (default: all cores); headers of
            small trees are read in this process.

    Returns:
        a :class:`Discovery`: ScanRefs named ``case_0000``... in path order, each with
        its label (if any), warnings or error, and notes about everything skipped.

    Raises:
        InputError: ``path`` does not exist, or is a file that is not NIfTI.
    """
    root = Path(path).expanduser().absolute()
    if not root.exists():
        raise InputError(root, "path does not exist")
    if labels is not None and not Path(labels).is_dir():
        raise InputError(labels, "labels folder does not exist")
    found = _Found(root=root if root.is_dir() else root.parent)
    if root.is_file():
        if not is_nifti(root):
            raise InputError(
                root, "not a NIfTI file (.nii, .nii.gz); pass the folder of a DICOM series"
            )
        found.images.append(_nifti_ref(root, found))
    elif (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        _walk_decathlon(root, found)
    else:
        _walk_tree(root, found, workers)
    label_files = list(found.label_files)
    if labels is not None:
        label_files = sorted(
            p for p in Path(labels).absolute().rglob("*") if is_nifti(p) and not _hidden(p)
        )
    _pair_labels(found, label_files, explicit=labels is not None)
    refs = sorted(found.images, key=lambda r: (str(r.source), r.files[0].name if r.files else ""))
    patients: dict[str, str] = {}
    for i, ref in enumerate(refs):
        ref.case_id = f"case_{i:04d}"
        ref.root = found.root
        # the key (a folder name or file stem) stays in memory; only its index is kept
        key = _scan_keys(ref, found.root)[0]
        ref.patient = patients.setdefault(key, f"patient_{len(patients):04d}")
    return Discovery(found.root, refs, found.notes)


def nothing_usable(root: Path, scans: int, notes: int, first: str | None = None) -> str:
    """One line saying why nothing usable was found under ``root``: ``first`` names the
    first unreadable scan's problem where no table of scans was printed above."""
    if root.is_dir():
        files = sum(1 for p in root.rglob("*") if p.is_file())
        if files == 0:
            return "folder is empty"
        if scans == 0:
            return f"no DICOM series or NIfTI volume found among {files} file(s) ({notes} note(s))"
    if first is not None:
        return (
            f"no usable scan: {scans} scan(s) found, none readable (the first: {first}; "
            "`medaug inspect` lists them all)"
        )
    return f"no usable scan: {scans} scan(s) found, none readable (see the rows above)"


# ---------------------------------------------------------------------------------
# Layouts


def _hidden(p: Path) -> bool:
    return p.name.startswith(".") or is_temporary(p)


def _nifti_ref(path: Path, found: _Found) -> ScanRef:
    ref = ScanRef(case_id="", kind="nifti", source=path, files=(path,))
    try:
        open_nifti(path)
    except InputError as exc:
        ref.error = f"{found.rel(path)}: {exc.problem}"
    return ref


def _walk_decathlon(root: Path, found: _Found) -> None:
    """MSD (imagesTr/x.nii.gz) and nnU-Net raw (imagesTr/x_0000.nii.gz) layouts."""
    for split, label_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        folder = root / split
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if is_nifti(p) and not _hidden(p))
        # nnU-Net names every image <case>_<channel>; MSD names carry no channel
        nnunet = any(nifti_stem(p).endswith("_0000") for p in files)
        for p in files:
            m = CHANNEL_SUFFIX.match(nifti_stem(p)) if nnunet else None
            if m and m["channel"] != "0000":
                found.notes.append(
                    Note(
                        found.rel(p),
                        f"channel {m['channel']} ignored; medaug reads channel 0000 (CT)",
                    )
                )
                continue
            found.images.append(_nifti_ref(p, found))
        if (root / label_dir).is_dir():
            found.label_files.extend(
                sorted(p for p in (root / label_dir).iterdir() if is_nifti(p) and not _hidden(p))
            )


def _walk_tree(root: Path, found: _Found, workers: int | None) -> None:
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in sorted(filenames):
            p = here / name
            if _hidden(p):
                continue
            if is_nifti(p):
                if LABEL_DIR.search(str(p.parent.relative_to(root))) or LABEL_SUFFIX.search(
                    nifti_stem(p)
                ):
                    found.label_files.append(p)
                else:
                    found.images.append(_nifti_ref(p, found))
            elif p.suffix.lower() not in NOT_DICOM_SUFFIXES:
                candidates.append(p)
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(f.is_file() for f in d.rglob("*")):
            found.notes.append(Note(found.rel(d), "empty folder: no scan", "warning"))
    if not candidates:
        return
    headers: list[dicom.SliceHeader] = []
    broken: dict[Path, _Broken] = {}
    for p, result in _read_headers(candidates, workers):
        if isinstance(result, list):
            headers.extend(result)
        elif isinstance(result, dicom.Skipped):
            found.notes.append(Note(found.rel(p), f"skipped: {result.reason}"))
        elif isinstance(result, _Broken):
            broken[p] = result
        else:
            found.notes.append(Note(found.rel(p), f"skipped: {NOT_DICOM}"))
    _build_series(headers, broken, found)


def _header_or_problem(
    p: Path,
) -> tuple[Path, list[dicom.SliceHeader] | dicom.Skipped | _Broken | None]:
    try:
        return p, dicom.read_headers(p)
    except InputError as exc:
        return p, _Broken(exc.problem, dicom.series_uid_of(p))
    except OSError as exc:
        return p, _Broken(f"cannot read file ({exc.strerror})")


def _read_headers(paths: list[Path], workers: int | None) -> Iterable[tuple[Path, object]]:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < PARALLEL_MIN_FILES:
        return [_header_or_problem(p) for p in paths]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_header_or_problem, paths, chunksize=64))


def _build_series(
    headers: list[dicom.SliceHeader], broken: dict[Path, _Broken], found: _Found
) -> None:
    """Group headers into series and plan each; broken files become errors.

    Every broken file is reported as an error note. It also makes a series unusable
    when it was one of its slices: its SeriesInstanceUID, read up to the damage, is
    the series' one; or, where the damage hides it from pydicom, the UID of a series
    in its folder is still in its bytes; or the series is the only one in the file's
    folder and either has no UID (grouped by folder) or has the SOP class the file's
    bytes still hold (a slice cut short in its header). Any other broken file (a
    damaged object of a series of its own, such as a multi-frame file) is a warning on
    each series beside it and never makes one unusable.
    """
    for p, b in broken.items():
        found.notes.append(Note(found.rel(p), b.problem, "error"))
    groups = dicom.group_series(headers, found.rel)
    series_per_folder: dict[Path, int] = defaultdict(int)
    uids_per_folder: dict[Path, set[str]] = defaultdict(set)
    for members, _ in groups:
        series_per_folder[members[0].path.parent] += 1
        if members[0].series_uid:
            uids_per_folder[members[0].path.parent].add(members[0].series_uid)
    owner = {
        p: b.series_uid or _series_in_bytes(p, uids_per_folder[p.parent]) for p, b in broken.items()
    }
    for members, warnings in groups:
        folder = members[0].path.parent
        files = tuple(sorted({h.path for h in members}))
        ref = ScanRef(
            case_id="",
            kind="dicom",
            # a volume from a multi-frame file (or a concatenation) is named by its (first) file
            source=members[0].path if members[0].multiframe else folder,
            files=files,
            warnings=list(warnings),
        )
        try:
            plan = dicom.plan_series(members, found.rel)
        except InputError as exc:
            ref.error = f"{exc.path}: {exc.problem}"
        else:
            ref.series = plan
            ref.files = tuple(dict.fromkeys(plan.files))  # a multi-frame file once
            ref.warnings.extend(plan.warnings)
        uid = members[0].series_uid
        unplaced = [p for p, u in owner.items() if p.parent == folder and not u]
        mine = [p for p, u in owner.items() if uid and u == uid]
        if series_per_folder[folder] == 1:
            # alone in its folder: a series without a UID owns every unplaced file; one
            # with a UID owns those whose bytes still hold its SOP class (a slice cut
            # short), not another object's (a damaged multi-frame or RT file)
            sop = members[0].sop_class
            owned = [p for p in unplaced if not uid or (sop and dicom.sop_class_in_bytes(p) == sop)]
            mine += owned
            unplaced = [p for p in unplaced if p not in owned]
        if mine:
            ref.error = f"{found.rel(mine[0])}: {broken[mine[0]].problem}"
            if len(mine) > 1:
                ref.error += f" (and {len(mine) - 1} more broken file(s))"
        elif unplaced:
            names = ", ".join(found.rel(p) for p in unplaced[:3])
            ref.warnings.append(
                f"{found.rel(folder)}: {len(unplaced)} unreadable file(s) beside this series "
                f"({names})"
            )
        found.images.append(ref)


def _series_in_bytes(path: Path, uids: set[str]) -> str:
    """The one series UID of ``uids`` that a broken file's bytes hold, else ""."""
    held = dicom.uids_in(path, uids) if uids else set()
    return held.pop() if len(held) == 1 else ""


# ---------------------------------------------------------------------------------
# Labels


def _case_number(text: str) -> int | None:
    digits = DIGITS.findall(text)
    return int(digits[-1]) if digits else None


def _scan_keys(ref: ScanRef, root: Path) -> tuple[str, int | None]:
    """Stem and case number a label may be matched by.

    For a NIfTI the stem is its name (channel suffix removed); for a DICOM series it
    is the top-level folder under the root (``PANCREAS_0001``).
    """
    if ref.kind == "nifti":
        stem = nifti_stem(ref.source)
        stem = stem.removesuffix("_0000")  # nnU-Net's CT channel
    else:
        try:
            stem = ref.source.relative_to(root).parts[0]
        except (ValueError, IndexError):
            stem = ref.source.name
    return stem, _case_number(stem)


def _pair_labels(found: _Found, label_files: list[Path], *, explicit: bool) -> None:
    by_stem: dict[str, Path] = {}
    by_number: dict[int, list[Path]] = defaultdict(list)
    for p in label_files:
        stem = LABEL_SUFFIX.sub("", nifti_stem(p))
        by_stem[stem] = p
        n = _case_number(stem)
        if n is not None:
            by_number[n].append(p)
    used: set[Path] = set()
    scans_by_number: dict[int, int] = defaultdict(int)
    keys = [_scan_keys(ref, found.root) for ref in found.images]
    for _, n in keys:
        if n is not None:
            scans_by_number[n] += 1
    for ref, (stem, n) in zip(found.images, keys, strict=True):
        label = by_stem.get(stem)
        if (
            label is None
            and n is not None
            and len(by_number.get(n, [])) == 1
            and scans_by_number[n] == 1
        ):
            label = by_number[n][0]
        if label is not None:
            ref.label = label
            used.add(label)
    for p in label_files:
        if p not in used:
            found.notes.append(
                Note(found.rel(p), "label matches no scan", "warning" if explicit else "note")
            )


__all__ = ["Discovery", "Note", "discover"]
