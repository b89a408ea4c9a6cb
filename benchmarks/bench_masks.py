"""Learned masks: do a mask generator's prior draws look like the layouts it learned?

``--masks learned`` draws each synthetic case's layout from a mask generator (a model of
the image generator's family trained on layout maps alone, ``role="layout"``), and
synthesis redraws a layout without target up to 10 times before it stops. This fits
mask generators of one image generator's configuration and training cases under the
settings given (variant, KL weight), draws ``--draws`` layouts from each prior as
synthesis does (``LearnedMasks``: the target cut to its largest component), and adds a
row per setting to ``benchmarks/results/masks.json``: the share of draws that hold
the target, the target's mean area against the real target slices', the KL of the
posterior in nats, the discriminator's accuracy, and the training time. A grid of the
first 16 draws is written beside the runs (``WORKDIR/<setting>.png``).

Run (``--table`` prints the README's table from the results file)::

    python benchmarks/bench_masks.py --workdir /work/runs/masks --cache CACHE \\
        --image-run RUN/checkpoints/step_00000900.pt --settings vaegan:8,vaegan:64,vae:64
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import load_rows, machine_facts, make_workdir, save_rows
from PIL import Image

from medaug.data import Cache
from medaug.models.config import mask_generator_overrides
from medaug.preprocess import layout as LY
from medaug.preprocess.splits import training_cases
from medaug.synth.layouts import LearnedMasks
from medaug.train.checkpoint import Checkpoint
from medaug.train.fit import fit_or_resume
from medaug.train.spec import GeneratorSpec
from medaug.viz import radiological

RESULTS = Path(__file__).resolve().parent / "results" / "masks.json"


def real_areas(cache: Cache, cases: list[str]) -> np.ndarray:
    """Target voxels of every training slice that holds the target (what real masks
    are drawn from)."""
    areas = []
    for case in cases:
        label = np.asarray(cache.array(case, "label"))
        per_slice = (label > 0).reshape(label.shape[0], -1).sum(1)
        areas += [int(a) for a in per_slice if a > 0]
    return np.array(areas)


def measure(
    cache: Cache,
    image: Checkpoint,
    cases: list[str],
    real: np.ndarray,
    setting: str,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Fit (or reuse) one mask generator on ``cases`` and score ``args.draws`` prior
    draws against ``real`` (the cases' target areas, :func:`real_areas`)."""
    variant, kl = setting.split(":")
    mcfg = image.model_config
    spec = GeneratorSpec(variant=variant, dims=mcfg.dims, preset=mcfg.preset, steps=args.steps)
    overrides = mask_generator_overrides(mcfg) | {"kl_weight": float(kl)}
    path = fit_or_resume(cache, workdir / f"{variant}-kl{kl}", spec, cases, seed=args.seed,
                         device="cpu", overrides=overrides,
                         progress=lambda m: print(m, file=sys.stderr))  # fmt: skip
    ckpt = Checkpoint.load(path)
    masks = LearnedMasks(ckpt, mcfg.layout, torch.device("cpu"))
    layouts = [masks.draw(args.seed, i)[0] for i in range(args.draws)]
    areas = np.array([int((LY.target_of(x, mcfg.layout) > 0).sum()) for x in layouts])
    shown = [radiological(x) for x in layouts[:16]]  # as medaug's previews show slices
    tiles = np.stack(shown).astype(np.float32) / max(1, ckpt.model_config.classes - 1)
    grid = np.concatenate([np.concatenate(list(tiles[r * 4 : r * 4 + 4]), 1) for r in range(4)])
    picture = Image.fromarray((grid * 255).astype(np.uint8))
    picture.resize((512, 512), Image.Resampling.NEAREST).save(workdir / f"{variant}-kl{kl}.png")
    stats = json.loads((path.parent.parent / "stats.jsonl").read_text().splitlines()[-1])
    return {
        "setting": setting, "variant": variant, "kl_weight": float(kl), "steps": ckpt.step,
        "patients": len(cases), "grid": list(cache.config.grid_2d or ()),
        "draws": args.draws, "with_target": float((areas > 0).mean()),
        "target_area_mean": float(areas.mean()),
        "target_area_mean_with_target": float(areas[areas > 0].mean()) if areas.any() else 0.0,
        "real_target_area_mean": float(real.mean()), "real_target_slices": len(real),
        "kl_nats": stats.get("generator/kl"), "d_acc": stats.get("discriminator/d_acc"),
        "train_s": stats.get("seconds"), "checkpoint": str(path),
    }  # fmt: skip


def record(rows: list[dict[str, Any]], args: argparse.Namespace, facts: dict, wall_s: float):
    path = args.results
    kept, by_key = load_rows(path)
    for row in rows:
        key = f"{row['setting']}|{row['grid']}|{row['patients']}|{row['steps']}"
        by_key[key] = {"key": key, **row, "commit": facts.get("medaug_source"),
                       "command": " ".join(sys.argv), "wall_s": round(wall_s, 1),
                       "machine": {k: facts.get(k) for k in ("cpu_count", "platform", "torch")},
                       "recorded": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    save_rows(path, kept, by_key)
    print(f"recorded {len(rows)} row(s) in {path}", file=sys.stderr)


def print_table(path: Path) -> None:
    print("| mask generator | KL weight | grid | patients | steps | train min | KL nats | "
          "draws with target | target voxels per draw (per real target slice) | "
          "D accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in json.loads(path.read_text())["rows"]:
        d_acc = "–" if r["d_acc"] is None else f"{r['d_acc']:.2f}"
        print(f"| {r['variant']} | {r['kl_weight']:g} | {r['grid'][0]}² | {r['patients']} | "
              f"{r['steps']} | {r['train_s'] / 60:.1f} | {r['kl_nats']:.1f} | "
              f"{r['with_target']:.0%} | {r['target_area_mean']:.0f} "
              f"({r['real_target_area_mean']:.0f}) | {d_acc} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, help="mask generator runs (resumable)")
    p.add_argument("--cache", type=Path, help="the image generator's 2D cache")
    p.add_argument("--image-run", type=Path, help="the image generator's checkpoint")
    p.add_argument("--settings", default="vaegan:8,vaegan:64",
                   help="variant:kl_weight, comma-separated")  # fmt: skip
    p.add_argument("--steps", type=int, default=900, help="mask generator steps (900)")
    p.add_argument("--draws", type=int, default=64, help="prior draws scored (64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--table", action="store_true", help="print the results file's table")
    args = p.parse_args(argv)
    if args.table:
        print_table(args.results)
        return 0
    if not (args.workdir and args.cache and args.image_run):
        p.error("--workdir, --cache and --image-run are needed to run")
    started = time.perf_counter()
    facts = machine_facts({"torch": torch.__version__})
    workdir = make_workdir(args.workdir)
    cache, image = Cache(args.cache), Checkpoint.load(args.image_run)
    cases = training_cases(cache, image.split)
    real = real_areas(cache, cases)
    rows = [measure(cache, image, cases, real, s.strip(), args, workdir)
            for s in args.settings.split(",")]  # fmt: skip
    record(rows, args, facts, time.perf_counter() - started)
    print_table(args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
