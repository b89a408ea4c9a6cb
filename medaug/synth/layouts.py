"""Where a mask-conditioned generator's layouts come from, per synthetic case.

Every source has the same two steps, as the latents do: ``plan(index, seed)`` draws
everything random about case ``index`` into a plain dict (it goes into the manifest),
and ``make(params)`` applies it, deterministically, to a uint8 layout map on the model
grid: ``(X, Y)`` for a 2D model, ``(X, Y, Z)`` for a 3D one.

- ``real`` (:class:`~medaug.synth.masks.RealMasks`): a training case's layout under a
  random affine + elastic transform.
- ``learned`` (:class:`LearnedMasks`): a draw of the mask generator stored beside the
  image model (``RUN/masks/``), the target cleaned to its largest component.
- a path (:class:`UserLayouts`): the user's label maps
  (:class:`~medaug.synth.masks.UserMasks`), joined with the context of a training
  case where the model's layout has context channels.
- ``case`` (:class:`CaseLayouts`): a training case's own layout, untransformed
  (``perturb`` keeps its case's layout as well as its appearance).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from scipy import ndimage

from medaug.errors import ConfigError
from medaug.preprocess import layout as LY
from medaug.preprocess.cache import Cache, case_number
from medaug.synth.masks import RealMasks, UserMasks
from medaug.train.checkpoint import Checkpoint, list_checkpoints
from medaug.train.runs import runs_in

#: Mask-generator draws per case before giving up on one with a target.
LEARNED_TRIES = 10
#: The choices of ``--masks`` besides a path.
SOURCES = ("real", "learned")


class LayoutSource(Protocol):
    def plan(self, index: int, seed: int) -> dict[str, Any]: ...

    def make(self, params: dict[str, Any]) -> np.ndarray: ...


def _case_id(number: int) -> str:
    return f"case_{number:04d}"


def cached_layout(cache: Cache, case_id: str, channels: str, z: int | None) -> np.ndarray:
    """A cached case's layout on the model grid: its slice ``z`` (X, Y), or (X, Y, Z)."""
    label = np.asarray(cache.array(case_id, "label"))  # (Z, X, Y)
    context = None
    if LY.context_offset(channels):
        context = np.asarray(cache.array(case_id, "context"))
    layout = LY.compose(label, context, channels)
    return np.array(layout[z]) if z is not None else np.ascontiguousarray(layout.transpose(1, 2, 0))


class CaseLayouts:
    """A training case's own layout (the perturb mode's): slice ``params["slice"]``
    of case ``params["source"]`` (2D), or the whole case (3D)."""

    def __init__(self, cache: Cache, channels: str):
        self.cache, self.channels = cache, channels

    def plan(self, index: int, seed: int) -> dict[str, Any]:  # the latent plan decides
        return {"masks": "case"}

    def make(self, params: dict[str, Any]) -> np.ndarray:
        return cached_layout(
            self.cache, _case_id(params["case"]), self.channels, params.get("slice")
        )


class UserLayouts:
    """The user's label maps as layouts: each map's label classes, over the context
    of a training case (drawn from ``(seed, index)``) where the layout has context.

    The context case's slice (2D) is the one at the same relative height among its
    target slices as the user's slice among the map's.
    """

    def __init__(
        self, masks: UserMasks, cache: Cache | None, cases: list[str], channels: str, dims: int
    ):
        self.masks, self.cache, self.cases = masks, cache, cases
        self.channels, self.dims = channels, dims
        if LY.context_offset(channels) and (cache is None or not cases):
            raise ConfigError(
                f"this model's layout ({channels}) has context channels, and user masks "
                "carry only labels: give {input} scans, whose context they are drawn over"
            )

    def sha256(self) -> str:
        """A hash of the maps on the grid: a resumed synthesis must use the same ones
        (the manifest names no path)."""
        digest = hashlib.sha256()
        for k in range(len(self.masks)):
            digest.update(np.ascontiguousarray(self.masks.class_map(k)).tobytes())
        return digest.hexdigest()

    def plan(self, index: int, seed: int) -> dict[str, Any]:
        params = self.masks.plan(index, seed)
        params.pop("name", None)  # a file name may name a patient: the map's number only
        if LY.context_offset(self.channels):
            rng = np.random.default_rng([seed, index, 2])
            case_id = self.cases[int(rng.integers(len(self.cases)))]
            params["context_case"] = case_number(case_id)
            if self.dims == 2:
                params["context_slice"] = self._context_slice(case_id, params)
        return params

    def _context_slice(self, case_id: str, params: dict[str, Any]) -> int:
        assert self.cache is not None
        slices = self.masks.slices(params["map"])
        u = slices.index(params["slice"]) / max(1, len(slices) - 1) if len(slices) > 1 else 0.5
        on = self.cache.records[case_id]["target_slices"] or list(
            range(self.cache.records[case_id]["shape"][2])
        )
        return int(on[min(len(on) - 1, round(u * (len(on) - 1)))])

    def make(self, params: dict[str, Any]) -> np.ndarray:
        label = self.masks.make(params)
        if not LY.context_offset(self.channels):
            return label
        assert self.cache is not None
        z = params.get("context_slice")
        case_id = _case_id(params["context_case"])
        context = np.asarray(self.cache.array(case_id, "context"))
        context = np.array(context[z]) if z is not None else context.transpose(1, 2, 0)
        return LY.compose(label, np.ascontiguousarray(context), self.channels)


