"""Reading and writing scans: DICOM series, NIfTI files and dataset layouts.

Example:
    >>> from medaug import io
    >>> refs = io.discover("ct_dir")                     # doctest: +SKIP
    >>> scan = io.load(refs[0])                          # float32 HU, RAS affine
    >>> io.save_nifti(scan, "case.nii.gz", label_path="case_label.nii.gz")
"""

from __future__ import annotations

import os

from medaug.errors import InputError, MedaugError
from medaug.io.discovery import Discovery, Note, discover, display_path
from medaug.io.nifti import read_nifti, save_nifti
from medaug.io.scan import Scan, ScanRef


def load(ref: ScanRef | str | os.PathLike[str], *, with_label: bool = True) -> Scan:
    """Read one scan into memory.

    Args:
        ref: a :class:`ScanRef` from :func:`discover`, or a path that holds exactly
            one scan (a NIfTI file or a folder with one DICOM series).
        with_label: also read the paired label onto the image grid.

    Returns:
        a :class:`Scan`: (X, Y, Z) float32 HU image, uint8 label or None, RAS affine,
        and provenance (source kind, files, transfer syntaxes, warnings and
        accepted deviations, what the decoders warned about a file; never patient
        identifiers).

    Raises:
        MedaugError: the scan is unusable (its ``error``).
        InputError: a file turned out broken
            while reading pixels, or the label does not fit the image.
    """
    if not isinstance(ref, ScanRef):
        found = discover(ref)
        if len(found) != 1:
            raise InputError(
                ref, f"holds {len(found)} scans; pass one of them from medaug.io.discover()"
            )
        ref = found[0]
    if ref.error is not None:
        raise MedaugError(ref.error)
    warnings = list(ref.warnings)
    provenance: dict[str, object] = {
        "kind": ref.kind,
        "source": str(ref.source),
        "files": len(ref.files),
    }
    if ref.kind == "dicom":
        from medaug.io.dicom import read_series

        plan = ref.series
        root = ref.root or ref.source.parent  # files named as discovery names them
        image = read_series(plan, notes=warnings, describe=lambda p: display_path(p, root))
        affine = plan.affine
        provenance.update(
            modality=plan.modality,
            transfer_syntaxes=list(plan.transfer_syntaxes),
            slice_spacing_mm=plan.slice_spacing,
            interpolated_slices=plan.resampled,
        )
    else:
        image, affine = read_nifti(ref.source)
    label = None
    if with_label and ref.label is not None:
        from medaug.io.labels import label_on_grid

        label, label_warnings = label_on_grid(ref.label, image.shape, affine, image)
        warnings.extend(label_warnings)
        provenance["label"] = str(ref.label)
    provenance["warnings"] = warnings
    return Scan(image=image, affine=affine, label=label, case_id=ref.case_id, provenance=provenance)


__all__ = ["Discovery", "Note", "Scan", "ScanRef", "discover", "load", "read_nifti", "save_nifti"]
