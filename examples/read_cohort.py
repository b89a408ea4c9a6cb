"""Read a CT cohort with medaug and hand it to a MONAI pipeline.

Run:  python examples/read_cohort.py [CT_DIR]
Without CT_DIR it writes a small phantom cohort to a temporary folder first.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from monai.transforms import LoadImaged

from medaug import io
from medaug.data.phantom import PhantomConfig, write_cohort


def main(ct_dir: Path, work: Path) -> None:
    found = io.discover(ct_dir)
    print(f"{len(found)} scan(s), {len(found.usable)} usable, {len(found.notes)} note(s)")
    datalist = []
    for ref in found.usable:
        scan = io.load(ref)
        print(f"{scan.case_id}: {scan.shape} voxels, {scan.spacing} mm, {scan.orientation}")
        image = work / f"{scan.case_id}.nii.gz"
        label = work / f"{scan.case_id}_label.nii.gz"
        io.save_nifti(scan, image, label_path=label)
        datalist.append({"image": str(image), "label": str(label)})

    # MONAI reads what medaug wrote with the same voxels and the same world geometry.
    loader = LoadImaged(keys=["image", "label"], image_only=True)
    first = loader(datalist[0])
    scan = io.load(found.usable[0])
    assert np.array_equal(first["image"].numpy(), scan.image)
    assert np.allclose(first["image"].affine.numpy(), scan.affine, atol=1e-5)
    print(f"MONAI LoadImaged agrees on {tuple(first['image'].shape)} voxels and the affine")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            source = Path(sys.argv[1])
        else:
            source = Path(tmp) / "phantom"
            write_cohort(source, patients=2, config=PhantomConfig(shape=(64, 64, 16)))
        (Path(tmp) / "nifti").mkdir()
        main(source, Path(tmp) / "nifti")
