"""Slice-to-slice consistency of stacked 2D synthesis against real volumes.

A 2D model writes a volume by stacking slices (``medaug synth --stack``, or any DICOM
output). This measures how much neighbouring slices differ: the mean absolute
difference in HU between slices z and z + 1, over voxels inside the body (above
-500 HU in both), for the synthetic volumes and for the real cached cases the
generator trained on; the ratio synthetic / real is the figure (1: as smooth as real
anatomy; much above 1: slices that flicker).

Writes one row per checkpoint to ``benchmarks/results/stack.json`` (commit, command,
machine facts, wall time) and prints it.

Usage::

    python benchmarks/bench_stack.py --model RUN_DIR --cache CACHE_DIR [--n 20 --slices 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_facts, table

from medaug.data import Cache
from medaug.data.synthfolder import SynthFolder
from medaug.preprocess.splits import training_cases
from medaug.preprocess.transforms import unit_to_hu
from medaug.synth import synthesize
from medaug.train.checkpoint import Checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "stack.json"
BODY_HU = -500.0


def neighbour_difference(volumes: list[np.ndarray]) -> float:
    """Mean |HU(z + 1) - HU(z)| over voxel pairs inside the body, ``(X, Y, Z)`` volumes."""
    diffs = []
    for v in volumes:
        a, b = v[..., :-1], v[..., 1:]
        inside = (a > BODY_HU) & (b > BODY_HU)
        diffs.append(np.abs(b - a)[inside])
    return float(np.concatenate(diffs).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint or run folder")
    parser.add_argument("--cache", type=Path, required=True, help="the generator's cache")
    parser.add_argument("--n", type=int, default=20, help="stacked cases (20)")
    parser.add_argument("--slices", type=int, default=24, help="slices per case (24)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    facts = machine_facts({"torch": torch.__version__})
    ckpt = Checkpoint.load(args.model)
    cache = Cache(args.cache)
    real = []
    for case in training_cases(cache, ckpt.split):
        image = np.moveaxis(np.asarray(cache.array(case, "image"), dtype=np.float32), 0, -1)
        real.append(unit_to_hu(image, cache.config.hu_window))
    with tempfile.TemporaryDirectory() as tmp:
        done = synthesize(Path(tmp) / "s", args.n, model=ckpt, input=args.cache, stack=True,
                          slices=args.slices, device="cpu")  # fmt: skip
        folder = SynthFolder.open(done.out)
        synthetic = [folder.read_case(rec)[0].astype(np.float32) for rec in folder.cases]
    row: dict[str, Any] = {
        "model": ckpt.model_config.variant, "condition": ckpt.model_config.condition,
        "discriminator": ckpt.model_config.discriminator, "step": ckpt.step,
        "cases": args.n, "slices": args.slices,
        "synthetic_mad_hu": neighbour_difference(synthetic),
        "real_mad_hu": neighbour_difference(real),
    }  # fmt: skip
    row["ratio"] = row["synthetic_mad_hu"] / row["real_mad_hu"]
    row |= {"commit": facts["medaug_source"], "command": " ".join(sys.argv),
            "machine": {k: facts[k] for k in ("cpu_count", "platform", "torch")},
            "wall_s": time.perf_counter() - started}  # fmt: skip
    doc = json.loads(args.results.read_text()) if args.results.exists() else {"rows": []}
    doc["rows"].append(row)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(["model", "step", "synthetic |ΔHU| between slices", "real", "ratio"],
                [[f"{row['model']} {row['condition']} {row['discriminator']}", str(row["step"]),
                  f"{row['synthetic_mad_hu']:.1f}", f"{row['real_mad_hu']:.1f}",
                  f"{row['ratio']:.2f}"]]))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
