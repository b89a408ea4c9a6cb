"""The generative model family: six variants over shared 2D/3D networks.

The names load their module on first use, so that the registry's list of variants
(:data:`medaug.models.registry.BUILTIN`) is readable without importing torch (the
command line builds its ``--model`` choices from it).

Example:
    >>> from medaug.models import build_model, model_config
    >>> model = build_model(model_config("vaegan", dims=2, grid=(64, 64)))
    >>> model.sample(4).shape
    torch.Size([4, 3, 64, 64])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "GenerativeModel": "medaug.models.base",
    "Noise": "medaug.models.base",
    "PRESETS": "medaug.models.config",
    "ModelConfig": "medaug.models.config",
    "model_config": "medaug.models.config",
    "build_model": "medaug.models.registry",
    "register": "medaug.models.registry",
    "variant": "medaug.models.registry",
    "variant_names": "medaug.models.registry",
}

if TYPE_CHECKING:
    from medaug.models.base import GenerativeModel, Noise
    from medaug.models.config import PRESETS, ModelConfig, model_config
    from medaug.models.registry import build_model, register, variant, variant_names


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medaug.models' has no attribute {name!r}")


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
