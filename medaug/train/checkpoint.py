"""Checkpoints: one ``.pt`` file per save, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers and strings: no pickled classes, so loading
one from an untrusted place runs no code. Configs are stored as JSON text. Every
file is written to a temporary name and renamed, so a killed run never leaves a
truncated checkpoint behind.

Contents: ``format``, ``medaug_version``, ``step``, ``model_config``,
``train_config``, ``preprocess_config``, ``fingerprint``, ``split`` (the training and
validation cases by content hash; JSON), ``model`` and ``ema``
state dicts, ``optimizers`` / ``schedulers`` per phase, ``scaler``, ``rng``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from medaug.errors import InputError

FORMAT = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_checkpoint(run_dir: str | os.PathLike[str], state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``state["step"]`` and prune old ones."""
    from medaug.io.atomic import atomic_path

    path = Path(run_dir) / "checkpoints" / checkpoint_name(int(state["step"]))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", kind: str = "generator"
) -> dict[str, Any]:
    """Read a checkpoint file without running code. A run folder gives its newest
    checkpoint; a folder of runs (``--out`` of ``medaug train``) its newest run's.

    ``kind`` is what the file must hold: a ``generator`` (``medaug train``) or a
    ``segmenter`` (``medaug segment train``); both share this safe format."""
    path = Path(path)
    if path.is_dir() and kind == "generator":
        from medaug.train.runs import runs_in

        found = list_checkpoints(path)
        if not found:
            runs = [r for r in runs_in(path) if list_checkpoints(r)]
            found = list_checkpoints(runs[-1]) if runs else []
        if not found:
            raise InputError(path, "no checkpoint here (checkpoints/step_*.pt of a run folder)")
        path = found[-1]
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no such checkpoint") from None
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable medaug checkpoint ({first[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(path, f"not a medaug checkpoint of format {FORMAT}")
    if state.get("kind", "generator") != kind:
        raise InputError(path, f"a medaug {state.get('kind')} checkpoint, not a {kind}")
    state["path"] = str(path)
    return state


def configs(state: dict[str, Any]) -> dict[str, Any]:
    """The JSON documents of a checkpoint, parsed."""
    keys = ("model_config", "train_config", "preprocess_config", "fingerprint", "split")
    return {k: json.loads(state[k]) if k in state else None for k in keys}


def load_model(path: str | os.PathLike[str], ema: bool = True, device: Any = "cpu"):
    """Rebuild the model saved in a checkpoint (or a run folder's newest one).

    Args:
        path: checkpoint file or run folder.
        ema: load the EMA weights (what sample grids show) where the run kept them.
        device: where to put the model.

    Returns:
        ``(model, preprocess_config)``: the model in eval mode, and the
        ``PreprocessConfig`` that maps its outputs back to HU (``medaug.preprocess.invert``).

    Example:
        >>> model, pp = load_model("runs/00003-vaegan-2d")              # doctest: +SKIP
        >>> image, label = model.to_pair(model.sample(8))               # doctest: +SKIP
    """
    return model_from_state(load_checkpoint(path), ema, device)


def model_from_state(state: dict[str, Any], ema: bool = True, device: Any = "cpu"):
    """:func:`load_model` for a checkpoint already read with :func:`load_checkpoint`."""
    from medaug.models import ModelConfig, build_model
    from medaug.preprocess.config import PreprocessConfig

    docs = configs(state)
    model = build_model(ModelConfig.from_dict(docs["model_config"]))
    weights = state["ema"] if ema and state.get("ema") else state["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), PreprocessConfig.from_dict(docs["preprocess_config"])
