"""Exceptions that the CLI turns into one-line messages.

Anything a user can cause (a bad file, a bad option) raises a :class:`MedaugError`
subclass whose message already names the file and the problem. The CLI prints
``medaug: error: <message>`` and exits non-zero without a traceback; any other
exception is a bug in medaug and keeps its traceback.

Messages name parameters as a Python caller spells them, marked in braces:
``ConfigError("{ratio} must be in [0, 1)")`` reads "ratio must be in [0, 1)", and
``"use {overwrite=True}"`` reads "use overwrite=True". A front end that spells
parameters its own way renders the message with :meth:`MedaugError.spelled`; the
CLI writes ``--ratio`` and ``--overwrite``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from os import PathLike
from typing import Any

#: ``{name}`` or ``{name=value}``: a parameter named in a message.
_PARAM = re.compile(r"\{([a-z][a-z0-9_]*)(?:=([^{}]*))?\}")

#: How a front end spells a parameter: ``(name, value or None) -> text``.
Spelling = Callable[[str, "str | None"], str]


def python_spelling(name: str, value: str | None) -> str:
    """``ratio``, ``overwrite=True``: as a Python caller writes it."""
    return name if value is None else f"{name}={value}"


def spell(template: str, spelling: Spelling = python_spelling) -> str:
    """``template`` with its marked parameters written by ``spelling``."""
    return _PARAM.sub(lambda m: spelling(m.group(1), m.group(2)), template)


class MedaugError(Exception):
    """Base class of every error a user can cause.

    Args:
        message: one line; parameters it names are marked ``{name}`` /
            ``{name=value}`` (see the module's docstring).
        prefix: plain text put before it as is (a file path), never parsed.
    """

    def __init__(self, message: str = "", *, prefix: str = "") -> None:
        self.template = message
        self.prefix = prefix
        super().__init__(self.spelled())

    def spelled(self, spelling: Spelling = python_spelling) -> str:
        """The message with its parameters written by ``spelling``."""
        return self.prefix + spell(self.template, spelling)

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt without __init__ (subclasses take other arguments), e.g. when a
        # worker process raises it
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[MedaugError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InputError(MedaugError):
    """A file or folder that medaug cannot use.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, one line, no trailing period.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        super().__init__(problem, prefix=f"{self.path}: ")
        self.problem = spell(problem)


class ConfigError(MedaugError):
    """An option or config value that cannot work."""
