"""The interface every variant implements, so the trainer and sampler never ask which
variant they hold.

A model sees *joint* tensors ``(B, C + K, *grid)``: ``C`` image channels in [-1, 1]
followed by ``K`` label channels (one-hot for data, softmax probabilities for
generated pairs, background first). :meth:`GenerativeModel.inputs` builds one from a
dataset batch and :meth:`GenerativeModel.to_pair` splits one back into an image and
a class map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medaug.errors import ConfigError
from medaug.models import losses as L
from medaug.models.config import ModelConfig


class Noise:
    """Gaussian noise for one step, drawn per sample of the *global* batch.

    Data-parallel ranks draw the whole global batch's noise from the same seeded
    generator and keep their own rows, so a run on N processes sees the same noise
    per sample as a run on one, and a resumed run the same as an uninterrupted one.

    Args:
        batch: samples on this process.
        device: where the noise lives.
        generator: seeded generator on ``device`` (default: the global RNG).
        global_batch: samples on all processes (default ``batch``).
        offset: this process's first row in the global batch.
    """

    def __init__(
        self,
        batch: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        global_batch: int | None = None,
        offset: int = 0,
    ):
        self.batch, self.device, self.generator = batch, torch.device(device), generator
        self.global_batch, self.offset = global_batch or batch, offset

    def __call__(self, *shape: int) -> torch.Tensor:
        draw = torch.randn(
            (self.global_batch, *shape), generator=self.generator, device=self.device
        )
        return draw[self.offset : self.offset + self.batch]


class GenerativeModel(nn.Module):
    """Base class of the variants.

    Subclasses set ``phases`` (optimisation phases in step order) and
    ``phase_modules`` (the parameters each phase's optimizer owns), and implement
    :meth:`losses`; variants with an encoder set ``has_encoder``.
    """

    name: ClassVar[str]
    phases: ClassVar[tuple[str, ...]] = ("generator",)
    has_encoder: ClassVar[bool] = True
    encoder: nn.Module
    decoder: nn.Module

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        #: fakes of the last generator phase, reused (detached) by the discriminator
        self._fakes: list[torch.Tensor] = []

    # ---- what the trainer uses -------------------------------------------------
    @property
    def dims(self) -> int:
        return self.config.dims

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.config.latent_shape

    def phase_modules(self, phase: str) -> list[nn.Module]:
        raise NotImplementedError

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return [p for m in self.phase_modules(phase) for p in m.parameters()]

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss terms of one phase on one batch; ``"loss"`` is what is minimised.

        Args:
            batch: ``{"image": (B, C, *grid), "label": (B, 1, *grid)}`` on the device.
            phase: one of :attr:`phases`.
            noise: the step's noise source (default: fresh draws).

        Returns:
            scalar tensors: ``loss`` and named terms for the log (not synchronised).
        """
        raise NotImplementedError

    # ---- the generative interface ---------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> joint ``(B, C + K, *grid)``: image, label probabilities."""
        return self._activate(self.decode_logits(z))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint ``(B, C + K, *grid)`` -> posterior ``(mu, logvar)``, each ``(B, latent_dim)``."""
        if not self.has_encoder:
            raise ConfigError(f"{self.name} has no encoder: it cannot encode or reconstruct")
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Joint ``x`` -> its reconstruction through the posterior mean."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` new joint pairs from the prior: ``(n, C + K, *grid)``.

        Args:
            n: how many.
            generator: seeded ``torch.Generator`` (any device) for repeatable samples.
        """
        device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device)
        return self.decode(z.to(device))

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """A dataset batch -> joint tensor ``(B, C + K, *grid)`` with one-hot labels."""
        image = batch["image"]
        onehot = F.one_hot(self._classes(batch), self.config.classes)
        return torch.cat([image, onehot.movedim(-1, 1).to(image.dtype)], dim=1)

    def to_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint ``x`` -> image ``(B, C, *grid)`` in [-1, 1], uint8 class map ``(B, 1, *grid)``."""
        c = self.config.image_channels
        return x[:, :c], x[:, c:].argmax(dim=1, keepdim=True).to(torch.uint8)

    # ---- helpers for subclasses ------------------------------------------------
    def _classes(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["label"][:, 0].long()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config.image_channels
        return torch.cat([torch.tanh(logits[:, :c]), logits[:, c:].softmax(dim=1)], dim=1)

    def _voxels(self) -> int:
        return math.prod(self.config.grid)

    def _noise(self, batch: dict[str, Any], noise: Noise | None) -> Noise:
        if noise is not None:
            return noise
        image = batch["image"]
        return Noise(image.shape[0], image.device)

    def _reconstruction(
        self, logits: torch.Tensor, batch: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Pixel L1 on the image channels and cross-entropy on the label channels."""
        c = self.config.image_channels
        return {
            "pixel_l1": L.pixel_l1(torch.tanh(logits[:, :c]), batch["image"]),
            "label_ce": L.label_ce(logits[:, c:], self._classes(batch)),
        }

    def _weighted(self, terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        return torch.stack([terms[k] * w for k, w in weights.items() if w]).sum()

    def _discriminate(
        self, disc: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
        """PatchDiscriminator logits and the features of its hidden layers."""
        out = disc(x)
        return out[-1], out[:-1]

    def _image_d_phase(
        self,
        disc: nn.Module,
        x: torch.Tensor,
        fakes: Callable[[], list[torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """The image discriminator's phase: real ``x`` against the generator's fakes."""
        cfg = self.config
        fake = torch.cat(self._fakes or fakes(), dim=0)
        self._fakes = []
        r1 = cfg.r1_gamma > 0
        if r1:
            x = x.detach().requires_grad_(True)
        real_logits, _ = self._discriminate(disc, x)
        fake_logits, _ = self._discriminate(disc, fake.detach())
        terms = {
            "d_adv": L.d_loss(real_logits, fake_logits, cfg.adv_loss),
            "d_acc": L.d_accuracy(real_logits, fake_logits).detach(),
        }
        loss = terms["d_adv"]
        if r1:
            terms["r1"] = L.r1_penalty(real_logits, x)
            loss = loss + 0.5 * cfg.r1_gamma * terms["r1"]
        return {"loss": loss, **terms}
