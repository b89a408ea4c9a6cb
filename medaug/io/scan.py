"""The two objects every stage passes around: ``ScanRef`` (where a scan is) and
``Scan`` (the scan itself, in Hounsfield units on a RAS-referenced grid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medaug.io import geometry

ScanKind = Literal["dicom", "nifti"]


@dataclass
class ScanRef:
    """One scan found by :func:`medaug.io.discover`, not yet read.

    Attributes:
        case_id: ``case_0000``, ``case_0001``, ... in discovery order. Logs and
            reports name cases by this index, never by patient name or ID.
        kind: ``dicom`` (a series of single-frame files) or ``nifti``.
        source: the NIfTI file, the folder that holds the series, or the file of a
            multi-frame image (the first part of a concatenation).
        files: the series' slice files sorted along the slice normal, or the one
            NIfTI file.
        label: the paired label NIfTI, if any.
        warnings: deviations found while reading headers that still leave the
            scan usable (each one line, naming the file where it matters).
        error: why the scan cannot be used; :func:`medaug.io.load` raises it.
        series: the DICOM read plan (slice positions, grid), for DICOM refs.
        patient: ``patient_0000``, ... : scans that share it come from one patient
            (the same top-level folder of a DICOM tree, or the same NIfTI case stem).
            Splits keep a patient on one side.
        root: the folder discovery searched; messages name files relative to it.
    """

    case_id: str
    kind: ScanKind
    source: Path
    files: tuple[Path, ...] = field(repr=False)
    label: Path | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    series: Any = field(
        default=None, repr=False
    )  # medaug.io.dicom.SeriesPlan; typed loosely to avoid an import cycle
    patient: str = ""
    root: Path | None = None

    @property
    def usable(self) -> bool:
        return self.error is None


@dataclass
class Scan:
    """A CT volume in Hounsfield units, optionally with its label map.

    Attributes:
        image: (X, Y, Z) float32 HU, RescaleSlope/Intercept applied.
        affine: (4, 4) float64, voxel (i, j, k) -> RAS mm.
        label: (X, Y, Z) uint8 on the same grid as ``image`` (0 = background), or None.
        case_id: the index name from discovery (``case_0003``).
        provenance: where the scan came from and what was accepted on the way: source
            kind, file count, transfer syntax, warnings, resampling done. It never
            holds patient names, IDs, dates or institution names.
    """

    image: np.ndarray
    affine: np.ndarray
    label: np.ndarray | None = None
    case_id: str = "case_0000"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"Scan.image must be 3D (X, Y, Z), got shape {self.image.shape}")
        if self.label is not None and self.label.shape != self.image.shape:
            raise ValueError(
                f"Scan.label shape {self.label.shape} differs from image shape {self.image.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.image.shape
        return (int(x), int(y), int(z))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (i, j, k)."""
        return geometry.spacing(self.affine)

    @property
    def orientation(self) -> str:
        """Axis code such as ``LPS`` (DICOM-native) or ``RAS``."""
        return geometry.orientation_code(self.affine)

    @property
    def warnings(self) -> list[str]:
        return list(self.provenance.get("warnings", []))
