"""Importing the ``benchmarks/`` scripts in tests (they are scripts, not a package)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/NAME.py`` as a module, for a fixture to ``yield from``; the scripts
    import ``common`` from their own folder, which is on the path meanwhile."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
