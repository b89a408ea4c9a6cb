"""The synthesis output folder: its files, its manifest, and resuming into it.

Layout (``OUT``)::

    images/synth_0000.nii.gz     HU, int16
    labels/synth_0000.nii.gz     class map, uint8
    dicom/synth_0000/            a CT series per case (--format dicom|both)
    dicom/synth_0000_seg.dcm     the label as DICOM SEG (--seg)
    dataset.json                 Decathlon/MONAI datalist of the synthetic cases
    manifest.json                version, checkpoint hash, settings, every case's parameters
    preview.png                  synthetic slices (top) next to real ones (bottom)
    cache/                       the real scans on the model grid (when --input is given)
    model/                       the generator fitted here (when no --model was given)
    .synth/cases/synth_0000.json a case's record, written after its files

A case counts as written only once its record exists, so a killed run redoes the
half-written case and no other; the manifest is rebuilt from the records at the end.

A shard (``settings["shard"] == [k, N]``) holds only the cases of
:func:`shard_range`; its manifest adds their ``indices`` and counts as complete when
they are all there. :mod:`medaug.synth.merge` joins complete shards into one folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import medaug
from medaug.data.synthfolder import (
    DATALIST,
    MANIFEST,
    PREVIEW,
    RECORDS,
    SynthFolder,
    read_case,
    read_records,
)
from medaug.errors import InputError
from medaug.io.atomic import TMP_MARK, is_temporary, write_json
from medaug.io.dicom_seg import write_seg
from medaug.io.dicom_write import new_series_info, write_ct_series
from medaug.io.nifti import write_volume
from medaug.synth.sampler import SynthCase

#: Entries this module writes; ``--overwrite`` removes exactly these.
OWN = ("images", "labels", "dicom", DATALIST, MANIFEST, PREVIEW, ".synth", "model", "cache")
#: Entries other commands add to a synthesis folder (evaluate, report).
LATER = ("evaluation.json", "report.html", "evaluation")


def shard_range(n: int, shard: tuple[int, int] | list[int] | None) -> range:
    """The case indices of shard ``(k, N)`` of ``n`` cases: the k-th of N contiguous,
    disjoint ranges that together cover ``range(n)`` (all of it when ``shard`` is None).

    Example:
        >>> [list(shard_range(5, (k, 3))) for k in range(3)]
        [[0], [1, 2], [3, 4]]
    """
    if shard is None:
        return range(n)
    k, count = shard
    return range(k * n // count, (k + 1) * n // count)


def records(out: Path) -> dict[int, dict[str, Any]]:
    """The complete cases in ``out``: case index -> record."""
    return read_records(out)


def prepare(out: Path, settings: dict[str, Any], n: int, early: bool = False) -> dict[int, dict]:
    """Make ``out`` ready for ``n`` cases made with ``settings``.

    With ``early`` (before the model is known) only the given settings are compared
    and a complete folder is not yet refused.

    Returns:
        the records of cases already written with the same settings (a resumed run).

    Raises:
        InputError: ``out`` holds other results (different settings, all ``n`` cases
            already, or files medaug did not write); :func:`clear` it first to replace them.
    """
    if not out.exists():
        return {}
    if not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if SynthFolder.exists(out):
        folder = SynthFolder.find(out)
        if folder is None:
            raise InputError(out / MANIFEST, "unreadable manifest; use {overwrite=True}")
        old = folder.settings
        keys = set(settings) if early else set(old) | set(settings)
        changed = [k for k in sorted(keys) if old.get(k) != settings.get(k)]
        if changed:
            what = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
            raise InputError(
                out,
                f"holds synthetic cases made with other settings ({what}); use {{overwrite=True}}",
            )
        if not early:
            remove_temporaries(out)  # a killed run's half-written files
        done = records(out)
        wanted = shard_range(n, settings.get("shard"))
        if not early and all(i in done for i in wanted):
            raise InputError(
                out,
                f"already holds {len(done)} cases made with these settings; use "
                "{overwrite=True} to make them again, or a larger {n} to add more",
            )
        return done
    foreign = [p.name for p in out.iterdir() if p.name not in OWN and not is_temporary(p)]
    if foreign:
        raise InputError(
            out,
            f"is not empty ({', '.join(sorted(foreign)[:3])}...); "
            "use another {out} or {overwrite=True}",
        )
    return {}


def clear(out: Path) -> None:
    """Remove what synthesis (and evaluate/report) wrote in ``out``, nothing else."""
    if not out.is_dir():
        return
    for name in (*OWN, *LATER):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    remove_temporaries(out)


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of a synthesis folder that holds at least one case
    (:meth:`SynthFolder.open`, as a mapping)."""
    return SynthFolder.open(out).manifest


