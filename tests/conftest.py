"""Shared fixtures: small phantom cohorts and a DICOM series writer for variants.

Everything is built here, in temporary folders; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medaug.data.phantom import PhantomConfig, make_patient, write_cohort
from medaug.io.dicom_write import new_series_info, write_ct_series

#: Small enough that a series writes and reads in well under a second.
SMALL = PhantomConfig(shape=(64, 64, 12), fov_mm=400.0, slice_mm=2.5)

#: ModelConfig overrides for models that train a step in milliseconds (16^2 / 16^3 grids).
TINY_MODEL = {"channels": (8, 8, 8), "latent_dim": 8, "disc_channels": 8, "disc_layers": 1}


@pytest.fixture(scope="module")
def one_thread_per_process():
    """Two pytest workers share two cores; two OpenMP threads per process then turn a
    16x16 decode from ~0.4 ms into ~100 ms. One torch thread here and in CLI
    subprocesses (``pytestmark = pytest.mark.usefixtures("one_thread_per_process")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dicom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three phantom patients in the TCIA Pancreas-CT layout (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("tcia")
    write_cohort(out, patients=3, seed=0, fmt="dicom", config=SMALL)
    return out


@pytest.fixture(scope="session")
def nifti_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("msd")
    write_cohort(out, patients=2, seed=0, fmt="nifti", config=SMALL)
    return out


def series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


@pytest.fixture
def write_series(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray, np.ndarray]]:
    """Write a phantom volume as one DICOM series with a chosen affine.

    Returns a function ``(name, affine=None, **kwargs) -> (folder, image_hu, affine)``;
    kwargs go to :func:`write_ct_series` (``signed``, ``transfer_syntax``).
    """

    def write(
        name: str = "series", affine: np.ndarray | None = None, index: int = 0, **kwargs: object
    ) -> tuple[Path, np.ndarray, np.ndarray]:
        scan, _ = make_patient(index, seed=0, config=SMALL)
        affine = scan.affine if affine is None else affine
        info = new_series_info("TEST^SERIES", "TEST01", entropy=["tests", name])
        folder = tmp_path / name
        write_ct_series(scan.image, affine, folder, info, **kwargs)  # type: ignore[arg-type]
        return folder, scan.image, affine

    return write


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``medaug`` as a user would, in a fresh process: real exit codes and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "medaug.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,  # a hang guard, not a speed check: the demo takes minutes on loaded cores
    )


@pytest.fixture(scope="session")
def pairs_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four phantom patients, their 2D cache on a 16x16 grid (one held-out patient), a
    tiny VAE-GAN trained on the training side and eight synthetic prior cases from it
    (read-only). Keys: cohort, cache, checkpoint, synthetic."""
    from medaug.preprocess import PreprocessConfig, preprocess
    from medaug.synth.run import synthesize
    from medaug.train import TrainConfig, train

    root = tmp_path_factory.mktemp("pairs")
    cohort = root / "cohort"
    write_cohort(cohort, patients=4, seed=0, fmt="dicom", config=SMALL)
    cache = preprocess(
        cohort, root / "cache", PreprocessConfig(grid_2d=(16, 16)), val_fraction=0.25
    )
    cfg = TrainConfig(
        steps=4, batch_size=4, log_every=2, checkpoint_every=4, sample_every=4, warmup_steps=2,
        n_samples=4,
    )  # fmt: skip
    result = train(cache.out, root / "runs", model="vaegan", config=cfg, model_overrides=TINY_MODEL)
    assert result.checkpoint is not None
    synth = root / "synthetic"
    synthesize(synth, 8, model=result.checkpoint, device="cpu")
    return {
        "cohort": cohort,
        "cache": cache.out,
        "checkpoint": result.checkpoint,
        "synthetic": synth,
    }
