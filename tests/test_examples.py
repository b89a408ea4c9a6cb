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
