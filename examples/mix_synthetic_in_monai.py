"""Mix synthetic pairs from a `medaug synth` folder into a plain MONAI training loop.

Run:  python examples/mix_synthetic_in_monai.py [--cache CACHE --synthetic SYNTH_DIR]
                                                [--ratio 0.5] [--steps N]
Without --cache / --synthetic it makes a small phantom cohort, preprocesses it, trains
a small generator and synthesizes 64 slices first (a minute on a laptop CPU).
Shows: medaug.SyntheticDataset, medaug.mix, and that real and synthetic items meet in
one batch of a MONAI U-Net with DiceCE loss.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

import medaug
from medaug.data import SliceDataset, load_split


def prepare(work: Path, generator_steps: int) -> tuple[Path, Path]:
    """A phantom cache and a synthesis folder made from it (the CLI's steps, in Python)."""
    from medaug.data.phantom import PhantomConfig, write_cohort
    from medaug.preprocess import PreprocessConfig, preprocess
    from medaug.synth.run import synthesize
    from medaug.train import TrainConfig, train

    write_cohort(work / "phantom", 4, seed=0, fmt="dicom", config=PhantomConfig((96, 96, 24)))
    cache = preprocess(work / "phantom", work / "cache", PreprocessConfig(grid_2d=(32, 32))).out
    cfg = TrainConfig(steps=generator_steps, batch_size=8, checkpoint_every=generator_steps)
    run = train(cache, work / "runs", model="vaegan", config=cfg)
    synthesize(work / "synthetic", 64, model=run.checkpoint, device="cpu")
    return cache, work / "synthetic"


def main(cache: Path, synthetic: Path, ratio: float, steps: int) -> None:
    train_cases, _ = load_split(cache)
    real = SliceDataset(cache, cases=train_cases, context=0)  # (1, X, Y) in [-1, 1]
    synth = medaug.SyntheticDataset(synthetic, intensity="unit")  # same scale as the cache
    print(f"real: {len(real)} slices, synthetic: {len(synth)} slices")

    target = real.config.target_class

    def binary(item: dict) -> dict:  # pancreas vs the rest
        return {**item, "label": (item["label"] == target).float()}

    data = medaug.mix(
        real, synth, ratio, seed=0, real_weights=real.sample_weights(), transform=binary
    )
    loader = DataLoader(
        data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    net = UNet(2, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    step, seen_synthetic, seen = 0, 0, 0
    while step < steps:
        for batch in loader:
            loss = loss_fn(net(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen_synthetic += int(batch["synthetic"].sum())
            seen += len(batch["synthetic"])
            step += 1
            if step == steps:
                break
    print(f"step {step}: loss {loss.item():.3f}; {seen_synthetic} of {seen} items were synthetic")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--synthetic", type=Path)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--generator-steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, synthetic = args.cache, args.synthetic
        if cache is None or synthetic is None:
            cache, synthetic = prepare(Path(tmp), args.generator_steps)
        main(cache, synthetic, args.ratio, args.steps)
