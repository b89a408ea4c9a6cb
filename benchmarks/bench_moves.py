"""Where a mask-conditioned generator loses label fidelity: the moves of its layouts.

Synthesis draws layouts from the generator's training cases' real masks under random
moves (``RealMasks``: rotation, scale, shift, elastic). This scores one trained
generator on layouts drawn with every move, with none (its training layouts: what it
has memorised, an upper bound), and with each kind alone, using the fidelity
benchmark's segmenter (``bench_fidelity.py --workdir``), and adds the rows to
``benchmarks/results/moves.json``. Beside each row, the control: the real slices the
layouts came from, moved alike and scored by the same segmenter (what a perfect
renderer of moved layouts would reach).

Run (``--table`` prints the README's table from the results file)::

    python benchmarks/bench_moves.py --workdir /work/runs/fid64 --cache cache64 \\
        --segmenter segmenter-steps300-grid64-sp3 --run variants/<variant>/runs/00000-vaegan-2d
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_facts

from medaug.data import Cache
from medaug.data.warp import ELASTIC, ROTATE_DEG, SCALE, TRANSLATE_FRAC
from medaug.preprocess.transforms import hu_to_unit
from medaug.segment import fidelity
from medaug.synth import Synthesizer
from medaug.synth.masks import RealMasks

RESULTS = Path(__file__).resolve().parent / "results" / "moves.json"
NONE = {"rotate_deg": (0.0, 0.0, 0.0), "scale": (1.0, 1.0), "translate_frac": 0.0, "elastic": None}
#: Each row: the moves RealMasks may draw (the rest held still).
ROWS = {
    "every move (synthesis)": {"rotate_deg": ROTATE_DEG, "scale": SCALE,
                               "translate_frac": TRANSLATE_FRAC, "elastic": ELASTIC},
    "none (training layouts)": NONE,
    "rotation + scale": NONE | {"rotate_deg": ROTATE_DEG, "scale": SCALE},
    "shift": NONE | {"translate_frac": TRANSLATE_FRAC},
    "elastic": NONE | {"elastic": ELASTIC},
}  # fmt: skip


def print_table(path: Path) -> None:
    """The README's table: per generator and judge, fidelity under each kind of move,
    and in brackets the moved real slices' (the control)."""
    print("| generator | judge | " + " | ".join(ROWS) + " |")
    print("|---|---|" + "---|" * len(ROWS))
    for r in json.loads(path.read_text())["rows"]:
        judge = "classical aug." if r["judge"].endswith("classical") else "no aug."
        cells = {x["moves"]: x for x in r["rows"]}
        shown = []
        for k in ROWS:
            real = cells[k].get("real_moved_dice")
            shown.append(f"{cells[k]['dice']:.3f}" + ("" if real is None else f" ({real:.3f})"))
        print(f"| {r['generator']} | {judge} | " + " | ".join(shown) + " |")


def main(argv: list[str] | None = None) -> int:
    if "--table" in (sys.argv[1:] if argv is None else argv):
        print_table(RESULTS)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True, help="bench_fidelity's workdir")
    p.add_argument("--cache", default="cache64", help="its cache folder (cache64)")
    p.add_argument("--segmenter", default="segmenter-steps300-grid64-sp3", help="its judge")
    p.add_argument("--run", required=True, help="the generator's run folder (in the workdir)")
    p.add_argument("--name", help="the row's generator name (default: the run's variant folder)")
    p.add_argument("--n", type=int, default=200, help="pairs per row (200)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    started = time.perf_counter()
    facts = machine_facts({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    cache = Cache(args.workdir / args.cache)
    seg = fidelity.load(args.workdir / args.segmenter, cache.config)
    run = args.workdir / args.run
    name = args.name or Path(args.run).parts[1]
    cases = Synthesizer(run, real=cache, device="cpu").real_cases()
    rows = []
    names = [str(i) for i in range(args.n)]
    for label, moves in ROWS.items():
        masks = RealMasks(cache, cases, "target+body+tissue", 2, **moves)
        pairs = Synthesizer(run, real=cache, device="cpu", masks=masks).sample(args.n, seed=0)
        window = cache.config.hu_window
        images = np.stack([hu_to_unit(q["image"][0, ..., 0].numpy(), window) for q in pairs])
        labels = np.stack([q["label"][0, ..., 0].numpy() for q in pairs])
        _, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
        # the control: the same cases' real slices under the same moves
        plans = [q["params"]["layout"] for q in pairs]
        real_images, real_labels = fidelity.moved_reals(cache, plans)
        _, real, _ = fidelity.score_pairs(seg, real_images, real_labels, names, cache.config)
        rows.append({"moves": label, "dice": summary["dice"], "median": summary["dice_median"],
                     "real_moved_dice": real["dice"]})  # fmt: skip
        print(f"{name} | {label} | {summary['dice']:.3f} | real {real['dice']:.3f}", flush=True)
    kept = json.loads(args.results.read_text()) if args.results.exists() else {"rows": []}
    others = [r for r in kept["rows"]
              if (r["generator"], r.get("judge")) != (name, args.segmenter)]  # fmt: skip
    kept["rows"] = [*others, {
        "generator": name, "judge": args.segmenter, "run": args.run, "n": args.n, "rows": rows,
        "commit": facts.get("medaug_source"), "command": " ".join(sys.argv),
        "machine": {k: facts.get(k) for k in ("cpu_count", "platform", "torch", "torch_threads")},
        "wall_s": round(time.perf_counter() - started, 1),
        "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
    }]  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(kept, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
