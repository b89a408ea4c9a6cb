"""``medaug synth --min-fidelity D``: keep only pairs whose image shows what the label says.

Each candidate pair is scored with a segmenter (given, or trained on the
generator's training cases, as ``medaug evaluate`` does; it comes from above as a
:class:`Judge`, since synthesis sits below segmentation): Dice of its prediction on
the candidate's image against the candidate's label, over the whole case (a slice,
a stacked volume or a 3D volume). A candidate below D is rejected and the next one
drawn. A label without target counts as agreeing only when the segmenter finds no
target in the image either (Dice 1 for two empty masks, 0 otherwise).

Determinism: candidates form one stream, candidate ``c`` drawn from ``(seed, c)``
exactly as unfiltered case ``c`` would be; kept case ``i`` is the ``i``-th candidate
that passes. The same seed therefore keeps the same cases whatever the batch size,
and a resumed run continues the stream after the last kept case it finds. Each kept
case's record holds its candidate number and Dice; the manifest holds how many
candidates were tried and rejected. The stream cannot be cut into shards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medaug.errors import ConfigError
from medaug.preprocess.cache import Cache
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.transforms import hu_to_unit
from medaug.synth.config import SynthConfig
from medaug.synth.sampler import SynthCase, Synthesizer
from medaug.train.checkpoint import file_sha256

#: Where a segmenter trained for the filter is kept, inside the synthesis folder.
SEGMENTER_DIR = Path(".synth") / "segmenter"


class Judge(Protocol):
    """What the filter needs of a segmenter (:class:`medaug.segment.fidelity.Segmenter`
    is one): target masks of items in [-1, 1], its file, and a description."""

    path: Path

    def predict(self, images: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


#: Builds a run's judge: ``(synthesizer, real cases or None, the folder to keep a
#: segmenter trained for it, the run's SynthConfig, notes) -> Judge``
#: (:func:`medaug.evaluate.fidelity.judge`). Synthesis sits below segmentation, so the
#: segmenter comes in from above.
JudgeFactory = Callable[
    [Synthesizer, Cache | None, Path, SynthConfig, Callable[[str], None] | None], Judge
]


def case_dice(
    seg: Judge, image_hu: np.ndarray, label: np.ndarray, config: PreprocessConfig
) -> float:
    """Dice of the segmenter's prediction on one case against its label.

    Args:
        seg: the judge (a :class:`medaug.segment.fidelity.Segmenter`).
        image_hu: (X, Y, S) HU: S slices of a 2D generator, or a 3D volume; scored
            as it will be written (whole HU), so ``segment eval`` on the folder agrees.
        label: its class map.
        config: the generator's ``PreprocessConfig``.
    """
    written = np.clip(np.rint(image_hu), -32768, 32767)  # the int16 HU the case is saved as
    image = hu_to_unit(written, config.hu_window).astype(np.float32)
    if config.dims == 2:
        pred = np.moveaxis(seg.predict(np.moveaxis(image, -1, 0)), 0, -1)
    else:
        pred = seg.predict(image[None])[0]
    truth = label == config.target_class
    total = int(truth.sum()) + int(pred.sum())
    if total == 0:
        return 1.0  # no target in the label, none found in the image
    return 2.0 * float(np.logical_and(truth, pred > 0).sum()) / total


def require_judge(min_fidelity: float | None, judge: JudgeFactory | None) -> None:
    """Refuse a filter without its segmenter, before anything is fitted or written."""
    if min_fidelity is not None and judge is None:
        raise ConfigError(
            "{min_fidelity} needs {judge}, the segmenter that scores candidates: "
            "judge=medaug.evaluate.fidelity.judge"
        )


class FidelityFilter:
    """Stands in for the :class:`~medaug.synth.sampler.Synthesizer` in the synthesis
    loop: ``plan(i)`` / ``generate(plans)`` give kept case ``i``.

    Args:
        synth: the synthesizer candidates come from.
        seg: the segmenter that scores them.
        min_dice: candidates below this Dice are rejected.
        n: cases wanted (the limit is ``tries * n`` candidates).
        tries: candidates per case at most.
    """

    def __init__(self, synth: Synthesizer, seg: Judge, min_dice: float, n: int, tries: int):
        self.synth, self.seg, self.min_dice = synth, seg, min_dice
        self.n, self.tries, self.limit = n, tries, tries * n
        self._candidate: dict[int, int] = {}
        self._scored: dict[int, tuple[float, SynthCase | None]] = {}
        self._kwargs: dict[str, Any] = {}
        self.best: float | None = None

    def resume(self, done: dict[int, dict[str, Any]]) -> FidelityFilter:
        """Continue after the cases already written (their records name their candidates)."""
        self._candidate = {i: int(r["params"]["candidate"]) for i, r in done.items()}
        self.best = max((r["params"]["fidelity_dice"] for r in done.values()), default=None)
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """What the manifest's settings add (a resumed run must match them)."""
        return {
            "min_fidelity": self.min_dice,
            "fidelity_tries": self.tries,
            "segmenter_sha256": file_sha256(self.seg.path),
        }

    def plan(self, index: int, **kwargs: Any) -> dict[str, Any]:
        self._kwargs = kwargs
        return {"kept": index}

    def generate(self, plans: list[dict[str, Any]], batch_size: int = 16) -> list[SynthCase]:
        return [self._kept(p["kept"], batch_size) for p in plans]

    def _kept(self, index: int, batch_size: int) -> SynthCase:
        """Kept case ``index``: the first passing candidate after kept case ``index - 1``."""
        c = self._candidate[index - 1] + 1 if index > 0 else 0
        while True:
            if c >= self.limit:
                self._give_up(index)
            if c not in self._scored:
                todo = range(c, min(c + batch_size, self.limit))
                self._score([k for k in todo if k not in self._scored], batch_size)
            dice, case = self._scored.pop(c)
            if case is not None:
                break
            c += 1
        case.index = index
        case.params = {**case.params, "candidate": c, "fidelity_dice": round(dice, 5)}
        self._candidate[index] = c
        return case

    def _score(self, candidates: list[int], batch_size: int) -> None:
        plans = [self.synth.plan(c, **self._kwargs) for c in candidates]
        for c, case in zip(candidates, self.synth.generate(plans, batch_size), strict=True):
            dice = case_dice(self.seg, case.image, case.label, self.synth.config)
            self.best = dice if self.best is None else max(self.best, dice)
            self._scored[c] = (dice, case if dice >= self.min_dice else None)

    def _give_up(self, index: int) -> None:
        best = "none" if self.best is None else f"{self.best:.3f}"
        raise ConfigError(
            f"{{min_fidelity={self.min_dice:g}}}: {self.limit} candidate pairs tried (the "
            f"limit, {self.tries} per case) and only {index} of {self.n} passed; the best Dice "
            f"reached was {best}. Lower {{min_fidelity}}, or train the generator longer"
        )

    def info(self, done: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The manifest's ``fidelity_filter`` block, from the kept cases' records."""
        candidates = [int(r["params"]["candidate"]) for r in done.values()]
        tried = max(candidates) + 1 if candidates else 0
        return {
            "fidelity_filter": {
                "min_dice": self.min_dice,
                "segmenter": self.seg.describe(),
                "candidates_tried": tried,
                "rejected": tried - len(candidates),
                "limit": self.limit,
                "rule": "Dice of the segmenter's prediction against the pair's label, whole "
                "case; an empty label passes only when nothing is predicted",
            }
        }


__all__ = ["SEGMENTER_DIR", "FidelityFilter", "Judge", "JudgeFactory", "case_dice"]
