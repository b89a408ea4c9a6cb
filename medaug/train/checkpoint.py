"""Checkpoints: one ``.pt`` file per save, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers and strings: no pickled classes, so loading
one from an untrusted place runs no code. Configs are stored as JSON text. Every
file is written to a temporary name and renamed, so a killed run never leaves a
truncated checkpoint behind.

This module is the only code that knows a generator checkpoint's keys: ``format``,
``medaug_version``, ``step``, the JSON documents of :class:`RunInfo`
(``model_config``, ``train_config``, ``preprocess_config``, ``fingerprint``,
``split``: the training and validation cases by content hash), ``model`` and ``ema``
state dicts, ``ema_steps``, ``optimizers`` / ``schedulers`` per phase, ``scaler``,
``rng``. Everything else reads a :class:`Checkpoint`, once, and asks it for typed
fields, as nnU-Net's ``PlansManager`` exposes a plan.

Example:
    >>> ckpt = Checkpoint.load("runs/00003-vaegan-2d")  # the newest one  # doctest: +SKIP
    >>> ckpt.step, ckpt.model_config.variant, ckpt.preprocess.grid             # doctest: +SKIP
    (2000, 'vaegan', (64, 64))
    >>> model = ckpt.build_model()                                              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from medaug import __version__
from medaug.errors import InputError
from medaug.io.atomic import atomic_path
from medaug.models.base import GenerativeModel
from medaug.models.config import ModelConfig
from medaug.models.registry import build_model
from medaug.preprocess import layout as LY
from medaug.preprocess.config import PreprocessConfig
from medaug.train.config import TrainConfig
from medaug.train.runs import runs_in

FORMAT = 1
_NAME = re.compile(r"^step_(\d{8})\.pt$")
#: The JSON documents of a generator checkpoint, as :class:`RunInfo` fields.
_DOCUMENTS = {
    "model_config": "model_config",
    "train_config": "train_config",
    "preprocess": "preprocess_config",
    "fingerprint": "fingerprint",
    "split": "split",
}


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """The step of a checkpoint file, from its name (no need to read it)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise InputError(path, "not a checkpoint file name (step_NNNNNNNN.pt)")
    return int(match.group(1))


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def newest_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file as given; a run folder's newest checkpoint; or a folder of
    runs' (``--out`` of ``medaug train``) newest run's newest checkpoint."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = list_checkpoints(path)
    if not found:
        runs = [r for r in runs_in(path) if list_checkpoints(r)]
        found = list_checkpoints(runs[-1]) if runs else []
    if not found:
        raise InputError(path, "no checkpoint here (checkpoints/step_*.pt of a run folder)")
    return found[-1]


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state(
    path: str | os.PathLike[str], map_location: Any = "cpu", kind: str = "generator"
) -> dict[str, Any]:
    """One checkpoint file's content, read without running code, checked to be a
    medaug checkpoint of ``kind`` (``generator`` or ``segmenter``)."""
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
    return state


@dataclass(frozen=True)
class RunInfo:
    """What a generator checkpoint records about its run besides the weights."""

    model_config: ModelConfig
    train_config: TrainConfig  # with ``steps`` the run's planned total
    preprocess: PreprocessConfig  # maps the model's outputs back to HU
    fingerprint: dict[str, Any]  # the cache's dataset fingerprint
    split: dict[str, Any] | None  # training / validation cases by content hash

    def documents(self) -> dict[str, Any]:
        """The checkpoint's JSON documents, as plain mappings (``config.json`` too)."""
        docs: dict[str, Any] = {}
        for field, key in _DOCUMENTS.items():
            value = getattr(self, field)
            docs[key] = value.to_dict() if hasattr(value, "to_dict") else value
        if self.model_config.conditional or self.model_config.role == "layout":
            docs["conditioning"] = self.conditioning()
        return docs

    def conditioning(self) -> dict[str, Any]:
        """Which layout channels the model is conditioned on, and how each is derived."""
        pp = self.preprocess
        return LY.describe(
            self.model_config.layout, list(pp.labels), pp.body_threshold_hu, pp.tissue_hu
        )


@dataclass
class Trainables:
    """The objects a checkpoint saves and a resumed run restores.

    Attributes:
        net: the model being trained.
        optims / scheds: Adam and its learning-rate schedule, per phase.
        ema: the weights' moving average (``AveragedModel``), or None.
        scaler: the fp16 gradient scaler (disabled otherwise).
    """

    net: GenerativeModel
    optims: dict[str, Any]
    scheds: dict[str, Any]
    ema: Any
    scaler: torch.amp.GradScaler


