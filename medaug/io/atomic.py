"""Write files and folders under a temporary name, then rename them into place.

A killed run never leaves a truncated file under its final name: readers see either
the old state or the complete new file. ``os.replace`` is atomic on POSIX when both
names are on the same file system, which holds because the temporary sits beside
its final name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".partial"


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``final`` if the block succeeds.

    Works for a file or a folder. On an exception the temporary is removed and the
    final name is untouched. The temporary keeps ``final``'s suffixes so that
    libraries choosing a format by extension (nibabel's ``.nii.gz``) still work.

    Example:
        >>> with atomic_path(out / "scan.nii.gz") as tmp:  # doctest: +SKIP
        ...     nib.save(img, tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{os.getpid()}{TMP_MARK}.{final.name}")
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: str | os.PathLike[str], doc: object) -> Path:
    """Write ``doc`` as indented JSON (with a final newline), atomically."""
    return write_text(path, json.dumps(doc, indent=2) + "\n")


def is_temporary(path: Path) -> bool:
    """True for a leftover of :func:`atomic_path` from a killed run."""
    return path.name.startswith(".") and TMP_MARK in path.name
