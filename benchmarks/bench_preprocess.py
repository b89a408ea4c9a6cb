"""Preprocessing benchmarks for medaug: one large scan, a cohort, the cache, memory.

Prints the machine facts and one Markdown table per section, and writes the same
results as JSON to ``<workdir>/bench_preprocess.json``. Test data (a phantom NIfTI scan
and a phantom DICOM cohort) are generated under ``<workdir>/data`` on the first run and
reused afterwards; caches go to ``<workdir>/caches``.

Sections:

1. One NIfTI scan (512 x 512 x 200, 0.78 x 0.78 x 1.25 mm, Decathlon layout) to
   1.5 x 1.5 x 2.5 mm, [-1, 1] window, body crop: the usual MONAI chain in one
   ``Compose`` (LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd,
   ScaleIntensityRanged, CropForegroundd) against medaug ``discover`` + ``load`` +
   ``preprocess_scan``. Times, speed-up, output shapes, and how well the two outputs
   agree in world space (corner voxel positions, label Dice, image difference).
2. ``preprocess`` of a 20-patient phantom DICOM cohort (TCIA layout) with 1 and 2
   workers.
3. Reading the cached training set through a ``torch.utils.data.DataLoader`` (2D
   slices 128 x 128, batch 32; 3D volumes 64^3, batch 4; 0 and 2 workers), against
   what one CPU training step of a small MONAI UNet consumes. Target: loading at
   least 5x faster than training.
4. Cache size per case, and peak memory of the medaug path on the scan of section 1
   in a fresh process (RSS and tracemalloc), against the float32 volume size.

Every timing runs each case once as a warm-up (the page cache is warm afterwards),
then ``--repeat`` times round-robin; the tables show the median.

Usage::

    python benchmarks/bench_preprocess.py            # full run
    python benchmarks/bench_preprocess.py --quick    # smoke run, 256 x 256 x 100, 4 patients
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    DEFAULT_WORKDIR,
    HIGH_WATER_SOURCE,
    MIB,
    Row,
    fmt_s,
    fmt_x,
    make_workdir,
    markdown_table,
    package_version,
    print_machine,
    run_memory_probe,
    run_timed,
    shape_name,
    spread,
    worker_rows,
    write_report,
)
from common import machine_facts as common_machine_facts
from scipy import ndimage

import medaug
import medaug.io
from medaug.data.phantom import PhantomConfig, write_cohort
from medaug.io.geometry import world_corners
from medaug.preprocess import PreprocessConfig, preprocess, preprocess_scan

SPACING_MM = (1.5, 1.5, 2.5)
HU_WINDOW = (-160.0, 240.0)
BODY_THRESHOLD_HU = -500.0
LOADING_TARGET_RATIO = 5.0
GEOMETRY_TARGET_VOXELS = 1.0

#: Run in a fresh interpreter: peak memory of one scan's preprocessing, over the
#: baseline after imports (peak RSS from VmHWM in /proc/self/status, falling back to
#: ru_maxrss off Linux). argv: Decathlon folder, mode (medaug | medaug-load |
#: medaug-tracemalloc | monai), spacing x,y,z, window low,high.
MEMORY_PROBE = (
    """
import json, resource, sys, warnings

warnings.simplefilter("ignore")
folder, mode = sys.argv[1], sys.argv[2]
spacing = tuple(float(v) for v in sys.argv[3].split(","))
low, high = (float(v) for v in sys.argv[4].split(","))

"""
    + HIGH_WATER_SOURCE
    + """if mode.startswith("medaug"):
    import medaug.io
    from medaug.preprocess import PreprocessConfig, preprocess_scan

    config = PreprocessConfig(
        dims=3, crop="body", grid_3d=None, margin_mm=0, spacing_mm=spacing, hu_window=(low, high)
    )
else:
    import glob
    from monai.transforms import (
        Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd,
        ScaleIntensityRanged, Spacingd,
    )

    keys = ["image", "label"]
    chain = Compose([
        LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=spacing, mode=("bilinear", "nearest")),
        ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=-1, b_max=1, clip=True),
        CropForegroundd(keys=keys, source_key="image", select_fn=lambda x: x > -1),
    ])
    item = {
        "image": glob.glob(folder + "/imagesTr/*.nii*")[0],
        "label": glob.glob(folder + "/labelsTr/*.nii*")[0],
    }
