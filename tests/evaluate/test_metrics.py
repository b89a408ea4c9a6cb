"""Array-level metrics on tiny hand-built data: MMD, SSIM family, labels, HU, copies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medaug.evaluate import metrics
from medaug.evaluate.metrics import (
    MS_SSIM_WEIGHTS,
    compare_labels,
    diversity,
    downsample,
    hu_by_class,
    label_stats,
    memorization,
    mmd,
    mmd_bandwidth,
    ms_ssim,
    ms_ssim_scales,
    ssim,
)


def smooth_items(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Blurred noise scaled to [-1, 1]: image-like structure at several scales."""
    noise = np.random.default_rng(seed).normal(size=(n, *shape))
    items = ndimage.gaussian_filter(noise, sigma=(0,) + (3,) * len(shape))
    items /= np.abs(items).max(axis=tuple(range(1, items.ndim)), keepdims=True)
    return items.astype(np.float32)


def noisy(items: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(scale=sigma, size=items.shape)
    return np.clip(items + noise, -1, 1).astype(np.float32)


# --- MMD ---


def test_mmd_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    shifted = rng.normal(size=(200, 16)) + 1.0
    same = mmd(x, y)
    assert abs(same) < 0.01
    assert mmd(x, shifted) > 0.1
    assert mmd(x, shifted) > 20 * abs(same)


def test_mmd_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(90, 8)) + 0.3
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-12)
    assert mmd(x, y, bandwidth=2.0) == pytest.approx(mmd(y, x, bandwidth=2.0), rel=1e-12)


def test_mmd_is_unbiased_so_not_clipped_at_zero() -> None:
    rng = np.random.default_rng(2)
    values = [mmd(rng.normal(size=(30, 4)), rng.normal(size=(30, 4))) for _ in range(10)]
    assert min(values) < 0 < max(values)


def test_mmd_matches_the_formula_on_points_on_a_line() -> None:
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])

    def k(d: float) -> float:
        return float(np.exp(-(d**2) / 2))

    expected = k(1) + k(3) - 2 * (k(0) + k(3) + k(1) + k(2)) / 4
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(expected)


def test_bandwidth_is_the_median_distance_between_distinct_points() -> None:
    # distinct points 0, 1, 3: distances 1, 2, 3; the duplicated 0 does not count
    assert mmd_bandwidth(np.array([[0.0], [0.0]]), np.array([[1.0], [3.0]])) == pytest.approx(2.0)


def test_mmd_of_two_collapsed_identical_samples_is_zero() -> None:
    x = np.ones((5, 3))
    assert mmd_bandwidth(x, x) == 1.0
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "bandwidth", "message"),
    [
        (np.zeros((1, 3)), np.zeros((4, 3)), None, "at least 2 samples"),
        (np.zeros((4, 3)), np.zeros((4, 2)), None, "differ in length"),
        (np.zeros((4, 3)), np.ones((4, 3)), 0.0, "bandwidth must be positive"),
        (np.zeros((4, 3, 2)), np.ones((4, 3)), None, r"\(N, D\)"),
    ],
)
def test_mmd_rejects_bad_input(
    x: np.ndarray, y: np.ndarray, bandwidth: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mmd(x, y, bandwidth)


# --- downsample ---


def test_downsample_block_means_2d() -> None:
    items = np.arange(2 * 64 * 64, dtype=np.float64).reshape(2, 64, 64)
    features = downsample(items, 16)
    assert features.shape == (2, 256)
    assert features.dtype == np.float32
    assert features[1, 0] == pytest.approx(items[1, :4, :4].mean())
    assert features[0, 17] == pytest.approx(items[0, 4:8, 4:8].mean())


def test_downsample_3d_pools_only_sides_above_size() -> None:
    items = np.random.default_rng(0).normal(size=(1, 32, 32, 8))
    features = downsample(items, 16)
    assert features.shape == (1, 16 * 16 * 8)
    assert features[0, 0] == pytest.approx(items[0, :2, :2, 0].mean(), rel=1e-5)


def test_downsample_drops_the_partial_block() -> None:
    items = np.arange(100.0).reshape(1, 10, 10)
    features = downsample(items, 4)  # factor 3: 3 x 3 blocks, row and column 9 dropped
    assert features.shape == (1, 9)
    assert features[0, 8] == pytest.approx(items[0, 6:9, 6:9].mean())


# --- SSIM family ---


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)])
def test_ssim_is_one_for_identical_items_and_falls_with_noise(shape: tuple[int, ...]) -> None:
    a = smooth_items(3, shape, seed=0)
    same = ssim(a, a)
    assert same.shape == (3,)
    np.testing.assert_allclose(same, 1.0, atol=1e-5)
    scores = [ssim(a, noisy(a, sigma)) for sigma in (0.05, 0.1, 0.3)]
    assert np.all(scores[0] < 1 - 1e-3)
    assert np.all(scores[0] > scores[1])
    assert np.all(scores[1] > scores[2])


