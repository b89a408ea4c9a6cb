"""Patient-level splits: slices and series of one patient never sit on both sides.

``preprocess`` writes a cache's splits (``splits.json``); a checkpoint records the
cases it trained on by content hash (``split_record``), so later stages recognise
them in another preprocessing of the same scans (``recorded_sides``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medaug.errors import ConfigError, InputError
from medaug.io.atomic import write_json

#: The splits file of a cache folder.
SPLITS = "splits.json"


def make_splits(
    patients: dict[str, str],
    val_fraction: float = 0.2,
    folds: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Split cases into train/val by patient.

    Args:
        patients: case id -> patient (``patient_0003``); cases of one patient stay
            together.
        val_fraction: share of patients held out (one split); at least one patient
            when the fraction is positive and two or more patients exist.
        folds: K-fold cross-validation over patients instead (each patient is in the
            validation side of exactly one fold).
        seed: the shuffle; same seed, same splits.

    Returns:
        ``{"seed", "val_fraction" | "folds", "patients", "splits": [{"train": [...],
        "val": [...]}, ...]}`` with case ids sorted on each side.
    """
    names = sorted(set(patients.values()))
    n = len(names)
    order = [names[i] for i in np.random.default_rng(seed).permutation(n)]
    doc: dict[str, Any] = {"seed": seed, "patients": dict(sorted(patients.items()))}
    if folds is not None:
        if folds < 2 or folds > n:
            raise ConfigError(f"{{folds}} must be between 2 and the {n} patients, got {folds}")
        doc["folds"] = folds
        held = [set(order[k::folds]) for k in range(folds)]
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"{{val_fraction}} must be in [0, 1), got {val_fraction}")
        n_val = 0 if val_fraction == 0 or n < 2 else max(1, round(val_fraction * n))
        doc["val_fraction"] = val_fraction
        held = [set(order[:n_val])]
    doc["splits"] = [
        {
            "train": sorted(c for c, p in patients.items() if p not in val),
            "val": sorted(c for c, p in patients.items() if p in val),
        }
        for val in held
    ]
    return doc


def save_splits(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    write_json(path, doc)


def load_split(cache: str | os.PathLike[str], fold: int = 0) -> tuple[list[str], list[str]]:
    """(train case ids, val case ids) of one fold from a cache's ``splits.json``."""
    path = Path(cache) / SPLITS
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no splits.json: not a cache that preprocess wrote") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable splits ({exc})") from None
    splits = doc["splits"]
    if not 0 <= fold < len(splits):
        raise ConfigError(f"fold {fold} does not exist; {path} has {len(splits)} split(s)")
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def split_record(
    cache: Any, fold: int = 0, cases: tuple[list[str], list[str]] | None = None
) -> dict[str, Any]:
    """Which cases (and patients) of a cache a model trains on, by content hash.

    Stored in every checkpoint, so that a later step (memorization check, leakage
    check) can recognise the training cases in a fresh preprocessing of the scans.

    Args:
        cache: an open :class:`~medaug.preprocess.cache.Cache`.
        fold: the split of the cache's ``splits.json``...
        cases: ...or explicit ``(train, val)`` case ids (``fold`` is then None).

    Returns:
        ``{"fold", "train": [{"case", "patient", "sha256"}...], "val": [...]}``.
    """
    train, val = cases if cases is not None else load_split(cache.root, fold)

    def side(cases: list[str]) -> list[dict[str, str]]:
        return [
            {
                "case": c,
                "patient": str(cache.records[c].get("patient", c)),
                "sha256": cache.content_hash(c),
            }
            for c in cases
        ]

    return {"fold": None if cases else fold, "train": side(train), "val": side(val)}


def recorded_sides(cache: Any, split: dict[str, Any] | None) -> tuple[list[str], list[str]] | None:
    """A cache's cases on the two sides of a checkpoint's recorded split.

    Returns:
        ``(training cases, all other cases)`` matched by content hash, or None when
        no training cases are recorded.
    """
    train = {c["sha256"] for c in (split or {}).get("train", [])}
    if not train:
        return None
    inside = {c: cache.content_hash(c) in train for c in cache.case_ids}
    return [c for c, t in inside.items() if t], [c for c, t in inside.items() if not t]


def training_cases(cache: Any, split: dict[str, Any] | None) -> list[str]:
    """The real cases a generator may be mixed with or start from: its training side
    when its checkpoint recorded one, else every case of the cache."""
    sides = recorded_sides(cache, split)
    return list(cache.case_ids) if sides is None else sides[0]
