"""The README's sample grid: real slices, then each generator's pairs, label outlined.

Rows, top to bottom (each ``--n`` tiles):

- real slices of the cache's training cases (the largest pancreas section of each);
- each ``--model NAME=CHECKPOINT``: prior pairs (a mask-conditioned model on real
  masks of its training cases, under random transforms);
- ``--learned``: the first model on masks from its learned mask generator (fitted
  beside it with ``--mask-steps`` steps when it has none yet: minutes on a CPU);
- ``--user-mask``: one held-out case's label slice, as a user's own mask, rendered by
  the first model in the style of each of ``--styles`` (training case indices).

Run::

    python benchmarks/sample_grid.py --cache C --model "former default=RUN1" \\
        --model "new default=RUN2" --learned --user-mask --out docs/sample-grid.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medaug.data import Cache, load_split
from medaug.preprocess.transforms import hu_to_unit
from medaug.synth import Synthesizer, synthesize
from medaug.viz import best_slice, overlay, save_sections


def tiles_of(pairs: list[dict[str, Any]], window: tuple[float, float]) -> list[np.ndarray]:
    """Overlay tiles of in-memory pairs ((1, X, Y, Z) HU image and label)."""
    out = []
    for pair in pairs:
        image = hu_to_unit(pair["image"][0].numpy(), window)
        label = pair["label"][0].numpy()
        z = best_slice(label, 1)
        out.append(overlay(image[..., z], label[..., z], scale=3))
    return out


def real_tiles(cache: Cache, cases: list[str], n: int) -> list[np.ndarray]:
    """The largest target section of each of the first ``n`` cases (cycled)."""
    target = cache.config.target_class
    tiles = []
    for i in range(n):
        case = cases[i % len(cases)]
        label = np.moveaxis(np.asarray(cache.array(case, "label")), 0, -1)
        image = np.moveaxis(np.asarray(cache.array(case, "image")), 0, -1)
        z = best_slice(label, target) - (i // len(cases))  # another slice on a second pass
        tiles.append(overlay(image[..., z], (label[..., z] == target).astype(np.uint8), 3))
    return tiles


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the models' 2D cache")
    p.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeat)")
    p.add_argument("--learned", action="store_true", help="a row on learned masks")
    p.add_argument("--mask-steps", type=int, default=300, help="mask generator steps (300)")
    p.add_argument("--user-mask", action="store_true", help="rows on one held-out mask")
    p.add_argument("--styles", type=int, nargs="+", default=[0, 1], help="style cases (0 1)")
    p.add_argument("--n", type=int, default=6, help="tiles per row (6)")
    p.add_argument("--out", type=Path, default=Path("sample-grid.png"))
    args = p.parse_args(argv)

    cache = Cache(args.cache)
    window = cache.config.hu_window
    train, held = load_split(cache.root)
    named = [m.split("=", 1) for m in args.model]
    sections = [("real (training cases, model grid)", real_tiles(cache, train, args.n))]
    for name, ckpt in named:
        pairs = Synthesizer(ckpt, real=cache, device="cpu").sample(args.n, seed=0)
        sections.append((f"{name}: prior, real masks", tiles_of(pairs, window)))
    first_name, first = named[0]
    if args.learned:
        with tempfile.TemporaryDirectory() as tmp:  # fits RUN/masks/ once, then reuses it
            synthesize(Path(tmp) / "s", 1, model=first, input=cache.root, masks="learned",
                       mask_steps=args.mask_steps, device="cpu")  # fmt: skip
        pairs = Synthesizer(first, real=cache, device="cpu", masks="learned").sample(args.n)
        sections.append((f"{first_name}: prior, learned masks", tiles_of(pairs, window)))
    if args.user_mask:
        label = np.moveaxis(np.asarray(cache.array(held[0], "label")), 0, -1)
        mask = label[..., best_slice(label, cache.config.target_class)].astype(np.uint8)
        for style in args.styles:
            synth = Synthesizer(first, real=cache, device="cpu", style=style)
            pairs = synth.sample(args.n, seed=0, masks=[mask])
            sections.append((f"{first_name}: one user mask, style of training case {style}",
                             tiles_of(pairs, window)))  # fmt: skip
    save_sections(sections, args.out, columns=args.n)
    print(f"grid -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
