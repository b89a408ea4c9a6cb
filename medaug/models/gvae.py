"""GVAE, the "generative variational autoencoder": the VAE encoder kept as it is, the
decoder's output judged by an image discriminator that takes the place of the pixel
likelihood, encoder and discriminator in a zero-sum game.

The generator side minimises KL + the adversarial loss of reconstructions and prior
samples; a small pixel/label anchor (``pixel_weight``, ``label_weight``; 0 gives the
pure form) keeps :meth:`reconstruct` tied to its input. Unlike VAE-GAN there is no
feature-space reconstruction term.
"""

from __future__ import annotations

from typing import Any

import torch

from medaug.models import losses as L
from medaug.models.base import Noise
from medaug.models.registry import register
from medaug.models.vaegan import VAEGAN


@register
class GVAE(VAEGAN):
    name = "gvae"

    def losses(
        self, batch: dict[str, Any], phase: str, noise: Noise | None = None
    ) -> dict[str, torch.Tensor]:
        cfg, noise = self.config, self._noise(batch, noise)
        x = self.inputs(batch)
        if phase == "discriminator":
            return self._image_d_phase(self.discriminator, x, lambda: self._fakes_of(x, noise))
        z, kl = self.posterior_sample(x, noise)
        logits = self.decoder(z)
        recon = self._activate(logits)
        prior = self.decode(noise(*self.latent_shape))
        recon_logits, _ = self._discriminate(self.discriminator, recon)
        prior_logits, _ = self._discriminate(self.discriminator, prior)
        self._fakes = [recon.detach(), prior.detach()]
        terms = self._reconstruction(logits, batch)
        terms["kl"] = kl.mean()
        terms["g_adv"] = 0.5 * (
            L.g_loss(recon_logits, cfg.adv_loss) + L.g_loss(prior_logits, cfg.adv_loss)
        )
        loss = self._weighted(
            terms | {"kl": terms["kl"] / self._voxels()},
            {
                "g_adv": cfg.adv_weight,
                "kl": cfg.kl_weight,
                "pixel_l1": cfg.pixel_weight,
                "label_ce": cfg.label_weight,
            },
        )
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
