"""GVAE, the "generative variational autoencoder": the VAE encoder kept as it is, the
decoder's output judged by an image discriminator that takes the place of the pixel
likelihood, encoder and discriminator in a zero-sum game.

The generator side minimises KL + the adversarial loss of reconstructions and prior
samples; a small pixel/label anchor (``pixel_weight``, ``label_weight``; 0 gives the
pure form) keeps :meth:`reconstruct` tied to its input. It is VAE-GAN's loop without
the feature-space reconstruction term.
"""

from __future__ import annotations

from typing import ClassVar

from medaug.models.registry import register
from medaug.models.vaegan import VAEGAN


@register
class GVAE(VAEGAN):
    name = "gvae"
    feature_matching: ClassVar[bool] = False
