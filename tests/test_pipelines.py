"""The end-to-end recipes under pipelines/ run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_pancreas_ct_recipe_runs_end_to_end_on_the_phantom(tmp_path: Path) -> None:
    out = tmp_path / "pancreas"
    result = subprocess.run(
        [sys.executable, str(PIPELINES / "pancreas_ct" / "run.py"), "--smoke", "--out", str(out),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert [s.split(":")[0] for s in stages] == [
        "== phantom cohort (--smoke)", "== ingest", "== preprocess onto the model grid",
        "== augmentation gain", "== release set", "== report",
    ]  # fmt: skip
    assert "4 scan(s), 4 usable with a label" in result.stdout
    gain = json.loads((out / "gain" / "gain.json").read_text())
    assert gain["settings"]["folds"] == 2 and len(gain["generators"]) == 4
    assert (out / "gain" / "gain.png").exists() and (out / "synthetic" / "report.html").exists()
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n"] == 8


def test_pancreas_ct_recipe_needs_data_or_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(PIPELINES / "pancreas_ct" / "run.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "give --data" in result.stderr
