"""The example scripts run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_read_cohort_example() -> None:
    result = _run("read_cohort.py")
    assert result.returncode == 0, result.stderr
    assert "2 scan(s), 2 usable" in result.stdout
    assert "MONAI LoadImaged agrees on (64, 64, 16) voxels and the affine" in result.stdout


def test_train_on_cache_example() -> None:
    result = _run("train_on_cache.py", "--steps", "3")
    assert result.returncode == 0, result.stderr
    assert "cache: 4 case(s)" in result.stdout
    assert "split: 3 train / 1 val case(s)" in result.stdout
    assert "step 2: loss" in result.stdout


def test_mix_synthetic_in_monai_example() -> None:
    result = _run("mix_synthetic_in_monai.py", "--steps", "3", "--generator-steps", "4")
    assert result.returncode == 0, result.stderr
    assert "synthetic: 64 slices" in result.stdout
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("step 3: loss ") and "of 24 items were synthetic" in line
    synthetic = int(line.split("; ")[1].split(" of ")[0])
    assert 0 < synthetic < 24


def test_synthesize_on_the_fly_example() -> None:
    result = _run("synthesize_on_the_fly.py", "--steps", "2", "--generator-steps", "4")
    assert result.returncode == 0, result.stderr
    assert "step 1: loss" in result.stdout
    assert "8 real + 4 synthetic slices of (1, 32, 32)" in result.stdout
