"""Run folders: ``runs/00003-vaegan-2d/`` with ``config.json``, ``stats.jsonl``,
TensorBoard events, sample grids and checkpoints."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from medaug.errors import InputError

_RUN = re.compile(r"^(\d{5})-([a-z0-9]+)-([23])d$")


def run_name(number: int, variant: str, dims: int) -> str:
    return f"{number:05d}-{variant}-{dims}d"


def runs_in(out: Path) -> list[Path]:
    """Run folders under ``out``, by number."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and _RUN.match(p.name))


def new_run_dir(out: Path, variant: str, dims: int) -> Path:
    """Create the next numbered run folder (the number counts every run in ``out``)."""
    numbers = [int(_RUN.match(p.name).group(1)) for p in runs_in(out)]  # type: ignore[union-attr]
    n = max(numbers, default=-1) + 1
    while True:
        path = out / run_name(n, variant, dims)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:  # another process took the number
            n += 1


def check_writable(out: Path) -> None:
    """Fail before training if ``out`` cannot hold a run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(out, f"output folder is not writable ({exc.strerror or exc})") from None


class StatsLog:
    """``stats.jsonl`` (one JSON object per line) plus TensorBoard scalars."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "stats.jsonl"
        self._tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; a trimmed install still trains
            self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def loss_text(stats: dict[str, Any]) -> str:
    """The losses a person watches: generator, discriminator, KL (nats), pixel L1."""
    names = {
        "generator/loss": "G",
        "discriminator/loss": "D",
        "generator/kl": "KL",
        "generator/pixel_l1": "L1",
    }
    return "  ".join(f"{short} {stats[key]:.3g}" for key, short in names.items() if key in stats)


def read_stats(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(run_dir) / "stats.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
