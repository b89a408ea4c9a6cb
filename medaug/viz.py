"""Drawing primitives: slices with label outlines, tile grids and figures, as PNG.

The bottom of the picture stack: stages (training sample grids, the synthesis
preview, the gain plot) and the report pages above them draw with these and know
nothing of each other. Slices are shown as radiologists view axial CT: the patient's
right on the left of the picture, anterior at the top. Arrays come in medaug's
``(X, Y)`` RAS order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medaug.io.atomic import atomic_path

#: Outline colours of classes 1, 2, ... (RGB).
CLASS_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (120, 255, 120))


def radiological(slice_xy: np.ndarray) -> np.ndarray:
    """(X, Y) RAS slice -> (rows, columns) picture: rows anterior to posterior,
    columns patient right to left."""
    return np.asarray(slice_xy).T[::-1, ::-1]


def overlay(image: np.ndarray, label: np.ndarray | None, scale: int = 2) -> np.ndarray:
    """One (X, Y) slice in [-1, 1] as an RGB picture with its label outlined.

    Returns:
        (rows * scale, columns * scale, 3) uint8.
    """
    from scipy import ndimage

    grey = np.clip((radiological(image) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if label is not None:
        lab = radiological(label)
        for k in np.unique(lab[lab > 0]):
            mask = lab == k
            edge = mask & ~ndimage.binary_erosion(mask)
            rgb[edge] = CLASS_COLOURS[(int(k) - 1) % len(CLASS_COLOURS)]
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else rgb


def best_slice(label: np.ndarray, target: int) -> int:
    """The z index of an (X, Y, Z) label with the most target voxels (middle if none)."""
    counts = (np.asarray(label) == target).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.any() else label.shape[2] // 2


def pair_tiles(image: Any, label: Any, channel: int) -> list[np.ndarray]:
    """Image ``(B, C, X, Y[, Z])`` and class map ``(B, 1, ...)`` tensors -> overlay tiles
    of the axial slice (centre slice of volumes), image channel ``channel``."""
    img = image.detach().float().cpu().numpy()
    lab = label.detach().cpu().numpy()
    if img.ndim == 5:
        z = img.shape[-1] // 2
        img, lab = img[..., z], lab[..., z]
    scale = max(1, 256 // max(img.shape[2:]))
    return [overlay(img[i, channel], lab[i, 0], scale) for i in range(img.shape[0])]


def save_grid(
    tiles: Sequence[np.ndarray], path: str | os.PathLike[str], columns: int = 4, gap: int = 2
) -> Path:
    """Write RGB tiles (equal sizes) as one PNG grid, atomically."""
    return save_sections([("", list(tiles))], path, columns, gap)


def save_sections(
    sections: Sequence[tuple[str, Sequence[np.ndarray]]],
    path: str | os.PathLike[str],
    columns: int = 4,
    gap: int = 2,
) -> Path:
    """Write titled groups of RGB tiles (equal sizes) as one PNG, one group under the
    other; a group's title (when not empty) is written above its rows."""
    from PIL import Image, ImageDraw

    groups = [(title, list(tiles)) for title, tiles in sections if len(tiles)]
    if not groups:
        raise ValueError("save_grid: no tiles")
    h, w, _ = groups[0][1][0].shape
    columns = min(columns, max(len(t) for _, t in groups))
    width = columns * (w + gap) - gap
    blocks = []
    for title, tiles in groups:
        rows = -(-len(tiles) // columns)
        block = np.zeros((rows * (h + gap) - gap, width, 3), dtype=np.uint8)
        for n, tile in enumerate(tiles):
            r, c = divmod(n, columns)
            block[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
        if title:
            strip = Image.new("RGB", (width, 16))
            ImageDraw.Draw(strip).text((4, 2), title, fill=(230, 230, 230))
            block = np.concatenate([np.asarray(strip), block])
        blocks.append(block)
    spacer = np.zeros((gap * 2, width, 3), dtype=np.uint8)
    canvas = np.concatenate([b for block in blocks for b in (block, spacer)][:-1])
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int) -> Path:
    """Write a matplotlib figure as PNG under a temporary name, then close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return path


__all__ = [
    "CLASS_COLOURS",
    "best_slice",
    "overlay",
    "pair_tiles",
    "pyplot",
    "radiological",
    "save_figure",
    "save_grid",
    "save_sections",
]
