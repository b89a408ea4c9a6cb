"""Pictures a person looks at: slice grids with label outlines, written as PNG.

Slices are shown as radiologists view axial CT: the patient's right on the left of
the picture, anterior at the top. Arrays come in medaug's ``(X, Y)`` RAS order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


def save_grid(
    tiles: Sequence[np.ndarray], path: str | os.PathLike[str], columns: int = 4, gap: int = 2
) -> Path:
    """Write RGB tiles (equal sizes) as one PNG grid, atomically."""
    from PIL import Image

    from medaug.io.atomic import atomic_path

    if not tiles:
        raise ValueError("save_grid: no tiles")
    h, w, _ = tiles[0].shape
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    canvas = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return path


def cache_preview(
    cache: str | os.PathLike[str], path: str | os.PathLike[str] | None = None, n: int = 8
) -> Path:
    """A grid of preprocessed slices with the label outlined, one or two per case.

    For each case the slice with the most target voxels is shown (and, with fewer
    than ``n`` cases, one more near the target's edge), so the picture answers "is
    the label on the organ, and is the window right?".
    """
    from medaug.data.datasets import Cache

    c = Cache(cache)
    target = c.config.target_class
    picks: list[tuple[str, int]] = []
    for case_id in c.case_ids:
        label = c.array(case_id, "label")
        counts = (np.asarray(label) == target).sum(axis=(1, 2))
        best = int(np.argmax(counts))
        picks.append((case_id, best))
        on = np.flatnonzero(counts)
        if len(c.case_ids) < n and on.size > 1:
            picks.append((case_id, int(on[len(on) // 4])))
    picks = sorted(picks[:n])
    scale = max(1, 256 // max(c.array(picks[0][0], "image").shape[1:]))
    tiles = [
        overlay(
            np.asarray(c.array(cid, "image")[z], dtype=np.float32), c.array(cid, "label")[z], scale
        )
        for cid, z in picks
    ]
    return save_grid(tiles, path or c.root / "preview.png")