if mode.endswith("tracemalloc"):
    import tracemalloc
    tracemalloc.start()
base = high_water_bytes()
if mode.startswith("medaug"):
    scan = medaug.io.load(medaug.io.discover(folder)[0])
    if mode != "medaug-load":
        out = preprocess_scan(scan, config)
else:
    out = chain(item)
peak = high_water_bytes()
result = {"baseline_bytes": base, "peak_bytes": peak}
if mode.endswith("tracemalloc"):
    current, traced_peak = tracemalloc.get_traced_memory()
    result.update(tracemalloc_peak_bytes=traced_peak, tracemalloc_current_bytes=current)
print(json.dumps(result))
"""
)


def machine_facts() -> dict[str, Any]:
    """Versions and core counts that the numbers depend on."""
    return common_machine_facts(
        {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "monai": package_version("monai"),
            "nibabel": package_version("nibabel"),
        }
    )


# ---------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    scan_root: Path  # Decathlon folder with the one large NIfTI scan
    scan_dicom: Path  # the same scan as a DICOM series, TCIA layout
    scan_config: PhantomConfig
    cohort: Path  # root of the DICOM cohort (TCIA layout)
    cohort_patients: int
    cohort_shape: tuple[int, int, int]
    generate_s: dict[str, float]


def prepare_data(workdir: Path, quick: bool) -> Data:
    """Write (or reuse) the phantom scan and cohort under ``workdir/data``."""
    if quick:
        scan_config = PhantomConfig(shape=(256, 256, 100), fov_mm=400.0, slice_mm=2.5)
    else:
        scan_config = PhantomConfig(shape=(512, 512, 200), fov_mm=400.0, slice_mm=1.25)
    patients = 4 if quick else 20
    cohort_config = PhantomConfig()
    root = workdir / "data"
    generate_s: dict[str, float] = {}

    t0 = time.perf_counter()
    scan_root = root / f"nifti_1x{shape_name(scan_config.shape)}_{scan_config.slice_mm:g}mm"
    write_cohort(scan_root, patients=1, seed=0, fmt="nifti", config=scan_config)
    generate_s[scan_root.name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_dicom = root / f"dicom_1x{shape_name(scan_config.shape)}_{scan_config.slice_mm:g}mm"
    write_cohort(scan_dicom, patients=1, seed=0, fmt="dicom", config=scan_config)
    generate_s[scan_dicom.name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # same name, seed and config as bench_io.py's cohort, so the two share it
    cohort = root / f"cohort_{patients}x{shape_name(cohort_config.shape)}"
    write_cohort(cohort, patients=patients, seed=0, fmt="dicom", config=cohort_config)
    generate_s[cohort.name] = time.perf_counter() - t0
    return Data(
        scan_root, scan_dicom, scan_config, cohort, patients, cohort_config.shape, generate_s
    )


def _scan_files(root: Path) -> tuple[Path, Path]:
    image = next(iter(sorted((root / "imagesTr").glob("*.nii*"))))
    label = next(iter(sorted((root / "labelsTr").glob("*.nii*"))))
    return image, label


# ---------------------------------------------------------------------------------
# 1. One scan: MONAI chain against medaug


def medaug_scan_config() -> PreprocessConfig:
    return PreprocessConfig(
        dims=3,
        crop="body",
        grid_3d=None,
        margin_mm=0,
        spacing_mm=SPACING_MM,
        hu_window=HU_WINDOW,
        body_threshold_hu=BODY_THRESHOLD_HU,
    )


def monai_chain() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The usual MONAI chain with medaug's settings.

    The foreground crop runs on HU, before the window, so that it can use the same
    body threshold (-500 HU lies below the window and would map to -1 after it).
    """
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    low, high = HU_WINDOW
    threshold = BODY_THRESHOLD_HU
    keys = ["image", "label"]
    return Compose(  # type: ignore[no-any-return]
        [
            LoadImaged(keys=keys),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=SPACING_MM, mode=("bilinear", "nearest")),
            CropForegroundd(keys=keys, source_key="image", select_fn=lambda x: x > threshold),
            ScaleIntensityRanged(
                keys="image", a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True
            ),
        ]
    )


