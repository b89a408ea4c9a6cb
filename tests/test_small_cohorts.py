"""Every command with its default settings on the cohorts users try first: 1, 2 and 3
labelled scans. Only run length is cut (steps, seeds); batch sizes, grids, splits and
regimes are the defaults, and where a default cannot fit, the command says what it
adapted instead of failing.

The commands run in process (typer's ``CliRunner``, through the same error handling as
``medaug``): ten fresh interpreters per cohort would spend most of the test importing
torch and MONAI. ``tests/test_cli.py`` runs the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from medaug.data.phantom import PhantomConfig, write_cohort

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

SHORT = ("--steps", "2")
# 96 mm along z, as a real scan covers the 3D crop's 80 mm field (tests' SMALL: 30 mm)
SCAN = PhantomConfig(shape=(64, 64, 24), fov_mm=400.0, slice_mm=4.0)


def medaug(*args: str | Path) -> Result:
    """``medaug ARGS`` in this process; an exception other than the exit is a failure."""
    from medaug.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


def ok(result: Result, *expect: str) -> str:
    out = result.output
    assert result.exit_code == 0, out[-2000:]
    for text in expect:
        assert text in out, out[-2000:]
    return out


@pytest.mark.parametrize("patients", [1, 2, 3])
def test_every_command_works_with_its_defaults_on_a_tiny_cohort(tmp_path: Path, patients: int):
    scans = tmp_path / "scans"
    write_cohort(scans, patients=patients, seed=0, fmt="dicom", config=SCAN)
    training = max(1, patients - 1)  # preprocess holds one patient out when it can
    # the default batch (16) is more than a small cohort has volumes: it shrinks, and says so
    said = f"batch {training}: the training set has {training} volume"

    ok(medaug("preprocess", scans, tmp_path / "cache"))
    ok(medaug("train", tmp_path / "cache", "--out", tmp_path / "runs", *SHORT))
    ok(medaug("train", scans, "--dims", "3", "--out", tmp_path / "runs3", *SHORT), said)
    ok(medaug("synth", "--model", tmp_path / "runs", "--out", tmp_path / "synth", "--n", "2"))
    ok(medaug("synth", "--input", scans, "--dims", "3", "--out", tmp_path / "s3", "--n", "1",
              *SHORT), said)  # fmt: skip
    ok(medaug("evaluate", "--real", scans, "--synthetic", tmp_path / "synth",
              "--feature-steps", "2"))  # fmt: skip
    ok(medaug("segment", "train", tmp_path / "cache", "--out", tmp_path / "seg", *SHORT))
    ok(medaug("segment", "train", scans, "--dims", "3", "--out", tmp_path / "seg3", *SHORT))

    gain = medaug("gain", "--input", scans, "--out", tmp_path / "gain", *SHORT,
                  "--generator-steps", "2", "--seeds", "1")  # fmt: skip
    if patients == 1:
        assert gain.exit_code == 1
        assert gain.stderr.splitlines()[-1] == (
            "medaug: error: the gain experiment needs at least 2 patients; the data have 1"
        )
    else:
        # the default regimes (2, 4, all) shrink to the one training patient per fold
        ok(gain, "real patients per regime: all (the default 2, 4, all cut to what the "
                 f"smallest fold trains on: {patients - 1} patient")  # fmt: skip
