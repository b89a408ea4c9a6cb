"""Masks for mask-conditioned synthesis: real training layouts under random transforms
(draw, then apply: repeatable, integer classes, target kept) and the user's own NIfTI
label maps (geometry kept on the model grid, each bad input one line naming its file).

A 2D and a 3D cache of a two-patient phantom are built once per module (under a
second); the context map, which this branch's caches do not store yet, is computed
from the cached image by the reader the tests feed in.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaug.errors import ConfigError, InputError
from medaug.io.nifti import write_volume
from medaug.preprocess import PreprocessConfig, layout, preprocess
from medaug.preprocess.cache import Cache
from medaug.preprocess.transforms import unit_to_hu
from medaug.segment import fidelity
from medaug.synth.masks import REDRAWS, RealMasks, UserMasks, warp

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

GRID_2D = (32, 32)
GRID_3D = (16, 16, 16)


@pytest.fixture(scope="module")
def caches(nifti_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Cache]:
    root = tmp_path_factory.mktemp("masks")
    two = preprocess(nifti_cohort, root / "c2", PreprocessConfig(grid_2d=GRID_2D), workers=1)
    three = preprocess(
        nifti_cohort, root / "c3", PreprocessConfig(dims=3, grid_3d=GRID_3D), workers=1
    )
    return {2: Cache(two.out), 3: Cache(three.out)}


def reader(cache: Cache):
    """``(case, kind) -> (Z, X, Y)``: the cached label, and a context map from the
    cached image (what the context branch will cache)."""

    def read(case: str, kind: str) -> np.ndarray:
        if kind == "label":
            return cache.array(case, "label")
        hu = unit_to_hu(np.moveaxis(np.asarray(cache.array(case, "image")), 0, -1), (-160, 240))
        return np.moveaxis(layout.context_map(hu), -1, 0)

    return read


def real(caches: dict[int, Cache], dims: int, channels: str, **kwargs) -> RealMasks:
    cache = caches[dims]
    return RealMasks(cache, cache.case_ids, channels, dims, read=reader(cache), **kwargs)


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# ---- real masks ---------------------------------------------------------------------


@pytest.mark.parametrize("channels", ["target", "target+body+tissue"])
@pytest.mark.parametrize("dims", [2, 3])
def test_real_masks_repeat_keep_classes_and_target(caches, dims: int, channels: str) -> None:
    masks = real(caches, dims, channels)
    again = real(caches, dims, channels)  # a fresh instance: nothing remembered
    grid = GRID_2D if dims == 2 else GRID_3D
    offset = layout.context_offset(channels)
    plans = [masks.plan(i, seed=3) for i in range(6)]
    assert len({json.dumps(p, sort_keys=True) for p in plans}) == len(plans)
    moved = 0
    for i, params in enumerate(plans):
        assert again.plan(i, seed=3) == params
        assert json.loads(json.dumps(params)) == params
        assert params["masks"] == "real" and params["attempt"] == len(params.get("refused", []))
        assert isinstance(params["elastic"]["seed"], int)
        mask = masks.make(params)
        np.testing.assert_array_equal(again.make(params), mask)
        assert mask.shape == grid and mask.dtype == np.uint8
        case = f"case_{params['source']:04d}"
        rec = caches[dims].records[case]
        if dims == 2:
            assert params["slice"] in rec["target_slices"]
            assert len(params["rotate_deg"]) == 1 and abs(params["rotate_deg"][0]) <= 15
        else:
            assert all(abs(a) <= m for a, m in zip(params["rotate_deg"], (5, 5, 15), strict=True))
        assert all(0.9 <= s <= 1.1 for s in params["scale"])
        assert all(abs(t) <= 0.1 * n for t, n in zip(params["translate_vox"], grid, strict=True))
        source = masks.source(case, params.get("slice"))
        assert set(np.unique(mask)) <= set(np.unique(source)) | {0}
        assert (layout.target_of(mask, channels) == 1).any()
        assert (mask > offset).any()
        moved += not np.array_equal(mask, source)
    assert moved == len(plans)
    assert masks.plan(0, seed=4) != plans[0]


def test_warp_moves_the_mask_as_its_params_say() -> None:
    a = np.zeros((20, 24), dtype=np.uint8)
    a[6:12, 8:14] = 3
    a[12:14, 8:10] = 1
    sp = (1.5, 1.5, 2.5)
    np.testing.assert_array_equal(warp(a, sp, [0.0], [1.0, 1.0], [0.0, 0.0]), a)
    shifted = warp(a, sp, [0.0], [1.0, 1.0], [2.0, -1.0])  # the mask moves +2 x, -1 y
    np.testing.assert_array_equal(shifted[8:16, 7:13], a[6:14, 8:14])
    grown = warp(a, sp, [0.0], [1.5, 1.5], [0.0, 0.0])
    assert (grown == 3).sum() == pytest.approx(2.25 * (a == 3).sum(), rel=0.25)
    turned = warp(a, sp, [90.0], [1.0, 1.0], [0.0, 0.0])
    assert (turned == 3).sum() == (a == 3).sum()  # a quarter turn maps voxels onto voxels
    vol = np.zeros((12, 12, 8), dtype=np.uint8)
    vol[3:9, 4:8, 2:6] = 1
    elastic = {"spacing_vox": 4.0, "magnitude_vox": 1.0, "seed": 7}
    bent = warp(vol, sp, [3.0, -2.0, 10.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], elastic)
    np.testing.assert_array_equal(
        bent, warp(vol, sp, [3.0, -2.0, 10.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], elastic)
    )
    assert set(np.unique(bent)) <= {0, 1} and not np.array_equal(bent, vol)


def test_moved_reals_put_real_anatomy_where_each_layout_puts_the_target(caches) -> None:
    """The moved real control: each plan's source slice under that plan's own moves,
    its label the layout's target voxel for voxel; no move gives the cached slice."""
    cache = caches[2]
    masks = real(caches, 2, "target+body+tissue")
    plans = [masks.plan(i, seed=5) for i in range(6)]
    images, labels = fidelity.moved_reals(cache, plans)
    assert images.shape == labels.shape == (6, *GRID_2D)
    for plan, image, label in zip(plans, images, labels, strict=True):
        target = layout.target_of(masks.make(plan), "target+body+tissue") == 1
        np.testing.assert_array_equal(label == 1, target)
        source = np.asarray(cache.array(f"case_{plan['source']:04d}", "image")[plan["slice"]])
        assert image.min() >= -1.0 and not np.allclose(image, source)
    still = real(caches, 2, "target", rotate_deg=(0.0, 0.0, 0.0), scale=(1.0, 1.0),
                 translate_frac=0.0, elastic=None)  # fmt: skip
    plan = still.plan(0, seed=0)
    image, label = fidelity.moved_reals(cache, [plan])
    case = f"case_{plan['source']:04d}"
    np.testing.assert_allclose(image[0], cache.array(case, "image")[plan["slice"]], atol=1e-5)
    np.testing.assert_array_equal(label[0], cache.array(case, "label")[plan["slice"]])
    for bad in ({**plan, "masks": "learned"}, {**plan, "source": 99}):
        with pytest.raises(ConfigError, match="not one moved real slice"):
            fidelity.moved_reals(cache, [bad])