def monai_load_chain() -> Callable[[dict[str, Any]], dict[str, Any]]:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    keys = ["image", "label"]
    return Compose([LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)])  # type: ignore[no-any-return]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def compare_outputs(monai_out: dict[str, Any], med: Any, target_class: int) -> dict[str, Any]:
    """World-space agreement of the MONAI chain's output and medaug's.

    medaug's label and image are resampled (nearest neighbour) onto MONAI's grid, so
    the Dice and the image difference compare the same world positions.
    """
    m_image = monai_out["image"].detach().cpu().numpy()[0]
    m_label = monai_out["label"].detach().cpu().numpy()[0]
    m_affine = monai_out["image"].affine.detach().cpu().numpy().astype(np.float64)
    d_affine = np.asarray(med.affine, dtype=np.float64)
    m_corners = world_corners(m_affine, m_image.shape)
    d_corners = world_corners(d_affine, med.image.shape)
    delta = np.abs(m_corners - d_corners)
    spacing = np.array(SPACING_MM)
    # medaug voxel index of each MONAI voxel
    to_med = np.linalg.inv(d_affine) @ m_affine
    common = dict(matrix=to_med[:3, :3], offset=to_med[:3, 3], output_shape=m_image.shape, order=0)
    d_label_on_m = ndimage.affine_transform(med.label, mode="constant", cval=0, **common)
    d_image_on_m = ndimage.affine_transform(med.image, mode="constant", cval=np.nan, **common)
    inside = ~np.isnan(d_image_on_m)
    m_target = np.rint(m_label) == target_class
    d_target = d_label_on_m == target_class
    diff = np.abs(m_image[inside] - d_image_on_m[inside])
    hu_per_unit = (HU_WINDOW[1] - HU_WINDOW[0]) / 2.0
    return {
        "monai_shape": list(m_image.shape),
        "medaug_shape": list(med.image.shape),
        "monai_affine": m_affine.tolist(),
        "medaug_affine": d_affine.tolist(),
        "corner_max_mm": float(np.linalg.norm(m_corners - d_corners, axis=1).max()),
        "corner_max_voxels": float((delta / spacing).max()),
        "corner_axis_max_mm": delta.max(axis=0).tolist(),
        # signed, medaug - MONAI: low corner < 0 and high corner > 0 = medaug's box is larger
        "low_corner_offset_mm": (d_corners.min(axis=0) - m_corners.min(axis=0)).tolist(),
        "high_corner_offset_mm": (d_corners.max(axis=0) - m_corners.max(axis=0)).tolist(),
        "label_dice": _dice(m_target, d_target),
        "monai_label_voxels": int(m_target.sum()),
        "medaug_label_voxels": int((med.label == target_class).sum()),
        "image_overlap_fraction": float(inside.mean()),
        "image_mean_abs_diff_hu": float(diff.mean() * hu_per_unit) if diff.size else math.nan,
        "image_p99_abs_diff_hu": float(np.percentile(diff, 99) * hu_per_unit)
        if diff.size
        else math.nan,
    }


