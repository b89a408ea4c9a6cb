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
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medaug.errors import ConfigError
from medaug.models import losses as L
from medaug.models.augment import diff_augment
from medaug.models.config import ModelConfig
from medaug.preprocess import layout as LY


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


class Replay:
    """A noise source that records its draws, so a second input can be augmented
    exactly as a first one was (VAE-GAN compares discriminator features of a
    reconstruction and of its real input: both must see the same augmentation)."""

    def __init__(self, noise: Noise):
        self.noise = noise
        self.draws: list[torch.Tensor] = []
        self._replay: list[torch.Tensor] | None = None

    def __call__(self, *shape: int) -> torch.Tensor:
        if self._replay is not None:
            return self._replay.pop(0)
        draw = self.noise(*shape)
        self.draws.append(draw)
        return draw

    def again(self) -> Replay:
        """A source that gives back this one's draws, in order."""
        twin = Replay(self.noise)
        twin._replay = list(self.draws)
        return twin


class Judgement(NamedTuple):
    """An image discriminator's verdict on one (DiffAugmented) joint tensor."""

    logits: torch.Tensor  # patch logits, or per-voxel (B, 1 + L, *grid): "fake" first
    features: Sequence[torch.Tensor]  # hidden layers' features (VAE-GAN's likelihood)
    seen: torch.Tensor  # the joint tensor the discriminator judged, after DiffAugment
    classes: torch.Tensor | None  # its layout class map (segmentation discriminator)


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
        #: aae / avb: decoded fakes of the last generator phase, for the image discriminator
        self._image_fakes: list[torch.Tensor] = []

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
    @property
    def conditional(self) -> bool:
        """Whether the model renders images around a given layout (``condition=mask``)."""
        return self.config.conditional

    def decode(self, z: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, latent_dim)`` -> joint ``(B, C + K, *grid)``: image, label probabilities.

        A conditional model takes the layout one-hot ``(B, L, *grid)`` and returns
        image + that layout, unchanged: the label of its output is the layout's.
        """
        return self._activate(self.decode_logits(z, layout), layout)

    def decode_logits(self, z: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and layout is None:
            raise ConfigError(f"a mask-conditioned {self.name} model needs a layout to decode")
        return self.decoder(z, layout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint ``(B, C + K, *grid)`` -> posterior ``(mu, logvar)``, each ``(B, latent_dim)``.

        A conditional model encodes the image channels alone: its latent is appearance.
        """
        if not self.has_encoder:
            raise ConfigError(f"{self.name} has no encoder: it cannot encode or reconstruct")
        return self.encoder(self.appearance(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Joint ``x`` -> its reconstruction through the posterior mean."""
        mu, _ = self.encode(x)
        return self.decode(mu, self.layout_of(x))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        layout: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` new joint pairs from the prior: ``(n, C + K, *grid)``.

        Args:
            n: how many.
            generator: seeded ``torch.Generator`` (any device) for repeatable samples.
            layout: a conditional model's layouts, one-hot ``(n, L, *grid)``.
        """
        device = next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device)
        return self.decode(z.to(device), None if layout is None else layout.to(device))

    def inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """A dataset batch -> joint tensor with one-hot labels: ``(B, C + K, *grid)``,
        or image + layout one-hot ``(B, C + L, *grid)`` for a conditional model, or
        the layout one-hot alone for a mask generator."""
        image = batch["image"]
        onehot = self.onehot(self._classes(batch), image.dtype)
        if self.config.image_channels == 0:
            return onehot
        return torch.cat([image, onehot], dim=1)

    def onehot(self, classes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Class maps ``(B, *grid)`` -> one-hot ``(B, K, *grid)``: the layout's classes
        for a conditional model (what ``decode`` and ``sample`` take), else the label's."""
        k = self.config.layout_classes if self.conditional else self.config.classes
        return F.one_hot(classes.long(), k).movedim(-1, 1).to(dtype)

    def to_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint ``x`` -> image ``(B, C, *grid)`` in [-1, 1], uint8 class map ``(B, 1, *grid)``.

        A conditional model's class map is exactly the label classes of its layout;
        a mask generator's is the layout map itself.
        """
        c = self.config.image_channels
        classes = x[:, c:].max(dim=1, keepdim=True).indices  # argmax, 10x faster on CPU
        if self.conditional:
            classes = LY.target_of(classes, self.config.layout)
        return x[:, :c], classes.to(torch.uint8)

    def appearance(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder sees of joint ``x``: the image alone when conditional."""
        return x[:, : self.config.image_channels] if self.conditional else x

    def layout_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """The layout one-hot of joint ``x`` (None for an unconditional model)."""
        return x[:, self.config.image_channels :] if self.conditional else None

    # ---- an image discriminator beside a latent one (aae, avb) -----------------
    def _image_critic(self) -> nn.Module | None:
        """aae and avb judge latents; a segmentation discriminator, when the config
        asks for one, judges their decoded images too (the ``image_disc`` module)."""
        return getattr(self, "image_disc", None)

    def _image_g_terms(
        self, recon: torch.Tensor, layout: torch.Tensor | None, noise: Noise
    ) -> dict[str, torch.Tensor]:
        """The image discriminator's generator-side term on a reconstruction and a
        prior draw rendered on the same layout (none without an image discriminator)."""
        disc = self._image_critic()
        if disc is None:
            return {}
        prior = self.decode(noise(*self.latent_shape), layout)
        self._image_fakes = [recon.detach(), prior.detach()]
        adv = [self._g_adv(self._discriminate(disc, f, noise)) for f in (recon, prior)]
        return {"g_image": 0.5 * (adv[0] + adv[1])}

    def _image_d_terms(
        self, batch: dict[str, Any], noise: Noise, posterior: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The image discriminator's phase beside the latent critic's, its terms
        prefixed ``image_`` (empty without an image discriminator)."""
        disc = self._image_critic()
        if disc is None:
            return {}
        x = self.inputs(batch)
        fakes = self._image_fakes
        if not fakes:
            layout = self.layout_of(x)
            with torch.no_grad():
                fakes = [
                    self.decode(posterior, layout),
                    self.decode(noise(*self.latent_shape), layout),
                ]
        self._image_fakes = []
        terms = self._image_d_phase(disc, x, fakes, noise)
        return {f"image_{k}": v for k, v in terms.items()}

    # ---- helpers for subclasses ------------------------------------------------
    def _classes(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class map ``(B, *grid)`` the model learns or is conditioned on: the label,
        or the layout (label joined with the cached context)."""
        label = batch["label"][:, 0].long()
        if not (self.conditional or self.config.role == "layout"):
            return label
        context = batch.get("context")
        return LY.compose(
            label, None if context is None else context[:, 0].long(), self.config.layout
        )

    def _activate(self, logits: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config.image_channels
        if self.conditional:
            assert layout is not None  # decode_logits refused a conditional decode without one
            return torch.cat([torch.tanh(logits[:, :c]), layout.to(logits.dtype)], dim=1)
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
        """Pixel L1 on the image channels and cross-entropy on the label channels
        (a conditional model has no label channels, a mask generator no image)."""
        c = self.config.image_channels
        terms = {}
        if c:
            terms["pixel_l1"] = L.pixel_l1(torch.tanh(logits[:, :c]), batch["image"])
        if not self.conditional:
            terms["label_ce"] = L.label_ce(logits[:, c:], self._classes(batch))
        return terms

    def _weighted(self, terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        return torch.stack([terms[k] * w for k, w in weights.items() if w and k in terms]).sum()

    def _augment(self, x: torch.Tensor, noise: Noise | Replay | None) -> torch.Tensor:
        """DiffAugment of a discriminator input (real or fake) when the config asks."""
        cfg = self.config
        if not cfg.augment or noise is None or not self.training:
            return x
        return diff_augment(x, cfg.image_channels, noise, policy=cfg.augment, p=cfg.augment_p)

    def _discriminate(
        self, disc: nn.Module, x: torch.Tensor, noise: Noise | Replay | None = None
    ) -> Judgement:
        """An image discriminator's verdict on joint ``x``, DiffAugmented when a noise
        source is given and the config asks. A PatchGAN sees image + layout; a
        segmentation discriminator sees the image alone and is judged against the
        layout classes of what it saw (DiffAugment's translation moves them along)."""
        seen = self._augment(x, noise)
        if self.config.discriminator == "segmentation":
            c = self.config.image_channels
            out = disc(seen[:, :c])
            return Judgement(out[-1], out[:-1], seen, seen[:, c:].max(dim=1).indices)
        out = disc(seen)
        return Judgement(out[-1], out[:-1], seen, None)

    def _g_adv(self, verdict: Judgement) -> torch.Tensor:
        """The generator's adversarial loss on a verdict over its output: fool the
        PatchGAN, or have every voxel classified as its layout class (OASIS)."""
        if verdict.classes is not None:
            return L.seg_real_loss(verdict.logits, verdict.classes)
        return L.g_loss(verdict.logits, self.config.adv_loss)

    def _image_d_phase(
        self,
        disc: nn.Module,
        x: torch.Tensor,
        fakes: list[torch.Tensor],
        noise: Noise | None = None,
    ) -> dict[str, torch.Tensor]:
        """The image discriminator's phase: real ``x`` against the generator's fakes
        (one batch's worth per chunk, each laid out as ``x``)."""
        if self.config.discriminator == "segmentation":
            return self._segmentation_d_phase(disc, x, fakes, noise)
        cfg = self.config
        # each chunk of fakes is one batch's worth: augmented with that batch's draws
        fake = torch.cat([self._augment(f.detach(), noise) for f in fakes])
        r1 = cfg.r1_gamma > 0
        if r1:
            x = x.detach().requires_grad_(True)
        real_logits = self._discriminate(disc, x, noise).logits
        fake_logits = self._discriminate(disc, fake).logits
        terms = {
            "d_adv": L.d_loss(real_logits, fake_logits, cfg.adv_loss),
            "d_acc": L.d_accuracy(real_logits, fake_logits).detach(),
        }
        loss = terms["d_adv"]
        if r1:
            terms["r1"] = L.r1_penalty(real_logits, x)
            loss = loss + 0.5 * cfg.r1_gamma * terms["r1"]
        return {"loss": loss, **terms}

    def _segmentation_d_phase(
        self,
        disc: nn.Module,
        x: torch.Tensor,
        fakes: list[torch.Tensor],
        noise: Noise | None,
    ) -> dict[str, torch.Tensor]:
        """OASIS's discriminator loss: real voxels against their layout class (class
        balanced), generated voxels against "fake", and LabelMix: a real/fake image
        cut along the layout's classes must be judged as the same cut of the two
        verdicts. Real and fakes share their DiffAugment draws, so they stay aligned
        with each other and with the layout."""
        cfg, c = self.config, self.config.image_channels
        paired = Replay(noise) if noise is not None else None
        r1 = cfg.r1_gamma > 0
        if r1:
            x = x.detach().requires_grad_(True)
        real = self._discriminate(disc, x, paired)
        seen = [self._augment(f.detach(), paired.again() if paired else None) for f in fakes]
        fake_logits = self._discriminate(disc, torch.cat(seen)).logits
        assert real.classes is not None
        terms = {
            "d_real": L.seg_real_loss(real.logits, real.classes),
            "d_fake": L.seg_fake_loss(fake_logits),
            "d_acc": L.seg_accuracy(real.logits, fake_logits).detach(),
        }
        terms["d_adv"] = terms["d_real"] + terms["d_fake"]
        loss = terms["d_adv"]
        if cfg.labelmix_weight > 0:
            b = x.shape[0]
            # per sample and layout class: take the real image there, or the fake
            draw = self._noise({"image": x}, noise)(cfg.layout_classes) > 0
            mask = draw.gather(1, real.classes.flatten(1)).view_as(real.classes).unsqueeze(1)
            mask = mask.to(real.seen.dtype)
            mixed = mask * real.seen[:, :c] + (1.0 - mask) * seen[0][:, :c]
            mixed_logits = disc(mixed)[-1]
            terms["labelmix"] = L.labelmix(mixed_logits, real.logits, fake_logits[:b], mask)
            loss = loss + cfg.labelmix_weight * terms["labelmix"]
        if r1:
            terms["r1"] = L.r1_penalty(real.logits, x)
            loss = loss + 0.5 * cfg.r1_gamma * terms["r1"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
