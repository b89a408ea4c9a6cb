"""Quality after a fixed training budget: vae, vaegan and gvae side by side.

Trains each variant for the same number of steps on the phantom cohort (2D, 64^2,
cpu preset), then measures on the held-out patients' slices:

- reconstruction error: mean |x - reconstruct(x)| in HU inside the window, and the
  label Dice of the reconstruction;
- KL: mean KL(q(z|x) || p(z)) per slice, in nats;
- sharpness: mean gradient magnitude of prior samples over that of real slices
  (1.0 = as sharp as real; blurry samples score well below).

and writes one picture, real slices on top and each variant's samples below
(``quality-grid.png``). Quality is not a speed figure: the scores do not depend on
what else the machine is doing, only the time column does.

    .venv/bin/python benchmarks/bench_quality.py              # 2,000 steps each, ~30 min on 2 cores
    .venv/bin/python benchmarks/bench_quality.py --steps 200  # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_WORKDIR, machine_facts, make_workdir, print_machine, table

from medaug.data import SliceDataset, load_split
from medaug.data.phantom import write_cohort
from medaug.models import GenerativeModel
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.train import TrainConfig, load_model, train
from medaug.viz import pair_tiles, save_grid

VARIANTS = ("vae", "vaegan", "gvae")


def gradient_magnitude(image: torch.Tensor) -> float:
    """Mean |finite-difference gradient| of ``(B, 1, X, Y)`` images in [-1, 1]."""
    gx = image[..., 1:, :-1] - image[..., :-1, :-1]
    gy = image[..., :-1, 1:] - image[..., :-1, :-1]
    return float(torch.sqrt(gx.square() + gy.square()).mean())


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = float(((a > 0) & (b > 0)).sum())
    total = float((a > 0).sum() + (b > 0).sum())
    return 2 * inter / total if total else 1.0


@torch.no_grad()
def evaluate(model: GenerativeModel, val: SliceDataset, window_hu: float, n_samples: int):
    items = [val[i] for i in range(len(val))]
    batch = {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
    }
    x = model.inputs(batch)
    mu, logvar = model.encode(x)
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1)
    recon_image, recon_label = model.to_pair(model.decode(mu))
    samples = model.sample(n_samples, torch.Generator().manual_seed(0))
    sample_image, _ = model.to_pair(samples)
    return {
        "recon_hu": float((recon_image - batch["image"]).abs().mean()) * window_hu / 2,
        "recon_dice": dice(recon_label.float(), batch["label"]),
        "kl": float(kl.mean()),
        "sharpness": gradient_magnitude(sample_image) / gradient_magnitude(batch["image"]),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--picture", type=Path, help="where to write the grid (default workdir)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    workdir = make_workdir(args.workdir) / "quality"
    facts = machine_facts({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})

    cohort = workdir / "phantom"
    if not cohort.exists():
        write_cohort(cohort, patients=args.patients, seed=0, fmt="dicom")
    cache = workdir / "cache_64"
    pp = PreprocessConfig(dims=2, grid_2d=(64, 64))
    preprocess(cohort, cache, pp, val_fraction=0.25, seed=0)
    _, val_cases = load_split(cache)
    val = SliceDataset(cache, val_cases)
    window = pp.hu_window[1] - pp.hu_window[0]

    rows, results, tiles = [], {}, []
    reals = [val[i] for i in np.linspace(0, len(val) - 1, 8).astype(int)]
    tiles += pair_tiles(
        torch.stack([r["image"] for r in reals]), torch.stack([r["label"] for r in reals]), 0
    )
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, log_every=100,
                      sample_every=args.steps, checkpoint_every=args.steps)  # fmt: skip
    for variant in VARIANTS:
        print(f"training {variant} for {args.steps} steps ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = train(cache, workdir / "runs", model=variant, config=cfg)
        seconds = time.perf_counter() - t0
        model, _ = load_model(result.run_dir)
        scores = evaluate(model, val, window, 8)
        tiles += pair_tiles(*model.to_pair(scores.pop("samples")), 0)
        results[variant] = scores | {"seconds": seconds, "run": str(result.run_dir)}
        rows.append(
            [
                variant,
                f"{scores['recon_hu']:.1f}",
                f"{scores['recon_dice']:.3f}",
                f"{scores['kl']:.1f}",
                f"{scores['sharpness']:.2f}",
                f"{seconds / 60:.1f} min",
            ]
        )
    picture = args.picture or workdir / "quality-grid.png"
    save_grid(tiles, picture, columns=8)
    total = time.perf_counter() - started
    print_machine(facts, quick=args.steps < 2000, repeat=1, total_s=total)
    print()
    print(
        f"Quality after {args.steps} steps (batch {args.batch_size}, 2D 64^2, cpu preset, "
        f"{len(val_cases)} held-out patients, {len(val)} slices)"
    )
    print()
    header = ["variant", "recon L1 (HU)", "recon label Dice", "KL (nats)",
              "sharpness (samples / real)", "train time"]  # fmt: skip
    print(table(header, rows))
    print(f"\nrows of {picture}: real slices, then {', '.join(VARIANTS)} samples (EMA weights)")
    (workdir / "bench_quality.json").write_text(json.dumps({"facts": facts, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
