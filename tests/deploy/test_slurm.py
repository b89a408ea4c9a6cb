"""The Slurm scripts as Slurm runs them, on the CPU: every shell script parses
(``bash -n``); ``train.sbatch`` starts torchrun with two gloo processes under stub
``srun`` / ``scontrol`` and a fake Slurm environment, checkpoints and requeues on
SIGTERM, and resumes on the next start; ``synth_array.sbatch`` shards synthesis over
array tasks and ``synth_merge.sbatch`` joins them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medaug.data.phantom import write_cohort
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.train import TrainConfig, train
from tests.conftest import SMALL, TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
SLURM = ROOT / "pipelines" / "slurm"
SCRIPTS = sorted(
    p
    for folder in (ROOT / "pipelines", ROOT / "docker")
    for p in folder.rglob("*")
    if p.suffix in (".sbatch", ".sh")
)

SRUN = """#!/bin/bash
# stub srun: log the call, drop srun's own options, run the command
echo "$*" >> "$STUB_LOG"
while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
exec "$@"
"""
SCONTROL = """#!/bin/bash
# stub scontrol: one node called localhost; requeues are logged
echo "scontrol $*" >> "$STUB_LOG"
case "$1 $2" in
    "show hostnames") echo localhost ;;
esac
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm")
    write_cohort(root / "cohort", patients=3, seed=0, fmt="dicom", config=SMALL)
    pp = PreprocessConfig(dims=2, grid_2d=(16, 16))
    return preprocess(root / "cohort", root / "cache", pp, val_fraction=0.0).out


@pytest.fixture
def slurm(tmp_path: Path) -> dict[str, str]:
    """Stub srun/scontrol first on PATH, a one-node, two-"GPU" job environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PYTEST_"))}
    return env | {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",
        "PYTHONPATH": str(ROOT),
        "STUB_LOG": str(tmp_path / "stub.log"),
        "SLURM_JOB_NODELIST": "node[001]",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_GPUS_ON_NODE": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_CPUS_PER_TASK": "2",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }


def tiny_config(tmp_path: Path, **train_settings: int) -> Path:
    """A --config file: the tiny test model and the training cadence."""
    path = tmp_path / "tiny.yaml"
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_MODEL.items()}
    path.write_text(yaml.safe_dump({"model": model, "train": train_settings}))
    return path


def train_args(cache: Path, out: Path, config: Path, steps: int) -> list[str]:
    return [
        "bash", str(SLURM / "train.sbatch"), str(cache), str(out),
        "--preset", "cpu", "--batch-size", "4", "--steps", str(steps),
        "--device", "cpu", "--config", str(config),
    ]  # fmt: skip


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("0000*/checkpoints/step_*.pt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_shell_script_parses(script: Path):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/"), "no shebang"


def test_scripts_are_the_expected_ones():
    names = {p.name for p in SCRIPTS}
    assert {"train.sbatch", "synth_array.sbatch", "synth_merge.sbatch", "install.sh"} <= names


@pytest.mark.slow
def test_train_sbatch_runs_torchrun_with_two_gloo_processes(cache, slurm, tmp_path):
    out = tmp_path / "runs"
    config = tiny_config(tmp_path, log_every=2, checkpoint_every=4, sample_every=4)
    result = subprocess.run(
        train_args(cache, out, config, 4), env=slurm, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert checkpoints(out) == ["step_00000004.pt"]
    run_config = json.loads(next(out.glob("0000*/config.json")).read_text())
    assert run_config["processes"] == 2
    assert run_config["model_config"]["preset"] == "cpu"
    assert run_config["train_config"]["batch_size"] == 4
    calls = Path(slurm["STUB_LOG"]).read_text()
    assert "scontrol show hostnames node[001]" in calls
    assert "--nproc-per-node=2" in calls and "--rdzv-endpoint=localhost:" in calls
    assert "--workers 0" in calls and "--resume" not in calls and "requeue" not in calls


@pytest.mark.slow
def test_train_sbatch_checkpoints_requeues_on_sigterm_and_resumes(cache, slurm, tmp_path):
    out = tmp_path / "runs"
    config = tiny_config(tmp_path, log_every=1, checkpoint_every=100000, sample_every=100000)
    log = (tmp_path / "first.log").open("w")
    job = subprocess.Popen(
        train_args(cache, out, config, 100000), env=slurm, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        stats = out / "00000-vaegan-2d" / "stats.jsonl"
        while not (stats.exists() and stats.read_text().count("\n") >= 2):
            assert job.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        job.send_signal(signal.SIGTERM)  # what Slurm's --signal=B:TERM sends the batch shell
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
    text = (tmp_path / "first.log").read_text()
    assert "preempted; checkpoint written, requeueing job 4242" in text, text[-3000:]
    assert "scontrol requeue 4242" in Path(slurm["STUB_LOG"]).read_text()
    saved = checkpoints(out)
    assert len(saved) == 1, saved  # written on SIGTERM: checkpoint_every is never reached
    step = int(saved[0][len("step_") : -len(".pt")])
    assert 1 <= step < 100000

    # the requeued job: same command, a checkpoint is there, so --resume
    Path(slurm["STUB_LOG"]).write_text("")
    again = subprocess.run(
        train_args(cache, out, config, step + 2),
        env=slurm,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    calls = Path(slurm["STUB_LOG"]).read_text()
    assert "--resume" in calls and "requeue" not in calls
    assert checkpoints(out)[-1] == f"step_{step + 2:08d}.pt"
    assert not list(out.glob("00001-*"))  # the same run continued


@pytest.mark.slow
def test_synth_array_shards_and_merge_joins_them(cache, slurm, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, log_every=2, checkpoint_every=2, sample_every=2)
    model = train(cache, tmp_path / "runs", config=cfg, model_overrides=TINY_MODEL).checkpoint
    out = tmp_path / "synth"
    env = slurm | {"SLURM_ARRAY_JOB_ID": "4300", "SLURM_ARRAY_TASK_COUNT": "2"}
    env |= {"SLURM_ARRAY_TASK_MIN": "0"}
    extra = ["--device", "cpu", "--batch-size", "1"]
    for task in ("0", "1", "1"):  # task 1 twice: a requeued task whose shard is complete
        result = subprocess.run(
            ["bash", str(SLURM / "synth_array.sbatch"), str(model), str(out), "5", *extra],
            env=env | {"SLURM_ARRAY_TASK_ID": task},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert "already complete" in result.stdout
    for k, indices in enumerate(([0, 2], [2, 5])):
        doc = json.loads((out / f"shard_{k}" / "manifest.json").read_text())
        assert doc["settings"]["shard"] == [k, 2] and doc["indices"] == indices
    merged = subprocess.run(
        ["bash", str(SLURM / "synth_merge.sbatch"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert merged.returncode == 0, merged.stderr[-3000:]
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["complete"] and [c["index"] for c in doc["cases"]] == [0, 1, 2, 3, 4]
    assert (out / "dataset.json").exists() and (out / "preview.png").exists()