def test_ssim_of_a_small_brightness_change_around_zero_stays_near_one() -> None:
    # on the signed [-1, 1] scale the luminance term of -0.1 against +0.1 would be < 0
    a = np.full((1, 32, 32), -0.1, dtype=np.float32)
    assert ssim(a, a + 0.2)[0] == pytest.approx(0.98, abs=0.01)
    assert ms_ssim(a, a + 0.2)[0] > 0.95


def test_ssim_small_items_use_the_small_window() -> None:
    a = smooth_items(2, (8, 8), seed=0)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((2, 16, 16)), np.zeros((2, 16, 17)), "same shape"),
        (np.zeros((2, 16)), np.zeros((2, 16)), r"\(N, X, Y\)"),
        (np.zeros((2, 6, 16)), np.zeros((2, 6, 16)), "at least 7 px"),
    ],
)
def test_ssim_rejects_bad_items(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ssim(a, b)
    with pytest.raises(ValueError, match=message):
        ms_ssim(a, b)


@pytest.mark.parametrize(
    ("shape", "window", "scales"),
    [((64, 64), 7, 4), ((32, 32, 32), 7, 3), ((64, 64, 32), 7, 3), ((256, 256), 11, 5)],
)
def test_ms_ssim_scales_fit_the_item_size(shape: tuple[int, ...], window: int, scales: int) -> None:
    got_window, weights = ms_ssim_scales(shape)
    assert (got_window, len(weights)) == (window, scales)
    assert sum(weights) == pytest.approx(1.0)
    standard = np.array(MS_SSIM_WEIGHTS[:scales])
    np.testing.assert_allclose(weights, standard / standard.sum())


def test_ms_ssim_scales_respect_monai_check_at_four_scales() -> None:
    # 56 / 8 = 7 px at the fourth scale, but MONAI requires 56 // 9 > 6
    assert len(ms_ssim_scales((56, 56))[1]) == 3
    assert ms_ssim_scales((10, 10)) == (7, (1.0,))


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)])
def test_ms_ssim_on_slices_and_volumes(shape: tuple[int, ...]) -> None:
    a = smooth_items(3, shape, seed=0)
    np.testing.assert_allclose(ms_ssim(a, a), 1.0, atol=1e-5)
    light, heavy = ms_ssim(a, noisy(a, 0.1)), ms_ssim(a, noisy(a, 0.3))
    assert light.shape == (3,)
    assert np.all(light < 0.999)
    assert np.all(heavy < light)


def test_ms_ssim_batches_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    a = smooth_items(5, (32, 32), seed=0)
    b = noisy(a, 0.2)
    whole = ms_ssim(a, b)
    monkeypatch.setattr(metrics, "SSIM_BATCH", 2)
    np.testing.assert_allclose(ms_ssim(a, b), whole, rtol=1e-6)


