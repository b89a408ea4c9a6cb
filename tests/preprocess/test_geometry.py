"""Geometry and intensities through preprocessing: world positions, HU window, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensityRange

from medaug.io import Scan
from medaug.preprocess import PreprocessConfig, invert, preprocess_scan
from medaug.preprocess import transforms as T

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _affine(kind: str) -> np.ndarray:
    """Voxel -> RAS affines of source scans: DICOM-like LPS, an axis permutation with
    flips (PIR), and an oblique one (rotated 20 degrees about z)."""
    a = np.eye(4)
    if kind == "LPS":
        a[:3, :3] = LPS[:3, :3] @ np.diag([0.8, 0.7, 2.0])
    elif kind == "PIR":
        a[:3, :3] = np.array([[0, 0, 1.9], [-0.9, 0, 0], [0, -0.75, 0]])
    else:
        c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
        a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.8, 2.0])
    a[:3, 3] = [31.0, -17.5, 102.0]
    return a


def _marker_scan(kind: str) -> tuple[Scan, np.ndarray]:
    """A 40 HU block with a 200 HU, label-1 cube; returns the cube centre in RAS mm."""
    image = np.full((48, 56, 30), 40.0, dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    cube = (slice(20, 27), slice(30, 37), slice(12, 17))
    image[cube] = 200.0
    label[cube] = 1
    affine = _affine(kind)
    centre = affine @ np.array([23.0, 33.0, 14.0, 1.0])
    return Scan(image, affine, label, provenance={"source": f"marker-{kind}"}), centre[:3]


def _centroid_mm(weights: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.indices(weights.shape).reshape(3, -1)
    w = weights.reshape(-1).astype(np.float64)
    c = (idx * w).sum(axis=1) / w.sum()
    return (affine @ np.array([*c, 1.0]))[:3]


@pytest.mark.parametrize("kind", ["LPS", "PIR", "oblique"])
@pytest.mark.parametrize("crop", ["none", "target"])
def test_voxel_keeps_its_world_position(kind: str, crop: str) -> None:
    scan, centre = _marker_scan(kind)
    config = PreprocessConfig(
        dims=3, spacing_mm=(1.0, 1.1, 1.5), crop=crop, margin_mm=5.0, grid_3d=(32, 32, 24)
    )
    if crop == "none":
        config = config.replace(grid_3d=None)
    out = preprocess_scan(scan, config)
    assert T.geometry.orientation_code(out.affine) == "RAS"
    assert T.geometry.spacing(out.affine) == pytest.approx((1.0, 1.1, 1.5))
    background = T.hu_to_unit(40.0, config.hu_window)
    image_centre = _centroid_mm(np.clip(out.image - background, 0, None), out.affine)
    label_centre = _centroid_mm(out.label == 1, out.affine)
    assert np.abs(image_centre - centre).max() < 0.2  # mm
    # nearest neighbour moves a boundary by at most half an output voxel
    assert np.abs(label_centre - centre).max() < 0.75
    # the label still marks the bright cube
    assert out.image[out.label == 1].mean() > T.hu_to_unit(150.0, config.hu_window)


def test_target_crop_keeps_margin_around_target() -> None:
    scan, _ = _marker_scan("LPS")
    config = PreprocessConfig(dims=3, spacing_mm=(1.0, 1.0, 1.0), margin_mm=7.0, grid_3d=None)
    out = preprocess_scan(scan, config)
    lo, hi = T.bounding_box(out.label == 1)
    # the margin (7 mm = 7 voxels) on every side, within one voxel of grid rounding
    assert np.all(lo >= 6) and np.all(np.array(out.image.shape) - 1 - hi >= 6)
    assert np.all(lo <= 8) and np.all(np.array(out.image.shape) - 1 - hi <= 8)


def test_target_crop_centres_the_grid_on_the_target() -> None:
    scan, centre = _marker_scan("LPS")
    config = PreprocessConfig(dims=3, spacing_mm=(1.0, 1.0, 1.0), grid_3d=(16, 20, 24))
    out = preprocess_scan(scan, config)
    assert out.image.shape == (16, 20, 24)
    grid_centre = out.affine @ np.array([7.5, 9.5, 11.5, 1.0])
    assert np.abs(grid_centre[:3] - centre).max() < 0.5


def test_2d_keeps_target_z_range_plus_margin_and_lists_target_slices() -> None:
    scan, _ = _marker_scan("LPS")  # cube spans z = 12..16 (2 mm slices): 8 mm
    config = PreprocessConfig(spacing_mm=(1.0, 1.0, 2.0), margin_mm=4.0, grid_2d=(32, 32))
    out = preprocess_scan(scan, config)
    assert out.image.shape[:2] == (32, 32)
    assert out.image.shape[2] == 5 + 4  # cube slices + 2 mm-slices of margin on each side
    assert out.target_slices == [2, 3, 4, 5, 6]


def test_bspline_and_linear_agree_away_from_edges() -> None:
    scan, _ = _marker_scan("LPS")
    config = PreprocessConfig(dims=3, spacing_mm=(1.0, 1.0, 1.0), grid_3d=(24, 24, 24))
    lin = preprocess_scan(scan, config).image
    cub = preprocess_scan(scan, config.replace(image_interpolation="bspline")).image
    assert lin.shape == cub.shape
    inside = T.hu_to_unit(200.0, config.hu_window)
    assert abs(float(cub[12, 12, 12]) - inside) < 0.02
    assert abs(float(lin[12, 12, 12]) - inside) < 1e-4


def test_sheared_source_resamples_through_scipy() -> None:
    """A gantry tilt gives a sheared affine; ITK cannot hold it, scipy takes over."""
    scan, _ = _marker_scan("LPS")
    sheared = scan.affine.copy()
    sheared[1, 2] = 0.5  # y moves with the slice index
    tilted = Scan(scan.image, sheared, scan.label, provenance=scan.provenance)
    centre = sheared @ np.array([23.0, 33.0, 14.0, 1.0])
    config = PreprocessConfig(dims=3, spacing_mm=(1.0, 1.0, 1.0), grid_3d=(24, 24, 24))
    out = preprocess_scan(tilted, config)
    background = T.hu_to_unit(40.0, config.hu_window)
    found = _centroid_mm(np.clip(out.image - background, 0, None), out.affine)
    assert np.abs(found - centre[:3]).max() < 0.3


def test_hu_window_maps_and_inverts_exactly() -> None:
    window = (-160.0, 240.0)
    hu = np.array([-1024.0, -160.0, -35.0, 40.0, 240.0, 3000.0], dtype=np.float64)
    unit = T.hu_to_unit(hu, window)
    assert unit.tolist() == [-1.0, -1.0, -0.375, 0.0, 1.0, 1.0]
    assert T.unit_to_hu(unit, window).tolist() == [-160.0, -160.0, -35.0, 40.0, 240.0, 240.0]
    inside = np.linspace(-160, 240, 1001, dtype=np.float32)
    back = T.unit_to_hu(T.hu_to_unit(inside, window), window)
    np.testing.assert_allclose(back, inside, atol=1e-4)  # float32 rounding only
    # the same mapping MONAI's ScaleIntensityRange does, on torch tensors too
    monai = ScaleIntensityRange(-160, 240, -1, 1, clip=True)(torch.from_numpy(inside))
    np.testing.assert_allclose(T.hu_to_unit(torch.from_numpy(inside), window), monai, atol=1e-6)


def test_invert_gives_hu_and_the_grid_affine() -> None:
    scan, _ = _marker_scan("PIR")
    config = PreprocessConfig(dims=3, spacing_mm=(1.0, 1.0, 1.0), grid_3d=(24, 24, 24))
    out = preprocess_scan(scan, config)
    back = invert(torch.from_numpy(out.image)[None], config, label=out.label, affine=out.affine)
    assert back.shape == (24, 24, 24)
    np.testing.assert_array_equal(back.affine, out.affine)
    np.testing.assert_array_equal(back.label, out.label)
    assert float(back.image[12, 12, 12]) == pytest.approx(200.0, abs=0.01)
    # no affine given: the config's spacing, centred on the origin, RAS
    synthetic = invert(np.zeros((1, 8, 8, 4), dtype=np.float32), config)
    assert synthetic.orientation == "RAS"
    assert synthetic.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(synthetic.affine @ [3.5, 3.5, 1.5, 1], [0, 0, 0, 1])
    assert float(synthetic.image.max()) == 40.0  # 0 is the window's centre, 40 HU


def test_invert_reads_label_channels() -> None:
    config = PreprocessConfig()
    image = torch.zeros(1, 4, 4)  # one 2D slice, channel first
    one_channel = torch.full((1, 4, 4), -1.0)
    one_channel[0, 1, 2] = 0.9
    assert invert(image, config, label=one_channel).label[1, 2, 0] == 1
    assert invert(image, config, label=one_channel).label.sum() == 1
    scores = torch.zeros(2, 4, 4)
    scores[1, 3, 3] = 5.0
    assert invert(image, config, label=scores).label[3, 3, 0] == 1
    with pytest.raises(ValueError, match="does not match"):
        invert(image, config, label=torch.zeros(1, 5, 4))


@pytest.mark.parametrize("dims", [2, 3])
def test_monai_dictionary_chain_matches_the_fast_path(nifti_cohort, dims: int) -> None:
    """LoadImaged + the dictionary transforms give the fast path's grid and values."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from medaug.io import discover, load

    ref = discover(nifti_cohort)[0]
    config = PreprocessConfig(dims=dims, spacing_mm=(3.0, 3.0, 2.5), grid_2d=(32, 32))
    config = config.replace(grid_3d=(32, 32, 8), margin_mm=10.0)
    chain = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            *T.dictionary_chain(config),
        ]
    )
    d = chain({"image": str(ref.source), "label": str(ref.label)})
    fast = preprocess_scan(load(ref), config)
    assert tuple(d["image"].shape[1:]) == fast.image.shape
    monai_affine = d["image"].affine.numpy()
    # same spacing and direction; origins within one voxel
    np.testing.assert_allclose(monai_affine[:3, :3], fast.affine[:3, :3], atol=1e-6)
    offset = np.abs(monai_affine[:3, 3] - fast.affine[:3, 3]) / np.array(config.spacing_mm)
    assert offset.max() <= 1.0
    if offset.max() < 1e-6:  # the same grid: the same voxels
        np.testing.assert_allclose(d["image"][0].numpy(), fast.image, atol=1e-4)
    a, b = d["label"][0].numpy() > 0, fast.label > 0
    assert a.sum() > 0 and abs(int(a.sum()) - int(b.sum())) / b.sum() < 0.2


def test_body_box_is_exact_and_ignores_the_table() -> None:
    image = np.full((101, 90, 23), -1000.0, dtype=np.float32)
    image[13:87, 9:71, 2:21] = 30.0  # body
    image[5:97, 80:84, :] = 200.0  # table, apart from the body through air
    lo, hi = T.body_box(image, -500.0)
    assert lo.tolist() == [13, 9, 2] and hi.tolist() == [86, 70, 20]
