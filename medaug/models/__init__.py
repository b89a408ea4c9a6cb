"""The generative model family: six variants over shared 2D/3D networks.

Example:
    >>> from medaug.models import build_model, model_config
    >>> model = build_model(model_config("vaegan", dims=2, grid=(64, 64)))
    >>> model.sample(4).shape
    torch.Size([4, 3, 64, 64])
"""

from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import PRESETS, ModelConfig, model_config
from medaug.models.registry import build_model, register, variant, variant_names

__all__ = [
    "PRESETS",
    "GenerativeModel",
    "ModelConfig",
    "Noise",
    "build_model",
    "model_config",
    "register",
    "variant",
    "variant_names",
]
