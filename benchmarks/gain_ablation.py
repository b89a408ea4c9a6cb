"""What makes synthetic pairs help (or not): the gain experiment's synthetic arms under
other recipes, on the phantom cohort.

Runs ``run_gain`` on one output folder once per recipe (sampling mode x synthetic
ratio x generator steps). Each fold/regime generator is trained once per step count,
and the real and classical arms are computed once and reused, because their run
records do not depend on the synthetic recipe. Prints one row per recipe: the
synthetic arms' Dice against ``real`` and ``real+classical`` in the same regime.

Run:  python benchmarks/gain_ablation.py [--patients 8] [--regime 2] [--seeds 3]
          [--steps 150 300] [--generator-steps 300 1000] [--modes prior perturb]
          [--ratios 0.25 0.5] [--workdir benchmarks/out/gain-ablation]
The README's table: ``--generator-steps 1000`` (12 min on 2 idle cores), then
``--generator-steps 1000 --steps 300 --modes prior --ratios 0.5`` (8 min).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_WORKDIR, table

from medaug.data.phantom import write_cohort
from medaug.segment import SegmentConfig
from medaug.segment.gain import run_gain
from medaug.train.spec import GeneratorSpec


def row_of(doc: dict, arm: str) -> dict:
    return next(r for r in doc["summary"] if r["arm"] == arm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--regime", default="2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[150], help="U-Net steps per run")
    parser.add_argument("--generator-steps", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--modes", nargs="+", default=["prior", "perturb"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "gain-ablation")
    args = parser.parse_args()

    cohort = args.workdir / "phantom"
    if not cohort.exists():
        write_cohort(cohort, patients=args.patients, seed=0, fmt="dicom")
    rows = []
    recipes = [
        (g, s, m, r)
        for g in args.generator_steps
        for s in args.steps
        for m in args.modes
        for r in args.ratios
    ]
    for gsteps, steps, mode, ratio in recipes:
        t0 = time.perf_counter()
        doc = run_gain(
            cohort, args.workdir / f"g{gsteps}", train_patients=[args.regime], seeds=args.seeds,
            segment=SegmentConfig(steps=steps), ratio=ratio, synth_mode=mode,
            generator=GeneratorSpec(steps=gsteps),
        )  # fmt: skip
        rows.append([str(gsteps), mode, f"{ratio:.2f}", str(steps), *cells(doc),
                     f"{time.perf_counter() - t0:.0f}"])  # fmt: skip
        print(rows[-1], flush=True)
    print(f"\n{args.regime} real patient(s), {args.seeds} seeds; Dice mean ± sd over seeds\n")
    header = ["generator steps", "mode", "ratio", "U-Net steps", "real", "real+classical",
              "real+synth (Δ vs real)", "real+classical+synth", "s"]  # fmt: skip
    print(table(header, rows))


def cells(doc: dict) -> list[str]:
    """Mean ± sd of the four arms; the synthetic arm with its difference to ``real``."""
    out = []
    for arm in ("real", "real+classical", "real+synth", "real+classical+synth"):
        d = row_of(doc, arm)
        text = f"{d['dice']['mean']:.3f} ± {d['dice']['sd']:.3f}"
        if arm == "real+synth":
            text += f" ({d['vs_real']['mean_difference']:+.3f})"
        out.append(text)
    return out


if __name__ == "__main__":
    main()
