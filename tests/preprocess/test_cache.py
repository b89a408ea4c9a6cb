"""The cohort stage: cache files, reuse and rebuild, resume, fingerprint, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medaug.errors import ConfigError, InputError
from medaug.io.atomic import is_temporary
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess import pipeline as P
from tests.conftest import run_cli, series_files


@pytest.fixture(scope="module")
def cache2d(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c2"
    preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    return out


def test_cache_files_and_index(cache2d: Path) -> None:
    index = json.loads((cache2d / "index.json").read_text())
    assert index["dims"] == 2 and len(index["cases"]) == 3 and index["skipped"] == {}
    assert [c["patient"] for c in index["cases"]] == [
        "patient_0000",
        "patient_0001",
        "patient_0002",
    ]
    rec = index["cases"][0]
    image = np.load(cache2d / "cases" / "case_0000_image.npy")
    label = np.load(cache2d / "cases" / "case_0000_label.npy")
    # stored slice-major (Z, X, Y)
    assert image.shape == (rec["shape"][2], 32, 32) and image.dtype == np.float32
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    assert -1.0 <= image.min() and image.max() <= 1.0
    assert rec["target_slices"] == np.flatnonzero(label.any(axis=(1, 2))).tolist()
    assert rec["source_orientation"] == "LPS"
    assert PreprocessConfig.load(cache2d / "config.json") == PreprocessConfig(grid_2d=(32, 32))
    fp = json.loads((cache2d / "fingerprint.json").read_text())
    assert fp["cases"] == 3 and fp["cases_with_target"] == 3
    assert fp["spacing_mm"]["median"] == [6.25, 6.25, 2.5]
    # the phantom pancreas is soft tissue around 100 HU
    assert 60 < fp["target_hu"]["p50"] < 140
    assert all(10 < ml < 120 for ml in (c["target_ml"] for c in fp["per_case"]))
    splits = json.loads((cache2d / "splits.json").read_text())
    assert sorted(splits["splits"][0]["train"] + splits["splits"][0]["val"]) == [
        "case_0000",
        "case_0001",
        "case_0002",
    ]


def test_same_inputs_reuse_other_settings_refused(dicom_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    config = PreprocessConfig(grid_2d=(32, 32))
    first = preprocess(dicom_cohort, out, config, workers=1)
    assert not first.reused
    stamp = (out / "cases" / "case_0001_image.npy").stat().st_mtime_ns
    again = preprocess(dicom_cohort, out, config, workers=1)
    assert again.reused and len(again.done) == 3
    assert (out / "cases" / "case_0001_image.npy").stat().st_mtime_ns == stamp
    # dataset-only settings do not invalidate the cache
    assert preprocess(dicom_cohort, out, config.replace(context_slices=2), workers=1).reused
    with pytest.raises(ConfigError, match="overwrite=True"):
        preprocess(dicom_cohort, out, config.replace(hu_window=(-100, 200)), workers=1)
    rebuilt = preprocess(
        dicom_cohort, out, config.replace(hu_window=(-100, 200)), workers=1, overwrite=True
    )
    assert not rebuilt.reused and not any(c.reused for c in rebuilt.done)
    assert json.loads((out / "index.json").read_text())["config"]["hu_window"] == [-100, 200]


def test_changed_input_file_changes_the_key(dicom_cohort: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(dicom_cohort, src)
    out = tmp_path / "c"
    preprocess(src, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    label = sorted(src.rglob("label0002.nii.gz"))[0]
    os.utime(label, ns=(1, 1))
    with pytest.raises(ConfigError, match="other scans or settings"):
        preprocess(src, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)


def test_interrupted_run_leaves_no_partial_entry_and_resumes(
    dicom_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "c"
    real = P.preprocess_scan
    calls = []

    def dies_on_second(scan, config, classes=None):
        calls.append(scan.case_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a killed worker would stop
        return real(scan, config, classes)

    monkeypatch.setattr(P, "preprocess_scan", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    assert not (out / "index.json").exists()
    names = sorted(p.name for p in (out / "cases").iterdir())
    assert names == [
        "case_0000.json",
        "case_0000_context.npy",
        "case_0000_image.npy",
        "case_0000_label.npy",
    ]
    assert not any(is_temporary(p) for p in out.rglob("*"))

    monkeypatch.setattr(P, "preprocess_scan", real)
    result = preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=1)
    assert [c.reused for c in result.done] == [True, False, False]
    assert (out / "index.json").exists()


def test_parallel_workers_write_the_same_cache(cache2d: Path, dicom_cohort: Path, tmp_path: Path):
    out = tmp_path / "c"
    preprocess(dicom_cohort, out, PreprocessConfig(grid_2d=(32, 32)), workers=2)
    for name in ("case_0000_image.npy", "case_0002_label.npy"):
        np.testing.assert_array_equal(
            np.load(out / "cases" / name), np.load(cache2d / "cases" / name)
        )


def test_3d_cache(dicom_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "c3"
    config = PreprocessConfig(dims=3, grid_3d=(16, 16, 8), cache_dtype="float16")
    result = preprocess(dicom_cohort, out, config, workers=1)
    assert result.samples == 3
    image = np.load(out / "cases" / "case_0001_image.npy")
    assert image.shape == (8, 16, 16) and image.dtype == np.float16


# ---------------------------------------------------------------------------------
# Bad input


def _cohort_copy(dicom_cohort: Path, tmp_path: Path) -> Path:
    src = tmp_path / "in"
    shutil.copytree(dicom_cohort, src)
    return src


def test_scan_without_label_is_skipped_with_its_reason(dicom_cohort: Path, tmp_path: Path):
    src = _cohort_copy(dicom_cohort, tmp_path)
    next(src.rglob("label0002.nii.gz")).unlink()
    result = preprocess(src, tmp_path / "c", PreprocessConfig(grid_2d=(32, 32)), workers=1)
    assert [c.case_id for c in result.done] == ["case_0000", "case_0002"]
    (skipped,) = result.skipped
    assert skipped.case_id == "case_0001" and "no label found" in skipped.skipped
    assert "PANCREAS_0002" in skipped.skipped  # names the scan's folder
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert list(index["skipped"]) == ["case_0001"]


def test_label_without_target_voxels_is_skipped(dicom_cohort: Path, tmp_path: Path) -> None:
    src = _cohort_copy(dicom_cohort, tmp_path)
    path = next(src.rglob("label0001.nii.gz"))
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), path)
    result = preprocess(src, tmp_path / "c", PreprocessConfig(grid_2d=(32, 32)), workers=1)
    (skipped,) = result.skipped
    assert skipped.case_id == "case_0000"
    assert "label0001.nii.gz" in skipped.skipped and "no 'pancreas' voxels" in skipped.skipped


def test_scan_too_small_for_the_crop(dicom_cohort: Path, tmp_path: Path) -> None:
    # 12 slices of 2.5 mm = 30 mm; a 3D grid of 32 slices at 2.5 mm needs 80 mm
    with pytest.raises(InputError, match=r"no scan could be preprocessed.*too small for the crop"):
        preprocess(dicom_cohort, tmp_path / "c", PreprocessConfig(dims=3), workers=1)
    assert not (tmp_path / "c").exists()  # nothing half-made is left behind


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_no_usable_scan_names_the_first_problem(dicom_cohort: Path, tmp_path: Path) -> None:
    # preprocess prints no table of scans, so its one line must say what is wrong
    src = _cohort_copy(dicom_cohort, tmp_path)
    for series in sorted(src.glob("PANCREAS_*")):
        _cut(series_files(series)[0])
    with pytest.raises(InputError) as err:
        preprocess(src, tmp_path / "c", workers=1)
    assert "none readable (the first: case_0000: PANCREAS_0001/" in str(err.value)
    assert "1-001.dcm: truncated" in str(err.value) and "rows above" not in str(err.value)


def test_scans_lost_in_discovery_and_in_preprocessing_are_both_named(
    dicom_cohort: Path, tmp_path: Path
) -> None:
    src = _cohort_copy(dicom_cohort, tmp_path)
    _cut(series_files(src / "PANCREAS_0002")[0])  # unreadable: found by discovery
    for name in ("label0001.nii.gz", "label0003.nii.gz"):  # fail in preprocessing
        _cut(next(src.rglob(name)))
    with pytest.raises(InputError) as err:
        preprocess(src, tmp_path / "c", workers=1)
    message = str(err.value)
    assert "2 skipped; the first: " in message and "label0001.nii.gz" in message
    assert "1 unreadable, the first: case_0001: PANCREAS_0002/" in message


def test_nothing_usable_and_foreign_output_folder(tmp_path: Path, dicom_cohort: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        preprocess(tmp_path / "empty", tmp_path / "c")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("x")
    with pytest.raises(InputError, match="not a medaug cache"):
        preprocess(dicom_cohort, foreign, workers=1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hu_window": [200, -100]}, "low < high"),
        ({"hu_window": [40, 40]}, "low < high"),
        ({"spacing_mm": [1.5, 0, 2.5]}, "spacing_mm must be positive"),
        ({"spacing_mm": -1}, "spacing_mm must be positive"),
        ({"hu_windw": [0, 1]}, "unknown setting.*hu_windw"),
        ({"grid_2d": [64.5, 64]}, "grid_2d must be 2 integers"),
        ({"target": "liver"}, "target 'liver' is not one of labels"),
        ({"dims": 4}, "dims must be 2 or 3"),
    ],
)
def test_bad_config_values(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PreprocessConfig.from_dict(settings)


def test_config_reads_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "pp.yaml"
    yaml_file.write_text("# pancreas, bigger grid\ndims: 3\ngrid_3d: 64\nhu_window: [-135, 215]\n")
    config = PreprocessConfig.load(yaml_file)
    assert config.dims == 3 and config.grid_3d == (64, 64, 64)
    assert config.hu_window == (-135.0, 215.0)
    config.save(tmp_path / "pp.json")
    assert PreprocessConfig.load(tmp_path / "pp.json") == config
    (tmp_path / "bad.yaml").write_text("dims: [3\n")
    with pytest.raises(InputError, match=r"bad.yaml: not a readable YAML/JSON config"):
        PreprocessConfig.load(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------------------
# Command line


def test_cli_preprocess_summary_reuse_and_preview(dicom_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    first = run_cli("preprocess", dicom_cohort, out, "--grid", "32", "--preview", "--workers", "1")
    assert first.returncode == 0, first.stderr
    assert "Preprocessed 3 case(s)" in first.stdout
    assert "grid 32x32 at 3x3x2.5 mm" in first.stdout
    assert "HU window [-160, 240] -> [-1, 1]" in first.stdout
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_cli("preprocess", dicom_cohort, out, "--grid", "32", "--workers", "1")
    assert again.returncode == 0 and again.stdout.startswith("Reused 3 case(s)")
    changed = run_cli("preprocess", dicom_cohort, out, "--grid", "64", "--workers", "1")
    assert changed.returncode == 1
    assert changed.stderr.strip().splitlines()[-1].startswith("medaug: error: ")
    assert "--overwrite" in changed.stderr and "Traceback" not in changed.stderr


def test_cli_plan_only_prints_the_fingerprint(dicom_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    r = run_cli("preprocess", dicom_cohort, out, "--plan-only", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "Dataset fingerprint: 3 case(s), 3 with pancreas" in r.stdout
    assert "HU in pancreas" in r.stdout and "Plan: 2D grid (64, 64)" in r.stdout
    assert (out / "fingerprint.json").exists() and not (out / "index.json").exists()


def test_cli_bad_config_is_one_line(tmp_path: Path, dicom_cohort: Path) -> None:
    bad = tmp_path / "pp.yaml"
    bad.write_text("hu_window: [240, -160]\nmargin: 10\n")
    r = run_cli("preprocess", dicom_cohort, tmp_path / "c", "--config", bad)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"medaug: error: {bad}: unknown setting(s) margin; known: body_threshold_hu, "
        "cache_dtype, context_labels, context_slices, crop, dims, grid_2d, grid_3d, "
        "hu_window, image_interpolation, labels, margin_mm, min_coverage, require_label, "
        "spacing_mm, target, target_fraction, tissue_hu"
    )
