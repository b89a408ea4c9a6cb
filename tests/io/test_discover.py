"""Finding scans in the layouts people keep CT data in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medaug import io
from medaug.data.phantom import make_patient
from medaug.errors import InputError
from tests.conftest import SMALL


def test_tcia_tree_pairs_labels_by_number_and_reports_empty_folders(
    dicom_cohort: Path, tmp_path: Path
) -> None:
    root = tmp_path / "Pancreas-CT"
    shutil.copytree(dicom_cohort, root)
    (root / "PANCREAS_0025").mkdir()
    (root / "PANCREAS_0070" / "sub").mkdir(parents=True)
    found = io.discover(root)
    assert [r.case_id for r in found] == ["case_0000", "case_0001", "case_0002"]
    assert [r.label.name if r.label else None for r in found] == [
        "label0001.nii.gz",
        "label0002.nii.gz",
        "label0003.nii.gz",
    ]
    assert [r.source.relative_to(root).parts[0] for r in found] == [
        "PANCREAS_0001",
        "PANCREAS_0002",
        "PANCREAS_0003",
    ]
    empty = {n.path: n.message for n in found.notes if n.level == "warning"}
    assert empty == {
        "PANCREAS_0025": "empty folder: no scan",
        "PANCREAS_0070": "empty folder: no scan",
    }
    for index, ref in enumerate(found):
        scan = io.load(ref)
        expected, _ = make_patient(index, seed=0, config=SMALL)
        np.testing.assert_array_equal(scan.image, expected.image)
        # the TCIA-style label is stored flipped; through its affine it lands exactly
        np.testing.assert_array_equal(scan.label, expected.label)


def test_decathlon_layout(nifti_cohort: Path) -> None:
    found = io.discover(nifti_cohort)
    assert len(found) == 2
    assert all(r.kind == "nifti" and r.label is not None for r in found)
    assert json.loads((nifti_cohort / "dataset.json").read_text())["numTraining"] == 2
    scan = io.load(found[1])
    expected, _ = make_patient(1, seed=0, config=SMALL)
    np.testing.assert_array_equal(scan.image, expected.image)
    np.testing.assert_array_equal(scan.label, expected.label)
    np.testing.assert_allclose(scan.affine, expected.affine)


def test_nnunet_raw_layout_uses_channel_0000(nifti_cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "Dataset501_Pancreas"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for src in sorted((nifti_cohort / "imagesTr").iterdir()):
        case = src.name.replace(".nii.gz", "").lower()
        shutil.copy(src, root / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(src, root / "imagesTr" / f"{case}_0001.nii.gz")
        shutil.copy(nifti_cohort / "labelsTr" / src.name, root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text('{"channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}')
    found = io.discover(root)
    assert [r.source.name for r in found] == [
        "pancreas_0001_0000.nii.gz",
        "pancreas_0002_0000.nii.gz",
    ]
    assert [r.label.name if r.label else None for r in found] == [
        "pancreas_0001.nii.gz",
        "pancreas_0002.nii.gz",
    ]
    ignored = [n for n in found.notes if "channel 0001 ignored" in n.message]
    assert len(ignored) == 2


def test_plain_nifti_with_labels_folder_matched_by_stem(nifti_cohort: Path, tmp_path: Path) -> None:
    images, labels = tmp_path / "scans", tmp_path / "annotations"
    images.mkdir()
    labels.mkdir()
    for name in ("liver_a", "liver_b"):
        shutil.copy(nifti_cohort / "imagesTr" / "PANCREAS_0001.nii.gz", images / f"{name}.nii.gz")
    shutil.copy(nifti_cohort / "labelsTr" / "PANCREAS_0001.nii.gz", labels / "liver_b.nii.gz")
    shutil.copy(nifti_cohort / "labelsTr" / "PANCREAS_0001.nii.gz", labels / "unrelated.nii.gz")
    found = io.discover(images, labels=labels)
    assert [(r.source.name, r.label.name if r.label else None) for r in found] == [
        ("liver_a.nii.gz", None),
        ("liver_b.nii.gz", "liver_b.nii.gz"),
    ]
    assert any("unrelated.nii.gz" in n.path and n.level == "warning" for n in found.notes)


def test_nested_nifti_with_seg_suffix(nifti_cohort: Path, tmp_path: Path) -> None:
    case = tmp_path / "site_a" / "patient7"
    case.mkdir(parents=True)
    shutil.copy(nifti_cohort / "imagesTr" / "PANCREAS_0002.nii.gz", case / "ct.nii.gz")
    shutil.copy(nifti_cohort / "labelsTr" / "PANCREAS_0002.nii.gz", case / "ct_seg.nii.gz")
    found = io.discover(tmp_path)
    assert len(found) == 1
    assert found[0].label == case / "ct_seg.nii.gz"


def test_single_nifti_file(nifti_cohort: Path) -> None:
    found = io.discover(nifti_cohort / "imagesTr" / "PANCREAS_0001.nii.gz")
    assert len(found) == 1 and found[0].kind == "nifti"
    scan = io.load(nifti_cohort / "imagesTr" / "PANCREAS_0001.nii.gz")
    assert scan.shape == SMALL.shape


def test_missing_path_and_non_nifti_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="path does not exist"):
        io.discover(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="not a NIfTI file"):
        io.discover(tmp_path / "x.txt")


def test_header_reading_in_worker_processes_gives_the_same_result(
    dicom_cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = io.discover(dicom_cohort, workers=1)
    monkeypatch.setattr("medaug.io.discovery.PARALLEL_MIN_FILES", 1)
    parallel = io.discover(dicom_cohort, workers=2)
    assert [r.files for r in serial] == [r.files for r in parallel]
    assert [r.label for r in serial] == [r.label for r in parallel]


def test_leftovers_of_killed_writes_are_ignored(nifti_cohort: Path, tmp_path: Path) -> None:
    shutil.copytree(nifti_cohort, tmp_path / "c")
    (tmp_path / "c" / "imagesTr" / ".123.partial.PANCREAS_0003.nii.gz").write_bytes(b"half")
    assert len(io.discover(tmp_path / "c")) == 2


def test_patients_are_indexed_by_top_folder_or_stem(dicom_cohort, nifti_cohort) -> None:
    from medaug.io import discover

    found = discover(dicom_cohort)
    assert [r.patient for r in found] == ["patient_0000", "patient_0001", "patient_0002"]
    assert [r.patient for r in discover(nifti_cohort)] == ["patient_0000", "patient_0001"]
