"""No code path reaches for the network: the whole job (``medaug demo``: phantom ->
inspect -> preprocess -> train -> synth -> evaluate -> gain), fitting inside synth,
and sharded synthesis with its merge run in processes whose sockets refuse to
connect or resolve a name, and every attempt is logged, so one that medaug caught
and shrugged off still fails the test.

Data-parallel training is left out: torch.distributed's gloo backend connects its
processes over localhost sockets by design (tests/deploy/test_slurm.py runs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Installed as ``sitecustomize`` in every process of the test (Python imports it at
#: start-up), so subprocesses, worker processes and threads are covered too.
BLOCKER = '''
"""Refuse and log every network connection and name lookup (tests/deploy/test_offline.py)."""
import os
import socket
import traceback

_LOG = os.environ["MEDAUG_NET_LOG"]
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_sendto = socket.socket.sendto


def _refuse(what, args):
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {what} {args!r}\\n{''.join(traceback.format_stack(limit=12))}\\n")
    raise OSError(f"network access blocked by the offline test: {what} {args!r}")


def _local(sock):
    return sock.family == getattr(socket, "AF_UNIX", None)


def connect(self, address):
    return _connect(self, address) if _local(self) else _refuse("connect", address)


def connect_ex(self, address):
    return _connect_ex(self, address) if _local(self) else _refuse("connect_ex", address)


def sendto(self, *args):
    return _sendto(self, *args) if _local(self) else _refuse("sendto", args[-1])


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
socket.create_connection = lambda *a, **k: _refuse("create_connection", a)
socket.getaddrinfo = lambda *a, **k: _refuse("getaddrinfo", a)
socket.gethostbyname = lambda *a, **k: _refuse("gethostbyname", a)
socket.gethostbyname_ex = lambda *a, **k: _refuse("gethostbyname_ex", a)
'''


@pytest.fixture
def offline(tmp_path: Path):
    """Run a command with the blocker loaded; returns (run(args) -> result, log path)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "network.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "MEDAUG_NET_LOG": str(log),
        "OMP_NUM_THREADS": "1",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    return run, log


def medaug(run, *args: str | Path) -> str:
    result = run("-m", "medaug.cli", *args)
    assert result.returncode == 0, f"medaug {args[0]}: " + result.stderr[-3000:]
    return result.stdout


def test_the_blocker_blocks(offline):
    run, log = offline
    result = run("-c", "import socket; socket.create_connection(('127.0.0.1', 9))")
    assert result.returncode == 1 and "blocked by the offline test" in result.stderr
    assert "create_connection" in log.read_text()
    result = run("-c", "import socket; socket.getaddrinfo('localhost', 80)")
    assert result.returncode == 1 and "getaddrinfo" in log.read_text()


@pytest.mark.slow
def test_the_whole_job_runs_without_the_network(offline, tmp_path: Path):
    run, log = offline
    demo = tmp_path / "demo"
    out = medaug(
        run, "demo", "--out", demo, "--patients", "3", "--steps", "2", "--n", "4",
        "--feature-steps", "2", "--gain-steps", "2", "--gain-seeds", "1", "--gain-cases", "1",
        "--generator-steps", "2", "--fidelity-steps", "2",
    )  # fmt: skip
    assert "report" in out and (demo / "synthetic" / "report.html").exists()
    assert log.read_text() == ""

    # synth fitting its own generator (2 steps), then shards and their merge
    medaug(run, "synth", "--input", demo / "phantom", "--n", "2", "--steps", "2",
           "--out", tmp_path / "fitted", "--quiet")  # fmt: skip
    for k in (0, 1):
        medaug(run, "synth", "--model", demo / "runs", "--input", demo / "phantom", "--n", "3",
               "--shard", f"{k}/2", "--out", tmp_path / "sharded" / f"shard_{k}",
               "--quiet")  # fmt: skip
    medaug(run, "synth-merge", tmp_path / "sharded", *sorted((tmp_path / "sharded").glob("s*")))
    assert (tmp_path / "sharded" / "preview.png").exists()
    assert log.read_text() == "", log.read_text()[:3000]
