"""Array-level metrics: how close synthetic items are to real ones, and how varied.

Numpy arrays in, plain floats, lists and dicts out (ready for JSON). Items are 2D
slices ``(N, X, Y)`` or 3D volumes ``(N, X, Y, Z)``; images are in [-1, 1] (the
model range) unless a function says HU; labels are uint8 class maps, 0 = background.

- distributions: :func:`mmd` on features, e.g. :func:`downsample` pixels
- image similarity and variety: :func:`ssim`, :func:`ms_ssim`, :func:`diversity`
- labels: :func:`label_stats`, :func:`compare_labels`, :func:`hu_by_class`
- copying of training data: :func:`memorization`
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric
from scipy import ndimage, stats

#: MS-SSIM weights of the five standard scales (Wang et al. 2003), finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: SSIM Gaussian window (sigma 1.5 px): the standard 11 px, or 7 px (+-2 sigma) on small grids.
WINDOW, SMALL_WINDOW = 11, 7
#: Items per MONAI call; bounds the memory of the SSIM convolutions on large volumes.
SSIM_BATCH = 32
#: Query rows per distance block (float64): 1024 x 5000 distances are 40 MB.
DIST_CHUNK = 1024
#: Points behind the median bandwidth heuristic; more cost time, not accuracy.
BANDWIDTH_POINTS = 2000
#: Label-0 voxels above this HU are body (fat, muscle, organs) rather than air.
BODY_HU = -500.0


# --- distances and MMD ---


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D) feature vectors, got shape {x.shape}")
    return x


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (A, B) between the rows of a (A, D) and b (B, D)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)  # rounding leaves d(x, x) a hair below 0


def _kernel_sum(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    """Sum over all row pairs of the Gaussian kernel exp(-d^2 / (2 bandwidth^2))."""
    return sum(
        float(np.exp(-_sq_dists(a[s : s + DIST_CHUNK], b) / (2.0 * bandwidth**2)).sum())
        for s in range(0, len(a), DIST_CHUNK)
    )


def mmd_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """Median heuristic: the median distance between distinct points of x and y pooled.

    Duplicate points are dropped first, so a collapsed generator (many equal samples)
    cannot drive the bandwidth to 0. Above ``BANDWIDTH_POINTS`` distinct points a
    fixed random subset (seed 0) stands in for the pool.

    Args:
        x: (N, D) features.
        y: (M, D) features.

    Returns:
        The bandwidth; 1.0 when all points coincide (any bandwidth then gives MMD 0).
    """
    pooled = np.unique(np.concatenate([_features(x, "x"), _features(y, "y")]), axis=0)
    if len(pooled) < 2:
        return 1.0
    if len(pooled) > BANDWIDTH_POINTS:
        pick = np.random.default_rng(0).choice(len(pooled), BANDWIDTH_POINTS, replace=False)
        pooled = pooled[pick]
    d2 = _sq_dists(pooled, pooled)[np.triu_indices(len(pooled), k=1)]
    return float(np.sqrt(np.median(d2)))


def mmd(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy between two samples, Gaussian kernel.

    The unbiased estimator (Gretton et al. 2012): the within-sample means leave out
    each point paired with itself. Its expected value is 0 when x and y come from the
    same distribution, so single estimates scatter around 0 and can be slightly
    negative; they are returned as they are, not clipped, so that averages stay unbiased.

    Args:
        x: (N, D) features, N >= 2, e.g. real items through :func:`downsample`.
        y: (M, D) features, M >= 2.
        bandwidth: kernel sigma, in feature units; default :func:`mmd_bandwidth`.

    Returns:
        MMD^2, 0 for equal distributions, at most 2.

    Raises:
        ValueError: fewer than 2 samples on a side, different D, or bandwidth <= 0.
    """
    x, y = _features(x, "x"), _features(y, "y")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"mmd needs at least 2 samples on each side, got {n} and {m}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y features differ in length: {x.shape[1]} and {y.shape[1]}")
    sigma = mmd_bandwidth(x, y) if bandwidth is None else bandwidth
    if not sigma > 0:
        raise ValueError(f"bandwidth must be positive, got {sigma}")
    # k(x, x) = 1 on the diagonal: subtracting n removes the self pairs
    kxx = (_kernel_sum(x, x, sigma) - n) / (n * (n - 1))
    kyy = (_kernel_sum(y, y, sigma) - m) / (m * (m - 1))
    kxy = _kernel_sum(x, y, sigma) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def downsample(items: np.ndarray, size: int) -> np.ndarray:
    """Block-average items so that each spatial side is at most ``size``, and flatten.

    Each axis is pooled by the integer factor ceil(side / size); trailing voxels that
    do not fill a whole block are dropped.

    Args:
        items: (N, X, Y) or (N, X, Y, Z).
        size: the largest side wanted, in voxels.

    Returns:
        (N, D) float32 features, D the product of the pooled sides.

    Example:
        >>> downsample(np.zeros((5, 64, 64)), 16).shape
        (5, 256)
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    items = np.asarray(items)
    factors = [-(-side // size) for side in items.shape[1:]]  # ceil(side / size)
    grid = [(side // f, f) for side, f in zip(items.shape[1:], factors, strict=True)]
    crop = items[(slice(None), *(slice(0, n * f) for n, f in grid))]
    blocks = crop.reshape(len(items), *(v for block in grid for v in block))
    means = blocks.mean(axis=tuple(range(2, blocks.ndim, 2)), dtype=np.float32)
    return means.reshape(len(items), -1)


# --- SSIM family ---


def _spatial_dims(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        raise ValueError(f"paired items must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (3, 4):
        raise ValueError(f"items must be (N, X, Y) or (N, X, Y, Z), got shape {a.shape}")
    if min(a.shape[1:]) < SMALL_WINDOW:
        raise ValueError(f"SSIM needs items at least {SMALL_WINDOW} px wide, got {a.shape[1:]}")
    return a.ndim - 1


def _per_item(
    metric: SSIMMetric | MultiScaleSSIMMetric, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Run a MONAI SSIM metric on paired items, ``SSIM_BATCH`` at a time.

    Intensities go from [-1, 1] to [0, 1]: SSIM's luminance term compares local means
    as a ratio meant for non-negative intensities, and on signed data two regions of
    opposite sign score below 0. With ``data_range=1`` the constants are those of
    data_range 2 on the [-1, 1] scale.
    """
    values = [np.zeros(0)]
    with torch.no_grad():
        for s in range(0, len(a), SSIM_BATCH):
            pa, pb = (
                torch.from_numpy((np.asarray(v[s : s + SSIM_BATCH], np.float32) + 1.0) / 2.0)
                for v in (a, b)
            )
            # (B, C, *spatial) in, (B, 1) out: calling the metric does not reduce
            batch = metric(pa[:, None], pb[:, None])
            assert isinstance(batch, torch.Tensor)
            values.append(batch.reshape(-1).double().numpy())
    return np.concatenate(values)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair a[i], b[i]; Gaussian window of 11 px (7 px below 11 px).

    Args:
        a: (N, X, Y) or (N, X, Y, Z) items in [-1, 1], every side >= 7.
        b: items of the same shape.

    Returns:
        (N,) SSIM, 1 for identical items.
    """
    dims = _spatial_dims(a, b)
    window = WINDOW if min(a.shape[1:]) >= WINDOW else SMALL_WINDOW
    return _per_item(SSIMMetric(spatial_dims=dims, data_range=1.0, win_size=window), a, b)


def _scales_fit(side: int, scales: int, window: int) -> bool:
    # MONAI's size check divides by (scales - 1) ** 2, not 2 ** (scales - 1): one px
    # stricter than the pyramid needs at 4 scales, so both conditions are kept
    return side // 2 ** (scales - 1) >= window and side // max(1, scales - 1) ** 2 > window - 1


def ms_ssim_scales(shape: Sequence[int]) -> tuple[int, tuple[float, ...]]:
    """The window and scale weights :func:`ms_ssim` uses for items of a spatial shape.

    The rule: the standard 11 px window where all five scales fit (smallest side
    >= 176 px), the 7 px window otherwise; then as many scales, finest first, as keep
    the coarsest one at least a window wide (each scale halves the sides), with the
    first k standard weights renormalised to sum 1. 64^2 slices get 4 scales,
    32^3 volumes 3, sides of 7..13 px a single scale (plain SSIM).

    Args:
        shape: spatial shape (X, Y) or (X, Y, Z), in voxels.

    Returns:
        (window in px, weights finest first).
    """
    side = min(shape)
    full = len(MS_SSIM_WEIGHTS)
    window = WINDOW if _scales_fit(side, full, WINDOW) else SMALL_WINDOW
    scales = 1
    while scales < full and _scales_fit(side, scales + 1, window):
        scales += 1
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    return window, tuple(float(w) for w in weights)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Multi-scale SSIM of each pair a[i], b[i], scales chosen by :func:`ms_ssim_scales`.

    Args:
        a: (N, X, Y) or (N, X, Y, Z) items in [-1, 1], every side >= 7.
        b: items of the same shape.

    Returns:
        (N,) MS-SSIM in [0, 1], 1 for identical items.
    """
    dims = _spatial_dims(a, b)
    window, weights = ms_ssim_scales(a.shape[1:])
    metric = MultiScaleSSIMMetric(
        spatial_dims=dims, data_range=1.0, kernel_size=window, weights=weights
    )
    return _per_item(metric, a, b)