def remove_temporaries(out: Path) -> None:
    """Delete the temporary files and folders a killed run left anywhere under ``out``
    (the completed cases' final names are untouched)."""
    for path in sorted(out.rglob(f"*{TMP_MARK}*"), key=lambda p: len(p.parts), reverse=True):
        if is_temporary(path) and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_record(out: Path, record: dict[str, Any]) -> None:
    write_json(out / RECORDS / f"{record['case']}.json", record)


def manifest(
    out: Path,
    settings: dict[str, Any],
    info: dict[str, Any],
    n: int,
    done: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Write ``manifest.json``: settings, provenance and the records of cases < n (of
    a shard: of its cases, whose index range ``[start, stop)`` it adds as ``indices``)."""
    wanted = shard_range(n, settings.get("shard"))
    cases = [done[i] for i in sorted(done) if i in wanted]
    doc = {
        "medaug_version": medaug.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        **info,
        "n": n,
        **({"indices": [wanted.start, wanted.stop]} if "shard" in settings else {}),
        "complete": len(cases) == len(wanted),
        "cases": cases,
    }
    write_json(out / MANIFEST, doc)
    return doc


def datalist(out: Path, doc: dict[str, Any], classes: dict[str, int]) -> Path:
    """``dataset.json`` in the Medical Segmentation Decathlon form, which
    ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` reads."""
    dims = 3
    training = [{"image": f"./{c['image']}", "label": f"./{c['label']}"} for c in doc["cases"]]
    data = {
        "name": "medaug synthetic",
        "description": f"{len(training)} synthetic CT cases made by medaug {medaug.__version__}",
        "reference": "medaug (synthetic data, no patient)",
        "licence": "synthetic",
        "release": medaug.__version__,
        "tensorImageSize": f"{dims}D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(v): k for k, v in classes.items()}},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    path = out / DATALIST
    write_json(path, data)
    return path


def label_voxels(label: np.ndarray, classes: dict[str, int]) -> dict[str, int]:
    return {name: int((label == k).sum()) for name, k in classes.items()}


class CaseWriter:
    """Writes one case's files, then its record (safe to call from writer threads).

    Args:
        out: the synthesis folder.
        fmt: ``nifti``, ``dicom`` or ``both`` for the image.
        seg: also write the label as DICOM SEG.
        classes: class name -> label value (the generator's).
        entropy: what makes each case's DICOM UIDs unique (the checkpoint's hash).
    """

    def __init__(self, out: Path, fmt: str, seg: bool, classes: dict[str, int], entropy: str):
        self.out, self.fmt, self.seg = out, fmt, seg
        self.classes, self.entropy = classes, entropy

    def write(self, case: SynthCase) -> dict[str, Any]:
        name = case.name
        rec: dict[str, Any] = {"case": name, "index": case.index, "shape": list(case.image.shape)}
        hu = np.clip(np.rint(case.image), -32768, 32767).astype(np.int16)
        if self.fmt in ("nifti", "both"):
            write_volume(hu, case.affine, self.out / "images" / f"{name}.nii.gz")
            rec["image"] = f"images/{name}.nii.gz"
        write_volume(case.label, case.affine, self.out / "labels" / f"{name}.nii.gz")
        rec["label"] = f"labels/{name}.nii.gz"
        if self.fmt in ("dicom", "both"):
            rec |= self._dicom(case, hu)
            rec.setdefault("image", rec["dicom"])
        rec["label_voxels"] = label_voxels(case.label, self.classes)
        rec["params"] = case.params
        write_record(self.out, rec)
        return rec

    def _dicom(self, case: SynthCase, hu: np.ndarray) -> dict[str, str]:
        name = case.name
        info = new_series_info(
            f"SYNTHETIC^{name}", f"MEDAUG-{name}", entropy=[self.entropy, *case.params["seed"]]
        )
        folder = self.out / "dicom" / name
        files = write_ct_series(hu, case.affine, folder, info, signed=True)
        rec = {"dicom": f"dicom/{name}"}
        if self.seg:
            write_seg(case.label, files, self.out / "dicom" / f"{name}_seg.dcm", self.classes)
            rec["seg"] = f"dicom/{name}_seg.dcm"
        return rec


__all__ = [
    "DATALIST",
    "LATER",
    "MANIFEST",
    "OWN",
    "PREVIEW",
    "RECORDS",
    "CaseWriter",
    "clear",
    "datalist",
    "manifest",
    "prepare",
    "read_case",
    "read_manifest",
    "records",
    "remove_temporaries",
    "shard_range",
    "write_record",
]