def save_checkpoint(
    run_dir: str | os.PathLike[str], step: int, info: RunInfo, training: Trainables, keep: int
) -> Path:
    """Write the checkpoint of ``step`` (atomically) and prune all but ``keep``."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    ema = training.ema
    state = {
        "format": FORMAT,
        "medaug_version": __version__,
        "step": step,
        **{k: json.dumps(v) for k, v in info.documents().items()},
        "model": training.net.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else {},
        "ema_steps": ema.n_averaged if ema is not None else torch.zeros(()),
        "optimizers": {p: o.state_dict() for p, o in training.optims.items()},
        "schedulers": {p: s.state_dict() for p, s in training.scheds.items()},
        "scaler": training.scaler.state_dict(),
        "rng": rng,
    }
    path = Path(run_dir) / "checkpoints" / checkpoint_name(step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


class Checkpoint:
    """A generator checkpoint, read once, with typed views of what it records.

    Args:
        state: the file's content (:func:`read_state`).
        path: the file it came from.
    """

    def __init__(self, state: dict[str, Any], path: str | os.PathLike[str]):
        self._state = state
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: Any = "cpu") -> Checkpoint:
        """Read a checkpoint file, or a run folder's (or a folder of runs') newest one."""
        file = newest_checkpoint(path)
        return cls(read_state(file, map_location), file)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, step={self.step})"

    @property
    def step(self) -> int:
        """Optimisation steps done when it was saved."""
        return int(self._state["step"])

    @property
    def medaug_version(self) -> str:
        return str(self._state.get("medaug_version", ""))

    def _document(self, key: str) -> Any:
        return json.loads(self._state[key]) if key in self._state else None

    @cached_property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self._document("model_config"), source=str(self.path))

    @cached_property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self._document("train_config"), source=str(self.path))

    @cached_property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing its training cache was made with (the HU mapping, the grid)."""
        return PreprocessConfig.from_dict(self._document("preprocess_config"), str(self.path))

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        return self._document("fingerprint") or {}

    @cached_property
    def split(self) -> dict[str, Any] | None:
        """The training and validation cases by content hash (or None, not recorded)."""
        return self._document("split")

    @property
    def conditioning(self) -> dict[str, Any] | None:
        """A conditional model's layout channels and how each is derived (else None)."""
        return self._document("conditioning") if "conditioning" in self._state else None

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the file (synthesis folders and the gain experiment name it so)."""
        return file_sha256(self.path)

    def build_model(self, ema: bool = True, device: Any = "cpu") -> GenerativeModel:
        """The model it saved, in eval mode on ``device``.

        Args:
            ema: the EMA weights (what sample grids show) where the run kept them.
        """
        model = build_model(self.model_config)
        weights = self._state["ema"] if ema and self._state.get("ema") else self._state["model"]
        model.load_state_dict(weights)
        return model.to(device).eval()

    def restore(self, training: Trainables) -> int:
        """Load weights, optimizer, scheduler, EMA, scaler and RNG state into a run
        being resumed; returns the step to continue from."""
        state = self._state
        training.net.load_state_dict(state["model"])
        for p, o in training.optims.items():
            o.load_state_dict(state["optimizers"][p])
            training.scheds[p].load_state_dict(state["schedulers"][p])
        if training.ema is not None and state["ema"]:
            training.ema.module.load_state_dict(state["ema"])
            training.ema.n_averaged.copy_(state["ema_steps"])
        if state["scaler"]:
            training.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        return self.step


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", kind: str = "generator"
) -> dict[str, Any]:
    """A checkpoint file's raw content (with its ``path`` added), for tools that need
    its tensors as they are; everything else uses :meth:`Checkpoint.load`. A run
    folder gives its newest checkpoint; a folder of runs its newest run's.

    ``kind`` is what the file must hold: a ``generator`` (``medaug train``) or a
    ``segmenter`` (``medaug segment train``); both share this safe format."""
    file = newest_checkpoint(path) if kind == "generator" else Path(path)
    state = read_state(file, map_location, kind)
    state["path"] = str(file)
    return state


def configs(state: dict[str, Any]) -> dict[str, Any]:
    """The JSON documents of a raw checkpoint (:func:`load_checkpoint`), parsed."""
    keys = ("model_config", "train_config", "preprocess_config", "fingerprint", "split")
    return {k: json.loads(state[k]) if k in state else None for k in keys}


def load_model(
    path: str | os.PathLike[str], ema: bool = True, device: Any = "cpu"
) -> tuple[GenerativeModel, PreprocessConfig]:
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
    ckpt = Checkpoint.load(path)
    return ckpt.build_model(ema, device), ckpt.preprocess


__all__ = [
    "Checkpoint",
    "RunInfo",
    "Trainables",
    "checkpoint_step",
    "configs",
    "file_sha256",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "newest_checkpoint",
    "save_checkpoint",
]