def _distinct_pairs(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` different index pairs (i, j), i > j, drawn uniformly; all when fewer exist."""
    total = n * (n - 1) // 2
    k = np.arange(total) if total <= pairs else rng.choice(total, size=pairs, replace=False)
    # rank k -> row i of the lower triangle, which holds ranks i(i-1)/2 .. i(i+1)/2 - 1
    i = np.floor((1 + np.sqrt(1 + 8 * k)) / 2).astype(np.int64)
    i = np.where(i * (i - 1) // 2 > k, i - 1, i)  # undo square-root rounding
    i = np.where(i * (i + 1) // 2 <= k, i + 1, i)
    return i, k - i * (i - 1) // 2


def diversity(items: np.ndarray, pairs: int = 200, seed: int = 0) -> float:
    """Mean MS-SSIM between random pairs of different items.

    Lower is more diverse; near 1 means the items are near copies (mode collapse).
    Real data gives the reference level.

    Args:
        items: (N, X, Y) or (N, X, Y, Z) in [-1, 1], N >= 2.
        pairs: how many distinct pairs to score; all pairs when N(N-1)/2 is fewer.
        seed: seed of the pair draw; same seed, same pairs.

    Returns:
        The mean MS-SSIM over the pairs.
    """
    if len(items) < 2:
        raise ValueError(f"diversity needs at least 2 items, got {len(items)}")
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}")
    i, j = _distinct_pairs(len(items), pairs, np.random.default_rng(seed))
    scores = [
        ms_ssim(items[i[s : s + SSIM_BATCH]], items[j[s : s + SSIM_BATCH]])
        for s in range(0, len(i), SSIM_BATCH)
    ]
    return float(np.concatenate(scores).mean())


# --- labels and HU ---


def label_stats(labels: np.ndarray, target: int, spacing: Sequence[float]) -> dict[str, list[Any]]:
    """Connected components and size of one class in each label item.

    Components use full connectivity (8 neighbours in 2D, 26 in 3D): voxels touching
    at an edge or corner are one piece, so a thin oblique structure is not split by
    its rasterisation.

    Args:
        labels: (N, X, Y) or (N, X, Y, Z) uint8 class maps.
        target: the class value to measure.
        spacing: voxel size in mm along (X, Y, Z); 2D items use the first two.

    Returns:
        {"components": [int], "volume": [mm^3, or mm^2 for 2D items], "empty": [bool]},
        one entry per item.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (3, 4):
        raise ValueError(f"labels must be (N, X, Y) or (N, X, Y, Z), got shape {labels.shape}")
    dims = labels.ndim - 1
    if len(spacing) < dims:
        raise ValueError(f"{dims}D items need {dims} spacings, got {tuple(spacing)}")
    voxel = float(np.prod(spacing[:dims]))
    structure = np.ones((3,) * dims, dtype=bool)
    components: list[int] = []
    volume: list[float] = []
    for item in labels:
        mask = item == target
        components.append(int(ndimage.label(mask, structure=structure)[1]))
        volume.append(float(np.count_nonzero(mask)) * voxel)
    return {"components": components, "volume": volume, "empty": [c == 0 for c in components]}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _nonempty_volumes(measured: dict[str, list[Any]]) -> np.ndarray:
    volume = np.asarray(measured["volume"], dtype=np.float64)
    return volume[~np.asarray(measured["empty"], dtype=bool)]


def _label_summary(measured: dict[str, list[Any]]) -> dict[str, float | int | None]:
    components = np.asarray(measured["components"], dtype=np.float64)
    volume = _nonempty_volumes(measured)
    return {
        "items": len(components),
        "components_mean": _mean(components),
        "single_component_fraction": _mean(components == 1),
        "empty_fraction": _mean(np.asarray(measured["empty"], dtype=bool)),
        "volume_mean": _mean(volume),
        "volume_std": float(volume.std()) if volume.size else None,
    }


def compare_labels(real: dict[str, list[Any]], synth: dict[str, list[Any]]) -> dict[str, Any]:
    """Real against synthetic label statistics, both from :func:`label_stats`.

    Component means and fractions are over all items; volume mean, std (population)
    and the two-sample Kolmogorov-Smirnov test are over non-empty items only, since
    the share of empty items is reported on its own.

    Args:
        real: label statistics of real items.
        synth: label statistics of synthetic items.

    Returns:
        {"real": {...}, "synthetic": {...}, "volume_ks": D, "volume_ks_p": p}, where
        each side holds items, components_mean, single_component_fraction,
        empty_fraction, volume_mean, volume_std. Values that need items a side lacks
        are None.
    """
    real_volume, synth_volume = _nonempty_volumes(real), _nonempty_volumes(synth)
    ks = (
        stats.ks_2samp(real_volume, synth_volume)
        if real_volume.size and synth_volume.size
        else None
    )
    return {
        "real": _label_summary(real),
        "synthetic": _label_summary(synth),
        "volume_ks": None if ks is None else float(ks.statistic),
        "volume_ks_p": None if ks is None else float(ks.pvalue),
    }


def _hu_stats(values: np.ndarray) -> dict[str, float | int | None]:
    if values.size == 0:
        return {"voxels": 0, "mean": None, "std": None, "p5": None, "p50": None, "p95": None}
    values = values.astype(np.float64)
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {
        "voxels": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
    }


def hu_by_class(
    images_hu: np.ndarray, labels: np.ndarray, classes: dict[str, int]
) -> dict[str, dict[str, float | int | None]]:
    """HU statistics of the voxels of each class, pooled over all items.

    Besides the named classes, "background" holds the label-0 voxels above
    ``BODY_HU`` (-500 HU): the body around the organs, without the air.

    Args:
        images_hu: (N, X, Y) or (N, X, Y, Z) intensities in HU.
        labels: class maps of the same shape.
        classes: class name -> label value, e.g. {"pancreas": 1}.

    Returns:
        {name: {"voxels", "mean", "std", "p5", "p50", "p95"}}; a class without
        voxels has voxels 0 and None for the rest.
    """
    if images_hu.shape != labels.shape:
        raise ValueError(f"images and labels differ in shape: {images_hu.shape}, {labels.shape}")
    if "background" in classes:
        raise ValueError('"background" is reserved for label-0 body voxels; rename that class')
    out = {name: _hu_stats(images_hu[labels == value]) for name, value in classes.items()}
    out["background"] = _hu_stats(images_hu[(labels == 0) & (images_hu > BODY_HU)])
    return out


# --- memorization ---


def _nearest(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance to, and index of, each query row's nearest row in ref."""
    distance, index = [], []
    for s in range(0, len(query), DIST_CHUNK):
        d2 = _sq_dists(query[s : s + DIST_CHUNK], ref)
        nearest = d2.argmin(axis=1)
        index.append(nearest)
        distance.append(np.sqrt(d2[np.arange(len(nearest)), nearest]))
    return np.concatenate(distance), np.concatenate(index)


def memorization(
    synth: np.ndarray, train: np.ndarray, heldout: np.ndarray, percentile: float = 5.0
) -> dict[str, Any]:
    """Flag synthetic items that sit closer to the training set than real unseen items do.

    Held-out items are real scans the generator never saw, so their nearest-neighbour
    distances to the training set show how close "new" data comes by chance. A
    synthetic item nearer than the ``percentile``-th percentile of those distances
    is flagged as a likely copy. Fresh samples from the data distribution are
    flagged at about ``percentile`` percent; copies always.

    Args:
        synth: (N, D) features of synthetic items.
        train: (T, D) features of the training items.
        heldout: (H, D) features of real items not trained on.
        percentile: the held-out percentile, 0..100, that sets the threshold.

    Returns:
        {"threshold", "flagged_fraction", "flagged" (synthetic indices),
        "synthetic_nn" (distance of each synthetic item to its nearest training
        item), "synthetic_nn_median", "heldout_nn_median", "nearest_train" (index
        of that training item)}.

    Raises:
        ValueError: an empty set, features of different lengths, or a percentile
            outside 0..100.
    """
    synth, train = _features(synth, "synth"), _features(train, "train")
    heldout = _features(heldout, "heldout")
    for name, features in (("synthetic", synth), ("training", train), ("held-out", heldout)):
        if len(features) == 0:
            raise ValueError(f"memorization needs at least one {name} item")
    if not synth.shape[1] == train.shape[1] == heldout.shape[1]:
        raise ValueError(
            f"feature lengths differ: synthetic {synth.shape[1]}, training {train.shape[1]}, "
            f"held-out {heldout.shape[1]}"
        )
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {percentile}")
    synth_nn, nearest = _nearest(synth, train)
    heldout_nn, _ = _nearest(heldout, train)
    threshold = float(np.percentile(heldout_nn, percentile))
    flagged = np.flatnonzero(synth_nn < threshold)
    return {
        "threshold": threshold,
        "flagged_fraction": len(flagged) / len(synth_nn),
        "flagged": flagged.tolist(),
        "synthetic_nn": synth_nn.tolist(),
        "synthetic_nn_median": float(np.median(synth_nn)),
        "heldout_nn_median": float(np.median(heldout_nn)),
        "nearest_train": nearest.tolist(),
    }