def test_real_masks_redraw_until_the_target_survives(caches) -> None:
    far = real(caches, 2, "target", translate_frac=0.5, elastic=None)
    plans = [far.plan(i, seed=0) for i in range(12)]
    assert any(p["attempt"] > 0 for p in plans)
    for p in plans:
        assert (far.make(p) == 1).any()
    gone = real(caches, 2, "target", translate_frac=50.0, scale=(0.2, 0.2))
    with pytest.raises(ConfigError, match=f"in {REDRAWS + 1} draws"):
        gone.plan(0, seed=0)


def test_real_masks_keep_the_target_off_the_grid_edge(caches) -> None:
    """Wide shifts push a target that sat clear of the edge against it: such draws are
    refused and recorded, and no kept mask has a target voxel on the grid's edge."""
    cache = caches[2]

    def disk(case: str, kind: str) -> np.ndarray:  # a target of radius 5 in the middle
        z, x, y = np.asarray(cache.array(case, "label")).shape
        gx, gy = np.meshgrid(np.arange(x) - x / 2, np.arange(y) - y / 2, indexing="ij")
        return np.broadcast_to(np.hypot(gx, gy) < 5, (z, x, y)).astype(np.uint8)

    wide = RealMasks(cache, cache.case_ids, "target", 2, read=disk, translate_frac=0.45,
                     elastic=None)  # fmt: skip
    plans = [wide.plan(i, seed=0) for i in range(16)]
    refused = [why for p in plans for why in p.get("refused", [])]
    assert "at the edge" in refused
    for p in plans:
        target = wide.make(p) == 1
        assert target.any()
        assert not (
            target[0].any() or target[-1].any() or target[:, 0].any() or target[:, -1].any()
        )
        assert p["attempt"] == len(p.get("refused", []))


