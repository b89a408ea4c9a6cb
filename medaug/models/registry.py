"""Variants by name: ``build_model(config)`` and the ``@register`` decorator."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from medaug.errors import ConfigError

if TYPE_CHECKING:
    from medaug.models.base import GenerativeModel
    from medaug.models.config import ModelConfig

#: the variants shipped with medaug, one module each, in the order users see them
BUILTIN = ("vae", "gan", "vaegan", "aae", "avb", "gvae")

_VARIANTS: dict[str, type[GenerativeModel]] = {}
M = TypeVar("M", bound="type[GenerativeModel]")


def register(cls: M) -> M:
    """Class decorator: make a :class:`GenerativeModel` subclass buildable by name."""
    _VARIANTS[cls.name] = cls
    return cls


def _load() -> None:
    for name in BUILTIN:
        if name not in _VARIANTS:
            importlib.import_module(f"medaug.models.{name}")


def variant_names() -> list[str]:
    _load()
    return [*BUILTIN, *sorted(set(_VARIANTS) - set(BUILTIN))]


def variant(name: str) -> type[GenerativeModel]:
    _load()
    if name not in _VARIANTS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(variant_names())}")
    return _VARIANTS[name]


def build_model(config: ModelConfig) -> GenerativeModel:
    """A freshly initialised model of ``config.variant``."""
    return variant(config.variant)(config)
