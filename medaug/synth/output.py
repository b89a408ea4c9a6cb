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

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import medaug
from medaug.errors import ConfigError, InputError
from medaug.io.atomic import TMP_MARK, is_temporary, write_json

MANIFEST = "manifest.json"
DATALIST = "dataset.json"
PREVIEW = "preview.png"
RECORDS = Path(".synth") / "cases"
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
    folder = out / RECORDS
    found = {}
    if folder.is_dir():
        for path in sorted(folder.glob("synth_*.json")):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged record: the case is redone
            found[int(rec["index"])] = rec
    return found


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
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            doc = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(manifest, f"unreadable manifest ({exc}); use --overwrite") from None
        old = doc.get("settings", {})
        keys = set(settings) if early else set(old) | set(settings)
        changed = [k for k in sorted(keys) if old.get(k) != settings.get(k)]
        if changed:
            what = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in changed[:3])
            raise InputError(
                out, f"holds synthetic cases made with other settings ({what}); use --overwrite"
            )
        if not early:
            remove_temporaries(out)  # a killed run's half-written files
        done = records(out)
        wanted = shard_range(n, settings.get("shard"))
        if not early and all(i in done for i in wanted):
            raise InputError(
                out,
                f"already holds {len(done)} cases made with these settings; use --overwrite "
                "to make them again, or a larger --n to add more",
            )
        return done
    foreign = [p.name for p in out.iterdir() if p.name not in OWN and not is_temporary(p)]
    if foreign:
        raise InputError(
            out,
            f"is not empty ({', '.join(sorted(foreign)[:3])}...); use another --out or --overwrite",
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
    """The manifest of a synthesis folder that holds at least one case."""
    path = out / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(out, "not a medaug synthesis folder (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable manifest ({exc})") from None
    if not doc.get("cases"):
        raise InputError(path, "holds no synthetic cases")
    return doc


def read_case(out: Path, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A written case: ``(X, Y, Z)`` float32 HU image (NIfTI, else its DICOM series)
    and uint8 label."""
    from medaug.io.nifti import read_nifti

    label = read_nifti(out / record["label"], None)[0].astype(np.uint8)
    if str(record["image"]).endswith(".nii.gz"):
        hu = read_nifti(out / record["image"])[0]
    else:
        from medaug.io import load

        hu = load(out / record["image"], with_label=False).image
    return hu, label


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


def check_settings(n: int, mode: str, fmt: str, strength: float, batch_size: int) -> None:
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if fmt not in ("nifti", "dicom", "both"):
        raise ConfigError(f"--format must be nifti, dicom or both, got {fmt!r}")
    if strength < 0:
        raise ConfigError(f"--strength must be >= 0, got {strength}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    from medaug.synth.sampler import MODES

    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
