"""The layout map: what a mask-conditioned generator is conditioned on.

A layout is one class map per voxel that joins the target label with context every
CT has without manual labels. Its classes, by ``channels``:

- ``target``: 0 background, then the label classes 1..K-1 (the label itself);
- ``target+body``: 0 outside the body, 1 body, then the label classes from 2;
- ``target+body+tissue``: 0 outside the body, then the tissue classes of
  :data:`TISSUES` (1 air/lung, 2 fat, 3 soft tissue, 4 bone/contrast) inside it, then
  the label classes from 5.

Label classes override context where they are set, so a layout is one categorical
map: its one-hot channels are the generator's conditioning, a mask generator learns
it as a label with ``layout_classes`` classes, and :func:`target_of` gives back
exactly the label classes a synthetic case is labelled with.

The context map is computed in preprocessing from Hounsfield units before the
window (:func:`context_map`) and cached beside the label (``cases/*_context.npy``):
0 outside the body, 1..4 the tissue class inside it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from medaug.errors import ConfigError

Channels = Literal["target", "target+body", "target+body+tissue"]
#: The layouts a conditional model may use, simplest first.
CHANNELS: tuple[str, ...] = ("target", "target+body", "target+body+tissue")
#: Tissue classes inside the body, by HU band (the cut points of ``tissue_hu``).
TISSUES = ("air/lung", "fat", "soft tissue", "bone/contrast")


def check_channels(channels: str) -> str:
    if channels not in CHANNELS:
        raise ConfigError(f"{{layout}} must be one of {', '.join(CHANNELS)}, got {channels!r}")
    return channels


def context_offset(channels: str) -> int:
    """Layout classes below the first label class (0 for ``target``)."""
    return {"target": 0, "target+body": 1, "target+body+tissue": len(TISSUES)}[
        check_channels(channels)
    ]


def layout_classes(channels: str, label_classes: int) -> int:
    """Classes of the layout map, background included (``label_classes`` too)."""
    return context_offset(channels) + label_classes


def layout_names(channels: str, labels: list[str]) -> list[str]:
    """A name per layout class, background first (for checkpoints and reports)."""
    context = {
        "target": ["background"],
        "target+body": ["outside body", "body"],
        "target+body+tissue": ["outside body", *TISSUES],
    }[check_channels(channels)]
    return [*context, *labels]


def compose(label: Any, context: Any, channels: str) -> Any:
    """The layout map from a label class map and the cached context map.

    Works on numpy arrays and torch tensors alike (same shapes, any layout of axes).
    ``context`` may be None only for ``target``.
    """
    offset = context_offset(channels)
    if offset == 0:
        return label
    if context is None:
        raise ConfigError(f"layout {channels} needs the cached context map; preprocess again")
    body = channels == "target+body"
    if isinstance(label, np.ndarray):
        ctx = (context > 0).astype(label.dtype) if body else context.astype(label.dtype)
        return np.where(label > 0, label.astype(np.int64) + offset, ctx).astype(label.dtype)
    import torch

    ctx = (context > 0) if body else context
    return torch.where(label > 0, label + offset, ctx.to(label.dtype))


def target_of(layout: Any, channels: str) -> Any:
    """The label class map inside a layout: exactly its label classes, 0 elsewhere."""
    offset = context_offset(channels)
    if offset == 0:
        return layout
    if isinstance(layout, np.ndarray):
        return np.where(layout > offset, layout.astype(np.int64) - offset, 0).astype(layout.dtype)
    import torch

    return torch.where(layout > offset, layout - offset, torch.zeros_like(layout))


def describe(
    channels: str,
    labels: list[str],
    body_threshold_hu: float,
    tissue_hu: tuple[float, float, float],
) -> dict[str, Any]:
    """What a conditional model's checkpoint records of its conditioning: the layout's
    channels, its classes by value, and how each context class is derived."""
    derived = {name: "the label" for name in labels}
    if context_offset(channels):
        derived["body"] = (
            f"largest connected component above {body_threshold_hu:g} HU, holes filled "
            "per axial slice, on the model grid before the HU window"
        )
    if channels == "target+body+tissue":
        cuts = [f"{c:g}" for c in tissue_hu]
        derived["tissue"] = (
            f"inside the body, HU below {cuts[0]}: air/lung; {cuts[0]} to {cuts[1]}: fat; "
            f"{cuts[1]} to {cuts[2]}: soft tissue; from {cuts[2]}: bone/contrast"
        )
    return {
        "channels": channels,
        "classes": layout_names(channels, labels),
        "derived": derived,
        "label": "exactly the layout's label classes",
    }


def context_map(
    hu: np.ndarray,
    body_threshold_hu: float = -500.0,
    tissue_hu: tuple[float, float, float] = (-400.0, -30.0, 200.0),
) -> np.ndarray:
    """uint8 context of an HU volume ``(X, Y, Z)``: 0 outside the body, 1..4 tissue.

    The body is the largest connected component above ``body_threshold_hu``, its holes
    filled slice by slice (lungs and bowel gas are inside the body). Inside it, each
    voxel takes its ``tissue_hu`` band: below the first cut air/lung, then fat, soft
    tissue, and bone or contrast above the last.
    """
    from scipy import ndimage

    above = hu > body_threshold_hu
    components, n = ndimage.label(above)
    if n == 0:
        return np.zeros(hu.shape, dtype=np.uint8)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(sizes.argmax())
    for z in range(body.shape[-1]):
        body[..., z] = ndimage.binary_fill_holes(body[..., z])
    tissue = np.digitize(hu, np.asarray(tissue_hu, dtype=np.float64)) + 1
    return np.where(body, tissue, 0).astype(np.uint8)
