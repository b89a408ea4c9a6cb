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
