"""Preprocess a cohort and train a MONAI U-Net on the cached slices for a few steps.

Run:  python examples/train_on_cache.py [CT_DIR] [--steps N]
Without CT_DIR it writes a small phantom cohort to a temporary folder first.
Shows the pieces a segmentation pipeline uses: PreprocessConfig, preprocess,
patient-level splits, SliceDataset with 2.5D context and its target-aware sampler.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

from medaug.data import SliceDataset, load_split
from medaug.data.phantom import PhantomConfig, write_cohort
from medaug.preprocess import PreprocessConfig, preprocess


def main(ct_dir: Path, work: Path, steps: int) -> None:
    config = PreprocessConfig(dims=2, grid_2d=(64, 64), spacing_mm=(3.0, 3.0, 2.5))
    result = preprocess(ct_dir, work / "cache", config, val_fraction=0.25, seed=0)
    print(f"cache: {len(result.done)} case(s), {result.samples} slices")
    train, val = load_split(work / "cache")
    print(f"split: {len(train)} train / {len(val)} val case(s), no patient on both sides")

    ds = SliceDataset(work / "cache", cases=train, context=1)  # 3 image channels
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=8, sampler=ds.sampler(generator=g))
    torch.manual_seed(0)
    net = UNet(2, in_channels=3, out_channels=2, channels=(8, 16, 32), strides=(2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = iter(loader)
    for step in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        loss = loss_fn(net(batch["image"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0 or step == steps - 1:
            share = float((batch["label"].flatten(1).amax(1) > 0).float().mean())
            print(f"step {step}: loss {loss.item():.3f}, {share:.0%} of the batch shows pancreas")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct_dir", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ct_dir = args.ct_dir
        if ct_dir is None:
            ct_dir = work / "phantom"
            write_cohort(ct_dir, 4, seed=0, fmt="dicom", config=PhantomConfig((96, 96, 24)))
        main(ct_dir, work, args.steps)
