"""Synthesis on real files: counts and shapes, NIfTI geometry and HU, DICOM series and
SEG, no identifier leaks, datalists, nnU-Net export, determinism, resume after a kill,
the three modes, and bad input through the CLI.

One tiny generator per kind (2D vaegan, 2D gan, 3D vaegan) is trained once per module
on a four-patient phantom cohort, with one patient held out.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged
from PIL import Image

from medaug import io
from medaug.data import Cache
from medaug.data.phantom import TCIA_LABEL_DIR, make_patient, write_cohort
from medaug.errors import ConfigError, InputError
from medaug.io.deid import identifying_values
from medaug.io.geometry import from_sitk
from medaug.io.nifti import write_volume
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess.pipeline import grid_affine
from medaug.preprocess.transforms import unit_to_hu
from medaug.synth import Synthesizer, synthesize
from medaug.synth.export import export_nnunet
from medaug.train import TrainConfig, load_checkpoint, train
from medaug.train.checkpoint import configs
from medaug.train.spec import GeneratorSpec
from tests.conftest import SMALL, TINY_MODEL, run_cli

#: PreprocessConfig's default voxel size, which every output must carry (mm).
SPACING = PreprocessConfig().spacing_mm  # the world's caches use the default grid
#: Values planted in every source DICOM file; none may reach any output byte.
PLANTED = {
    "PatientName": "LEAKY^PATIENT",
    "PatientID": "PID-LEAK-4711",
    "PatientBirthDate": "19010203",
    "InstitutionName": "LEAK HOSPITAL",
    "ReferringPhysicianName": "DR^LEAK",
    "AccessionNumber": "ACC-LEAK-99",
}
PLANTED_PRIVATE = "PRIVATE-LEAK"
PLANTED_CREATOR = "MEDAUG LEAKTEST"


@dataclass(frozen=True)
class World:
    """The phantom cohort, its 2D cache and the trained checkpoints (read-only)."""

    cohort: Path
    cache2: Path
    vaegan2: Path
    gan2: Path
    vaegan3: Path


pytestmark = pytest.mark.usefixtures("one_thread_per_process")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("synth-world")
    cohort = root / "cohort"
    write_cohort(cohort, patients=4, seed=0, fmt="dicom", config=SMALL)
    steps = dict(steps=4, log_every=2, checkpoint_every=4, sample_every=4, warmup_steps=2)
    ckpts, caches = {}, {}
    for dims, grid in ((2, {"grid_2d": (16, 16)}), (3, {"grid_3d": (16, 16, 16)})):
        pp = PreprocessConfig(dims=dims, **grid)  # type: ignore[arg-type]
        caches[dims] = preprocess(cohort, root / f"cache{dims}", pp, val_fraction=0.25).out
        # 3D: three training volumes, so a batch of 2
        cfg = TrainConfig(batch_size=4 if dims == 2 else 2, n_samples=4, **steps)
        for variant in ("vaegan", "gan") if dims == 2 else ("vaegan",):
            result = train(
                caches[dims],
                root / f"runs-{variant}-{dims}d",
                model=variant,
                config=cfg,
                model_overrides=TINY_MODEL,
            )
            assert result.checkpoint is not None
            ckpts[(variant, dims)] = result.checkpoint
    return World(cohort, caches[2], ckpts["vaegan", 2], ckpts["gan", 2], ckpts["vaegan", 3])


@pytest.fixture(scope="module")
def prior2d(world: World, tmp_path_factory: pytest.TempPathFactory):
    """Six 2D prior cases (NIfTI) with the cohort as --input (read-only)."""
    out = tmp_path_factory.mktemp("prior2d") / "out"
    return synthesize(out, 6, input=world.cohort, model=world.vaegan2, device="cpu")


# ---- helpers --------------------------------------------------------------------------


def nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def names(folder: Path) -> list[str]:
    """Every entry of a folder, hidden ones included."""
    return sorted(p.name for p in folder.iterdir())


def read_series(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x, y, z) array, RAS affine and slice files of a DICOM series, via SimpleITK."""
    reader = sitk.ImageSeriesReader()
    files = list(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetFileNames(files)
    image = reader.Execute()  # kept alive while from_sitk copies it
    array, affine = from_sitk(image)
    return array, affine, files


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The non-blank stderr lines of a refused CLI run, the error last."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("medaug: error: "), proc.stderr
    return lines


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused CLI run."""
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    return lines[0]


def same_cases(a: Path, b: Path, n: int) -> None:
    """Cases 0..n-1 of two output folders hold the same voxels and affines."""
    for i in range(n):
        for kind in ("images", "labels"):
            x, ax = nifti(a / kind / f"synth_{i:04d}.nii.gz")
            y, ay = nifti(b / kind / f"synth_{i:04d}.nii.gz")
            np.testing.assert_array_equal(x, y, err_msg=f"{kind} {i}")
            np.testing.assert_array_equal(ax, ay)


# ---- 1. counts and shapes -------------------------------------------------------------


def test_prior_cases_are_counted_typed_and_shaped(world: World, prior2d, tmp_path: Path):
    out = prior2d.out
    assert (prior2d.n, prior2d.written, prior2d.fitted) == (6, 6, False)
    expected = [f"synth_{i:04d}.nii.gz" for i in range(6)]
    assert names(out / "images") == expected
    assert names(out / "labels") == expected
    doc = manifest(out)
    assert doc["n"] == 6 and doc["complete"] is True
    assert [c["case"] for c in doc["cases"]] == [f"synth_{i:04d}" for i in range(6)]
    for rec in doc["cases"]:
        image = nib.load(str(out / rec["image"]))
        label = nib.load(str(out / rec["label"]))
        assert image.get_data_dtype() == np.int16
        assert label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == (16, 16, 1)
        assert rec["shape"] == [16, 16, 1]
        values = np.asarray(label.dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1}
        assert rec["label_voxels"] == {"pancreas": int((values == 1).sum())}
    assert Image.open(out / "preview.png").mode == "RGB"

    stacked = synthesize(
        tmp_path / "stack", 2, model=world.vaegan2, device="cpu", stack=True, slices=5
    )
    for rec in stacked.manifest["cases"]:
        assert nib.load(str(stacked.out / rec["image"])).shape == (16, 16, 5)
        assert nib.load(str(stacked.out / rec["label"])).shape == (16, 16, 5)
    assert stacked.manifest["settings"]["slices"] == 5

    volumes = synthesize(tmp_path / "3d", 2, model=world.vaegan3, device="cpu")
    for rec in volumes.manifest["cases"]:
        assert nib.load(str(volumes.out / rec["image"])).shape == (16, 16, 16)
        assert nib.load(str(volumes.out / rec["label"])).shape == (16, 16, 16)
    assert volumes.manifest["checkpoint"]["dims"] == 3


# ---- 2. NIfTI geometry and HU ---------------------------------------------------------


def test_nifti_geometry_and_hu_are_the_generators(world: World, prior2d):
    out = prior2d.out
    synth = Synthesizer(world.vaegan2, real=Cache(out / "cache"), device="cpu")
    config = synth.config
    assert config.spacing_mm == SPACING
    low, high = config.hu_window
    cases = synth.generate([synth.plan(i) for i in range(6)])
    spread = []
    for case in cases:
        expected_affine = grid_affine(config, (16, 16, 1))
        np.testing.assert_array_equal(case.affine, expected_affine)
        path = out / "images" / f"{case.name}.nii.gz"

        data, affine = nifti(path)
        img = nib.load(str(path))
        assert img.header.get_zooms() == pytest.approx(SPACING)
        np.testing.assert_allclose(affine, expected_affine, atol=1e-6)

        itk_image = sitk.ReadImage(str(path))
        assert itk_image.GetSpacing() == pytest.approx(SPACING)
        itk_array, itk_affine = from_sitk(itk_image)  # LPS -> RAS inside
        np.testing.assert_allclose(itk_affine, expected_affine, atol=1e-5)
        np.testing.assert_array_equal(itk_array, data)

        assert low <= data.min() and data.max() <= high
        np.testing.assert_array_equal(data, np.rint(case.image).astype(np.int16))
        label, label_affine = nifti(out / "labels" / f"{case.name}.nii.gz")
        np.testing.assert_array_equal(label, case.label)
        np.testing.assert_allclose(label_affine, expected_affine, atol=1e-6)
        spread.append(float(data.max() - data.min()))
    assert max(spread) > 2.0  # HU, not the generator's [-1, 1]


# ---- 3. DICOM -------------------------------------------------------------------------


def check_headers(files: list[str]) -> dict[str, str]:
    """Assert the synthetic-data headers of one series; return its shared UIDs."""
    uids: dict[str, set[str]] = {"study": set(), "series": set(), "for": set()}
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SyntheticData == "YES"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.BurnedInAnnotation == "NO"
        assert [item.Manufacturer for item in ds.ContributingEquipmentSequence] == ["medaug"]
        assert str(ds.PatientName).startswith("SYNTHETIC")
        assert "RescaleSlope" in ds and "RescaleIntercept" in ds
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx(SPACING[:2])
        assert float(ds.SliceThickness) == pytest.approx(SPACING[2])
        uids["study"].add(ds.StudyInstanceUID)
        uids["series"].add(ds.SeriesInstanceUID)
        uids["for"].add(ds.FrameOfReferenceUID)
    assert all(len(v) == 1 for v in uids.values()), uids
    return {k: next(iter(v)) for k, v in uids.items()}


def test_stacked_2d_series_match_the_nifti_and_say_synthetic(world: World, tmp_path: Path):
    result = synthesize(
        tmp_path / "out",
        2,
        input=world.cohort,
        model=world.vaegan2,
        device="cpu",
        fmt="both",
        stack=True,
        seg=True,
    )
    out = result.out
    shared, sops = [], set()
    for rec in result.manifest["cases"]:
        name = rec["case"]
        assert (rec["image"], rec["dicom"]) == (f"images/{name}.nii.gz", f"dicom/{name}")
        expected, affine = nifti(out / rec["image"])
        assert expected.dtype == np.int16 and expected.shape[:2] == (16, 16)
        array, itk_affine, files = read_series(out / rec["dicom"])
        assert len(files) == expected.shape[2]
        np.testing.assert_array_equal(array, expected)
        np.testing.assert_allclose(itk_affine, affine, atol=1e-4)
        scan = io.load(out / rec["dicom"])
        np.testing.assert_array_equal(scan.image, expected)
        np.testing.assert_allclose(scan.affine, affine, atol=1e-4)

        shared.append(check_headers(files))
        ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        sops |= {ds.SOPInstanceUID for ds in ct}

        assert rec["seg"] == f"dicom/{name}_seg.dcm"
        seg = hd.seg.segread(out / "dicom" / f"{name}_seg.dcm")
        frames = seg.get_pixels_by_source_instance(
            [ds.SOPInstanceUID for ds in ct], combine_segments=True
        )
        label, _ = nifti(out / rec["label"])
        np.testing.assert_array_equal(frames.transpose(2, 1, 0), label)
        assert seg.SyntheticData == "YES"
        assert seg.StudyInstanceUID == shared[-1]["study"]
    for key in ("study", "series", "for"):
        assert len({s[key] for s in shared}) == 2, key  # a fresh study per case
    assert len(sops) == sum(
        nib.load(str(out / c["image"])).shape[2] for c in result.manifest["cases"]
    )


def test_3d_series_hold_the_generators_volume(world: World, tmp_path: Path):
    result = synthesize(tmp_path / "out", 2, model=world.vaegan3, device="cpu", fmt="dicom")
    out = result.out
    assert not (out / "images").exists()  # DICOM only; labels stay NIfTI for the datalist
    synth = Synthesizer(world.vaegan3, device="cpu")
    cases = synth.generate([synth.plan(i) for i in range(2)])
    shared = []
    for rec, case in zip(result.manifest["cases"], cases, strict=True):
        assert rec["image"] == rec["dicom"] == f"dicom/{case.name}"
        expected = np.rint(case.image).astype(np.int16)
        array, affine, files = read_series(out / rec["dicom"])
        assert array.shape == (16, 16, 16) and len(files) == 16
        np.testing.assert_array_equal(array, expected)
        np.testing.assert_allclose(affine, grid_affine(synth.config, (16, 16, 16)), atol=1e-4)
        scan = io.load(out / rec["dicom"])
        np.testing.assert_array_equal(scan.image, expected)
        np.testing.assert_allclose(scan.affine, case.affine, atol=1e-4)
        label, _ = nifti(out / rec["label"])
        np.testing.assert_array_equal(label, case.label)
        shared.append(check_headers(files))
    assert shared[0]["study"] != shared[1]["study"]
    assert shared[0]["for"] != shared[1]["for"]


def test_2d_dicom_stacks_unless_told_not_to(world: World, tmp_path: Path):
    with pytest.raises(ConfigError, match="stack=False"):
        synthesize(tmp_path / "out", 2, model=world.vaegan2, device="cpu", fmt="dicom",
                   stack=False)  # fmt: skip
    assert not (tmp_path / "out").exists()
    done = synthesize(tmp_path / "auto", 1, model=world.vaegan2, device="cpu", fmt="dicom",
                      slices=3)  # fmt: skip
    assert done.manifest["settings"]["stack"] is True
    assert len(list((tmp_path / "auto" / "dicom").rglob("*.dcm"))) == 3


# ---- 4. no identifying attribute leaks ------------------------------------------------


def planted_copy(cohort: Path, dest: Path) -> Path:
    """The cohort with PLANTED values (and a private element) in every DICOM file."""
    shutil.copytree(cohort, dest)
    files = sorted(dest.rglob("*.dcm"))
    assert len(files) == 4 * SMALL.shape[2]
    for f in files:
        ds = pydicom.dcmread(f)
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
        block = ds.private_block(0x0011, PLANTED_CREATOR, create=True)
        block.add_new(0x01, "LO", PLANTED_PRIVATE)
        ds.save_as(f)
    found = identifying_values(pydicom.dcmread(files[-1]))
    assert set(PLANTED.values()) | {PLANTED_PRIVATE, PLANTED_CREATOR} <= set(found.values())
    return dest


def searchable_bytes(path: Path) -> bytes:
    """A file's bytes, plus what it hides under gzip or in PNG text chunks."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data += gzip.decompress(data)
    if path.suffix == ".png":
        data += repr(Image.open(path).info).encode()
    return data


def test_no_planted_identifier_reaches_any_output_file(world: World, tmp_path: Path):
    source = planted_copy(world.cohort, tmp_path / "source")
    result = synthesize(
        tmp_path / "out",
        3,
        input=source,
        model=world.vaegan2,
        device="cpu",
        fmt="both",
        stack=True,
        mode="perturb",
        seg=True,
    )
    out = result.out
    assert result.manifest["real_cases"] == 4
    assert json.loads((out / "cache" / "index.json").read_text())["input"] == str(source)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    kinds = {p.suffix for p in files}
    assert {".gz", ".dcm", ".json", ".npy", ".png"} <= kinds
    planted = [*PLANTED.values(), PLANTED_PRIVATE, PLANTED_CREATOR]
    for path in files:
        data = searchable_bytes(path)
        for value in planted:
            assert value.encode() not in data, f"{value!r} in {path.relative_to(out)}"

    outputs = [Path(f) for f in read_series(out / "dicom" / "synth_0000")[2]]
    outputs.append(out / "dicom" / "synth_0000_seg.dcm")
    for path in outputs:
        written = identifying_values(pydicom.dcmread(path))
        assert written["PatientName"].startswith("SYNTHETIC")
        assert not set(written.values()) & set(planted), path
        assert not any(key.startswith("(") for key in written), path  # no private tags


# ---- 5. datalist ----------------------------------------------------------------------


def test_the_datalist_loads_in_monai(prior2d):
    out = prior2d.out
    items = load_decathlon_datalist(out / "dataset.json", data_list_key="training")
    assert len(items) == 6
    for i, item in enumerate(items):
        assert Path(item["image"]) == out / "images" / f"synth_{i:04d}.nii.gz"
        assert Path(item["label"]) == out / "labels" / f"synth_{i:04d}.nii.gz"
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
    loaded = LoadImaged(keys=["image", "label"])(items[0])
    image, _ = nifti(Path(items[0]["image"]))
    label, _ = nifti(Path(items[0]["label"]))
    assert tuple(loaded["image"].shape) == image.shape == (16, 16, 1)
    np.testing.assert_array_equal(np.asarray(loaded["image"]), image)
    np.testing.assert_array_equal(np.asarray(loaded["label"]), label)
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["labels"] == {"0": "background", "1": "pancreas"}
    assert doc["numTraining"] == 6


# ---- 6. nnU-Net export ----------------------------------------------------------------


def test_nnunet_export_mixes_synthetic_and_training_cases_only(world: World, prior2d, tmp_path):
    out = prior2d.out
    folder = export_nnunet(out, tmp_path / "raw", 7)
    assert folder == tmp_path / "raw" / "Dataset007_medaug"

    split = configs(load_checkpoint(world.vaegan2))["split"]
    cache = Cache(out / "cache")
    by_hash = {cache.content_hash(c): c for c in cache.case_ids}
    train_ids = sorted(by_hash[e["sha256"]] for e in split["train"])
    val_ids = [by_hash[e["sha256"]] for e in split["val"]]
    assert len(train_ids) == 3 and len(val_ids) == 1
    real = [f"real_{c.rsplit('_', 1)[-1]}" for c in train_ids]
    held_out = f"real_{val_ids[0].rsplit('_', 1)[-1]}"
    cases = sorted([f"synth_{i:04d}" for i in range(6)] + real)

    assert names(folder / "imagesTr") == [f"{c}_0000.nii.gz" for c in cases]
    assert names(folder / "labelsTr") == [f"{c}.nii.gz" for c in cases]
    assert f"{held_out}_0000.nii.gz" not in names(folder / "imagesTr")
    doc = json.loads((folder / "dataset.json").read_text())
    assert doc["channel_names"] == {"0": "CT"}
    assert doc["labels"] == {"background": 0, "pancreas": 1}
    assert doc["numTraining"] == len(cases) == 9
    assert doc["file_ending"] == ".nii.gz"

    for i in range(6):  # synthetic cases are copied as they are
        a = (folder / "imagesTr" / f"synth_{i:04d}_0000.nii.gz").read_bytes()
        assert a == (out / "images" / f"synth_{i:04d}.nii.gz").read_bytes()
    window = cache.config.hu_window
    for case_id, name in zip(train_ids, real, strict=True):  # real cases: cache -> HU
        image, affine = nifti(folder / "imagesTr" / f"{name}_0000.nii.gz")
        label, _ = nifti(folder / "labelsTr" / f"{name}.nii.gz")
        assert image.dtype == np.int16
        np.testing.assert_allclose(affine, cache.affine(case_id), atol=1e-6)
        cached = np.moveaxis(np.asarray(cache.array(case_id, "image")), 0, -1)
        np.testing.assert_allclose(image, unit_to_hu(cached, window), atol=0.51)
        cached_label = np.moveaxis(np.asarray(cache.array(case_id, "label")), 0, -1)
        np.testing.assert_array_equal(label, cached_label)


def test_nnunet_export_from_the_cli(world: World, tmp_path: Path):
    out, dest = tmp_path / "out", tmp_path / "nnunet"
    proc = run_cli(
        "synth", "--input", world.cohort, "--model", world.vaegan2, "--n", "2", "--out", out,
        "--export", "nnunet", "--export-dir", dest, "--dataset-id", "12", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    folder = dest / "Dataset012_medaug"
    assert f"nnU-Net  -> {folder}" in proc.stdout
    images = names(folder / "imagesTr")
    assert [n for n in images if n.startswith("synth_")] == [
        "synth_0000_0000.nii.gz",
        "synth_0001_0000.nii.gz",
    ]
    assert len([n for n in images if n.startswith("real_")]) == 3  # the held-out one left out
    doc = json.loads((folder / "dataset.json").read_text())
    assert doc["name"] == "Dataset012_medaug" and doc["numTraining"] == 5 == len(images)


# ---- 7. determinism -------------------------------------------------------------------


def test_same_seed_same_cases_other_seed_other_cases(world: World, prior2d, tmp_path: Path):
    again = synthesize(tmp_path / "again", 6, model=world.vaegan2, device="cpu", seed=0)
    same_cases(prior2d.out, again.out, 6)
    assert [c["params"] for c in again.manifest["cases"]] == [
        c["params"] for c in prior2d.manifest["cases"]
    ]
    other = synthesize(tmp_path / "other", 6, model=world.vaegan2, device="cpu", seed=1)
    for i in range(6):
        a, _ = nifti(prior2d.out / "images" / f"synth_{i:04d}.nii.gz")
        b, _ = nifti(other.out / "images" / f"synth_{i:04d}.nii.gz")
        assert np.abs(a.astype(np.int32) - b).mean() > 0.5, i

    one = synthesize(
        tmp_path / "b1", 6, model=world.vaegan2, device="cpu", batch_size=1, stack=True, slices=3
    )
    four = synthesize(
        tmp_path / "b4", 6, model=world.vaegan2, device="cpu", batch_size=4, stack=True, slices=3
    )
    for i in range(6):
        for kind in ("images", "labels"):
            a, _ = nifti(one.out / kind / f"synth_{i:04d}.nii.gz")
            b, _ = nifti(four.out / kind / f"synth_{i:04d}.nii.gz")
            if kind == "images":
                np.testing.assert_allclose(a, b, atol=1)
            else:  # an argmax may flip where two classes tie to rounding
                assert (a == b).mean() > 0.99


# ---- 8. resume ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_cases_of_a_whole_run(world: World, tmp_path: Path):
    out = tmp_path / "cut"
    args = ["synth", "--model", world.vaegan2, "--n", "40", "--batch-size", "1", "--stack"]
    args += ["--slices", "8", "--format", "both", "--device", "cpu", "--out", out, "-q"]
    records = out / ".synth" / "cases"
    proc = subprocess.Popen(
        [sys.executable, "-m", "medaug.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if records.is_dir() and len(list(records.glob("synth_*.json"))) >= 5:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed while writing, not finished
    kept = len(list(records.glob("synth_*.json")))
    assert 5 <= kept < 40
    assert manifest(out)["complete"] is False
    assert not (out / "dataset.json").exists()

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"Wrote {40 - kept} synthetic cases" in rerun.stdout
    assert f"{kept} were there from an earlier run" in rerun.stdout
    doc = manifest(out)
    assert doc["complete"] is True and doc["n"] == 40
    assert [c["index"] for c in doc["cases"]] == list(range(40))
    for rec in doc["cases"]:
        assert (out / rec["image"]).is_file() and (out / rec["label"]).is_file()
        assert len(list((out / rec["dicom"]).glob("*.dcm"))) == 8
        assert nib.load(str(out / rec["image"])).shape == (16, 16, 8)
    final = [f"synth_{i:04d}.nii.gz" for i in range(40)]
    assert [n for n in names(out / "images") if not n.startswith(".")] == final

    whole = synthesize(
        tmp_path / "whole",
        40,
        model=world.vaegan2,
        device="cpu",
        batch_size=1,
        stack=True,
        slices=8,
        fmt="both",
    )
    same_cases(whole.out, out, 40)
    assert [c["params"] for c in doc["cases"]] == [c["params"] for c in whole.manifest["cases"]]

    leftovers = [
        str(p.relative_to(out)) for p in out.rglob("*") if p.name.startswith(f".{proc.pid}.")
    ]
    assert not leftovers, f"a resumed run keeps the killed run's temporaries {leftovers}"


def test_a_larger_n_adds_only_the_missing_cases(world: World, prior2d, tmp_path: Path):
    out = tmp_path / "grow"
    synthesize(out, 3, model=world.vaegan2, device="cpu")
    before = {p: p.read_bytes() for p in sorted((out / "images").iterdir())}
    stamps = {p: p.stat().st_mtime_ns for p in before}
    grown = synthesize(out, 5, model=world.vaegan2, device="cpu")
    assert (grown.n, grown.written) == (5, 2)
    for p, data in before.items():
        assert p.read_bytes() == data and p.stat().st_mtime_ns == stamps[p]
    assert names(out / "images") == [f"synth_{i:04d}.nii.gz" for i in range(5)]
    doc = manifest(out)
    assert doc["complete"] is True and [c["index"] for c in doc["cases"]] == list(range(5))
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 5
    same_cases(prior2d.out, out, 5)  # cases 3 and 4 are the ones a run of 6 makes


# ---- 9. modes -------------------------------------------------------------------------


def test_perturb_and_interpolate_record_their_draws(world: World, tmp_path: Path):
    perturbed = synthesize(
        tmp_path / "p",
        5,
        input=world.cohort,
        model=world.vaegan2,
        device="cpu",
        mode="perturb",
        strength=0.7,
    )
    cache = Cache(perturbed.out / "cache")
    # sources are the generator's training cases only: never its held-out patient
    split = configs(load_checkpoint(world.vaegan2))["split"]
    train = sorted(int(c["case"].rsplit("_", 1)[1]) for c in split["train"])
    assert split["val"] and len(train) == 3
    assert perturbed.manifest["settings"]["strength"] == 0.7
    for rec in perturbed.manifest["cases"]:
        params = rec["params"]
        assert params["mode"] == "perturb" and params["strength"] == 0.7
        assert params["source"] == train[rec["index"] % len(train)]
        source = cache.records[f"case_{params['source']:04d}"]
        assert params["slice"] in source["target_slices"]

    mixed = synthesize(
        tmp_path / "i", 5, input=world.cohort, model=world.vaegan2, device="cpu", mode="interpolate"
    )
    ts = []
    for rec in mixed.manifest["cases"]:
        params = rec["params"]
        a, b = params["source"]
        assert a != b and {a, b} <= set(train)
        assert 0.2 <= params["t"] <= 0.8
        assert len(params["slice"]) == 2
        ts.append(params["t"])
    assert len(set(ts)) == 5  # drawn per case


def test_perturb_at_strength_zero_decodes_the_posterior_mean(world: World):
    cache = Cache(world.cache2)
    synth = Synthesizer(world.vaegan2, real=cache, device="cpu")
    zero = synth.plan(0, mode="perturb", seed=0, strength=0.0)
    far = synth.plan(0, mode="perturb", seed=0, strength=2.0)
    assert zero["source"] == far["source"] == 0 and zero["slice"] == far["slice"]
    k = zero["slice"]

    model = synth.model
    image = torch.from_numpy(np.array(cache.array("case_0000", "image")[k]))[None, None]
    label = torch.from_numpy(np.array(cache.array("case_0000", "label")[k], np.int64))[None, None]
    with torch.no_grad():
        mu, _ = model.encode(model.inputs({"image": image, "label": label}))
        x, y = model.to_pair(model.decode(mu))
    mean_hu = unit_to_hu(x[0, 0].numpy(), synth.config.hu_window)

    at_zero, at_two = synth.generate([zero, far])
    np.testing.assert_allclose(at_zero.image[:, :, 0], mean_hu, atol=1e-3)
    np.testing.assert_array_equal(at_zero.label[:, :, 0], y[0, 0].numpy())
    assert np.abs(at_two.image[:, :, 0] - mean_hu).mean() > 1.0  # HU

    # another seed that picks the same slice: at strength 0 its draw does not matter
    plans = (synth.plan(0, mode="perturb", seed=s, strength=0.0) for s in range(1, 40))
    twin = next(p for p in plans if p["slice"] == k)
    np.testing.assert_allclose(synth.generate([twin])[0].image, at_zero.image, atol=1e-3)


def test_a_gan_cannot_perturb_or_interpolate(world: World, tmp_path: Path):
    for mode in ("perturb", "interpolate"):
        out = tmp_path / mode
        with pytest.raises(ConfigError, match="encoder"):
            synthesize(out, 2, input=world.cohort, model=world.gan2, device="cpu", mode=mode)
        assert not (out / "manifest.json").exists() and not (out / "images").exists()


# ---- 10. bad input through the CLI ----------------------------------------------------


class Payload:
    """Pickles to a call of os.system: loading it unsafely runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def save_payload(path: Path, marker: Path, how: str) -> None:
    payload = Payload(f"touch {marker}")
    if how == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


BAD = ["random-bytes", "truncated", "torch-pickle", "plain-pickle", "n-zero", "n-negative",
       "unrelated-file", "no-labels", "dicom-without-stack"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_with_one_line_and_writes_nothing(world: World, tmp_path: Path, case):
    out = tmp_path / "out"
    model = tmp_path / "model.pt"
    marker = tmp_path / "SOMEFILE"
    args: list[str | Path] = ["--model", model, "--n", "2"]
    expect = [str(model)]
    if case == "random-bytes":
        model.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        data = world.vaegan2.read_bytes()
        model.write_bytes(data[: len(data) // 2])
    elif case in ("torch-pickle", "plain-pickle"):
        how = case.split("-")[0]
        control = tmp_path / "control.pt"
        save_payload(control, tmp_path / "CONTROL", how)
        with open(control, "rb") as f:  # the payload is live: an unsafe load runs it
            torch.load(f, weights_only=False) if how == "torch" else pickle.load(f)
        assert (tmp_path / "CONTROL").exists()
        save_payload(model, marker, how)
    elif case in ("n-zero", "n-negative"):
        args = ["--model", world.vaegan2, "--n", "0" if case == "n-zero" else "-3"]
        expect = ["--n must be at least 1"]
    elif case == "unrelated-file":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        args = ["--model", world.vaegan2, "--n", "2"]
        expect = [str(out), "notes.txt", "--overwrite"]
    elif case == "no-labels":  # the TCIA tree without its label folder: nothing to fit on
        folder = tmp_path / "unlabelled"
        shutil.copytree(world.cohort, folder, ignore=shutil.ignore_patterns(TCIA_LABEL_DIR))
        args = ["--input", folder, "--steps", "2", "--n", "2"]
        expect = [f"{folder}: ", "no label"]
    elif case == "dicom-without-stack":
        args = ["--model", world.vaegan2, "--n", "2", "--format", "dicom", "--no-stack"]
        expect = ["--no-stack", "leave --stack unset"]
    proc = run_cli("synth", *args, "--out", out, "-q", cwd=tmp_path)
    lines = error_lines(proc)
    line = lines[-1]
    for text in expect:
        assert text in line, line
    assert not marker.exists()  # no code ran
    assert not (out / "images").exists() and not (out / "manifest.json").exists()
    assert not list(out.glob("model")) and not list(out.glob("dataset.json"))
    if case == "unrelated-file":
        assert names(out) == ["notes.txt"]
    assert len(lines) == 1, proc.stderr


def test_fitting_on_an_unlabelled_nifti_names_it(tmp_path: Path):
    scan, _ = make_patient(0, seed=0, config=SMALL)
    path = write_volume(scan.image, scan.affine, tmp_path / "scans" / "scan.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no label") as info:
        synthesize(out, 2, input=path, generator=GeneratorSpec(steps=2), device="cpu")
    assert str(path) in str(info.value)
    assert not (out / "images").exists() and not (out / "manifest.json").exists()
    assert not (out / "model").exists()  # refused before fitting


def test_a_complete_folder_is_refused_unless_overwrite(world: World, tmp_path: Path):
    out = tmp_path / "done"
    synthesize(out, 2, model=world.vaegan2, device="cpu")
    before = (out / "manifest.json").read_bytes()
    args = ["synth", "--model", world.vaegan2, "--n", "2", "--out", out, "-q"]
    line = one_error_line(run_cli(*args))
    assert str(out) in line and "--overwrite" in line and "already holds 2 cases" in line
    assert (out / "manifest.json").read_bytes() == before

    (out / "images" / "synth_0001.nii.gz").write_bytes(b"damaged")
    again = run_cli(*args, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "Wrote 2 synthetic cases" in again.stdout
    doc = manifest(out)
    assert doc["complete"] is True and len(doc["cases"]) == 2
    assert nib.load(str(out / "images" / "synth_0001.nii.gz")).shape == (16, 16, 1)


# ---- evaluate and report ------------------------------------------------------------


def test_evaluate_splits_by_the_checkpoint_and_accepts_another_real_folder(
    world: World, prior2d, tmp_path: Path
):
    from medaug.evaluate import evaluate
    from medaug.report import write_report

    out = tmp_path / "synth"
    shutil.copytree(prior2d.out, out)
    doc = evaluate(world.cohort, out, model=world.vaegan2, feature_steps=2, device="cpu")
    assert doc["split"] == "3 training and 1 held-out real cases"
    assert doc["items"]["unit"] == "slice" and doc["items"]["synthetic"] == 6
    assert 0.0 <= doc["memorization"]["flagged_fraction"] <= 1.0
    model = doc["model"]
    assert model["variant"] == "vaegan" and model["cases"] == "held-out real"
    assert model["kl_nats"] > 0 and np.isfinite(model["iwll_nats_k16"])
    assert json.loads((out / "evaluation.json").read_text())["split"] == doc["split"]
    # the same scans under another path: evaluate's scratch cache is rebuilt, not refused
    moved = tmp_path / "moved"
    shutil.copytree(world.cohort, moved)
    again = evaluate(moved, out, model=world.vaegan2, feature_steps=2, device="cpu")
    assert again["split"] == doc["split"]
    page = write_report(out).read_text()
    assert "<table>" in page and "memorization" in page
