"""The context map: computed from HU before the window, cached beside each label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medaug.data import SliceDataset, VolumeDataset
from medaug.errors import ConfigError, InputError
from medaug.io import Scan
from medaug.preprocess import PreprocessConfig, preprocess, preprocess_scan
from medaug.preprocess import pipeline as P
from medaug.preprocess import transforms as T
from medaug.preprocess.cache import Cache
from medaug.preprocess.layout import context_map

#: A window wide enough to hold every phantom HU, so the cached image gives HU back.
WIDE = (-1100.0, 3100.0)


@pytest.fixture(scope="module")
def cache2d(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("context") / "c2"
    preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    return out


@pytest.fixture(scope="module")
def cache3d(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("context") / "c3"
    # the whole scan and padding around it (its field is 400 x 400 x 30 mm)
    config = PreprocessConfig(
        dims=3, crop="none", spacing_mm=(8, 8, 2.5), grid_3d=(56, 56, 16), hu_window=WIDE
    )
    preprocess(dicom_cohort, out, config, workers=1)
    return out


# ---------------------------------------------------------------------------------
# context_map on a hand-built volume


def test_body_is_the_largest_component_with_its_holes_filled() -> None:
    hu = np.full((20, 20, 3), -1000.0, dtype=np.float32)
    hu[2:16, 2:16] = 40.0  # the body: soft tissue
    hu[6:9, 6:9] = -900.0  # an air pocket inside it (bowel gas)
    hu[18:20, 18:20] = 40.0  # a small blob outside it (the table)
    context = context_map(hu)
    assert context.dtype == np.uint8 and context.shape == hu.shape
    assert (context[6:9, 6:9] == 1).all()  # inside the body: air, not outside
    assert (context[18:20, 18:20] == 0).all()
    assert (context[:2] == 0).all() and (context[16:18] == 0).all()
    body = np.zeros(hu.shape, dtype=bool)
    body[2:16, 2:16] = True
    assert (context[body & (hu == 40.0)] == 3).all()


def test_each_tissue_band_gets_its_class_at_the_cut_points() -> None:
    hu = np.full((12, 12, 2), 40.0, dtype=np.float32)
    hu[0] = hu[-1] = hu[:, 0] = hu[:, -1] = -1000.0  # air around the body
    bands = {(3, 3): -401.0, (3, 4): -400.0, (3, 5): -31.0, (3, 6): -30.0,
             (3, 7): 199.0, (3, 8): 200.0, (4, 3): -150.0, (4, 4): 900.0}  # fmt: skip
    for (x, y), value in bands.items():
        hu[x, y] = value
    context = context_map(hu, body_threshold_hu=-500.0, tissue_hu=(-400.0, -30.0, 200.0))
    got = {xy: int(context[(*xy, 0)]) for xy in bands}
    assert got == {(3, 3): 1, (3, 4): 2, (3, 5): 2, (3, 6): 3,
                   (3, 7): 3, (3, 8): 4, (4, 3): 2, (4, 4): 4}  # fmt: skip
    # other cut points move the bands
    moved = context_map(hu, tissue_hu=(-500.0, -160.0, 1000.0))
    assert (moved[3, 3, 0], moved[4, 3, 0], moved[4, 4, 0]) == (2, 3, 3)


def test_no_body_gives_an_all_zero_map() -> None:
    context = context_map(np.full((4, 4, 2), -1000.0, dtype=np.float32))
    assert context.dtype == np.uint8 and not context.any()


# ---------------------------------------------------------------------------------
# The config


def test_tissue_hu_is_a_tuple_of_increasing_floats() -> None:
    config = PreprocessConfig.from_dict({"tissue_hu": [-400, -30, 200]})
    assert config.tissue_hu == (-400.0, -30.0, 200.0) == PreprocessConfig().tissue_hu
    assert all(isinstance(v, float) for v in config.tissue_hu)
    with pytest.raises(ConfigError, match=r"tissue_hu must be 3 increasing HU cut points"):
        PreprocessConfig.from_dict({"tissue_hu": [-400, 200, -30]})
    with pytest.raises(ConfigError, match=r"tissue_hu must be 3 increasing"):
        PreprocessConfig(tissue_hu=(-30.0, -30.0, 200.0))
    with pytest.raises(ConfigError, match=r"tissue_hu must be 3 numbers"):
        PreprocessConfig.from_dict({"tissue_hu": [-400, -30]})


def test_tissue_hu_and_the_cache_format_are_part_of_the_cache_key(
    cache2d: Path, dicom_cohort: Path, tmp_path: Path
) -> None:
    settings = P.cache_settings(PreprocessConfig())
    assert settings["tissue_hu"] == [-400.0, -30.0, 200.0] and settings["format"] == 2
    out = tmp_path / "c"
    shutil.copytree(cache2d, out)
    changed = PreprocessConfig(grid_2d=(32, 32), tissue_hu=(-300.0, -30.0, 200.0))
    with pytest.raises(ConfigError, match="other scans or settings"):
        preprocess(dicom_cohort, out, changed, workers=1)


# ---------------------------------------------------------------------------------
# preprocess_scan: from HU before the window, on the model grid


def test_context_comes_from_hu_before_the_window_and_padding_is_outside() -> None:
    image = np.full((20, 20, 10), 40.0, dtype=np.float32)  # the body fills the scan
    image[4:8, 4:8] = -900.0  # lung
    image[12:16, 12:16] = -170.0  # fat below the window's floor
    label = np.zeros(image.shape, dtype=np.uint8)
    label[9:11, 9:11, 4:6] = 1
    image[label > 0] = 100.0
    scan = Scan(image, np.diag([2.0, 2.0, 2.0, 1.0]), label, provenance={"source": "block"})
    config = PreprocessConfig(dims=3, crop="none", spacing_mm=(2, 2, 2), grid_3d=(24, 24, 16))
    out = preprocess_scan(scan, config)
    assert out.context.dtype == np.uint8 and out.context.shape == out.label.shape == (24, 24, 16)
    # the grid is centred on the scan: 2 voxels of padding in x and y, 3 in z
    expected = np.zeros((24, 24, 16), dtype=np.uint8)
    inside = (slice(2, 22), slice(2, 22), slice(3, 13))
    source = np.full(image.shape, 3, dtype=np.uint8)
    source[4:8, 4:8], source[12:16, 12:16] = 1, 2
    expected[inside] = source
    np.testing.assert_array_equal(out.context, expected)
    # the window clips lung and fat to the same value; the context tells them apart
    assert out.image[6, 6, 8] == out.image[16, 16, 8] == -1.0
    assert (out.context[6, 6, 8], out.context[16, 16, 8]) == (1, 2)
    np.testing.assert_array_equal(out.label[inside], label)


# ---------------------------------------------------------------------------------
# The cache


def test_cache_holds_a_context_map_beside_each_label(cache2d: Path) -> None:
    cache = Cache(cache2d)
    assert cache.has_context
    for case_id in cache.case_ids:
        context = np.load(cache2d / "cases" / f"{case_id}_context.npy")
        label = np.load(cache2d / "cases" / f"{case_id}_label.npy")
        image = np.load(cache2d / "cases" / f"{case_id}_image.npy")
        assert context.shape == label.shape == image.shape and context.dtype == np.uint8
        assert int(context.max()) <= 4
        assert (context[label > 0] > 0).all()  # the pancreas is inside the body
        # inside the window the image gives HU back, and the class is its band
        hu = T.unit_to_hu(image.astype(np.float64), cache.config.hu_window)
        near_cut = np.abs(hu[..., None] - np.array(cache.config.tissue_hu)).min(axis=-1) < 0.01
        windowed = (np.abs(image) < 1.0) & (context > 0) & ~near_cut
        assert windowed.mean() > 0.5
        band = np.digitize(hu, cache.config.tissue_hu) + 1
        np.testing.assert_array_equal(context[windowed], band[windowed])
        # below the window's floor (-160 HU) is air or fat, above its top bone
        assert set(np.unique(context[(image == -1.0) & (context > 0)])) <= {1, 2}
        assert set(np.unique(context[image == 1.0])) <= {4}
        np.testing.assert_array_equal(cache.array(case_id, "context"), context)


def test_cached_context_is_the_context_map_of_the_cached_hu(cache3d: Path) -> None:
    cache = Cache(cache3d)
    for case_id in cache.case_ids:
        image = np.load(cache3d / "cases" / f"{case_id}_image.npy").transpose(1, 2, 0)
        context = np.load(cache3d / "cases" / f"{case_id}_context.npy").transpose(1, 2, 0)
        hu = T.unit_to_hu(image.astype(np.float64), WIDE)
        assert hu.min() < -1000 and hu.max() > 200  # air and bone, nothing clipped
        cuts = np.array([cache.config.body_threshold_hu, *cache.config.tissue_hu])
        exact = np.abs(hu[..., None] - cuts).min(axis=-1) > 0.01
        again = context_map(hu, cache.config.body_threshold_hu, cache.config.tissue_hu)
        np.testing.assert_array_equal(context[exact], again[exact])
        assert set(np.unique(context)) == {0, 1, 2, 3, 4}
        # the grid's 40 mm of z hold the scan's 30 mm: two slices of padding each side
        padding = np.zeros(hu.shape, dtype=bool)
        padding[..., [0, 1, -2, -1]] = True
        np.testing.assert_allclose(hu[padding], T.AIR_HU, atol=0.01)
        assert not context[padding].any() and not context[hu < -1000].any()


def test_missing_context_is_one_line_naming_the_file(cache2d: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(cache2d, old)
    missing = old / "cases" / "case_0001_context.npy"
    missing.unlink()
    cache = Cache(old)
    assert not cache.has_context
    message = f"{missing}: no context map in this cache (made by an older medaug); preprocess again"
    with pytest.raises(InputError) as caught:
        cache.array("case_0001", "context")
    assert str(caught.value) == message and "\n" not in message
    assert cache.array("case_0000", "context").shape == cache.array("case_0000", "label").shape
    with pytest.raises(InputError) as caught:
        SliceDataset(old, with_context=True)
    assert str(caught.value) == message
    # the cases that have one, and datasets without the flag, still work
    assert "context" in SliceDataset(old, ["case_0000"], with_context=True)[0]
    assert "context" not in SliceDataset(old)[0]


def test_missing_context_through_a_volume_dataset(cache3d: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(cache3d, old)
    missing = old / "cases" / "case_0002_context.npy"
    missing.unlink()
    with pytest.raises(InputError, match=r"case_0002_context.npy: no context map in this cache"):
        VolumeDataset(old, with_context=True)
    assert "context" not in VolumeDataset(old)[2]


# ---------------------------------------------------------------------------------
# Datasets


def test_slice_items_carry_the_context_shaped_like_the_label(cache2d: Path) -> None:
    ds = SliceDataset(cache2d, with_context=True, context=1)
    stored = np.load(cache2d / "cases" / "case_0001_context.npy")
    first = next(i for i in range(len(ds)) if int(ds.items[i][0]) == 1)
    for z in (0, 3):
        item = ds[first + z]
        assert (item["case_id"], item["slice"]) == ("case_0001", z)
        assert item["context"].shape == item["label"].shape == (1, 32, 32)
        assert item["context"].dtype == item["label"].dtype
        np.testing.assert_array_equal(item["context"][0].numpy(), stored[z])
    assert item["image"].shape == (3, 32, 32)  # 2.5D neighbours are still the image's
    assert "context" not in SliceDataset(cache2d)[0]


def test_volume_items_carry_the_context_shaped_like_the_label(cache3d: Path) -> None:
    ds = VolumeDataset(cache3d, with_context=True)
    stored = np.load(cache3d / "cases" / "case_0001_context.npy").transpose(1, 2, 0)
    item = ds[1]
    assert item["context"].shape == item["label"].shape == (1, 56, 56, 16)
    assert item["context"].dtype == item["label"].dtype
    np.testing.assert_array_equal(item["context"][0].numpy(), stored)
    assert "context" not in VolumeDataset(cache3d)[1]


# ---------------------------------------------------------------------------------
# Resume


def test_a_case_without_its_context_or_record_is_redone(dicom_cohort: Path, tmp_path: Path):
    out = tmp_path / "c"
    config = PreprocessConfig(grid_2d=(32, 32))
    preprocess(dicom_cohort, out, config, workers=1)
    cases = out / "cases"
    before = np.load(cases / "case_0001_context.npy")
    # as a run killed before its index: one case lost its context, another its record
    (out / "index.json").unlink()
    (cases / "case_0001_context.npy").unlink()
    (cases / "case_0002.json").unlink()
    result = preprocess(dicom_cohort, out, config, workers=1)
    assert [c.reused for c in result.done] == [True, False, False]
    np.testing.assert_array_equal(np.load(cases / "case_0001_context.npy"), before)
    assert (cases / "case_0002.json").exists() and Cache(out).has_context


def test_the_record_is_written_after_the_context(
    dicom_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = P._save_npy

    def dies_at_context(path: Path, array: np.ndarray) -> None:
        if path.name.endswith("_context.npy"):
            raise KeyboardInterrupt  # as a worker killed while writing it
        real(path, array)

    monkeypatch.setattr(P, "_save_npy", dies_at_context)
    out = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    names = sorted(p.name for p in (out / "cases").iterdir())
    assert names == ["case_0000_image.npy", "case_0000_label.npy"]  # no record: redone
    monkeypatch.setattr(P, "_save_npy", real)
    result = preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    assert not any(c.reused for c in result.done)
    record = json.loads((out / "cases" / "case_0000.json").read_text())
    assert record["record"]["case_id"] == "case_0000" and Cache(out).has_context