def test_real_masks_reject_what_cannot_work(caches) -> None:
    with pytest.raises(ConfigError, match="2D cache"):
        RealMasks(caches[2], caches[2].case_ids, "target", 3)
    with pytest.raises(ConfigError, match="case_0099"):
        RealMasks(caches[2], ["case_0099"], "target", 2)
    with pytest.raises(ConfigError, match="layout"):
        RealMasks(caches[2], caches[2].case_ids, "target+bone", 2)
    masks = real(caches, 2, "target")
    with pytest.raises(ConfigError, match="not a plan"):
        masks.make({"masks": "user", "map": 0})


# ---- user masks ---------------------------------------------------------------------


def ellipsoid_map(
    path: Path, affine: np.ndarray, shape: tuple[int, ...], centre_mm, radii_mm, value: int = 1
) -> float:
    """Write an ellipsoid label around a world point; returns its volume in mm^3 as
    voxels of this grid count it."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    inside = (((world - centre_mm) / radii_mm) ** 2).sum(axis=-1) <= 1.0
    label = np.where(inside, value, 0).astype(np.uint8)
    write_volume(label, affine, path)
    return float(inside.sum() * abs(np.linalg.det(affine[:3, :3])))


def rotation(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_user_map_keeps_its_geometry_on_the_grid(tmp_path: Path, dims: int, oblique: bool) -> None:
    # LPS, 0.8 x 0.8 x 2 mm; oblique: also turned 25 deg about z and 10 deg about x
    direction = np.diag([-1.0, -1.0, 1.0])
    if oblique:
        direction = rotation(2, 25.0) @ rotation(0, 10.0) @ direction
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag([0.8, 0.8, 2.0])
    affine[:3, 3] = [40.0, 30.0, -70.0]
    centre = affine[:3, :3] @ np.array([45.0, 35.0, 16.0]) + affine[:3, 3]
    path = tmp_path / "mine.nii.gz"
    volume = ellipsoid_map(path, affine, (80, 80, 32), centre, np.array([15.0, 10.0, 8.0]))
    config = PreprocessConfig(dims=dims, grid_2d=(40, 40), grid_3d=(40, 40, 24))
    masks = UserMasks(path, config, dims)
    assert len(masks) == 1 and masks.names == ["mine"]
    grid = masks.class_map(0)
    sp = np.array(config.spacing_mm)
    assert grid.dtype == np.uint8 and set(np.unique(grid)) == {0, 1}
    if dims == 3:
        assert grid.shape == (40, 40, 24)
    else:
        assert grid.shape[:2] == (40, 40)
        # z: the target's slices and the 20 mm margin on each side, at 2.5 mm
        assert grid.shape[2] == pytest.approx((16 + 40) / 2.5 + 1, abs=2)
        on = masks.slices(0)
        assert on == np.flatnonzero(grid.any(axis=(0, 1))).tolist() and on
    # the target sits at the grid's centre, and its volume is kept
    ijk = np.argwhere(grid == 1).mean(axis=0)
    middle = (np.array(grid.shape) - 1) / 2.0
    assert np.all(np.abs((ijk - middle) * sp) <= sp)
    assert (grid == 1).sum() * sp.prod() == pytest.approx(volume, rel=0.08)


def test_user_map_lands_where_preprocessing_puts_its_scan(nifti_cohort: Path, caches) -> None:
    labels = sorted((nifti_cohort / "labelsTr").glob("*.nii.gz"))
    for dims in (2, 3):
        cache = caches[dims]
        masks = UserMasks(nifti_cohort / "labelsTr", cache.config, dims)
        assert masks.names == [p.name.removesuffix(".nii.gz") for p in labels]
        for k, case in enumerate(cache.case_ids):
            cached = np.moveaxis(np.asarray(cache.array(case, "label")), 0, -1)
            np.testing.assert_array_equal(masks.class_map(k), cached)
            assert masks.slices(k) == cache.records[case]["target_slices"]


@pytest.mark.parametrize("dims", [2, 3])
def test_user_masks_plan_and_make(nifti_cohort: Path, caches, dims: int) -> None:
    masks = UserMasks(nifti_cohort / "labelsTr", caches[dims].config, dims)
    plans = [masks.plan(i, seed=5) for i in range(5)]
    assert [p["map"] for p in plans] == [0, 1, 0, 1, 0]
    assert plans == [masks.plan(i, seed=5) for i in range(5)]
    for p in plans:
        assert json.loads(json.dumps(p)) == p
        mask = masks.make(p)
        np.testing.assert_array_equal(mask, masks.make(p))
        assert mask.shape == (GRID_2D if dims == 2 else GRID_3D) and mask.dtype == np.uint8
        assert (mask == 1).any()
        if dims == 2:
            assert p["slice"] in masks.slices(p["map"])
    if dims == 2:
        assert len({p["slice"] for p in plans}) > 1


def write_map(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.5, 1.0])), str(path))
    return path


def pancreas(shape=(24, 24, 6), dtype=np.uint8, value=1) -> np.ndarray:
    a = np.zeros(shape, dtype=dtype)
    a[8:14, 9:15, ...] = value
    return a


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("non-label file", "not a NIfTI label map; masks takes .nii/.nii.gz files"),
        (
            "unknown value 7",
            "label values 7 are not classes of this model (known: 0 background; 1 pancreas)",
        ),
        ("no target", "no 'pancreas' voxels"),
        ("2D array for 3D", "a 2D map (one slice) cannot condition a 3D model"),
        ("one slice for 3D", "a 2D map (one slice) cannot condition a 3D model"),
        ("float values", "non-integer voxel values (e.g. 0.5)"),
        ("empty folder", "no .nii/.nii.gz label maps in this folder"),
        ("corrupt file", "not a readable NIfTI label map"),
    ],
)
def test_user_masks_reject_bad_input(tmp_path: Path, case: str, expected: str) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    write_map(folder / "good.nii.gz", pancreas())
    (folder / ".DS_Store").write_bytes(b"\0")  # hidden entries are skipped
    bad = folder / "bad.nii.gz"
    if case == "non-label file":
        bad = folder / "notes.txt"
        bad.write_text("my labels\n")
    elif case == "unknown value 7":
        pancreas_and_7 = pancreas()
        pancreas_and_7[0, 0, 0] = 7
        write_map(bad, pancreas_and_7)
    elif case == "no target":
        write_map(bad, np.zeros((24, 24, 6), dtype=np.uint8))
    elif case == "2D array for 3D":
        write_map(bad, pancreas(shape=(24, 24)))
    elif case == "one slice for 3D":
        write_map(bad, pancreas(shape=(24, 24, 1)))
    elif case == "float values":
        write_map(bad, pancreas(dtype=np.float32, value=0.5))
    elif case == "empty folder":
        for p in folder.iterdir():
            p.unlink()
        bad = folder
    else:
        bad.write_bytes(b"not gzip at all")
    with pytest.raises(InputError) as err:
        UserMasks(folder, PreprocessConfig(dims=3, grid_3d=(16, 16, 8)), 3)
    assert expected in one_line_naming(err, bad)


def test_user_masks_accept_what_is_a_label_map(tmp_path: Path) -> None:
    # whole numbers stored as floats, a 2D slice for a 2D model, a subfolder refused
    config = PreprocessConfig(
        grid_2d=(16, 16), spacing_mm=(1.5, 1.5, 2.5), labels={"pancreas": [1], "tumour": [2]}
    )  # the map's spacing
    floats = pancreas(dtype=np.float32)
    floats[10, 10, :] = 2.0
    masks = UserMasks(write_map(tmp_path / "floats.nii", floats), config, 2)
    assert set(np.unique(masks.class_map(0))) == {0, 1, 2}
    flat = UserMasks(write_map(tmp_path / "flat.nii.gz", pancreas(shape=(24, 24))), config, 2)
    assert flat.class_map(0).shape == (16, 16, 1) and flat.slices(0) == [0]
    assert flat.make(flat.plan(3, seed=0)).shape == (16, 16)
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError) as err:
        UserMasks(tmp_path, config, 2)
    assert "a folder" in one_line_naming(err, tmp_path / "sub")
