"""The command line as a user meets it: real processes, exit codes, one-line errors,
never a traceback, and one bad file never hiding the rest of a cohort."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.conftest import SMALL, run_cli, series_files


def assert_clean_failure(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("medaug: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def cohort(dicom_cohort: Path, tmp_path: Path) -> Path:
    root = tmp_path / "cohort"
    shutil.copytree(dicom_cohort, root)
    return root


def test_help_is_fast_and_lists_commands() -> None:
    start = time.perf_counter()
    result = run_cli("--help")
    assert result.returncode == 0
    for command in (
        "phantom",
        "inspect",
        "convert",
        "train",
        "synth",
        "synth-merge",
        "evaluate",
        "report",
        "segment",
        "gain",
        "demo",
    ):
        assert command in result.stdout
    segment = run_cli("segment", "--help")
    assert segment.returncode == 0 and "train" in segment.stdout and "eval" in segment.stdout
    assert time.perf_counter() - start < 20  # generous: only a guard against heavy imports
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("medaug 0.")


def test_phantom_then_inspect_json(tmp_path: Path) -> None:
    result = run_cli("phantom", tmp_path / "c", "--patients", "2", "--shape", "64", "64", "12")
    assert result.returncode == 0, result.stderr
    assert "Wrote 2 phantom patients (dicom, 64x64x12 voxels, 6.25x6.25x2.50 mm)" in result.stdout
    result = run_cli("inspect", tmp_path / "c", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [s["case_id"] for s in data["scans"]] == ["case_0000", "case_0001"]
    row = data["scans"][0]
    assert row["kind"] == "dicom" and row["shape"] == [64, 64, 12]
    assert row["spacing"] == [6.25, 6.25, 2.5] and row["orientation"] == "LPS"
    assert row["hu_min"] == -1000.0 and 200 < row["hu_max"] < 1500
    assert row["label"] == "TCIA_pancreas_labels-02-05-2017/label0001.nii.gz"
    assert row["label_voxels"] > 0 and row["warnings"] == [] and row["error"] is None
    assert "PHANTOM" not in result.stdout  # no patient names in any output


def test_inspect_table(cohort: Path) -> None:
    result = run_cli("inspect", cohort)
    assert result.returncode == 0, result.stderr
    assert "3 usable, 0 unusable" in result.stdout
    assert "DICOM series" in result.stdout and "64x64x12" in result.stdout


def test_convert_writes_nifti_with_the_same_voxels(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "nii"
    result = run_cli("convert", cohort, out)
    assert result.returncode == 0, result.stderr
    assert "Converted 3 scan(s), kept 0 already converted, 0 failed" in result.stdout
    from medaug.data.phantom import make_patient

    expected, _ = make_patient(2, 0, SMALL)
    img = nib.load(out / "images" / "case_0002.nii.gz")
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected.image)
    np.testing.assert_allclose(img.affine, expected.affine, atol=1e-5)
    lab = nib.load(out / "labels" / "case_0002.nii.gz")
    np.testing.assert_array_equal(np.asarray(lab.dataobj), expected.label)
    record = json.loads((out / "conversion.json").read_text())
    assert record["cases"][2]["source"].startswith("PANCREAS_0003/")
    again = run_cli("convert", cohort, out)
    assert "Converted 0 scan(s), kept 3 already converted" in again.stdout


# ---------------------------------------------------------------------------------
# Bad input: one line, non-zero exit where nothing usable, no traceback


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    assert_clean_failure(run_cli("inspect", tmp_path / "missing"), "missing: path does not exist")
    assert_clean_failure(run_cli("convert", tmp_path / "missing", tmp_path / "o"), "does not exist")


def test_empty_folder(tmp_path: Path) -> None:
    assert_clean_failure(run_cli("inspect", tmp_path), str(tmp_path), "folder is empty")


def test_folder_without_dicom_or_nifti(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "blob").write_bytes(b"\x01\x02" * 200)
    assert_clean_failure(
        run_cli("inspect", tmp_path), "no DICOM series or NIfTI volume", "2 file(s)"
    )


def test_truncated_dicom_file_names_the_file_and_keeps_the_rest(cohort: Path) -> None:
    victim = series_files(cohort / "PANCREAS_0002")[4]
    victim.write_bytes(victim.read_bytes()[:3000])
    result = run_cli("inspect", cohort, "--json")
    assert result.returncode == 0, result.stderr
    scans = json.loads(result.stdout)["scans"]
    assert [s["error"] is None for s in scans] == [True, False, True]
    assert victim.name in scans[1]["error"] and "truncated" in scans[1]["error"]
    one = run_cli("inspect", victim.parent)
    assert_clean_failure(one, "no usable scan")
    assert "1-005.dcm" in one.stdout and "truncated" in one.stdout


def test_dicom_header_cut_short(cohort: Path) -> None:
    victim = series_files(cohort / "PANCREAS_0001")[0]
    victim.write_bytes(victim.read_bytes()[:200])
    data = json.loads(run_cli("inspect", cohort, "--json").stdout)
    assert victim.name in data["scans"][0]["error"]
    assert any(n["level"] == "error" and victim.name in n["path"] for n in data["notes"])
    assert data["scans"][1]["error"] is None


def test_dicom_without_pixel_data(cohort: Path) -> None:
    victim = series_files(cohort / "PANCREAS_0003")[2]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    scans = json.loads(run_cli("inspect", cohort, "--json").stdout)["scans"]
    assert scans[2]["error"].endswith("1-003.dcm: no pixel data")
    assert scans[0]["error"] is None


def test_series_with_a_missing_slice_warns_and_stays_usable(cohort: Path) -> None:
    series_files(cohort / "PANCREAS_0001")[6].unlink()
    result = run_cli("inspect", cohort, "--json")
    assert result.returncode == 0
    row = json.loads(result.stdout)["scans"][0]
    assert row["error"] is None and row["shape"] == [64, 64, 12]
    assert any("1 missing slice(s)" in w for w in row["warnings"])


def test_corrupt_nifti_header(tmp_path: Path, nifti_cohort: Path) -> None:
    shutil.copytree(nifti_cohort, tmp_path / "c")
    bad = tmp_path / "c" / "imagesTr" / "PANCREAS_0002.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    data = json.loads(run_cli("inspect", tmp_path / "c", "--json").stdout)
    assert data["scans"][0]["error"] is None
    assert "PANCREAS_0002.nii.gz" in data["scans"][1]["error"]
    assert "corrupt or unreadable NIfTI header" in data["scans"][1]["error"]
    single = run_cli("inspect", bad)
    assert_clean_failure(single, "no usable scan")


def test_label_that_does_not_match_its_image(tmp_path: Path, nifti_cohort: Path) -> None:
    shutil.copytree(nifti_cohort, tmp_path / "c")
    label = tmp_path / "c" / "labelsTr" / "PANCREAS_0001.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :8], img.affine), label)
    result = run_cli("inspect", tmp_path / "c", "--json")
    row = json.loads(result.stdout)["scans"][0]
    assert "PANCREAS_0001.nii.gz: label grid (64, 64, 8) does not match its image" in row["error"]
    converted = run_cli("convert", tmp_path / "c", tmp_path / "out")
    assert converted.returncode == 1 and "Traceback" not in converted.stderr
    assert "Converted 1 scan(s)" in converted.stdout and "1 failed" in converted.stdout
    assert not (tmp_path / "out" / "images" / "case_0000.nii.gz").exists()


def test_bad_options(tmp_path: Path) -> None:
    result = run_cli("phantom", tmp_path, "--patients", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert_clean_failure(run_cli("phantom", tmp_path, "--shape", "4", "64", "64"), "--shape")


@pytest.mark.slow
def test_demo_runs_phantom_to_evaluation_and_points_at_preview_and_report(tmp_path: Path) -> None:
    args = ("--patients", "3", "--steps", "4", "--n", "4", "--feature-steps", "5",
            "--fidelity-steps", "2")  # fmt: skip
    gain = ("--gain-steps", "2", "--gain-seeds", "2", "--gain-cases", "1", "--generator-steps", "2")
    result = run_cli("demo", "--out", tmp_path / "d", *args, *gain, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    synth = tmp_path / "d" / "synthetic"
    assert len(list((synth / "images").glob("synth_*.nii.gz"))) == 4
    manifest = json.loads((synth / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["mode"] == "prior"
    # the demo's generator is mask-conditioned: real masks, each label exactly its mask
    assert manifest["settings"]["masks"] == "real" and manifest["conditioning"]["masks"] == "real"
    assert all(c["params"]["layout"]["masks"] == "real" for c in manifest["cases"])
    evaluation = json.loads((synth / "evaluation.json").read_text())
    assert evaluation["items"]["synthetic"] == 4 and "mmd_pixels" in evaluation
    page = (synth / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page
    assert (
        str(synth / "preview.png") in result.stdout and str(synth / "report.html") in result.stdout
    )
    assert "label fidelity" in result.stdout and "Verdict" in page
    # it ends with the gain table: one regime, five arms (classical + synthetic and the
    # cheap baseline among them), every patient tested once (2 folds over 3 patients),
    # two seeds each
    table = result.stdout[result.stdout.index("| real patients | arm |") :]
    assert [line.split(" | ")[1] for line in table.splitlines()[2:7]] == [
        "real", "real+classical", "real+synth", "real+classical+synth", "real+labels2image",
    ]  # fmt: skip
    assert (tmp_path / "d" / "gain" / "gain.png").exists()
    doc = json.loads((tmp_path / "d" / "gain" / "gain.json").read_text())
    assert len(doc["runs"]) == 2 * 5 * 2 and doc["settings"]["synth_mode"] == "prior"
    assert doc["settings"]["folds"] == 2 and doc["summary"][1]["vs_real"]["pairs"] == 3 * 2
