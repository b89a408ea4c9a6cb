"""What a long medaug call tells its caller while it runs: one object.

``train``, ``fit_or_resume``, ``synthesize`` and ``run_gain`` take a ``progress``
(:class:`Progress`) instead of a callback per event. The base class ignores every
report, so a caller overrides only what it shows: the command line draws rich bars,
a notebook might print notes, a pipeline might log records::

    class Log(Progress):
        def note(self, message):
            logging.info(message)

        def record(self, task, record):
            if task == "training":
                logging.info("step %d: %s", record["step"], record)

    synthesize("synth", 500, input="ct_dir", progress=Log())

Tasks are named by what the call is doing: ``training`` (a generator's steps; inside
``synthesize`` the fitted model and its mask generator both train), ``synthesizing``
(cases written) and ``gain`` (segmenter runs). A call that runs others passes its
``progress`` on, so one object sees everything, in order.

Only the main process of a multi-process (DDP) run reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Progress:
    """Reports of a running call (every method does nothing here)."""

    def note(self, message: str) -> None:
        """A one-line note: a resumed run, a batch adapted to a small training set, a
        collapse sign, a redrawn layout."""

    def start(self, task: str, total: int, done: int = 0) -> None:
        """``task`` has ``total`` units of work, ``done`` of them already finished (a
        resumed run)."""

    def advance(self, task: str, n: int = 1) -> None:
        """``n`` more units of ``task`` are done."""

    def record(self, task: str, record: dict[str, Any]) -> None:
        """A record of ``task``: a training stats record (``step``, losses, samples/s)
        at every log step; a finished gain run (arm, seed, Dice)."""


class Notes(Progress):
    """A :class:`Progress` that passes its notes to a function (``Notes(print)``) and
    ignores the rest."""

    def __init__(self, note: Callable[[str], None]):
        self._note = note

    def note(self, message: str) -> None:
        self._note(message)


#: The silent default of every call that takes a ``progress``.
SILENT = Progress()


def progress_of(progress: Progress | Callable[[str], None] | None) -> Progress:
    """A call's ``progress`` argument as a :class:`Progress`: None is silent, and a
    plain function receives the notes (``progress=print``)."""
    if progress is None:
        return SILENT
    if isinstance(progress, Progress):
        return progress
    return Notes(progress)


__all__ = ["SILENT", "Notes", "Progress", "progress_of"]