def bench_scan(data: Data, repeat: int, kind: str) -> tuple[list[Row], dict[str, Any]]:
    if kind == "nifti":
        root = data.scan_root
        image_path, label_path = _scan_files(root)
    else:  # MONAI's LoadImaged reads a DICOM series from its folder
        root = data.scan_dicom
        image_path = next(root.rglob("*.dcm")).parent
        label_path = next(root.rglob("label*.nii*"))
    item = {"image": str(image_path), "label": str(label_path)}
    config = medaug_scan_config()
    chain, load_chain = monai_chain(), monai_load_chain()
    ref = medaug.io.discover(root)[0]
    held = {"scan": medaug.io.load(ref)}  # for preprocess_scan alone; freed after timing

    def medaug_all() -> object:
        return preprocess_scan(medaug.io.load(medaug.io.discover(root)[0]), config)

    t = run_timed(
        {
            "monai_chain": lambda: chain(dict(item)),
            "medaug": medaug_all,
            "monai_load": lambda: load_chain(dict(item)),
            "medaug_load": lambda: medaug.io.load(ref),
            "medaug_preprocess_scan": lambda: preprocess_scan(held["scan"], config),
        },
        repeat,
    )
    held.clear()
    geo = compare_outputs(chain(dict(item)), medaug_all(), config.target_class)
    m, d = t["monai_chain"], t["medaug"]
    speedup = m.median / d.median
    size = f"{shape_name(data.scan_config.shape)} {'NIfTI' if kind == 'nifti' else 'DICOM'}"
    geo_ok = geo["corner_max_voxels"] <= GEOMETRY_TARGET_VOXELS
    rows = [
        Row(
            "1",
            f"MONAI Compose: Load, EnsureChannelFirst, Orientation RAS, Spacing "
            f"{SPACING_MM}, ScaleIntensityRange, CropForeground ({size})",
            fmt_s(m.median),
            "1.00x",
            notes=f"{spread(m)}; CPU/wall {m.cpu_per_wall:.2f}; output "
            f"{shape_name(tuple(geo['monai_shape']))}; LoadImaged + EnsureChannelFirstd "
            f"alone: {t['monai_load'].median:.3f} s",
            values={"shape": geo["monai_shape"], **m.to_json()},
        ),
        Row(
            "1",
            "medaug discover + load + preprocess_scan (crop body, margin 0, grid = box)",
            fmt_s(d.median),
            f"{fmt_x(speedup)} faster than MONAI",
            notes=f"{spread(d)}; CPU/wall {d.cpu_per_wall:.2f}; output "
            f"{shape_name(tuple(geo['medaug_shape']))}; load alone "
            f"{t['medaug_load'].median:.3f} s, preprocess_scan alone "
            f"{t['medaug_preprocess_scan'].median:.3f} s",
            values={"shape": geo["medaug_shape"], "speedup": speedup, **d.to_json()},
        ),
        Row(
            "1",
            "geometry: max distance between corresponding output corner voxels",
            f"{geo['corner_max_mm']:.2f} mm",
            f"{geo['corner_max_voxels']:.2f} voxels (largest per-axis offset / spacing)",
            f"<= {GEOMETRY_TARGET_VOXELS:g} voxel",
            "yes" if geo_ok else "NO",
            "per axis x/y/z: "
            + "/".join(f"{v:.2f}" for v in geo["corner_axis_max_mm"])
            + " mm; medaug - MONAI, low corner "
            + "/".join(f"{v:+.2f}" for v in geo["low_corner_offset_mm"])
            + ", high corner "
            + "/".join(f"{v:+.2f}" for v in geo["high_corner_offset_mm"])
            + " mm; medaug body box: largest component above "
            f"{BODY_THRESHOLD_HU:g} HU; MONAI: CropForeground above {BODY_THRESHOLD_HU:g} HU; "
            "MONAI's Spacing keeps the first slice, medaug centres the grid on the box",
            values={k: geo[k] for k in ("corner_max_mm", "corner_max_voxels")},
        ),
        Row(
            "1",
            "geometry: label Dice in world space (medaug resampled onto MONAI's grid)",
            f"{geo['label_dice']:.4f}",
            notes=f"pancreas voxels MONAI {geo['monai_label_voxels']}, medaug "
            f"{geo['medaug_label_voxels']}; image |diff| where both exist "
            f"({geo['image_overlap_fraction']:.1%} of MONAI's grid): mean "
            f"{geo['image_mean_abs_diff_hu']:.1f} HU, p99 {geo['image_p99_abs_diff_hu']:.1f} HU "
            "(nearest-neighbour lookup, so partly grid offset)",
            values={
                k: geo[k]
                for k in (
                    "label_dice",
                    "image_mean_abs_diff_hu",
                    "image_p99_abs_diff_hu",
                    "image_overlap_fraction",
                )
            },
        ),
    ]
    return rows, {"timings": {k: v.to_json() for k, v in t.items()}, "geometry": geo}


# ---------------------------------------------------------------------------------
# 2. Cohort preprocessing with 1 and 2 workers


def cohort_config_2d() -> PreprocessConfig:
    return PreprocessConfig(dims=2, grid_2d=(128, 128))


def cohort_config_3d() -> PreprocessConfig:
    return PreprocessConfig(dims=3, grid_3d=(64, 64, 64))


