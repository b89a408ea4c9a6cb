"""``synthesize``: from scans (or a checkpoint) to a folder of synthetic cases.

Steps: preprocess the real scans onto the model grid (``OUT/cache``), fit a generator
when no checkpoint is given (``OUT/model``, :func:`medaug.train.fit.fit_or_resume`),
then sample in batches while a pool of writer threads writes the previous batch
(NIfTI compression and DICOM encoding release the GIL, so writing overlaps
sampling), and finally write the manifest, the datalist and the preview. Every stage
resumes: the cache and the training run by their own keys and checkpoints, the
cases by their records.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medaug.errors import ConfigError, InputError
from medaug.models.config import mask_generator_overrides
from medaug.preprocess.cache import Cache
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.pipeline import open_cache
from medaug.preprocess.splits import recorded_sides, training_cases
from medaug.progress import Progress, progress_of
from medaug.synth import fidelity_filter, output
from medaug.synth.config import SynthConfig
from medaug.synth.fidelity_filter import FidelityFilter, JudgeFactory
from medaug.synth.layouts import UserLayouts, mask_dir
from medaug.synth.preview import synthesis_preview
from medaug.synth.sampler import Synthesizer, check_conditional_stack
from medaug.train.checkpoint import Checkpoint
from medaug.train.fit import fit_or_resume
from medaug.train.spec import GeneratorSpec

#: The task ``synthesize`` reports to its progress (cases written).
TASK = "synthesizing"

#: Slices of a stacked 2D case when there are no real cases to take a height from.
DEFAULT_SLICES = 32


@dataclass
class SynthResult:
    """What a synthesis run did.

    Attributes:
        out: the output folder.
        n: cases the folder now holds.
        written: cases written by this run (the rest were there from a killed run).
        seconds: wall time of the sampling and writing (not the fitting).
        checkpoint: the generator used.
        fitted: True when this run trained the generator itself.
        manifest: the manifest's content.
    """

    out: Path
    n: int
    written: int
    seconds: float
    checkpoint: Path
    fitted: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def cases_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for a person: what was written, how fast, and where."""
        settings = self.manifest.get("settings", {})
        fmt = settings.get("format", "nifti")
        resumed = self.n - self.written
        lines = [
            f"Wrote {self.written} synthetic cases in {self.seconds:.1f} s "
            f"({self.cases_per_second:.1f} cases/s)"
            + (f"; {resumed} were there from an earlier run" if resumed else "")
        ]
        if fmt != "dicom":
            lines.append(f"  images   -> {self.out / 'images'}")
        if fmt != "nifti":
            lines.append(f"  DICOM    -> {self.out / 'dicom'}")
        lines += [
            f"  labels   -> {self.out / 'labels'}",
            f"  datalist -> {self.out / output.DATALIST} (MONAI load_decathlon_datalist)",
            f"  manifest -> {self.out / output.MANIFEST}",
            f"  preview  -> {self.out / output.PREVIEW}",
        ]
        if self.fitted:
            lines.append(f"  model    -> {self.checkpoint}")
        if "fidelity_filter" in self.manifest:
            kept = self.manifest["fidelity_filter"]
            lines.insert(
                1,
                f"  kept {self.n} of {kept['candidates_tried']} candidates at Dice >= "
                f"{kept['min_dice']:g} ({kept['rejected']} rejected)",
            )
        if "shard" in settings:
            (k, count), (start, stop) = settings["shard"], self.manifest["indices"]
            lines.append(
                f"  shard {k}/{count}: cases {start}..{stop - 1} of {self.manifest['n']}; join "
                "the shards with `medaug synth-merge OUT SHARD_DIR...` (medaug.synth.merge)"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        doc = {"out": str(self.out), "n": self.n, "written": self.written}
        doc |= {"seconds": round(self.seconds, 2), "checkpoint": str(self.checkpoint)}
        if "shard" in self.manifest.get("settings", {}):
            doc |= {"shard": self.manifest["settings"]["shard"]}
            doc |= {"indices": self.manifest["indices"]}
        return doc


def synthesize(
    out: str | os.PathLike[str],
    n: int,
    config: SynthConfig | None = None,
    *,
    input: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | Checkpoint | None = None,
    generator: GeneratorSpec | None = None,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    judge: JudgeFactory | None = None,
    **settings: Any,
) -> SynthResult:
    """Write ``n`` synthetic image + label cases to ``out``.

    Args:
        out: output folder (see :mod:`medaug.synth.output` for its layout).
        n: number of cases.
        config: how the cases are drawn and written (:class:`SynthConfig`: mode, seed,
            strength, stack, slices, fmt, seg, batch_size, device, writers).
        input: real scans (any layout ``medaug inspect`` reads, or a cache made with
            the model's config); needed to fit a model, for ``perturb`` /
            ``interpolate``, and for the real half of the preview.
        model: checkpoint file, run folder or :class:`Checkpoint`; without it a
            generator is fitted on ``input`` and saved under ``out/model``.
        generator: the generator fitted when no ``model`` is given (default
            ``GeneratorSpec()``: medaug's measured default, a mask-conditioned 2D
            VAE-GAN); ignored with ``model``.
        overwrite: remove an earlier synthesis in ``out`` first.
        shard: ``(k, N)``: write only the k-th of N contiguous parts of ``range(n)``
            (:func:`medaug.synth.output.shard_range`), for N jobs that
            :func:`medaug.synth.merge.merge` joins into one folder. Case ``i`` is
            still drawn from ``(seed, i)`` and named ``synth_{i:04d}``, so the shards
            together hold exactly the cases of one unsharded run. Needs ``model``
            (shards fitting their own generators would not agree).
        progress: a :class:`~medaug.progress.Progress` (or a function for the notes):
            notes (fitting, resuming, the cache used), the ``training`` of a fitted
            generator or mask generator, and ``synthesizing``: ``start`` with the
            cases to write now and those already there, ``advance`` per case
            written.
        judge: builds the segmenter of the fidelity filter (``min_fidelity``,
            :mod:`medaug.synth.fidelity_filter`), e.g.
            :func:`medaug.evaluate.fidelity.judge`; needed only with ``min_fidelity``.
        **settings: :class:`SynthConfig` fields that override ``config``'s
            (``synthesize(out, 8, model=ckpt, mode="perturb", device="cpu")``).

    Raises:
        ConfigError: impossible settings (a DICOM series of 2D slices, perturbing with
            a GAN...), found before anything is written.
        InputError: unreadable checkpoint or scans, or an output folder that holds
            other results.
    """
    out = Path(out)
    if n < 1:
        raise ConfigError(f"{{n}} must be at least 1, got {n}")
    cfg = (config or SynthConfig()).replace(**settings)
    progress = progress_of(progress)
    note = progress.note
    spec = generator or GeneratorSpec()
    given = _check_request(cfg, n, input, model, spec, shard)
    fidelity_filter.require_judge(cfg.min_fidelity, judge)
    pp = given.preprocess if given is not None else PreprocessConfig(dims=spec.dims)  # type: ignore[arg-type]
    shard_of = {"shard": [int(shard[0]), int(shard[1])]} if shard is not None else {}
    if overwrite:
        output.clear(out)
    elif out.exists():  # refuse before fitting when the folder holds other results
        known = {"mode": cfg.mode, "seed": cfg.seed, "format": cfg.fmt, "seg": cfg.seg}
        output.prepare(out, known | shard_of, n, early=True)

    # ---- the real cases on the model grid, and the model -------------------------------
    if input is None and given is not None and given.model_config.conditional:
        input = _own_cache(given)  # real masks need the training cases: the run's cache
        if input is not None:
            note(f"using the generator's own training cache {input} (no --input given)")
    real = None
    if input is not None:
        fitting = ": fitting a generator needs image + label pairs" if given is None else ""
        real = open_cache(
            input, out / "cache", pp, against="the model's", purpose=fitting, overwrite=False,
            note=note,
        )  # fmt: skip
    fitted = given is None
    if given is None:
        assert real is not None  # _check_request: fitting needs input
        path = fit_or_resume(
            real, out / "model", spec, seed=cfg.seed, device=cfg.device, progress=progress,
        )  # fmt: skip
        given = Checkpoint.load(path)
    if given.model_config.conditional and cfg.masks == "learned" and real is not None:
        _fit_mask_generator(given, real, cfg, progress)
    synth = Synthesizer(given, real=real, device=cfg.device, masks=cfg.masks, style=cfg.style)
    synth.check_mode(cfg.mode)
    synth.check_stack(cfg.stacks, cfg.mode)
    stack = cfg.stacks and synth.dims == 2
    slices = cfg.slices or _median_depth(real)
    keep = None
    if cfg.min_fidelity is not None:  # candidates scored by a segmenter, failing ones replaced
        assert judge is not None  # checked above
        seg = judge(synth, real, out / fidelity_filter.SEGMENTER_DIR, cfg, note)
        keep = FidelityFilter(synth, seg, cfg.min_fidelity, n, cfg.fidelity_tries)
    settings_doc = {
        "checkpoint_sha256": synth.sha256,
        **cfg.settings(stack, slices),
        **_masks_hash(synth.layouts),
        **shard_of,
        **(keep.settings if keep else {}),
    }

    wanted = output.shard_range(n, shard)
    done = output.prepare(out, settings_doc, n)
    if done:
        have = len([i for i in done if i in wanted])
        note(f"resuming: {have} of {len(wanted)} cases already written")
    info = _info(synth, real, cfg)
    output.manifest(out, settings_doc, info, n, done)

    todo = [i for i in wanted if i not in done]
    progress.start(TASK, len(wanted), len(wanted) - len(todo))
    t0 = time.perf_counter()
    sampler = keep.resume(done) if keep else synth
    _sample_and_write(out, synth, sampler, cfg, stack, slices, todo, done, progress)
    seconds = time.perf_counter() - t0

    if synth.masks == "learned":  # the clean-up measured: target voxels cut, over all cases
        info["conditioning"]["cleanup"] = _cleanup(done)
    elif synth.masks == "real":  # draws refused for pushing the target off the grid
        info["conditioning"]["redraws"] = _redraws(done)
    doc = output.manifest(out, settings_doc, {**info, **(keep.info(done) if keep else {})}, n, done)
    output.datalist(out, doc, synth.classes)
    synthesis_preview(out, doc, synth.config, real)
    return SynthResult(out, len(doc["cases"]), len(todo), seconds, synth.checkpoint, fitted, doc)


def _fit_mask_generator(
    given: Checkpoint,
    real: Cache,
    cfg: SynthConfig,
    progress: Progress,
) -> Path:
    """The mask generator stored with ``given`` (``RUN/masks/``): fitted on the image
    model's training cases, of its variant and layout, unless one is there already."""
    mcfg = given.model_config
    cases = training_cases(real, given.split)
    spec = GeneratorSpec(variant=mcfg.variant, dims=mcfg.dims, preset=mcfg.preset,
                         steps=cfg.mask_steps or given.step)  # fmt: skip
    return fit_or_resume(
        real, mask_dir(given), spec, cases, seed=cfg.seed, device=cfg.device,
        overrides=mask_generator_overrides(mcfg), progress=progress,
    )  # fmt: skip


def _masks_hash(layouts: Any) -> dict[str, str]:
    """User maps' content hash for the settings block (their path is never recorded)."""
    return {"masks_sha256": layouts.sha256()} if isinstance(layouts, UserLayouts) else {}


def _cleanup(done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What cutting learned layouts to their largest component removed."""
    plans = [rec.get("params", {}).get("layout", {}) for rec in done.values()]
    removed = [int(p.get("removed_voxels", 0)) for p in plans]
    redrawn = [int(p.get("attempt", 0)) for p in plans]
    return {
        "rule": "each label class cut to its largest connected component",
        "cases_changed": sum(r > 0 for r in removed),
        "voxels_removed": sum(removed),
        "cases": len(plans),
        "redraws_for_an_empty_target": sum(redrawn),
    }


def _redraws(done: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """How often a real mask's transform was drawn again, and why."""
    plans = [rec.get("params", {}).get("layout", {}) for rec in done.values()]
    refused = [why for p in plans for why in p.get("refused", [])]
    return {
        "rule": "a transform that leaves no target voxel, or pushes the target against the "
        "grid's edge, is drawn again",
        "cases": len(plans),
        "cases_redrawn": sum(bool(p.get("refused")) for p in plans),
        "refused_empty": refused.count("empty"),
        "refused_at_the_edge": refused.count("at the edge"),
    }


def _conditioning(synth: Synthesizer) -> dict[str, Any]:
    """The checkpoint's conditioning record, with where this run's layouts came from."""
    return {**(synth.conditioning or {}), "masks": synth.masks, "style": synth.style}


def _check_request(
    cfg: SynthConfig,
    n: int,
    input: str | os.PathLike[str] | None,
    model: str | os.PathLike[str] | Checkpoint | None,
    spec: GeneratorSpec,
    shard: tuple[int, int] | None,
) -> Checkpoint | None:
    """Everything that can be refused before any work (fitting included); returns the
    given checkpoint, read (once)."""
    if model is None and input is None:
        raise ConfigError("give {input} scans to fit a generator on, or a {model} checkpoint")
    if input is not None and not Path(input).exists():
        raise InputError(Path(input), "no such file or folder")
    given = None
    dims, conditional = spec.dims, spec.condition == "mask"
    if model is not None:
        given = model if isinstance(model, Checkpoint) else Checkpoint.load(model)
        dims, conditional = given.preprocess.dims, given.model_config.conditional
    if cfg.fmt != "nifti" and dims == 2 and not cfg.stacks:
        raise ConfigError(
            f"{{fmt={cfg.fmt}}} writes whole volumes, and {{stack=False}} asks for single "
            "slices of a 2D model: leave {stack} unset (or use a 3D model)"
        )
    if conditional and dims == 2 and cfg.stacks:
        check_conditional_stack(cfg.mask_source, cfg.mode)
    if cfg.mode != "prior" and input is None:
        raise ConfigError(f"{{mode}} {cfg.mode} starts from real cases: give {{input}}")
    if shard is not None:
        _check_shard(shard, n, model)
        if cfg.min_fidelity is not None:
            raise ConfigError(
                "{min_fidelity} with {shard}: kept case i depends on every candidate before "
                "it, so the stream cannot be split; run one unsharded synthesis"
            )
    return given


def _check_shard(shard: tuple[int, int], n: int, model) -> None:
    k, count = shard
    if not (isinstance(k, int) and isinstance(count, int) and 0 <= k < count):
        raise ConfigError(f"{{shard}} {k}/{count}: expected K/N with 0 <= K < N")
    if count > n:
        raise ConfigError(f"{{shard}} {k}/{count}: more shards than cases ({{n}} {n})")
    if model is None:
        raise ConfigError(
            "{shard} needs {model}: every shard must sample the same generator "
            "(fit one first, or synthesize without {shard})"
        )


def _own_cache(given: Checkpoint) -> Path | None:
    """The cache a checkpoint's run trained on (its ``config.json``'s ``data``), when it
    is still there, on the model's grid, and holds every training case the checkpoint
    recorded (by content hash); else None."""
    config = given.path.parent.parent / "config.json"
    try:
        data = Path(json.loads(config.read_text())["data"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not Cache.exists(data):
        return None
    cache = Cache(data)
    if cache.config.to_dict() != given.preprocess.to_dict():
        return None
    recorded = len((given.split or {}).get("train", []))
    sides = recorded_sides(cache, given.split)
    if not recorded or sides is None or len(sides[0]) != recorded:
        return None
    return data


def _median_depth(real: Cache | None) -> int:
    """Slices of a stacked prior case: the real cases' median, else the default."""
    depths = [real.records[c]["shape"][2] for c in real.case_ids] if real else []
    return int(np.median(depths)) if depths else DEFAULT_SLICES


def _sample_and_write(
    out: Path,
    synth: Synthesizer,
    sampler: Synthesizer | FidelityFilter,
    cfg: SynthConfig,
    stack: bool,
    slices: int,
    todo: list[int],
    done: dict[int, dict[str, Any]],
    progress: Progress,
) -> None:
    """Decode the cases of ``todo`` in batches (drawn by ``sampler``: the synthesizer,
    or the fidelity filter in front of it) while writer threads write the batch
    before; each written case's record goes into ``done``."""
    plan: dict[str, Any] = dict(
        mode=cfg.mode, seed=cfg.seed, strength=cfg.strength, stack=stack, slices=slices
    )
    per_call = max(1, cfg.batch_size // slices) if stack else cfg.batch_size
    writer = output.CaseWriter(out, cfg.fmt, cfg.seg, synth.classes, synth.sha256)
    threads = cfg.writers or min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(threads, "medaug-write")
    pending: deque[Future[dict[str, Any]]] = deque()
    try:
        for start in range(0, len(todo), per_call):
            plans = [sampler.plan(i, **plan) for i in todo[start : start + per_call]]
            for case in sampler.generate(plans, cfg.batch_size):
                pending.append(pool.submit(writer.write, case))
            while len(pending) > 2 * threads:
                _finish(pending.popleft(), done, progress)
        while pending:
            _finish(pending.popleft(), done, progress)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish(future: Future, done: dict[int, dict[str, Any]], progress: Progress) -> None:
    rec = future.result()
    done[rec["index"]] = rec
    progress.advance(TASK)


def _info(synth: Synthesizer, real: Cache | None, cfg: SynthConfig) -> dict[str, Any]:
    """The manifest's provenance block (no paths or names of patients)."""
    mc = synth.model.config
    return {
        "checkpoint": {
            "file": synth.checkpoint.name,
            "sha256": synth.sha256,
            "step": synth.step,
            "variant": mc.variant,
            "dims": mc.dims,
        },
        "preprocess_config": synth.config.to_dict(),
        **({"conditioning": _conditioning(synth)} if synth.conditioning else {}),
        "classes": synth.classes,
        "real_cases": 0 if real is None else len(real.case_ids),
        "split": synth.split,
        "synth_config": cfg.to_dict() | {"masks": cfg.mask_source},
    }


__all__ = ["DEFAULT_SLICES", "SynthResult", "synthesize"]
