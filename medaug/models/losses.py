"""Loss functions of the model family: plain functions over tensors.

Adversarial losses are written here rather than taken from MONAI's
``PatchAdversarialLoss``: its BCE form applies a sigmoid and ``BCELoss``, which CUDA
autocast refuses, and its hinge form squashes logits through tanh first. The
softplus forms below are the usual numerically stable ones and autocast-safe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, in nats: ``(B, D)`` -> ``(B,)``."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def pixel_l1(fake_image: torch.Tensor, real_image: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over image channels (values in [-1, 1])."""
    return (fake_image.float() - real_image.float()).abs().mean()


def label_ce(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of label logits ``(B, K, ...)`` against class maps ``(B, ...)``."""
    return F.cross_entropy(logits.float(), classes)


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss on real and fake logits (any shape): ``nonsat`` or ``hinge``."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss on fake logits: non-saturating ``-log D(G(z))`` or hinge ``-D``."""
    fake = fake.float()
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


def d_accuracy(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Share of correct real/fake decisions (logit sign), a collapse sign near 1."""
    return 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean())


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018 R1: mean squared gradient norm of D on real inputs.

    ``real_inputs`` must have ``requires_grad`` set before the discriminator ran.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_inputs, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def feature_l1(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between matching discriminator feature maps (VAE-GAN's likelihood)."""
    terms = [(a.float() - b.float()).abs().mean() for a, b in zip(fake, real, strict=True)]
    return torch.stack(terms).mean()


# ---- the segmentation discriminator (OASIS, Sushko et al. 2021) -------------------
# Its logits are (B, 1 + L, *grid): channel 0 is "fake", channel 1 + c layout class c.


def class_balance(classes: torch.Tensor, k: int) -> torch.Tensor:
    """OASIS's per-voxel class weights: the inverse of each class's voxel share in the
    batch, scaled so that every class present weighs the same in total.

    ``w_c = N / (n_present * count_c)`` for ``N`` voxels of ``n_present`` classes. Under
    ``torch.distributed`` the counts are summed over the processes, so N processes weigh
    as one process with the whole batch does.

    Args:
        classes: layout class map ``(B, *grid)``, integers in ``[0, k)``.
        k: number of layout classes.

    Returns:
        ``(B, *grid)`` float32 weights.
    """
    counts = torch.bincount(classes.flatten(), minlength=k).float()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    present = (counts > 0).sum()
    coef = torch.where(counts > 0, counts.sum() / (present * counts.clamp_min(1.0)), 0.0)
    return coef[classes]


def seg_real_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy of voxels against their layout class: the
    discriminator's loss on real images and the generator's on its own."""
    weight = class_balance(classes, logits.shape[1] - 1)
    ce = F.cross_entropy(logits.float(), classes + 1, reduction="none")
    return (ce * weight).mean()


def seg_fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every voxel of a generated image against "fake"."""
    target = torch.zeros(
        (logits.shape[0], *logits.shape[2:]), dtype=torch.long, device=logits.device
    )
    return F.cross_entropy(logits.float(), target)


def seg_accuracy(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Share of voxels told apart: real ones not called fake, fake ones called fake."""
    real_cls, fake_cls = real.max(1).indices, fake.max(1).indices  # argmax, faster on CPU
    return 0.5 * ((real_cls != 0).float().mean() + (fake_cls == 0).float().mean())


def labelmix(
    mixed: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """OASIS's LabelMix consistency: D of a real/fake mix, cut along layout classes by
    ``mask`` (1: real), should equal the same mix of D's outputs on real and fake."""
    target = mask * real.float() + (1.0 - mask) * fake.float()
    return (mixed.float() - target).square().mean()