def test_diversity_is_one_for_copies_and_low_for_independent_items() -> None:
    copies = np.repeat(smooth_items(1, (64, 64), seed=0), 8, axis=0)
    assert diversity(copies) == pytest.approx(1.0, abs=1e-5)
    independent = smooth_items(12, (64, 64), seed=1)
    assert diversity(independent, pairs=30) < 0.2
    assert diversity(independent, pairs=30, seed=5) == diversity(independent, pairs=30, seed=5)


def test_diversity_needs_two_items() -> None:
    with pytest.raises(ValueError, match="at least 2 items"):
        diversity(np.zeros((1, 16, 16)))


@pytest.mark.parametrize(("n", "pairs", "expected"), [(4, 200, 6), (5000, 1000, 1000)])
def test_distinct_pairs_are_unique_and_in_range(n: int, pairs: int, expected: int) -> None:
    i, j = metrics._distinct_pairs(n, pairs, np.random.default_rng(0))
    assert len(i) == expected
    assert np.all((j >= 0) & (j < i) & (i < n))
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == expected


# --- labels and HU ---


def test_label_stats_counts_components_and_volume_3d() -> None:
    labels = np.zeros((3, 10, 10, 6), dtype=np.uint8)
    labels[0, 1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[0, 6:9, 6, 4] = 1  # 3 voxels, apart
    labels[0, 5, 0, 0] = 2  # another class: not counted
    labels[1, 2, 2, 2] = labels[1, 3, 3, 3] = 1  # corner contact: one piece
    stats = label_stats(labels, target=1, spacing=(0.5, 0.8, 2.0))
    assert stats["components"] == [2, 1, 0]
    assert stats["volume"] == pytest.approx([11 * 0.8, 2 * 0.8, 0.0])
    assert stats["empty"] == [False, False, True]


def test_label_stats_2d_uses_the_first_two_spacings() -> None:
    labels = np.zeros((1, 8, 8), dtype=np.uint8)
    labels[0, 1:3, 1:4] = 1
    labels[0, 6, 6] = 1
    stats = label_stats(labels, target=1, spacing=(0.5, 0.8, 2.0))
    assert stats["components"] == [2]
    assert stats["volume"] == pytest.approx([7 * 0.4])


def test_label_stats_needs_a_spacing_per_axis() -> None:
    with pytest.raises(ValueError, match="3D items need 3 spacings"):
        label_stats(np.zeros((1, 4, 4, 4), dtype=np.uint8), 1, (1.0, 1.0))


def test_compare_labels_summarises_both_sides() -> None:
    real = {"components": [1, 1, 2, 0], "volume": [10.0, 20.0, 30.0, 0.0]}
    real["empty"] = [c == 0 for c in real["components"]]
    synth = {"components": [1, 0], "volume": [100.0, 0.0], "empty": [False, True]}
    out = compare_labels(real, synth)
    assert out["real"] == pytest.approx(
        {
            "items": 4,
            "components_mean": 1.0,
            "single_component_fraction": 0.5,
            "empty_fraction": 0.25,
            "volume_mean": 20.0,
            "volume_std": np.std([10.0, 20.0, 30.0]),
        }
    )
    assert out["synthetic"]["volume_mean"] == 100.0
    assert out["synthetic"]["empty_fraction"] == 0.5
    assert out["volume_ks"] == pytest.approx(1.0)  # every synthetic volume is above all real
    assert 0.0 < out["volume_ks_p"] < 1.0


def test_compare_labels_gives_none_where_a_side_has_no_items() -> None:
    real = {"components": [1], "volume": [5.0], "empty": [False]}
    out = compare_labels(real, {"components": [], "volume": [], "empty": []})
    assert out["synthetic"] == {
        "items": 0,
        "components_mean": None,
        "single_component_fraction": None,
        "empty_fraction": None,
        "volume_mean": None,
        "volume_std": None,
    }
    assert out["volume_ks"] is None and out["volume_ks_p"] is None
    all_empty = {"components": [0, 0], "volume": [0.0, 0.0], "empty": [True, True]}
    assert compare_labels(real, all_empty)["synthetic"]["empty_fraction"] == 1.0


def test_hu_by_class_measures_painted_values() -> None:
    images = np.full((2, 16, 16), -1000.0)  # air
    labels = np.zeros((2, 16, 16), dtype=np.uint8)
    images[:, 2:14, 2:14] = 30.0  # body
    images[0, 4:6, 4:6], labels[0, 4:6, 4:6] = 100.0, 1
    images[1, 8:11, 8:11], labels[1, 8:11, 8:11] = 100.0, 1
    out = hu_by_class(images, labels, {"pancreas": 1, "tumour": 2})
    assert out["pancreas"] == {
        "voxels": 4 + 9,
        "mean": 100.0,
        "std": 0.0,
        "p5": 100.0,
        "p50": 100.0,
        "p95": 100.0,
    }
    assert out["background"]["voxels"] == 2 * 144 - 13  # body without the organ, no air
    assert out["background"]["mean"] == 30.0
    assert out["tumour"]["voxels"] == 0 and out["tumour"]["mean"] is None


def test_hu_by_class_reserves_background() -> None:
    with pytest.raises(ValueError, match="reserved"):
        hu_by_class(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), {"background": 0})


