"""The labels2image baseline: tissue classes read from HU, painting by drawn
parameters (TorchIO's LabelsToImage), and the dataset the gain arm mixes in."""

from __future__ import annotations

import numpy as np
import pytest

from medaug.data import Cache, load_split
from medaug.data.synthetic import MixedDataset, check_compatible
from medaug.preprocess import layout as LY
from medaug.segment.labels2image import (
    CLASSES,
    TARGET,
    Labels2ImageDataset,
    draw,
    items,
    render,
    tissue_classes,
)
from medaug.segment.train import real_dataset

pytestmark = pytest.mark.usefixtures("one_thread_per_process")


def phantom_slice() -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 HU slice: air around a body disc of soft tissue (40 HU) with a fat rim
    (-100 HU), a bone spot (500), a gas bubble (-900, inside the body) and an organ."""
    x, y = np.mgrid[:32, :32]
    r = np.hypot(x - 16, y - 16)
    hu = np.full((32, 32), -1000.0)
    hu[r < 13] = -100.0
    hu[r < 10] = 40.0
    hu[20:23, 14:17] = 500.0
    hu[10:12, 10:12] = -900.0
    label = np.zeros((32, 32), np.uint8)
    label[14:18, 18:22] = 1
    hu[label == 1] = 60.0
    return hu, label


def context(hu: np.ndarray) -> np.ndarray:
    """What preprocessing caches beside the label (from HU, before the window)."""
    return LY.context_map(hu[..., None])[..., 0]


def test_tissue_classes_are_the_generators_layout():
    """One tissue classification: the cached context under the label, exactly the
    layout target+body+tissue the mask-conditioned generators are conditioned on."""
    hu, label = phantom_slice()
    label[2, 2] = 2  # another label class takes its tissue class: only the target is painted
    classes = tissue_classes(label, context(hu), 1)
    assert len(CLASSES) == 6 and CLASSES[TARGET] == "target"
    expected = LY.compose((label == 1).astype(np.uint8), context(hu), "target+body+tissue")
    np.testing.assert_array_equal(classes, expected)
    assert classes[0, 0] == 0  # outside the body
    assert classes[10, 10] == 1  # gas inside the body
    assert classes[16, 4] == 2  # the fat rim
    assert classes[16, 12] == 3  # soft tissue
    assert classes[21, 15] == 4  # bone
    assert np.array_equal(classes == TARGET, label == 1)


def test_painting_follows_the_drawn_parameters_exactly():
    hu, label = phantom_slice()
    classes = tissue_classes(label, context(hu), 1)
    params = draw(np.random.default_rng([0, 7]))
    a, b = render(classes, params), render(classes, params)
    assert a.dtype == np.float32 and a.shape == (32, 32) and np.array_equal(a, b)
    other = render(classes, draw(np.random.default_rng([0, 8])))
    assert not np.array_equal(a, other)
    quiet = {**params, "std_hu": [0.0] * 6, "blur_voxels": 0.0}
    flat = render(classes, quiet)
    for value in range(6):  # without noise or blur each class is its drawn mean
        inside = flat[classes == value]
        assert inside.size and np.allclose(inside, params["mean_hu"][value], atol=1e-3)
    volume = render(np.repeat(classes[..., None], 3, axis=2), params)
    assert volume.shape == (32, 32, 3)


def test_the_dataset_paints_real_labels_and_mixes_like_synthetic_items(pairs_world):
    cache = Cache(pairs_world["cache"])
    train, _ = load_split(cache.root)
    data = Labels2ImageDataset(cache, train, seed=3)
    real = real_dataset(cache, train)
    assert len(data) == 8 * len(real)
    j = len(real) + 5  # the second painted copy of real item 5
    item = data[j]
    assert item["image"].shape == (1, 16, 16) and -1.0 <= float(item["image"].min())
    assert float(item["image"].max()) <= 1.0
    assert np.array_equal(item["label"].numpy(), real[5]["label"].numpy())
    again = Labels2ImageDataset(cache, train, seed=3)[j]
    assert np.array_equal(item["image"].numpy(), again["image"].numpy())
    assert not np.array_equal(item["image"].numpy(), data[5]["image"].numpy())
    check_compatible(real, data)  # same grid, [-1, 1] items
    mixed = MixedDataset(real, data, 0.5, length=8, seed=0)
    assert {int(mixed[i]["synthetic"]) for i in range(8)} == {0, 1}
    images, labels, names = items(cache, train, 40)
    assert images.shape == (40, 16, 16) and labels.shape == (40, 16, 16) and len(names) == 40
