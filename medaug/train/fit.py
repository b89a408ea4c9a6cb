"""One way to get a generator for a later stage: fit one on a cache, or finish or reuse
the one fitted there before.

Synthesis without ``--model`` and the gain experiment (a generator per fold and
regime) both need "the generator a :class:`~medaug.train.spec.GeneratorSpec`
describes, trained on these cases, in this folder". ``fit_or_resume`` is that
procedure: it reuses a checkpoint that is far enough, resumes a shorter run, or
starts one. A run is reused or resumed only when it was fitted to what is asked (the
spec's model and training settings, the seed and the training cases, by content
hash); otherwise a finished older run beside it that was fitted to what is asked is
used, or a new run starts and the note says what differed, so a changed default is
never silently ignored in an old folder and switching a setting back costs no refit.
It sizes the model for the device (the spec's ``preset``; ``auto``: the ``cpu`` preset
on a CPU, ``gpu-small`` on a GPU); the batch is ``train``'s default, which shrinks to a
small training set and says so (a note to ``progress``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medaug.errors import ConfigError
from medaug.preprocess.cache import Cache
from medaug.progress import Progress, progress_of
from medaug.train.checkpoint import Checkpoint
from medaug.train.config import TrainConfig
from medaug.train.distributed import pick_device
from medaug.train.loop import differing_setting, fitted_runs, newest_fitted, train
from medaug.train.spec import GeneratorSpec


def fit_or_resume(
    cache: Cache,
    out: str | os.PathLike[str],
    spec: GeneratorSpec,
    cases: Sequence[str] | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    progress: Progress | Callable[[str], None] | None = None,
) -> Path:
    """A checkpoint of the generator ``spec`` describes, trained on ``cache``.

    Args:
        cache: the training cache.
        out: the folder of its run(s); a run there with a checkpoint of at least
            the spec's steps (on this device) is used as it is, a shorter one is
            resumed.
        spec: what to fit (variant, size, steps, conditioning, discriminator...).
        cases: the training cases (the others of the cache are recorded as held
            out); default the training side of the cache's first split.
        seed: weights, batches and noise.
        device: ``auto``, ``cpu``, ``cuda``...; also picks the model size preset.
        overrides: ModelConfig fields over the spec's (a mask generator's).
        progress: told what is fitted or reused, and passed to
            :func:`medaug.train.train` (:mod:`medaug.progress`).

    Returns:
        the newest checkpoint file.
    """
    progress = progress_of(progress)
    note = progress.note
    out = Path(out)
    device_type = pick_device(device).type
    cfg = TrainConfig(seed=seed, device=device, **spec.train_overrides(device_type))
    training = list(cases) if cases is not None else cache.split(0)[0]
    held_out = [c for c in cache.case_ids if c not in set(training)]
    preset = spec.preset_for(device_type)
    overrides = spec.model_overrides() | (overrides or {})
    asked = {"variant": spec.variant, "dims": spec.dims, "preset": preset} | overrides
    resume = False
    hashes = [cache.content_hash(c) for c in training]
    found = newest_fitted(out)
    if found is not None:
        differs = _difference(found, asked, cfg, hashes)
        earlier = None if differs is None else _finished_earlier(out, asked, cfg, hashes)
        if earlier is not None:  # settings switched back to those of an older run
            note(f"using the generator fitted before with these settings: {earlier.path}")
            return earlier.path
        if differs is not None:
            note(
                f"{found.path.parent.parent} was fitted with {differs}: fitting a new run beside it"
            )
        elif found.step >= cfg.steps:
            note(f"using the generator fitted before: {found.path}")
            return found.path
        else:
            resume = True
    what = spec.describe()
    if overrides.get("role") == "layout":
        what = f"{spec.variant} mask generator"
    note(f"fitting a {what} ({preset} preset, {cfg.steps} steps) on {len(training)} cases -> {out}")
    result = train(
        cache,
        out,
        model=spec.variant,
        dims=spec.dims,
        preset=preset,
        config=cfg,
        resume=resume,
        model_overrides=overrides,
        cases=None if cases is None else (training, held_out),
        progress=progress,
    )
    if result.checkpoint is None:
        raise ConfigError(f"{result.run_dir}: training wrote no checkpoint")
    return result.checkpoint


def _finished_earlier(
    out: Path, asked: dict[str, Any], cfg: TrainConfig, training: list[str]
) -> Checkpoint | None:
    """The newest checkpoint of a fitted run in ``out`` older than the newest one,
    fitted to these settings for at least ``cfg.steps`` steps (None: none). Only the
    newest run is ever resumed: a shorter match further back is left as it is."""
    for run in reversed(fitted_runs(out)[:-1]):
        state = Checkpoint.load(run)
        if state.step >= cfg.steps and _difference(state, asked, cfg, training) is None:
            return state
    return None


def _difference(
    found: Checkpoint, asked: dict[str, Any], cfg: TrainConfig, training: list[str]
) -> str | None:
    """How a fitted run differs from the one asked for (None: it is that run).

    ``asked`` holds the model settings the caller sets (the rest are the variant's
    defaults either way); training cases are compared by content hash when the
    checkpoint records them.
    """
    setting = differing_setting(found, asked, {"warp": cfg.warp, "seed": cfg.seed})
    if setting is not None:
        name, had, asks = setting
        return f"{name} {had}, not {asks}"
    split = found.split
    if split is not None and sorted(c["sha256"] for c in split["train"]) != sorted(training):
        return "other training cases"
    return None


__all__ = ["fit_or_resume"]