# --- memorization ---


def test_memorization_flags_copies_of_training_items() -> None:
    rng = np.random.default_rng(0)
    train, heldout = rng.normal(size=(200, 64)), rng.normal(size=(200, 64))
    copied = rng.choice(200, size=20, replace=False)
    synth = np.concatenate([train[copied], rng.normal(size=(80, 64))])
    out = memorization(synth, train, heldout, percentile=1.0)
    assert set(range(20)) <= set(out["flagged"])
    assert out["flagged_fraction"] == pytest.approx(0.2, abs=0.02)
    assert out["nearest_train"][:20] == copied.tolist()
    assert max(out["synthetic_nn"][:20]) < 1e-5
    assert out["threshold"] > 1.0


def test_memorization_flags_few_fresh_samples() -> None:
    rng = np.random.default_rng(1)
    train, heldout = rng.normal(size=(200, 64)), rng.normal(size=(200, 64))
    out = memorization(rng.normal(size=(100, 64)), train, heldout, percentile=5.0)
    assert out["flagged_fraction"] <= 0.1
    assert out["synthetic_nn_median"] == pytest.approx(out["heldout_nn_median"], rel=0.1)
    assert len(out["synthetic_nn"]) == len(out["nearest_train"]) == 100


def test_memorization_distances_survive_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    synth, train, heldout = (rng.normal(size=(n, 8)) for n in (30, 40, 20))
    whole = memorization(synth, train, heldout)
    monkeypatch.setattr(metrics, "DIST_CHUNK", 7)
    chunked = memorization(synth, train, heldout)
    assert chunked["nearest_train"] == whole["nearest_train"]
    np.testing.assert_allclose(chunked["synthetic_nn"], whole["synthetic_nn"])
    brute = np.linalg.norm(synth[:, None] - train[None], axis=2).min(axis=1)
    np.testing.assert_allclose(whole["synthetic_nn"], brute, rtol=1e-9)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((5, 0, 5), "at least one training item"),
        ((5, 5, 0), "at least one held-out item"),
        ((0, 5, 5), "at least one synthetic item"),
    ],
)
def test_memorization_rejects_empty_sets(sizes: tuple[int, int, int], message: str) -> None:
    synth, train, heldout = (np.zeros((n, 4)) for n in sizes)
    with pytest.raises(ValueError, match=message):
        memorization(synth, train, heldout)


def test_memorization_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match="feature lengths differ"):
        memorization(np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((2, 3)))
