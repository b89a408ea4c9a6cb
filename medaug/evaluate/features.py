"""A feature extractor medaug trains itself: the encoder of a small segmentation net.

Feature-space metrics (MMD on features, the memorization distance) need an embedding
that knows what matters in these images. An ImageNet network would need a download
and knows nothing of CT, so medaug trains a MONAI ``BasicUNet`` to segment the target
on the real training items (DiceCE loss, a fixed number of steps, seeded) and uses
the global average of each encoder level's activations as the feature vector.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Channels of the BasicUNet levels (small: it trains in seconds on a CPU).
CHANNELS = (8, 16, 32, 64, 64, 8)


class SegmentationFeatures:
    """Train on (image, label) items, then embed items.

    Args:
        dims: 2 (items ``(N, X, Y)``) or 3 (``(N, X, Y, Z)``).
        classes: label classes including background.
        steps: optimisation steps.
        seed: weights and batches.
        device: where to train.
    """

    def __init__(
        self,
        dims: int,
        classes: int,
        steps: int = 200,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        from monai.networks.nets import BasicUNet

        torch.manual_seed(seed)
        self.dims, self.classes, self.steps, self.seed = dims, classes, steps, seed
        self.device = torch.device(device)
        self.net = BasicUNet(dims, 1, classes, features=CHANNELS).to(self.device)

    def fit(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 16) -> float:
        """Train on items in [-1, 1] with uint8 labels; returns the last loss."""
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        rng = np.random.default_rng(self.seed)
        batch = min(batch_size if self.dims == 2 else 2, len(images))
        self.net.train()
        loss = torch.zeros(())
        for _ in range(self.steps):
            pick = rng.choice(len(images), size=batch, replace=False)
            x = self._tensor(images[pick])
            y = torch.from_numpy(labels[pick].astype(np.float32))[:, None]
            y = F.interpolate(y, size=x.shape[2:], mode="nearest").long().to(self.device)
            loss = loss_fn(self.net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        self.net.eval()
        return float(loss.detach())

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """``(N, D)`` features: pooled activations of the four encoder levels."""
        out = []
        net = self.net
        for start in range(0, len(images), batch_size):
            x = self._tensor(images[start : start + batch_size])
            levels = [net.conv_0(x)]
            for down in (net.down_1, net.down_2, net.down_3, net.down_4):
                levels.append(down(levels[-1]))
            pooled = [_global_mean(h) for h in levels[1:]]
            out.append(torch.cat(pooled, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _tensor(self, items: np.ndarray) -> torch.Tensor:
        """Items as a (N, 1, ...) batch on a grid the net can take: BasicUNet halves
        four times, so every side is resized up to a multiple of 16 and at least 32
        (the deepest level then keeps 2 voxels per side for its instance norm)."""
        x = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))[:, None]
        size = [max(32, -(-s // 16) * 16) for s in x.shape[2:]]
        if size != list(x.shape[2:]):
            mode = "bilinear" if x.ndim == 4 else "trilinear"
            x = F.interpolate(x, size=size, mode=mode, align_corners=False)
        return x.to(self.device)


def _global_mean(h: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(h, 1).flatten(1) if h.ndim == 4 else h.mean(dim=(2, 3, 4))


__all__ = ["SegmentationFeatures"]