def bench_cohort(data: Data, caches: Path, repeat: int) -> tuple[list[Row], dict[str, Any]]:
    config = cohort_config_2d()
    outs = {w: caches / f"cohort_2d_128_w{w}" for w in (1, 2)}

    def run(workers: int) -> Any:
        return preprocess(data.cohort, outs[workers], config, workers=workers, overwrite=True)

    t = run_timed({"workers_1": lambda: run(1), "workers_2": lambda: run(2)}, repeat)
    check = run(2)
    w2 = t["workers_2"]
    what = f"{data.cohort_patients} x {shape_name(data.cohort_shape)} DICOM"
    done = f"{len(check.done)}/{len(check.cases)} cases, {check.samples} slices"
    rows = worker_rows(
        "2",
        (
            f"preprocess({what} cohort, 2D grid 128x128, workers=1)",
            t["workers_1"],
            f"{done}; overwrite=True (discover + load + resample + write)",
        ),
        (
            "preprocess(..., workers=2)",
            w2,
            f"{w2.median / max(len(check.done), 1) * 1000:.0f} ms per "
            "case; CPU/wall near 2 = both cores busy",
        ),
    )
    return rows, {"cache_2d": str(outs[2])}


# ---------------------------------------------------------------------------------
# 3. Cache loading against a training step


def _loader_rate(
    dataset: Any, batch: int, workers: int, epochs: int, min_samples: int
) -> dict[str, Any]:
    """Samples/s over whole epochs, after one warm-up epoch (which starts the workers)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    epochs = max(epochs, math.ceil(min_samples / len(dataset)))
    t0 = time.perf_counter()
    for _ in loader:
        pass
    first = time.perf_counter() - t0
    walls, samples = [], 0
    for _ in range(epochs):
        t0 = time.perf_counter()
        for b in loader:
            samples += int(b["image"].shape[0])
        walls.append(time.perf_counter() - t0)
    del loader
    return {
        "epochs": epochs,
        "samples": samples,
        "wall_s": walls,
        "first_epoch_s": first,
        "samples_per_s": samples / sum(walls),
    }


def _train_rate(batch: dict[str, Any], dims: int, steps: int) -> dict[str, Any]:
    """Forward + backward + Adam step of a small UNet on one cached batch (CPU)."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(
        spatial_dims=dims, in_channels=1, out_channels=2, channels=(16, 32, 64), strides=(2, 2)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x, y = batch["image"], batch["label"]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    step()  # warm-up
    walls = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t0)
    median = statistics.median(walls)
    return {
        "batch_shape": list(x.shape),
        "step_s": walls,
        "median_step_s": median,
        "samples_per_s": x.shape[0] / median,
        "params": sum(p.numel() for p in net.parameters()),
    }


