"""docker/install.sh, the install step of the Docker and Apptainer images, run for
real into a fresh virtual environment: PyTorch pinned first, then medaug and all its
dependencies from this source tree (no --no-deps: a broken install step must fail
here, not in an image build). pip's cache and configuration are used as set, so
on a machine that has the wheels this takes about a minute.

``--torch "torch==2.13.0"`` picks the CPU build on these machines (the wheel pip
finds beside the registry), as the Makefile does; the images pass the CUDA build or
get it from their base.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docker" / "install.sh"
TORCH = "torch==2.13.0"


def install(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_install_sh_makes_a_working_environment_and_is_idempotent(tmp_path: Path):
    venv = tmp_path / "venv"
    start = time.perf_counter()
    result = install(venv, "--torch", TORCH, "--python", sys.executable)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"install.sh: medaug 0.1.0 in {venv} (torch 2.13.0" in result.stdout
    print(f"install.sh into a fresh environment: {seconds:.0f} s")

    medaug = venv / "bin" / "medaug"
    help_ = subprocess.run([medaug, "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "synth-merge" in help_.stdout, help_.stderr
    version = subprocess.run([medaug, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == "medaug 0.1.0"
    probe = "import medaug, monai, torch; print(medaug.__file__); print(torch.__version__)"
    imports = subprocess.run(
        [venv / "bin" / "python", "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not this source tree, which `python -c` would import from
    )
    assert imports.returncode == 0, imports.stderr
    where, torch_version = imports.stdout.split()
    assert Path(where).is_relative_to(venv)  # installed, not imported from the tree
    assert torch_version.startswith("2.13.0")

    again = install(venv, "--torch", TORCH, "--python", sys.executable)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"updating the environment in {venv}" in again.stdout
    assert "medaug 0.1.0" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no VENV given"),
        (("{tmp}/v", "--bogus"), "unknown option --bogus"),
        (("{tmp}/v", "--torch"), "--torch needs a value"),
        (("{tmp}/v", "--source", "{tmp}"), "not a medaug source tree"),
        (("{tmp}/v", "--extras", "dev;rm"), "expected names separated by commas"),
        (("{tmp}/v", "--python", "no-such-python3"), "no-such-python3: no such interpreter"),
        (("{tmp}/file",), "exists and is not a Python environment"),
    ],
)
def test_install_sh_errors_are_one_clear_line(tmp_path: Path, args, message):
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "x").write_text("not a venv")
    result = install(*(a.format(tmp=tmp_path) for a in args), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("install.sh: error: "), result.stderr
    assert message in lines[0]
    assert not (tmp_path / "v").exists()


def test_install_sh_help():
    result = install("--help", timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("Install medaug into a virtual environment")
    assert "--system-site-packages" in result.stdout
