"""Training sets for other tools, made from a synthesis folder.

``export_nnunet`` writes an nnU-Net v2 raw dataset mixing real and synthetic cases.
Real cases are taken from the synthesis folder's ``cache/`` (the real scans on the
model grid, mapped back to HU), so real and synthetic cases share spacing, field of
view and orientation; when the generator's checkpoint records its training split, only
those training cases are exported, never its held-out ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from medaug.data.synthfolder import SynthFolder
from medaug.errors import InputError
from medaug.io.atomic import atomic_path
from medaug.io.nifti import write_volume
from medaug.preprocess.cache import Cache
from medaug.preprocess.pipeline import invert
from medaug.preprocess.splits import training_cases


def export_nnunet(synth_dir: str | Path, dest: str | Path, dataset_id: int) -> Path:
    """Write ``dest/DatasetNNN_medaug`` (imagesTr with ``_0000``, labelsTr, dataset.json).

    Returns:
        the dataset folder.
    """
    synth_dir = Path(synth_dir)
    folder_in = SynthFolder.open(synth_dir)
    config = folder_in.config
    folder = Path(dest) / f"Dataset{dataset_id:03d}_medaug"
    with atomic_path(folder) as tmp:
        (tmp / "imagesTr").mkdir(parents=True)
        (tmp / "labelsTr").mkdir()
        for rec in folder_in.cases:
            if not rec.get("image", "").endswith(".nii.gz"):
                raise InputError(
                    synth_dir,
                    "nnU-Net export needs NIfTI images (synthesize with {fmt=nifti} or both)",
                )
            shutil.copyfile(
                synth_dir / rec["image"], tmp / "imagesTr" / f"{rec['case']}_0000.nii.gz"
            )
            shutil.copyfile(synth_dir / rec["label"], tmp / "labelsTr" / f"{rec['case']}.nii.gz")
        real = 0
        if Cache.exists(synth_dir / "cache"):
            cache = Cache(synth_dir / "cache")
            for case_id in training_cases(cache, folder_in.split):
                scan = invert(
                    np.moveaxis(np.asarray(cache.array(case_id, "image"), np.float32), 0, -1),
                    config,
                    label=np.moveaxis(np.asarray(cache.array(case_id, "label")), 0, -1),
                    affine=cache.affine(case_id),
                )
                name = f"real_{case_id.rsplit('_', 1)[-1]}"
                hu = np.clip(np.rint(scan.image), -32768, 32767).astype(np.int16)
                write_volume(hu, scan.affine, tmp / "imagesTr" / f"{name}_0000.nii.gz")
                assert scan.label is not None
                write_volume(scan.label, scan.affine, tmp / "labelsTr" / f"{name}.nii.gz")
                real += 1
        doc = {
            "name": f"Dataset{dataset_id:03d}_medaug",
            "description": f"{real} real and {len(folder_in.cases)} synthetic cases (medaug)",
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **folder_in.classes},
            "numTraining": real + len(folder_in.cases),
            "file_ending": ".nii.gz",
        }
        (tmp / "dataset.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder


__all__ = ["export_nnunet"]