class LearnedMasks:
    """Layouts sampled from a mask generator (a model of the image model's family
    trained on the layout maps alone, ``role="layout"``).

    The target is cleaned to its largest connected component per class (a generator
    also draws specks); a draw without target voxels is drawn again, up to
    :data:`LEARNED_TRIES` times, the attempt recorded.
    """

    def __init__(self, checkpoint: Checkpoint, channels: str, device: torch.device):
        self.checkpoint = checkpoint.path
        self.model = checkpoint.build_model(ema=True, device=device)
        self.channels, self.device = channels, device
        cfg = self.model.config
        if cfg.role != "layout" or cfg.layout != channels:
            raise ConfigError(
                f"{checkpoint.path}: not a mask generator of layout {channels} "
                f"(role {cfg.role}, layout {cfg.layout})"
            )
        #: voxels the clean-up removed and voxels kept, over every case made
        self.removed, self.kept = 0, 0

    def plan(self, index: int, seed: int) -> dict[str, Any]:
        for attempt in range(LEARNED_TRIES):
            layout, removed = self.draw(seed, index, attempt)
            if (LY.target_of(layout, self.channels) > 0).any():
                return {"masks": "learned", "attempt": attempt, "removed_voxels": removed}
        raise ConfigError(
            f"{self.checkpoint}: the mask generator drew no target in {LEARNED_TRIES} tries "
            f"for case {index}; train it longer or use {{masks=real}}"
        )

    def make(self, params: dict[str, Any]) -> np.ndarray:
        seed, index = params["seed"]
        layout, removed = self.draw(seed, index, params["attempt"])
        self.removed += removed
        self.kept += int((LY.target_of(layout, self.channels) > 0).sum())
        return layout

    @torch.no_grad()
    def draw(self, seed: int, index: int, attempt: int = 0) -> tuple[np.ndarray, int]:
        """One prior draw of case ``index`` (a layout on the model grid, its target
        cleaned by :func:`clean_target`) and the voxels the clean-up cut; a draw without
        target is returned as it is (:meth:`plan` draws again with the next attempt)."""
        state = np.random.SeedSequence([seed, index, 3, attempt]).generate_state(1, np.uint64)
        gen = torch.Generator().manual_seed(int(state[0] >> 1))
        z = torch.randn((1, *self.model.latent_shape), generator=gen).to(self.device)
        _, layout = self.model.to_pair(self.model.decode(z).float())
        return clean_target(layout[0, 0].cpu().numpy(), self.channels)


def clean_target(layout: np.ndarray, channels: str) -> tuple[np.ndarray, int]:
    """Each label class of a layout cut to its largest connected component; the
    voxels cut become the context under them (the body, soft tissue) or background.
    Returns the cleaned layout and how many voxels were cut."""
    offset = LY.context_offset(channels)
    out, removed = layout.copy(), 0
    fill = 0 if offset == 0 else (1 if channels == "target+body" else 3)  # soft tissue
    for cls in np.unique(layout[layout > offset]):
        parts, n = ndimage.label(layout == cls)
        if n <= 1:
            continue
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        cut = (parts > 0) & (parts != int(sizes.argmax()))
        removed += int(cut.sum())
        out[cut] = fill
    return out, removed


def mask_dir(checkpoint: Checkpoint) -> Path:
    """Where an image model's mask generator lives: ``RUN/masks/`` beside its checkpoints."""
    return checkpoint.path.parent.parent / "masks"


def mask_checkpoint(checkpoint: Checkpoint) -> Checkpoint | None:
    """The newest checkpoint of the mask generator stored with ``checkpoint`` (or None)."""
    runs = [r for r in runs_in(mask_dir(checkpoint)) if list_checkpoints(r)]
    return Checkpoint.load(list_checkpoints(runs[-1])[-1]) if runs else None


def open_layouts(
    masks: str | os.PathLike[str] | list[Any] | tuple[Any, ...],
    *,
    checkpoint: Checkpoint,
    real: Cache | None,
    cases: list[str],
    device: torch.device,
) -> LayoutSource:
    """The layout source ``--masks`` names, for a conditional model's checkpoint."""
    mcfg = checkpoint.model_config
    channels, dims = mcfg.layout, mcfg.dims
    if isinstance(masks, list | tuple):  # label maps on the model grid, in memory
        arrays = UserMasks.from_arrays(list(masks), checkpoint.preprocess, dims)
        return UserLayouts(arrays, real, cases, channels, dims)
    if str(masks) == "real":
        if real is None or not cases:
            raise ConfigError(
                "{masks} real transforms the masks of the generator's training cases: "
                "give {input} scans"
            )
        return RealMasks(real, cases, channels, dims)
    if str(masks) == "learned":
        found = mask_checkpoint(checkpoint)
        if found is None:
            raise ConfigError(
                f"{mask_dir(checkpoint)}: no mask generator stored with this model; give "
                "{input} scans to fit one"
            )
        return LearnedMasks(found, channels, device)
    path = Path(masks)
    if not path.exists():
        raise ConfigError(
            f"{{masks}} must be real, learned or a label map file or folder; "
            f"{str(masks)!r} is neither"
        )
    return UserLayouts(UserMasks(path, checkpoint.preprocess, dims), real, cases, channels, dims)


__all__ = [
    "SOURCES",
    "CaseLayouts",
    "LayoutSource",
    "LearnedMasks",
    "UserLayouts",
    "cached_layout",
    "clean_target",
    "mask_checkpoint",
    "mask_dir",
    "open_layouts",
]
