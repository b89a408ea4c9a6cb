"""The labels2image baseline: tissue classes read from HU, painting by drawn
parameters (TorchIO's LabelsToImage), and the dataset the gain arm mixes in."""

from __future__ import annotations

import numpy as np
import pytest

from medaug.data import Cache, load_split
from medaug.data.synthetic import MixedDataset, check_compatible
from medaug.errors import ConfigError
from medaug.preprocess import PreprocessConfig
from medaug.preprocess import layout as LY
from medaug.preprocess.transforms import hu_to_unit
from medaug.segment.labels2image import (
    CLASSES,
    MEAN_HU,
    MEAN_SPREAD_FLOOR_HU,
    NOISE_SHARE,
    TARGET,
    Labels2ImageDataset,
    class_stats,
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


class TwoCases:
    """What class_stats reads of a cache: two one-slice cases of :func:`phantom_slice`
    in the cache's (Z, X, Y) unit form. Soft tissue is 40 HU in case a and 60 HU in
    case b; the fat rim alternates -100 / -80 HU in both; the gas bubble is filled with
    soft tissue, so no case has air inside the body."""

    config = PreprocessConfig()  # HU window -160..240, target class 1

    def __init__(self) -> None:
        hu, label = phantom_slice()
        hu[10:12, 10:12] = 40.0
        self.fat = context(hu) == 2
        checker = (np.add.outer(np.arange(32), np.arange(32)) % 2).astype(bool)
        hu[self.fat & checker] = -80.0
        b = hu.copy()
        b[hu == 40.0] = 60.0
        self.hu = {"a": hu, "b": b}
        self.label = label
        self.ctx = {k: context(v) for k, v in self.hu.items()}

    def array(self, case: str, kind: str) -> np.ndarray:
        if kind == "image":
            return hu_to_unit(self.hu[case], self.config.hu_window)[None]
        return (self.label if kind == "label" else self.ctx[case])[None]


def test_class_stats_are_each_class_intensity_in_the_cases():
    world = TwoCases()
    stats = class_stats(world, ["a", "b"])
    assert len(stats) == len(CLASSES) and stats[1] is None  # no air inside either body
    soft = stats[3]
    assert soft["mean_hu"] == pytest.approx(50.0, abs=0.01)  # the same voxels at 40 and 60
    assert soft["spread_hu"] == pytest.approx(10.0, abs=0.01)  # between the two cases
    assert soft["within_sd_hu"] == pytest.approx(0.0, abs=0.05)  # each case is flat
    fat = world.hu["a"][world.fat]
    assert stats[2]["mean_hu"] == pytest.approx(fat.mean(), abs=0.01)
    assert stats[2]["within_sd_hu"] == pytest.approx(fat.std(), abs=0.01)
    assert stats[2]["spread_hu"] == pytest.approx(0.0, abs=0.01)
    assert stats[4]["mean_hu"] == pytest.approx(240.0, abs=0.01)  # bone, at the window's top
    assert stats[TARGET]["mean_hu"] == pytest.approx(60.0, abs=0.01)


def test_the_fitted_draw_centres_each_class_on_its_real_intensity():
    stats = class_stats(TwoCases(), ["a", "b"])
    rng = np.random.default_rng(0)
    draws = [draw(rng, stats) for _ in range(4000)]
    means = np.array([d["mean_hu"] for d in draws])
    sds = np.array([d["std_hu"] for d in draws])
    assert means[:, 3].mean() == pytest.approx(50.0, abs=1.0)
    assert means[:, 3].std() == pytest.approx(10.0, abs=1.0)  # the spread between cases
    # one flat case target: the spread is the floor, not zero
    assert means[:, TARGET].std() == pytest.approx(MEAN_SPREAD_FLOOR_HU, abs=0.5)
    fat_sd = stats[2]["within_sd_hu"]
    assert NOISE_SHARE[0] * fat_sd <= sds[:, 2].min() and sds[:, 2].max() <= NOISE_SHARE[1] * fat_sd
    low, high = MEAN_HU[1]  # a class the cases lack falls back to the wide range
    assert low <= means[:, 1].min() and means[:, 1].max() <= high
    assert means[:, 3].std() < 0.5 * np.array([draw(rng)["mean_hu"][3] for _ in range(400)]).std()


def test_the_painting_form_is_chosen_and_checked(pairs_world):
    cache = Cache(pairs_world["cache"])
    train, _ = load_split(cache.root)
    fitted = Labels2ImageDataset(cache, train, seed=3)
    wide = Labels2ImageDataset(cache, train, seed=3, form="wide")
    assert fitted.settings == {"form": "fitted", "variants": 8, "seed": 3}
    assert wide.stats is None and fitted.stats is not None
    assert not np.array_equal(fitted[2]["image"].numpy(), wide[2]["image"].numpy())
    with pytest.raises(ConfigError, match="fitted or wide"):
        Labels2ImageDataset(cache, train, form="narrow")
