"""The phantom cohort: deterministic, anatomically ordered, real DICOM and NIfTI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom

from medaug.data import phantom
from medaug.data.phantom import PhantomConfig, make_patient, write_cohort
from tests.conftest import SMALL, series_files


def pixel_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.dcm"), key=lambda p: (p.parent.parent.parent.name, p.name)):
        h.update(pydicom.dcmread(path).PixelData)
    return h.hexdigest()


def test_same_seed_same_pixel_bytes_and_uids(tmp_path: Path) -> None:
    write_cohort(tmp_path / "a", patients=2, seed=3, config=SMALL)
    write_cohort(tmp_path / "b", patients=2, seed=3, config=SMALL)
    write_cohort(tmp_path / "c", patients=2, seed=4, config=SMALL)
    assert pixel_digest(tmp_path / "a") == pixel_digest(tmp_path / "b")
    assert pixel_digest(tmp_path / "a") != pixel_digest(tmp_path / "c")
    rel = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*.dcm"))
    assert rel == sorted(
        str(p.relative_to(tmp_path / "b")) for p in (tmp_path / "b").rglob("*.dcm")
    )


def test_patients_differ_in_pancreas_shape_size_and_position() -> None:
    labels = [make_patient(i, 0, SMALL)[0].label for i in range(4)]
    volumes = [int(lab.sum()) for lab in labels]  # type: ignore[union-attr]
    centres = [tuple(np.argwhere(lab).mean(axis=0).round(1)) for lab in labels]  # type: ignore[arg-type]
    assert len(set(volumes)) == 4 and len(set(centres)) == 4
    assert all(v > 100 for v in volumes)


def test_tissue_values_are_ct_like() -> None:
    scan, anat = make_patient(0, 0, PhantomConfig(shape=(128, 128, 24)))
    image, label = scan.image, scan.label
    assert label is not None
    assert image.dtype == np.float32 and np.all(image == np.rint(image))
    assert image.min() == -1000 and image.max() < 1500  # air, bone below 1500 HU
    pancreas = image[label > 0]
    assert abs(float(np.median(pancreas)) - anat.hu[phantom.PANCREAS]) < 25
    corner = image[:8, :8, :]
    assert np.all(corner == -1000)  # air outside the body, no noise there
    clean, _ = make_patient(0, 0, PhantomConfig(shape=(128, 128, 24), noise_hu=0.0))
    noise = (image - clean.image)[clean.image > -990]
    assert abs(float(noise.std()) - 12.0) < 2.0  # the configured noise level, in HU


def test_dicom_headers_follow_the_tcia_layout(dicom_cohort: Path) -> None:
    patients = sorted(p.name for p in dicom_cohort.iterdir() if p.name.startswith("PANCREAS_"))
    assert patients == ["PANCREAS_0001", "PANCREAS_0002", "PANCREAS_0003"]
    files = series_files(dicom_cohort / "PANCREAS_0002")
    assert [f.name for f in files[:2]] == ["1-001.dcm", "1-002.dcm"]
    ds = pydicom.dcmread(files[0])
    series_dir = files[0].parent
    assert series_dir.name == ds.SeriesInstanceUID and series_dir.parent.name == ds.StudyInstanceUID
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Modality == "CT" and ds.PatientID == "PANCREAS_0002"
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 12, 0)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert [float(v) for v in ds.PixelSpacing] == [6.25, 6.25]
    assert ds.SyntheticData == "YES"
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    assert np.allclose(np.diff(positions), 2.5)
    assert (dicom_cohort / "TCIA_pancreas_labels-02-05-2017" / "label0002.nii.gz").is_file()


def test_killed_cohort_run_resumes(tmp_path: Path) -> None:
    write_cohort(tmp_path, patients=1, seed=0, config=SMALL)
    first = series_files(tmp_path)
    mtimes = [p.stat().st_mtime_ns for p in first]
    (tmp_path / "PANCREAS_0002").mkdir()  # a half-made patient with nothing finished
    write_cohort(tmp_path, patients=2, seed=0, config=SMALL)
    assert [p.stat().st_mtime_ns for p in first] == mtimes  # patient 1 kept as is
    assert len(series_files(tmp_path / "PANCREAS_0002")) == SMALL.shape[2]
