"""Synthetic pairs drawn in memory, every step, as augmentation inside a training loop.

Run:  python examples/synthesize_on_the_fly.py [--model CHECKPOINT --cache CACHE] [--steps N]
Without --model / --cache it makes a small phantom cohort and trains a small generator
first. Shows medaug.Synthesizer(checkpoint).sample(n): MetaTensor image/label pairs in
HU on the generator's grid, no files written, each step's draw set by (seed, step).
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
from medaug.preprocess.transforms import hu_to_unit


def prepare(work: Path, generator_steps: int) -> tuple[Path, Path]:
    from medaug.data.phantom import PhantomConfig, write_cohort
    from medaug.preprocess import PreprocessConfig, preprocess
    from medaug.train import TrainConfig, train

    write_cohort(work / "phantom", 4, seed=0, fmt="dicom", config=PhantomConfig((96, 96, 24)))
    cache = preprocess(work / "phantom", work / "cache", PreprocessConfig(grid_2d=(32, 32))).out
    cfg = TrainConfig(steps=generator_steps, batch_size=8, checkpoint_every=generator_steps)
    run = train(cache, work / "runs", model="vaegan", config=cfg)
    assert run.checkpoint is not None
    return run.checkpoint, cache


def main(model: Path, cache: Path, steps: int, per_step: int) -> None:
    synth = medaug.Synthesizer(model, device="cpu")
    window, target = synth.config.hu_window, synth.config.target_class
    train_cases, _ = load_split(cache)
    real = SliceDataset(cache, cases=train_cases, context=0)
    loader = DataLoader(
        real, batch_size=8, sampler=real.sampler(generator=torch.Generator().manual_seed(0))
    )
    torch.manual_seed(0)
    net = UNet(2, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = iter(loader)
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        # per_step fresh pairs; start= keeps every step's draw distinct and repeatable
        pairs = synth.sample(per_step, seed=0, start=step * per_step)
        image = torch.stack([hu_to_unit(p["image"][..., 0].as_tensor(), window) for p in pairs])
        label = torch.stack([p["label"][..., 0].as_tensor().float() for p in pairs])
        x = torch.cat([batch["image"], image])
        y = (torch.cat([batch["label"], label]) == target).float()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0 or step == steps - 1:
            print(
                f"step {step}: loss {loss.item():.3f} on {len(batch['image'])} real + "
                f"{len(pairs)} synthetic slices of {tuple(image.shape[1:])}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-step", type=int, default=4)
    parser.add_argument("--generator-steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, cache = args.model, args.cache
        if model is None or cache is None:
            model, cache = prepare(Path(tmp), args.generator_steps)
        main(model, cache, args.steps, args.per_step)
