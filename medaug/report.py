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

    from medaug.io.atomic import atomic_path

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


def best_slice(label: np.ndarray, target: int) -> int:
    """The z index of an (X, Y, Z) label with the most target voxels (middle if none)."""
    counts = (np.asarray(label) == target).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.any() else label.shape[2] // 2


def synthesis_preview(
    out: str | os.PathLike[str], manifest: dict, config, real=None, n: int = 8
) -> Path:
    """``out/preview.png``: synthetic slices (the target's largest cross-section of
    the first ``n`` cases) above real slices of the model's grid, labels outlined."""
    from medaug.io.nifti import read_nifti
    from medaug.preprocess.transforms import hu_to_unit

    out = Path(out)
    target = config.target_class
    scale = max(1, 256 // max(config.grid[:2]) // 2)
    synthetic = []
    for rec in manifest["cases"][:n]:
        label = read_nifti(out / rec["label"], None)[0]
        z = best_slice(label, target)
        if "dicom" in rec and not str(rec["image"]).endswith(".nii.gz"):
            from medaug.io import load

            hu = load(out / rec["dicom"], with_label=False).image
        else:
            hu = read_nifti(out / rec["image"])[0]
        image = hu_to_unit(hu[:, :, z].astype(np.float32), config.hu_window)
        synthetic.append(overlay(image, label[:, :, z], scale))
    sections = [("synthetic", synthetic)]
    if real is not None:
        tiles = []
        for case_id in real.case_ids[:n]:
            label = np.moveaxis(np.asarray(real.array(case_id, "label")), 0, -1)
            z = best_slice(label, target)
            image = np.asarray(real.array(case_id, "image")[z], dtype=np.float32)
            tiles.append(overlay(image, label[:, :, z], scale))
        sections.append(("real (model grid)", tiles))
    return save_sections(sections, out / "preview.png", columns=n)


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
