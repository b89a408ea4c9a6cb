"""``medaug convert``: every scan under a path (and its label) as NIfTI."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medaug.errors import MedaugError
from medaug.io.atomic import write_json
from medaug.io.discovery import Note, discover, display_error, display_path
from medaug.io.scan import ScanRef
from medaug.parallel import map_cases


@dataclass
class Converted:
    """One scan's outcome. Paths are relative to the output folder."""

    case_id: str
    source: str
    image: str | None = None
    label: str | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    skipped_existing: bool = False


@dataclass
class Conversion:
    out: Path
    cases: list[Converted]
    notes: list[Note]

    @property
    def failed(self) -> list[Converted]:
        return [c for c in self.cases if c.error is not None]


def _convert_one(args: tuple[ScanRef, Path, Path, bool]) -> Converted:
    from medaug.io import load
    from medaug.io.nifti import save_nifti

    ref, root, out, overwrite = args
    source = display_path(ref.source, root)
    image = out / "images" / f"{ref.case_id}.nii.gz"
    label = out / "labels" / f"{ref.case_id}.nii.gz" if ref.label is not None else None
    row = Converted(ref.case_id, source)
    if not overwrite and image.exists() and (label is None or label.exists()):
        row.image = str(image.relative_to(out))
        row.label = str(label.relative_to(out)) if label else None
        row.skipped_existing = True
        return row
    try:
        scan = load(ref)
        save_nifti(scan, image, label_path=label)
    except MedaugError as exc:
        row.error = display_error(exc, root)
        return row
    row.image = str(image.relative_to(out))
    row.label = str(label.relative_to(out)) if label else None
    row.warnings = scan.warnings
    return row


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[Converted], None] | None = None,
) -> Conversion:
    """Write every scan under ``path`` as ``out/images/case_XXXX.nii.gz`` (HU) and its
    label as ``out/labels/case_XXXX.nii.gz`` (uint8), plus ``out/conversion.json``
    mapping case ids to sources.

    Files already converted are kept unless ``overwrite``: a killed conversion
    resumes where it stopped (every file is written atomically).
    """
    found = discover(path, labels=labels, workers=workers)
    out = Path(out).absolute()
    jobs = [(ref, found.root, out, overwrite) for ref in found]
    cases = list(map_cases(_convert_one, jobs, workers, progress))
    result = Conversion(out, cases, found.notes)
    if any(c.image for c in cases):
        record = {
            "root": str(found.root),
            "cases": [asdict(c) for c in cases],
            "notes": [asdict(n) for n in found.notes],
        }
        write_json(out / "conversion.json", record)
    return result
