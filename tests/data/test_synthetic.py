"""SyntheticDataset and mix: synthetic pairs inside a MONAI / PyTorch pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import medaug
from medaug.data import SliceDataset
from medaug.errors import ConfigError, InputError
from medaug.preprocess import PreprocessConfig, preprocess

pytestmark = pytest.mark.usefixtures("one_thread_per_process")


def test_the_top_level_names_are_the_modules(pairs_world):
    from medaug.data.synthetic import SyntheticDataset, mix
    from medaug.synth.sampler import Synthesizer

    assert medaug.SyntheticDataset is SyntheticDataset
    assert medaug.mix is mix
    assert medaug.Synthesizer is Synthesizer
    with pytest.raises(AttributeError):
        _ = medaug.NoSuchThing  # type: ignore[attr-defined]


def test_items_hold_the_files_voxels_in_hu_and_unit(pairs_world):
    synth = pairs_world["synthetic"]
    ds = medaug.SyntheticDataset(synth)
    assert len(ds) == 8  # one slice per 2D case
    item = ds[3]
    nii = nib.load(str(synth / "images" / "synth_0003.nii.gz"))
    lab = nib.load(str(synth / "labels" / "synth_0003.nii.gz"))
    assert item["image"].shape == (1, 16, 16) and item["label"].shape == (1, 16, 16)
    np.testing.assert_array_equal(item["image"][0].numpy(), np.asarray(nii.dataobj)[..., 0])
    np.testing.assert_array_equal(item["label"][0].numpy(), np.asarray(lab.dataobj)[..., 0])
    np.testing.assert_allclose(item["image"].affine.numpy(), nii.affine, atol=1e-6)
    assert item["case_id"] == "synth_0003" and item["case"] == 3

    unit = medaug.SyntheticDataset(synth, intensity="unit")[3]["image"]
    low, high = ds.config.hu_window
    expected = (np.clip(item["image"].numpy(), low, high) - low) / (high - low) * 2 - 1
    np.testing.assert_allclose(unit.numpy(), expected, atol=1e-5)
    assert float(unit.min()) >= -1 and float(unit.max()) <= 1


def test_a_transform_is_applied_to_every_item(pairs_world):
    ds = medaug.SyntheticDataset(pairs_world["synthetic"], transform=lambda d: {**d, "seen": 1})
    assert ds[0]["seen"] == 1


def test_a_folder_with_an_image_but_no_label_names_the_case(pairs_world, tmp_path: Path):
    synth = tmp_path / "synthetic"
    shutil.copytree(pairs_world["synthetic"], synth)
    (synth / "labels" / "synth_0005.nii.gz").unlink()
    with pytest.raises(InputError) as err:
        medaug.SyntheticDataset(synth)
    assert "synth_0005" in str(err.value) and "no label file" in str(err.value)


def test_a_folder_that_is_no_synthesis_is_refused(tmp_path: Path):
    with pytest.raises(InputError, match="not a medaug synthesis folder"):
        medaug.SyntheticDataset(tmp_path)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_mix_refuses_a_ratio_outside_0_1(pairs_world, ratio: float):
    real = SliceDataset(pairs_world["cache"])
    synth = medaug.SyntheticDataset(pairs_world["synthetic"], intensity="unit")
    with pytest.raises(ConfigError, match=r"ratio must be in \[0, 1\)"):
        medaug.mix(real, synth, ratio)


def test_mix_draws_the_ratio_repeatably_and_collates(pairs_world):
    real = SliceDataset(pairs_world["cache"], context=0)
    synth = medaug.SyntheticDataset(pairs_world["synthetic"], intensity="unit")
    mixed = medaug.mix(real, synth, 0.3, length=2000, seed=1)
    share = np.mean([mixed.draw(i)[0] for i in range(2000)])
    assert abs(share - 0.3) < 0.04
    assert len(medaug.mix(real, synth, 0.3)) == int(np.ceil(len(real) / 0.7))
    a, b = mixed[17], medaug.mix(real, synth, 0.3, length=2000, seed=1)[17]
    assert torch.equal(a["image"], b["image"]) and a["synthetic"] == b["synthetic"]
    batch = next(iter(DataLoader(mixed, batch_size=32)))
    assert batch["image"].shape == (32, 1, 16, 16) and batch["label"].shape == (32, 1, 16, 16)
    assert 0 < int(batch["synthetic"].sum()) < 32
    # the synthetic items are the folder's, the real ones the cache's
    i = next(i for i in range(2000) if mixed.draw(i)[0])
    j = mixed.draw(i)[1]
    assert torch.equal(mixed[i]["image"], torch.as_tensor(synth[j]["image"]))


def test_mix_with_real_weights_draws_only_weighted_items(pairs_world):
    real = SliceDataset(pairs_world["cache"], context=0)
    synth = medaug.SyntheticDataset(pairs_world["synthetic"], intensity="unit")
    weights = np.zeros(len(real))
    weights[5] = 1.0
    mixed = medaug.mix(real, synth, 0.0, length=50, real_weights=weights)
    assert {mixed.draw(i) for i in range(50)} == {(False, 5)}


def test_mix_refuses_hu_items_next_to_unit_items(pairs_world):
    real = SliceDataset(pairs_world["cache"])
    synth = medaug.SyntheticDataset(pairs_world["synthetic"])  # HU
    with pytest.raises(ConfigError, match="intensity='unit'"):
        medaug.mix(real, synth, 0.5)


def test_mix_refuses_synthetic_cases_of_another_grid(pairs_world, tmp_path: Path):
    other = preprocess(pairs_world["cohort"], tmp_path / "c24", PreprocessConfig(grid_2d=(24, 24)))
    real = SliceDataset(other.out)
    synth = medaug.SyntheticDataset(pairs_world["synthetic"], intensity="unit")
    with pytest.raises(ConfigError, match="different preprocessing"):
        medaug.mix(real, synth, 0.5)


def test_synthesizer_sample_gives_metatensor_pairs_in_memory(pairs_world, tmp_path: Path):
    before = set(Path(pairs_world["checkpoint"]).parent.parent.rglob("*"))
    pairs = medaug.Synthesizer(pairs_world["checkpoint"], device="cpu").sample(3, seed=4)
    assert len(pairs) == 3
    assert pairs[0]["image"].shape == (1, 16, 16, 1) and pairs[0]["label"].dtype == torch.uint8
    assert pairs[0]["image"].affine.shape == (4, 4)
    assert set(Path(pairs_world["checkpoint"]).parent.parent.rglob("*")) == before  # no files
    # the same pairs as the files synth wrote for the same seed and indices
    again = medaug.Synthesizer(pairs_world["checkpoint"], device="cpu").sample(3, seed=4)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(pairs, again, strict=True))
