"""Exceptions that the CLI turns into one-line messages.

Anything a user can cause (a bad file, a bad option) raises a :class:`MedaugError`
subclass whose message already names the file and the problem. The CLI prints
``medaug: error: <message>`` and exits non-zero without a traceback; any other
exception is a bug in medaug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class MedaugError(Exception):
    """Base class of every error a user can cause."""


class InputError(MedaugError):
    """A file or folder that medaug cannot use.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, one line, no trailing period.
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(MedaugError):
    """An option or config value that cannot work."""
