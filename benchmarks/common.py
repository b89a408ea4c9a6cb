"""Pieces shared by the benchmark scripts: timing, result rows, machine facts, output.

The scripts are run as ``python benchmarks/<script>.py``, so this folder is first on
``sys.path`` and they import this module as ``common``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

import medaug

DEFAULT_WORKDIR = Path(__file__).resolve().parent / "out"
MIB = 1024 * 1024

#: Source of ``high_water_bytes()`` and ``scale`` for the memory-probe scripts that run
#: in a fresh interpreter (they must import ``resource`` and ``sys`` first).
HIGH_WATER_SOURCE = """
def high_water_bytes():
    # VmHWM: peak RSS of this process image. ru_maxrss is not used for the numbers:
    # on Linux it carries over the parent's RSS through fork/vfork + exec.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


scale = 1 if sys.platform == "darwin" else 1024
"""


@dataclass
class Row:
    """One line of a results table (formatted text) plus its numbers for the JSON."""

    section: str
    measurement: str
    result: str
    ratio: str = ""
    target: str = ""
    met: str = ""
    notes: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timing:
    """Wall times (and CPU times including children) of one benchmark case."""

    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def best(self) -> float:
        return min(self.wall_s)

    @property
    def cpu_per_wall(self) -> float:
        """Median of CPU time / wall time per run: ~N when N cores are busy."""
        return statistics.median(c / w for c, w in zip(self.cpu_s, self.wall_s, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "median_s": self.median,
            "best_s": self.best,
            "cpu_per_wall": self.cpu_per_wall,
        }


# ---------------------------------------------------------------------------------
# Timing


def cpu_seconds() -> float:
    """User + system time of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_timed(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, Timing]:
    """Warm up every case once, then time them ``repeat`` times round-robin.

    A case's return value is dropped after its clock stops, so freeing it is not timed.
    """
    for fn in cases.values():
        out = fn()
        del out
    timings = {name: Timing() for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            gc.collect()
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            out = fn()
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            del out
            timings[name].wall_s.append(wall)
            timings[name].cpu_s.append(cpu)
    return timings


def run_memory_probe(script: str, folder: Path, mode: str, *args: str) -> dict[str, int]:
    """Run a memory-probe ``script`` in a fresh interpreter; its last line of JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder), mode, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {mode} failed: {proc.stderr[-2000:]}")
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------
# Formatting


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def fmt_x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def spread(t: Timing) -> str:
    return f"median of {len(t.wall_s)}; best {t.best:.3f} s"


def shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def worker_rows(
    section: str,
    one: tuple[str, Timing, str],
    two: tuple[str, Timing, str],
) -> list[Row]:
    """Rows for the same job with 1 and with 2 workers: (measurement, timing, notes) each.

    The notes follow the timing's spread; the second row adds the speed-up over the first.
    """
    (name1, w1, notes1), (name2, w2, notes2) = one, two
    speedup = w1.median / w2.median
    return [
        Row(
            section,
            name1,
            fmt_s(w1.median),
            f"CPU/wall {w1.cpu_per_wall:.2f}",
            notes=f"{spread(w1)}; {notes1}",
            values=w1.to_json(),
        ),
        Row(
            section,
            name2,
            fmt_s(w2.median),
            f"speed-up {fmt_x(speedup)}; CPU/wall {w2.cpu_per_wall:.2f}",
            notes=f"{spread(w2)}; {notes2}",
            values={"speedup": speedup, **w2.to_json()},
        ),
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of text cells (a ``|`` inside a cell is escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    header = ["#", "measurement", "result", "ratio", "target", "met", "notes"]
    cells = [[r.section, r.measurement, r.result, r.ratio, r.target, r.met, r.notes] for r in rows]
    return table(header, cells)


# ---------------------------------------------------------------------------------
# Machine facts


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_facts(
    libraries: dict[str, Any],
    codecs: dict[str, Any] | None = None,
    tools: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Versions and core counts that the numbers depend on.

    ``libraries`` come after numpy, ``codecs`` after SimpleITK and ``tools`` after the
    medaug source, in the order given.
    """
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        **libraries,
        "SimpleITK": sitk.Version_VersionString(),
        "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        **(codecs or {}),
        "medaug": medaug.__version__,
        "medaug_source": git_state(),
        **(tools or {}),
        "loadavg_at_start": loadavg(),
    }


def git_state() -> str:
    """Commit of the medaug checkout, and which files under medaug/ differ from it."""
    package = Path(medaug.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=package,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=package,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return str(package)
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head} + uncommitted: {', '.join(changed)}" if changed else f"{head} (clean)"


def loadavg() -> str:
    """1/5/15-minute load average: well above 0 means something else competes for cores."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------
# Run set-up and output


def make_workdir(path: Path) -> Path:
    """The absolute work folder, created if missing."""
    workdir = path.expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def print_machine(facts: dict[str, Any], quick: bool, repeat: int, total_s: float) -> None:
    """Print the machine facts; adds ``loadavg_at_end`` to ``facts``."""
    print("Machine:")
    for k, v in facts.items():
        print(f"- {k}: {v}")
    facts["loadavg_at_end"] = loadavg()
    print(f"- loadavg_at_end: {facts['loadavg_at_end']}")
    mode = "quick" if quick else "full"
    print(f"- run: {mode}, repeat {repeat}, total {total_s:.1f} s")


def load_rows(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A results file (``benchmarks/results/*.json``) and its rows by key; an empty
    one when the file is not there yet."""
    doc = json.loads(path.read_text()) if path.exists() else {"rows": []}
    return doc, {r["key"]: r for r in doc["rows"]}


def save_rows(path: Path, doc: dict[str, Any], rows: dict[str, dict[str, Any]]) -> None:
    """Write a results file with ``rows`` sorted by key, under a temporary name renamed
    into place (a killed benchmark leaves the last whole file)."""
    doc["rows"] = sorted(rows.values(), key=lambda r: r["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON report and say where on stderr."""
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nJSON: {path}", file=sys.stderr)
