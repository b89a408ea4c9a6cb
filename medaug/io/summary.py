"""``medaug inspect``: one summary row per scan found under a path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medaug.errors import MedaugError
from medaug.io.discovery import Discovery, Note, discover, display_error, display_path
from medaug.io.scan import ScanRef
from medaug.parallel import map_cases


@dataclass
class ScanSummary:
    """What ``medaug inspect`` prints for one scan. Paths are relative to the root."""

    case_id: str
    kind: str
    source: str
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None
    hu_min: float | None = None
    hu_max: float | None = None
    label: str | None = None
    label_voxels: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Inspection:
    """All rows of one inspection, plus the notes about everything that is no scan."""

    root: Path
    scans: list[ScanSummary]
    notes: list[Note]

    @property
    def usable(self) -> list[ScanSummary]:
        return [s for s in self.scans if s.error is None]

    def to_json(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "scans": [s.to_json() for s in self.scans],
            "notes": [asdict(n) for n in self.notes],
        }


def _rel(p: Path | None, root: Path) -> str | None:
    return None if p is None else display_path(p, root)


def summarize(ref: ScanRef, root: Path) -> ScanSummary:
    """Load one scan and describe it; a broken scan gives a row with ``error`` set."""
    from medaug.io import load

    row = ScanSummary(
        ref.case_id, ref.kind, _rel(ref.source, root) or "", label=_rel(ref.label, root)
    )
    try:
        scan = load(ref)
    except MedaugError as exc:
        row.error = display_error(exc, root)
        row.warnings = list(ref.warnings)
        return row
    row.shape = scan.shape
    row.spacing = tuple(round(s, 4) for s in scan.spacing)  # type: ignore[assignment]
    row.orientation = scan.orientation
    row.hu_min, row.hu_max = float(np.min(scan.image)), float(np.max(scan.image))
    if scan.label is not None:
        row.label_voxels = int(np.count_nonzero(scan.label))
    row.warnings = scan.warnings
    return row


def _summarize_star(args: tuple[ScanRef, Path]) -> ScanSummary:
    return summarize(*args)


def summarize_all(
    found: Discovery,
    workers: int | None = None,
    progress: Callable[[ScanSummary], None] | None = None,
) -> Iterator[ScanSummary]:
    """Summaries of every scan in ``found``, in order, loading scans in parallel.

    Args:
        found: from :func:`medaug.io.discover`.
        workers: processes (default: all cores; 1 stays in this process).
        progress: called with each finished row.
    """
    return map_cases(_summarize_star, [(ref, found.root) for ref in found], workers, progress)


def inspect_path(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Callable[[ScanSummary], None] | None = None,
) -> Inspection:
    """Discover and summarize every scan under ``path`` (the API behind ``medaug inspect``)."""
    found = discover(path, labels=labels, workers=workers)
    rows = list(summarize_all(found, workers, progress))
    return Inspection(found.root, rows, found.notes)