def _first_batch(dataset: Any, batch: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    out: dict[str, Any] = next(iter(DataLoader(dataset, batch_size=batch, shuffle=False)))
    return out


def bench_loading(
    cache_2d: Path, cache_3d: Path, epochs: int, steps: int, quick: bool
) -> tuple[list[Row], dict[str, Any]]:
    from medaug.data import SliceDataset, VolumeDataset

    rows: list[Row] = []
    extra: dict[str, Any] = {}
    min_samples = 64 if quick else 500
    for dims, dataset, batch, grid in (
        (2, SliceDataset(cache_2d), 32, "128x128 slices"),
        (3, VolumeDataset(cache_3d), 4, "64^3 volumes"),
    ):
        train = _train_rate(_first_batch(dataset, batch), dims, steps)
        extra[f"train_{dims}d"] = train
        rows.append(
            Row(
                "3",
                f"CPU training step, {dims}D UNet(16,32,64) + DiceCE + Adam, batch "
                f"{shape_name(tuple(train['batch_shape']))}",
                f"{train['samples_per_s']:.1f} samples/s",
                notes=f"median of {steps} steps: {train['median_step_s']:.3f} s/step; "
                f"{train['params']:,} parameters; torch threads {torch.get_num_threads()}",
                values=train,
            )
        )
        for workers in (0, 2):
            rate = _loader_rate(dataset, batch, workers, epochs, min_samples)
            extra[f"load_{dims}d_w{workers}"] = rate
            ratio = rate["samples_per_s"] / train["samples_per_s"]
            rows.append(
                Row(
                    "3",
                    f"DataLoader({'Slice' if dims == 2 else 'Volume'}Dataset, {grid}, "
                    f"batch {batch}, num_workers={workers})",
                    f"{rate['samples_per_s']:.0f} samples/s",
                    f"{fmt_x(ratio)} the training step",
                    f">= {LOADING_TARGET_RATIO:g}x",
                    "yes" if ratio >= LOADING_TARGET_RATIO else "NO",
                    f"{rate['epochs']} epochs of {len(dataset)} after a warm-up epoch "
                    f"({rate['first_epoch_s']:.2f} s incl. worker start-up); shuffled"
                    + ("; persistent workers" if workers else ""),
                    values={"ratio": ratio, **rate},
                )
            )
    return rows, extra


# ---------------------------------------------------------------------------------
# 4. Cache size and peak memory


def _case_bytes(cache: Path) -> tuple[float, int, int]:
    """Mean bytes per case (image + label .npy), cases, and slices (Z) in all."""
    images = sorted((cache / "cases").glob("case_*_image.npy"))
    total = sum(p.stat().st_size for p in (cache / "cases").glob("case_*.npy"))
    slices = sum(int(np.load(p, mmap_mode="r").shape[0]) for p in images)
    return total / max(len(images), 1), len(images), slices


def _memory_probe(folder: Path, mode: str) -> dict[str, int]:
    return run_memory_probe(
        MEMORY_PROBE,
        folder,
        mode,
        ",".join(str(s) for s in SPACING_MM),
        ",".join(str(w) for w in HU_WINDOW),
    )


def bench_memory(
    data: Data, cache_2d: Path, cache_3d: Path, repeat: int
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    for dims, cache, grid in ((2, cache_2d, "128x128 slices"), (3, cache_3d, "64^3")):
        per_case, cases, slices = _case_bytes(cache)
        per_slice = per_case * cases / max(slices, 1)
        rows.append(
            Row(
                "4",
                f"cache size per case, {dims}D {grid}, float32 image + uint8 label",
                f"{per_case / MIB:.2f} MiB",
                notes=f"mean of {cases} cases"
                + (
                    f"; {slices / max(cases, 1):.1f} slices per case, "
                    f"{per_slice / 1024:.1f} KiB per slice"
                    if dims == 2
                    else ""
                ),
                values={"bytes_per_case": per_case, "cases": cases, "slices": slices},
            )
        )
    volume_bytes = int(np.prod(data.scan_config.shape)) * 4
    modes = ("medaug", "medaug-load", "medaug-tracemalloc", "monai")
    runs = {mode: [_memory_probe(data.scan_root, mode) for _ in range(repeat)] for mode in modes}

    def rss(mode: str) -> int:
        return max(r["peak_bytes"] - r["baseline_bytes"] for r in runs[mode])

    traced = max(r["tracemalloc_peak_bytes"] for r in runs["medaug-tracemalloc"])
    vol_mib = volume_bytes / MIB
    size = shape_name(data.scan_config.shape)
    rows += [
        Row(
            "4",
            f"medaug discover + load + preprocess_scan ({size}): peak RSS over import baseline",
            f"{rss('medaug') / MIB:.1f} MiB",
            f"{fmt_x(rss('medaug') / volume_bytes)} of float32 volume ({vol_mib:.0f} MiB)",
            notes=f"max of {repeat} fresh processes; baseline ~ "
            f"{runs['medaug'][0]['baseline_bytes'] / MIB:.0f} MiB; load alone "
            f"{rss('medaug-load') / MIB:.0f} MiB "
            f"({fmt_x(rss('medaug-load') / volume_bytes)})",
            values={
                "rss_over_baseline_bytes": rss("medaug"),
                "load_only_bytes": rss("medaug-load"),
                "volume_bytes": volume_bytes,
                "ratio": rss("medaug") / volume_bytes,
            },
        ),
        Row(
            "4",
            "medaug discover + load + preprocess_scan: tracemalloc peak",
            f"{traced / MIB:.1f} MiB",
            f"{fmt_x(traced / volume_bytes)} of float32 volume",
            notes="Python + numpy allocations traced from after the imports "
            "(SimpleITK's own buffers are not traced)",
            values={"tracemalloc_peak_bytes": traced, "ratio": traced / volume_bytes},
        ),
        Row(
            "4",
            "MONAI chain of section 1: peak RSS over import baseline",
            f"{rss('monai') / MIB:.1f} MiB",
            f"{fmt_x(rss('monai') / volume_bytes)} of float32 volume",
            notes=f"same probe; baseline ~ {runs['monai'][0]['baseline_bytes'] / MIB:.0f} MiB",
            values={"rss_over_baseline_bytes": rss("monai"), "ratio": rss("monai") / volume_bytes},
        ),
    ]
    return rows, {"runs": runs, "volume_bytes": volume_bytes}


# ---------------------------------------------------------------------------------
# Output


TITLES = {
    "1": "1. One scan: MONAI chain vs medaug",
    "2": "2. Cohort preprocessing, 1 and 2 workers",
    "3": "3. Cached training set: DataLoader vs one CPU training step",
    "4": "4. Cache size and peak memory",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run: 256x256x100 scan, 4 patients, 1 timed run per case",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"data, caches and bench_preprocess.json (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="timed runs per case (default 3; --quick 1)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed DataLoader epochs after the warm-up one (default 3; more where a "
        "dataset is small, so that each loader reads at least 500 samples, 64 with --quick)",
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # MONAI's deprecation notices and the missing GPU codec are noise here
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
    started = time.perf_counter()
    workdir = make_workdir(args.workdir)
    caches = workdir / "caches"
    caches.mkdir(exist_ok=True)
    facts = machine_facts()

    print(f"Preparing data under {workdir / 'data'} ...", file=sys.stderr, flush=True)
    data = prepare_data(workdir, args.quick)
    print(f"  data ready: {data.generate_s}", file=sys.stderr, flush=True)

    sections: dict[str, tuple[list[Row], dict[str, Any]]] = {}
    # Section 2 runs first, so that its process pools fork before the big scan has
    # been through SimpleITK and torch; it also writes the 2D cache of section 3.
    print("Running cohort ...", file=sys.stderr, flush=True)
    sections["2"] = bench_cohort(data, caches, args.repeat)
    cache_2d = Path(sections["2"][1]["cache_2d"])
    cache_3d = caches / "cohort_3d_64"
    t0 = time.perf_counter()
    built = preprocess(data.cohort, cache_3d, cohort_config_3d(), workers=2, overwrite=True)
    sections["2"][1]["cache_3d"] = {"path": str(cache_3d), "seconds": time.perf_counter() - t0}
    if built.skipped:
        print(f"  3D cache skipped {len(built.skipped)} cases", file=sys.stderr)
    print("Running scan ...", file=sys.stderr, flush=True)
    rows_dicom, extra_dicom = bench_scan(data, args.repeat, "dicom")
    rows_nifti, extra_nifti = bench_scan(data, args.repeat, "nifti")
    sections["1"] = (rows_dicom + rows_nifti, {"dicom": extra_dicom, "nifti": extra_nifti})
    print("Running loading ...", file=sys.stderr, flush=True)
    steps = 2 if args.quick else 5
    sections["3"] = bench_loading(cache_2d, cache_3d, args.epochs, steps, args.quick)
    print("Running memory ...", file=sys.stderr, flush=True)
    sections["4"] = bench_memory(data, cache_2d, cache_3d, args.repeat)
    total_s = time.perf_counter() - started

    print_machine(facts, args.quick, args.repeat, total_s)
    for key in sorted(sections):
        print()
        print(f"### {TITLES[key]}")
        print()
        print(markdown_table(sections[key][0]))

    report = {
        "machine": facts,
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "epochs": args.epochs,
            "scan": str(data.scan_root),
            "scan_phantom": asdict(data.scan_config),
            "cohort": str(data.cohort),
            "cohort_patients": data.cohort_patients,
            "cohort_shape": list(data.cohort_shape),
            "generate_s": data.generate_s,
            "medaug_scan_config": medaug_scan_config().to_dict(),
            "cohort_config_2d": cohort_config_2d().to_dict(),
            "cohort_config_3d": cohort_config_3d().to_dict(),
        },
        "total_s": total_s,
        "rows": [asdict(r) for key in sorted(sections) for r in sections[key][0]],
        "extra": {key: extra for key, (_, extra) in sections.items()},
    }
    write_report(workdir / "bench_preprocess.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
