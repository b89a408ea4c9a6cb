"""Datasets over the cache, and patient-level splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medaug.data import Cache, SliceDataset, VolumeDataset, load_split, make_splits
from medaug.errors import ConfigError
from medaug.preprocess import PreprocessConfig, invert, preprocess


@pytest.fixture(scope="module")
def cache2d(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "c2"
    preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    return out


@pytest.fixture(scope="module")
def cache3d(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "c3"
    preprocess(dicom_cohort, out, PreprocessConfig(dims=3, grid_3d=(16, 16, 8)), workers=1)
    return out


def test_slice_items(cache2d: Path) -> None:
    ds = SliceDataset(cache2d)
    index = json.loads((cache2d / "index.json").read_text())
    assert len(ds) == sum(c["shape"][2] for c in index["cases"])
    item = ds[5]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 32, 32) and item["label"].dtype == torch.float32
    assert (item["case"], item["case_id"], item["slice"]) == (0, "case_0000", 5)
    stored = np.load(cache2d / "cases" / "case_0000_image.npy")
    np.testing.assert_array_equal(item["image"][0].numpy(), stored[5])
    on = [i for i in range(len(ds)) if ds.has_target[i]]
    assert ds[on[0]]["label"].sum() > 0


def test_context_slices_are_neighbours_with_edges_repeated(cache2d: Path) -> None:
    ds = SliceDataset(cache2d, context=1)
    stored = np.load(cache2d / "cases" / "case_0000_image.npy")
    middle, first = ds[3]["image"].numpy(), ds[0]["image"].numpy()
    assert middle.shape == (3, 32, 32)
    np.testing.assert_array_equal(middle, stored[2:5])
    np.testing.assert_array_equal(first, stored[[0, 0, 1]])
    assert ds[3]["label"].shape == (1, 32, 32)


def test_one_hot_labels(cache2d: Path) -> None:
    ds = SliceDataset(cache2d, one_hot=True)
    i = int(np.flatnonzero(ds.has_target)[0])
    assert ds[i]["label"].shape == (1, 32, 32)  # one class: pancreas
    np.testing.assert_array_equal(ds[i]["label"].numpy(), SliceDataset(cache2d)[i]["label"])


def test_sampler_draws_target_slices_at_the_requested_share(cache2d: Path) -> None:
    ds = SliceDataset(cache2d)
    natural = ds.has_target.mean()
    g = torch.Generator().manual_seed(0)
    drawn = list(ds.sampler(num_samples=4000, target_fraction=0.4, generator=g))
    share = ds.has_target[drawn].mean()
    assert abs(share - 0.4) < 0.03 and abs(natural - 0.4) > 0.1


def test_split_cases_and_dataloader_with_workers(cache2d: Path) -> None:
    train, val = load_split(cache2d)
    assert set(train).isdisjoint(val) and len(val) == 1
    ds = SliceDataset(cache2d, cases=train)
    assert {ds.cases[ci] for ci, _ in ds.items} == set(train)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 32, 32) and len(batch["case_id"]) == 4


def test_volume_items_and_inversion_to_hu(cache3d: Path) -> None:
    ds = VolumeDataset(cache3d)
    item = ds[1]
    assert len(ds) == 3
    assert item["image"].shape == (1, 16, 16, 8) and item["label"].shape == (1, 16, 16, 8)
    stored = np.load(cache3d / "cases" / "case_0001_image.npy")  # (Z, X, Y)
    np.testing.assert_array_equal(item["image"][0, :, :, 3].numpy(), stored[3])
    cache = Cache(cache3d)
    scan = invert(
        item["image"], cache.config, label=item["label"], affine=cache.affine("case_0001")
    )
    assert scan.shape == (16, 16, 8) and scan.orientation == "RAS"
    assert scan.label is not None and scan.label.sum() == item["label"].sum()
    # pancreas voxels come back as phantom soft tissue
    assert 50 < float(scan.image[scan.label == 1].mean()) < 150


def test_wrong_dataset_for_the_cache(cache2d: Path, cache3d: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use SliceDataset"):
        VolumeDataset(cache2d)
    with pytest.raises(ConfigError, match="use VolumeDataset"):
        SliceDataset(cache3d)
    with pytest.raises(ConfigError, match="no case case_0042"):
        SliceDataset(cache2d, cases=["case_0042"])
    from medaug.errors import InputError

    with pytest.raises(InputError, match="not a medaug cache"):
        SliceDataset(tmp_path)


def test_slice_affine_places_slice_in_the_volume(cache2d: Path) -> None:
    cache = Cache(cache2d)
    vol = cache.affine("case_0002")
    np.testing.assert_allclose(cache.affine("case_0002", 4) @ [1, 2, 0, 1], vol @ [1, 2, 4, 1])


# ---------------------------------------------------------------------------------
# Splits


def _patients() -> dict[str, str]:
    # 10 patients, some with two series
    cases = {f"case_{i:04d}": f"patient_{i // 2 if i < 8 else i - 4:04d}" for i in range(14)}
    return cases


def test_val_split_never_shares_a_patient() -> None:
    patients = _patients()
    for seed in range(20):
        doc = make_splits(patients, val_fraction=0.3, seed=seed)
        (split,) = doc["splits"]
        train = {patients[c] for c in split["train"]}
        val = {patients[c] for c in split["val"]}
        assert train.isdisjoint(val)
        assert len(val) == 3 and len(train | val) == 10
        assert sorted(split["train"] + split["val"]) == sorted(patients)


def test_folds_cover_every_patient_once() -> None:
    patients = _patients()
    doc = make_splits(patients, folds=5, seed=1)
    assert doc["folds"] == 5 and len(doc["splits"]) == 5
    held = [c for s in doc["splits"] for c in s["val"]]
    assert sorted(held) == sorted(patients)
    for s in doc["splits"]:
        assert {patients[c] for c in s["train"]}.isdisjoint({patients[c] for c in s["val"]})
    assert make_splits(patients, folds=5, seed=1) == doc  # seeded
    assert make_splits(patients, folds=5, seed=2) != doc


def test_bad_split_options() -> None:
    with pytest.raises(ConfigError, match="between 2 and the 10 patients"):
        make_splits(_patients(), folds=11)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        make_splits(_patients(), val_fraction=1.0)
    one = make_splits({"case_0000": "patient_0000"}, val_fraction=0.2)
    assert one["splits"] == [{"train": ["case_0000"], "val": []}]
