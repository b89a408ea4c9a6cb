"""Config dataclasses from user mappings (YAML, JSON, checkpoint documents).

Every config class (``PreprocessConfig``, ``ModelConfig``, ``TrainConfig``) is built
from a mapping the same way: unknown keys are an error, not ignored; JSON lists
become tuples so configs compare equal; a value of the wrong type or shape becomes a
one-line :class:`ConfigError` naming where the mapping came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from medaug.errors import ConfigError

C = TypeVar("C")


def from_mapping(cls: type[C], data: Any, source: str) -> C:
    """Build the dataclass ``cls`` from ``data``; ``source`` prefixes every message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        names, allowed = ", ".join(unknown), ", ".join(sorted(known))
        raise ConfigError(f"{source}: unknown setting(s) {names}; known: {allowed}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            _check_scalar(f.name, f.default, values[f.name], source)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_scalar(name: str, default: Any, value: Any, source: str) -> None:
    """A field whose default is a number, string or flag takes a value of that kind
    (an integer where a float is expected is fine)."""
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    kind = type(default)
    if kind not in kinds or isinstance(value, kind):
        return
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return
    raise ConfigError(f"{source}: {name} must be {kinds[kind]}, got {value!r}")
