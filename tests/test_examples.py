"""The example scripts run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_read_cohort_example() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "read_cohort.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "2 scan(s), 2 usable" in result.stdout
    assert "MONAI LoadImaged agrees on (64, 64, 16) voxels and the affine" in result.stdout
