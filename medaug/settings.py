"""Config dataclasses: one base for every config class, and the one way each is built
from a user mapping (YAML, JSON, checkpoint documents).

Every config (``PreprocessConfig``, ``ModelConfig``, ``TrainConfig``,
``SegmentConfig``, ``SynthConfig``, ``GainConfig``) is a dataclass over
:class:`Settings`, which gives it ``to_dict`` / ``from_dict`` / ``replace`` once for
all. Building from a mapping (:func:`from_mapping`): unknown keys are an error, not
ignored; JSON lists become tuples so configs compare equal; a nested config field
takes a mapping of its own settings; a value of the wrong type or shape becomes a
one-line :class:`ConfigError` naming where the mapping came from.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, TypeVar

from medaug.errors import ConfigError

C = TypeVar("C")
S = TypeVar("S", bound="Settings")


class Settings:
    """``to_dict`` / ``from_dict`` / ``replace`` for a config dataclass.

    Subclasses are dataclasses (frozen where they can be); ``SOURCE`` names a mapping
    in messages when ``from_dict`` is given no source.
    """

    SOURCE: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON types (tuples become lists), as they are saved."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], data: Any, source: str | None = None) -> S:
        """Build from a mapping; ``source`` (a file, ``"train config"``) prefixes errors."""
        return from_mapping(cls, data, source or cls.SOURCE)

    def replace(self: S, **changes: Any) -> S:
        """A copy with some settings changed (validated like a new one)."""
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - known)
        if unknown:
            names, allowed = ", ".join(unknown), ", ".join(sorted(known))
            raise ConfigError(f"{self.SOURCE}: unknown setting(s) {names}; known: {allowed}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def from_mapping(cls: type[C], data: Any, source: str) -> C:
    """Build the dataclass ``cls`` from ``data``; ``source`` prefixes every message."""
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"expected a mapping of settings, got {got}", prefix=f"{source}: ")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        names, allowed = ", ".join(unknown), ", ".join(sorted(known))
        raise ConfigError(f"unknown setting(s) {names}; known: {allowed}", prefix=f"{source}: ")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        default = _default(f)
        if dataclasses.is_dataclass(default) and isinstance(values[f.name], dict):
            values[f.name] = from_mapping(type(default), values[f.name], f"{source}: {f.name}")
        else:
            _check_scalar(f.name, default, values[f.name], source)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(exc.template, prefix=f"{source}: {exc.prefix}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), prefix=f"{source}: ") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _check_scalar(name: str, default: Any, value: Any, source: str) -> None:
    """A field whose default is a number, string or flag takes a value of that kind
    (an integer where a float is expected is fine)."""
    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    kind = type(default)
    if kind not in kinds or isinstance(value, kind):
        return
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return
    # a config file's setting, named as the file names it (not as a CLI flag)
    raise ConfigError(f"{name} must be {kinds[kind]}, got {value!r}", prefix=f"{source}: ")
