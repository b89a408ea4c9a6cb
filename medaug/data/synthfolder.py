"""A synthesis folder as its manifest describes it: the one reader of what
``medaug synth`` wrote.

:mod:`medaug.synth.output` writes the folder (its layout is documented there);
everything that reads one (``SyntheticDataset``, evaluation, the report, the nnU-Net
export, merging shards, the gain experiment, resuming a synthesis) opens a
:class:`SynthFolder` and asks it for typed fields instead of parsing
``manifest.json`` itself. It sits in the data layer so that datasets can read it
without depending on the synthesis stage.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from medaug.errors import InputError
from medaug.io import load
from medaug.io.nifti import read_nifti
from medaug.preprocess.config import PreprocessConfig

MANIFEST = "manifest.json"
DATALIST = "dataset.json"
PREVIEW = "preview.png"
#: A case's record, written after its files: ``RECORDS / synth_0000.json``.
RECORDS = Path(".synth") / "cases"


class SynthFolder:
    """A synthesis folder and its manifest, read once.

    Args:
        root: the folder.
        manifest: its ``manifest.json`` content.

    Example:
        >>> folder = SynthFolder.open("synthetic")                  # doctest: +SKIP
        >>> folder.config.grid, len(folder.cases)                   # doctest: +SKIP
        ((64, 64), 100)
        >>> hu, label = folder.read_case(folder.cases[0])           # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> SynthFolder:
        """A folder that holds at least one synthetic case.

        Raises:
            InputError: no manifest, an unreadable one, or one without cases.
        """
        root = Path(root)
        path = root / MANIFEST
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(root, "not a medaug synthesis folder (no manifest.json)") from None
        except (OSError, ValueError) as exc:
            raise InputError(path, f"unreadable manifest ({exc})") from None
        if not doc.get("cases"):
            raise InputError(path, "holds no synthetic cases")
        return cls(root, doc)

    @classmethod
    def find(cls, root: str | os.PathLike[str]) -> SynthFolder | None:
        """The folder if it has a readable manifest (even a run's first, without
        cases), else None: for deciding whether to resume or redo it."""
        try:
            doc = json.loads((Path(root) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        return cls(root, doc) if isinstance(doc, dict) else None

    @staticmethod
    def exists(root: str | os.PathLike[str]) -> bool:
        return (Path(root) / MANIFEST).is_file()

    # ---- the manifest's fields ------------------------------------------------------
    @property
    def cases(self) -> list[dict[str, Any]]:
        """The written cases' records (``case``, ``index``, ``image``, ``label``,
        ``shape``, ``params``...), in index order."""
        return list(self.manifest.get("cases", []))

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the cases (mode, seed, format, checkpoint hash, shard...)."""
        return dict(self.manifest.get("settings", {}))

    @property
    def n(self) -> int:
        """Cases asked for (of a shard: of the whole run)."""
        return int(self.manifest.get("n", 0))

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The generator: ``file``, ``sha256``, ``step``, ``variant``, ``dims``."""
        return dict(self.manifest.get("checkpoint", {}))

    @property
    def dims(self) -> int:
        return int(self.checkpoint["dims"])

    @property
    def classes(self) -> dict[str, int]:
        """Class name -> value in the label maps."""
        return dict(self.manifest.get("classes", {}))

    @property
    def split(self) -> dict[str, Any] | None:
        """The generator's training / validation cases by content hash, if recorded."""
        return self.manifest.get("split")

    @cached_property
    def config(self) -> PreprocessConfig:
        """The generator's preprocessing: the grid, spacing and HU window of the cases."""
        return PreprocessConfig.from_dict(
            self.manifest["preprocess_config"], source=str(self.root / MANIFEST)
        )

    # ---- files --------------------------------------------------------------------------
    def read_case(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """A written case: ``(X, Y, Z)`` float32 HU image and uint8 label."""
        return read_case(self.root, record)

    def records(self) -> dict[int, dict[str, Any]]:
        """The complete cases on disk (their records), by index: a killed run's too."""
        return read_records(self.root)


def read_case(root: Path, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A written case of the folder ``root``: ``(X, Y, Z)`` float32 HU image (NIfTI,
    else its DICOM series) and uint8 label."""
    label = read_nifti(root / record["label"], None)[0].astype(np.uint8)
    if str(record["image"]).endswith(".nii.gz"):
        hu = read_nifti(root / record["image"])[0]
    else:
        hu = load(root / record["image"], with_label=False).image
    return hu, label


def read_records(root: Path) -> dict[int, dict[str, Any]]:
    """The complete cases in ``root``: case index -> record."""
    folder = root / RECORDS
    found = {}
    if folder.is_dir():
        for path in sorted(folder.glob("synth_*.json")):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged record: the case is redone
            found[int(rec["index"])] = rec
    return found


__all__ = ["DATALIST", "MANIFEST", "PREVIEW", "RECORDS", "SynthFolder", "read_case"]
