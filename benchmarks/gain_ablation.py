"""What makes synthetic pairs help (or not): the gain experiment's synthetic arms under
other recipes, on the phantom cohort.

Runs ``run_gain`` on one output folder once per recipe (sampling mode x synthetic
ratio x generator steps). Each fold/regime generator is trained once per step count,
and the real and classical arms are computed once and reused, because their run
records do not depend on the synthetic recipe. Prints one row per recipe: the
synthetic arms' Dice against ``real`` and ``real+classical`` in the same regime.

Run:  python benchmarks/gain_ablation.py [--patients 8] [--regime 2] [--seeds 3]
          [--steps 150] [--generator-steps 300 1000] [--modes prior perturb]
          [--ratios 0.25 0.5] [--workdir benchmarks/out/gain-ablation]
Takes about 1 h on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_WORKDIR, table

from medaug.data.phantom import write_cohort
from medaug.segment import SegmentConfig
from medaug.segment.gain import run_gain


def row_of(doc: dict, arm: str) -> dict:
    return next(r for r in doc["summary"] if r["arm"] == arm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--regime", default="2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--generator-steps", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--modes", nargs="+", default=["prior", "perturb"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "gain-ablation")
    args = parser.parse_args()

    cohort = args.workdir / "phantom"
    if not cohort.exists():
        write_cohort(cohort, patients=args.patients, seed=0, fmt="dicom")
    rows = []
    for gsteps in args.generator_steps:
        for mode in args.modes:
            for ratio in args.ratios:
                t0 = time.perf_counter()
                doc = run_gain(
                    cohort, args.workdir / f"g{gsteps}", train_patients=[args.regime],
                    seeds=args.seeds, segment=SegmentConfig(steps=args.steps), ratio=ratio,
                    synth_mode=mode, generator_steps=gsteps,
                )  # fmt: skip
                real, classical = row_of(doc, "real"), row_of(doc, "real+classical")
                synth, both = row_of(doc, "real+synth"), row_of(doc, "real+classical+synth")
                rows.append([
                    str(gsteps), mode, f"{ratio:.2f}", f"{real['dice']['mean']:.3f}",
                    f"{classical['dice']['mean']:.3f}",
                    f"{synth['dice']['mean']:.3f} ({synth['vs_real']['mean_difference']:+.3f})",
                    f"{both['dice']['mean']:.3f} ({both['vs_real']['mean_difference']:+.3f})",
                    f"{time.perf_counter() - t0:.0f}",
                ])  # fmt: skip
                print(rows[-1], flush=True)
    print(
        f"\n{args.regime} real patient(s), {args.seeds} seeds, {args.steps} U-Net steps per run\n"
    )
    header = ["generator steps", "mode", "ratio", "real", "real+classical",
              "real+synth (Δ)", "real+classical+synth (Δ)", "s"]  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
