"""The one training loop for every variant.

A step runs the model's phases in order (generator, then discriminator where there
is one); each phase is a forward pass under autocast, a backward pass, a gradient
average over data-parallel processes, clipping and an Adam step. Batches and noise
of step ``s`` follow from ``(seed, s)`` alone, so a resumed run and a run on several
processes see exactly the batches and noise an uninterrupted one-process run sees.
The host waits on the device only every ``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Sampler

from medaug import __version__
from medaug.data.datasets import SliceDataset, VolumeDataset
from medaug.data.warp import WarpedPairs
from medaug.errors import ConfigError, InputError, MedaugError
from medaug.io.atomic import write_json
from medaug.models.base import GenerativeModel, Noise
from medaug.models.config import ModelConfig, model_config
from medaug.models.registry import build_model
from medaug.preprocess import layout as LY
from medaug.preprocess.cache import Cache
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.splits import split_record
from medaug.progress import Progress, progress_of
from medaug.train import checkpoint as ckpt
from medaug.train.config import TrainConfig, default_batch
from medaug.train.distributed import Distributed
from medaug.train.runs import StatsLog, check_writable, loss_text, new_run_dir, runs_in
from medaug.viz import pair_tiles, save_grid

#: The task ``train`` reports to its progress.
TASK = "training"


class TrainingStopped(MedaugError):
    """The run stopped early: a signal (checkpoint saved) or a non-finite loss.

    ``exit_code`` is what the CLI exits with: 128 + the signal number for a signal
    (143 for SIGTERM, as schedulers expect of a preempted job), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainResult:
    """What a training run did; its run folder holds the rest."""

    run_dir: Path
    step: int  # steps done in total (including those before a resume)
    steps: int  # the run's planned total
    seconds: float
    last: dict[str, float]  # the last logged stats
    checkpoint: Path | None
    events: list[str] = field(default_factory=list)
    resumed_from: int = 0

    def summary(self) -> str:
        """A few lines for a person: steps, speed, losses and where things are."""
        speed = self.last.get("samples_per_s", 0)
        return "\n".join(
            [
                f"Trained {self.run_dir.name}: step {self.step}/{self.steps} in "
                f"{self.seconds:.0f} s ({speed:g} samples/s at the end)",
                f"  {loss_text(self.last)}",
                f"  checkpoint -> {self.checkpoint}",
                f"  samples    -> {self.run_dir / 'samples'} (reals.png to compare)",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run": str(self.run_dir),
            "step": self.step,
            "seconds": round(self.seconds, 1),
            "last": self.last,
            "events": self.events,
        }


class StepBatches(Sampler[list[int]]):
    """Indices of this process's share of the global batch of each step.

    Step ``s`` draws ``global_batch`` indices (with replacement, by ``weights``) from
    a generator seeded with ``(seed, s)``, and process ``rank`` keeps its slice.

    Args:
        weights: sampling weight per dataset item (None: uniform).
        size: dataset length.
        global_batch: samples per step over all processes.
        rank, world: this process and the number of processes.
        seed: the run's seed.
        start, stop: steps to draw, ``range(start, stop)``.
        keyed: yield ``(index, step, position in the global batch)`` keys instead of
            indices, for a dataset that draws per item and step (``WarpedPairs``).
    """

    def __init__(
        self,
        weights: np.ndarray | None,
        size: int,
        global_batch: int,
        rank: int,
        world: int,
        seed: int,
        start: int,
        stop: int,
        keyed: bool = False,
    ):
        w = np.ones(size) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float64)
        self.global_batch, self.local = global_batch, global_batch // world
        self.rank, self.seed, self.start, self.stop = rank, seed, start, stop
        self.keyed = keyed

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[Any]]:
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(step_seed(self.seed, step, 0))
            idx = torch.multinomial(self.weights, self.global_batch, True, generator=g)
            first = self.rank * self.local
            mine = idx[first : first + self.local].tolist()
            yield [(i, step, first + j) for j, i in enumerate(mine)] if self.keyed else mine


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed for one (run seed, step, stream) triple."""
    return (seed * 1_000_003 + step * 8_191 + stream * 131 + 0x5EED) % (2**63 - 1)


def _amp(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    mode = cfg.amp
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "off":
        return None
    if mode == "fp16" and device.type != "cuda":
        raise ConfigError("amp fp16 needs CUDA; use bf16 or off on the CPU")
    return torch.bfloat16 if mode == "bf16" else torch.float16


def train(
    cache: str | os.PathLike[str] | Cache,
    out: str | os.PathLike[str],
    *,
    model: str | ModelConfig | None = None,
    dims: int | None = None,
    preset: str = "cpu",
    config: TrainConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    cases: tuple[Sequence[str], Sequence[str]] | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    on_step: Callable[[int, GenerativeModel], None] | None = None,
) -> TrainResult:
    """Train a generative model on a cache.

    Stages meet at their artifacts: ``train`` reads the cache that
    :func:`medaug.preprocess.preprocess` wrote (``medaug train SCANS`` preprocesses
    first, then calls this).

    Args:
        cache: a cache folder from ``preprocess`` (or an open ``Cache``).
        out: folder of numbered run folders (``out/00003-vaegan-2d``).
        model: a variant name (sized by ``preset`` for the data) or a full config
            (default ``vaegan``; on resume, the run's own).
        dims: 2 or 3; must match the cache (default: the cache's).
        preset: ``cpu``, ``gpu-small`` or ``gpu-large``.
        config: training settings (default ``TrainConfig()``).
        model_overrides: ModelConfig fields to change (loss weights, sizes).
        resume: continue the newest run in ``out`` from its newest checkpoint, with
            the model settings it was started with; a ``model`` or override given
            that contradicts them is an error naming both values (nnU-Net's
            ``--c``). ``config.steps`` may extend it.
        cases: explicit ``(training, held-out)`` case ids of the cache instead of
            ``config.fold`` of its ``splits.json`` (the gain experiment trains one
            generator per subset of patients); both sides go into the checkpoint.
        progress: a :class:`~medaug.progress.Progress` (or a function for the notes),
            told on the main process: ``start("training", total, first step)``, a
            ``record("training", stats)`` at every log step, and notes (a default
            batch adapted to a small training set, collapse signs).
        on_step: called after every step with the step count and the model (hooks on
            every process, not progress).

    Returns:
        what was done; the run folder holds the rest.

    Raises:
        ConfigError / InputError: before training, for anything that cannot work.
        TrainingStopped: a signal stopped the run (checkpoint saved: resume it) or a
            loss became non-finite (the last good checkpoint is kept).
    """
    cfg = config or TrainConfig()
    opened = cache if isinstance(cache, Cache) else Cache(cache)
    out = Path(out)
    check_writable(out)
    ask = _Request(model, dims, preset, cfg, model_overrides or {}, resume, cases)
    hooks = _Hooks(progress_of(progress), on_step)
    dist = Distributed.from_env(cfg.device)
    try:
        return _loop(_setup(opened, out, ask, dist, hooks))
    finally:
        dist.close()


@dataclass(frozen=True)
class _Request:
    """What ``train`` was asked for (its arguments)."""

    model: str | ModelConfig | None
    dims: int | None
    preset: str
    cfg: TrainConfig
    overrides: dict[str, Any]
    resume: bool
    cases: tuple[Sequence[str], Sequence[str]] | None


@dataclass
class _Hooks:
    """The caller's progress (told only on the main process) and step hook (every
    process)."""

    progress: Progress
    on_step: Callable[[int, GenerativeModel], None] | None = None


@dataclass
class _Run:
    """Everything the loop works on, built by :func:`_setup`.

    Attributes:
        cfg: the settings in force (a resumed run's own, with new steps / device).
        start, total: steps done before this call, and the run's planned total.
        batch: the global batch (``cfg.batch_size``, resolved when none was asked for).
        info: what every checkpoint records besides the weights.
        training: model, optimisers, schedulers, EMA, scaler (what a checkpoint saves).
        phases: each phase's parameters, in the order the phases run.
        amp: the autocast dtype, or None (full precision).
        channels_last: the CUDA memory format of model and batches (None on the CPU).
        log: ``stats.jsonl`` + TensorBoard (main process only).
        events: notes and warnings of the run (an adapted batch, collapse signs).
    """

    dist: Distributed
    cfg: TrainConfig
    start: int
    total: int
    batch: int
    run_dir: Path
    info: ckpt.RunInfo
    training: ckpt.Trainables
    phases: dict[str, list[torch.nn.Parameter]]
    loader: DataLoader
    amp: torch.dtype | None
    channels_last: torch.memory_format | None
    log: StatsLog | None
    hooks: _Hooks
    t_start: float
    events: list[str] = field(default_factory=list)
    #: a conditional model's sample grids are drawn on these layouts (reals.png's)
    layouts: torch.Tensor | None = None

    def event(self, msg: str) -> None:
        self.events.append(msg)
        if self.dist.is_main:
            self.hooks.progress.note(msg)


def _setup(cache: Cache, out: Path, ask: _Request, dist: Distributed, hooks: _Hooks) -> _Run:
    """Check everything that can fail, then build the run: its folder (new or
    resumed), the model and its optimisers (restored on resume), and the loader."""
    t_start = time.perf_counter()
    cases = None if ask.cases is None else (list(ask.cases[0]), list(ask.cases[1]))
    cfg = ask.cfg
    if ask.resume:
        run_dir, state = _resumable(out, ask.model, ask.overrides)
        mcfg = _model_config(state.model_config, cache.config, ask.preset, {})
    else:
        run_dir, state = None, None
        mcfg = _model_config(ask.model or "vaegan", cache.config, ask.preset, ask.overrides)
    # a mask generator learns the layouts synthesis draws from real masks: slices that
    # hold the target (an image model sees the cache's share of the others too)
    fraction = 1.0 if mcfg.role == "layout" else None
    dataset, weights = _dataset(cache, cfg.fold, ask.dims, cases, mcfg.needs_context, fraction)
    if state is not None:  # the run's own settings, its batch size included
        cfg = state.train_config.replace(steps=cfg.steps, epochs=cfg.epochs, device=cfg.device)
    if cfg.warp:  # each pair moved by its own draw, keyed by (index, step, position)
        dataset = WarpedPairs(dataset, cache.config.spacing_mm, cfg.seed)
    events: list[str] = []
    if cfg.batch_size is None:  # resolved once, then saved with the run
        unit = "slices" if cache.config.dims == 2 else "volumes"
        batch, adapted = default_batch(len(dataset), dist.world, unit)
        cfg = cfg.replace(batch_size=batch)
        if adapted is not None:
            events.append(adapted)
            if dist.is_main:
                hooks.progress.note(adapted)
    batch, total = _batch_and_steps(cfg, len(dataset), dist.world, cache.config.dims)
    amp = _amp(cfg, dist.device)
    if run_dir is None:
        run_dir = new_run_dir(out, mcfg.variant, mcfg.dims) if dist.is_main else out
        run_dir = _shared_path(run_dir, dist)

    channels_last = None
    if dist.device.type == "cuda":
        channels_last = torch.channels_last if mcfg.dims == 2 else torch.channels_last_3d
    training, phases = _trainables(mcfg, cfg, dist, amp, channels_last)
    start = state.restore(training) if state is not None else 0
    if start >= total:
        raise ConfigError(
            f"already trained {start} steps; pass a larger {{steps}} to go on",
            prefix=f"{run_dir}: ",
        )
    split = split_record(cache, cfg.fold, cases)
    info = ckpt.RunInfo(mcfg, cfg.replace(steps=total), cache.config, cache.fingerprint(), split)
    batches = StepBatches(
        weights, len(dataset), batch, dist.rank, dist.world, cfg.seed, start, total, cfg.warp
    )
    loader = DataLoader(
        dataset, batch_sampler=batches, num_workers=cfg.workers,
        pin_memory=dist.device.type == "cuda", persistent_workers=False,
    )  # fmt: skip
    log, layouts = None, None
    if dist.is_main:
        _write_config(run_dir, info, cache.root, dist.world)
        log = StatsLog(run_dir)
        layouts = _write_reals(run_dir, training.net, dataset, cfg)
        hooks.progress.start(TASK, total, start)
    return _Run(
        dist, cfg, start, total, batch, run_dir, info, training, phases, loader, amp, channels_last,
        log, hooks, t_start, events, layouts,
    )  # fmt: skip


def _dataset(
    cache: Cache,
    fold: int,
    dims: int | None,
    cases,
    context: bool = False,
    target_fraction: float | None = None,
) -> tuple[Any, np.ndarray | None]:
    """The training items and, in 2D, their sampling weights (target-bearing slices
    ``target_fraction`` of the time; default the cache config's); with ``context``,
    items carry the cached context map (a layout model's)."""
    cdims = cache.config.dims
    if dims is not None and dims != cdims:
        raise ConfigError(
            f"a cache made for {cdims}D given to a {dims}D model "
            f"(preprocess the scans with {{dims={dims}}})",
            prefix=f"{cache.root}: ",
        )
    train_cases = list(cases[0]) if cases is not None else cache.split(fold)[0]
    if not train_cases:
        raise ConfigError(f"{cache.root}: no training cases in this split")
    if cdims == 2:
        ds = SliceDataset(cache, train_cases, with_context=context)
        return ds, ds.sample_weights(target_fraction)
    return VolumeDataset(cache, train_cases, with_context=context), None


def _model_config(
    model: str | ModelConfig, pp: PreprocessConfig, preset: str, overrides: dict[str, Any]
) -> ModelConfig:
    """``model`` as a config sized for the cache's grid and channels."""
    if isinstance(model, ModelConfig):
        mcfg = model
    else:
        data = {
            "image_channels": 1 + 2 * pp.context_slices if pp.dims == 2 else 1,
            "classes": len(pp.labels) + 1,
        }  # a mask generator's overrides replace both
        mcfg = model_config(
            model, dims=pp.dims, grid=pp.grid or (), preset=preset, **(data | overrides)
        )
    if tuple(mcfg.grid) != tuple(pp.grid or ()) or mcfg.dims != pp.dims:
        raise ConfigError(f"model grid {mcfg.grid} does not match the cache grid {pp.grid}")
    return mcfg


def _batch_and_steps(cfg: TrainConfig, items: int, world: int, dims: int) -> tuple[int, int]:
    """The global batch, checked against the data and processes, and the run's planned
    total steps (``epochs`` converted)."""
    batch = cfg.batch_size
    if batch is None:
        raise ValueError("the batch size is resolved before it is checked")
    if batch % world:
        raise ConfigError(f"batch size {batch} does not split over {world} processes")
    if batch > items:
        raise ConfigError(
            f"batch size {batch} is larger than the training set "
            f"({items} {'slices' if dims == 2 else 'volumes'} in fold {cfg.fold})"
        )
    if cfg.epochs is not None:
        return batch, max(1, math.ceil(cfg.epochs * items / batch))
    return batch, cfg.steps


def _trainables(
    mcfg: ModelConfig,
    cfg: TrainConfig,
    dist: Distributed,
    amp: torch.dtype | None,
    channels_last: torch.memory_format | None,
) -> tuple[ckpt.Trainables, dict[str, list[torch.nn.Parameter]]]:
    """The model (same initial weights on every process), Adam with a linear warm-up
    per phase, the EMA of the weights and the fp16 gradient scaler."""
    torch.manual_seed(cfg.seed)
    net: GenerativeModel = build_model(mcfg).to(dist.device)
    dist.broadcast_module(net)
    if channels_last is not None:
        net = net.to(memory_format=channels_last)  # type: ignore[call-overload]
    optims, scheds = {}, {}
    phases = {phase: net.phase_parameters(phase) for phase in net.phases}
    for phase, params in phases.items():
        lr = cfg.lr if phase == "generator" else cfg.lr_d
        optims[phase] = torch.optim.Adam(params, lr=lr, betas=cfg.betas)
        scheds[phase] = torch.optim.lr_scheduler.LambdaLR(
            optims[phase], lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps))
        )
    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp == torch.float16)
    return ckpt.Trainables(net, optims, scheds, ema, scaler), phases


def _loop(run: _Run) -> TrainResult:
    """Steps ``start + 1 .. total``; logs, samples and checkpoints on their cadence;
    stops cleanly on SIGTERM / SIGINT (after a checkpoint) or a non-finite loss."""
    stop_signal: list[str] = []
    pending: list[tuple[int, str, dict[str, torch.Tensor]]] = []
    monitor = _Monitor(run, run.start)
    last: dict[str, Any] = {}
    saved: Path | None = None
    step = run.start
    with _signals(stop_signal):
        for step, batch in zip(range(run.start + 1, run.total + 1), run.loader, strict=False):
            _step(run, step, batch, pending)
            at_log = step % run.cfg.log_every == 0 or step == run.total
            at_ckpt = step % run.cfg.checkpoint_every == 0 or step == run.total
            # one process alone checks its flag every step; a job agrees at syncs only
            stopping = bool(stop_signal)
            if run.dist.active:
                stopping = run.dist.any(stopping) if at_log or at_ckpt else False
            if at_log or at_ckpt or stopping:
                _check_finite(pending, run.dist, run.run_dir)
            if at_log:
                last = monitor.record(step, pending)
            if run.dist.is_main and (step % run.cfg.sample_every == 0 or step == run.total):
                _write_samples(run.run_dir, _sampler(run.training), run.cfg, step, run.layouts)
            if at_ckpt or stopping:
                saved = _save(run, step) or saved
            if stopping:
                _stop(run, step, stop_signal[0] if stop_signal else "SIGTERM")
    if run.log is not None:
        run.log.close()
    seconds = time.perf_counter() - run.t_start
    return TrainResult(
        run.run_dir, step, run.total, seconds, last, saved, run.events, resumed_from=run.start
    )


def _step(
    run: _Run, step: int, batch: dict[str, Any], pending: list[tuple[int, str, dict]]
) -> None:
    """One optimisation step: every phase in order, then the EMA and the step hook.
    The loss terms stay on the device in ``pending`` until the next sync."""
    device, cfg, t = run.dist.device, run.cfg, run.training
    batch = {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }
    if run.channels_last is not None:
        batch["image"] = batch["image"].contiguous(memory_format=run.channels_last)
    local = run.batch // run.dist.world
    gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, 1))
    noise = Noise(local, device, gen, run.batch, run.dist.rank * local)
    autocast = torch.autocast(
        device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None
    )
    for phase, params in run.phases.items():
        _only_phase(t.net, params)
        t.optims[phase].zero_grad(set_to_none=True)
        with autocast:
            terms = t.net.losses(batch, phase, noise)
        t.scaler.scale(terms["loss"]).backward()
        run.dist.average_gradients(params)
        t.scaler.unscale_(t.optims[phase])
        if cfg.grad_clip > 0:
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        t.scaler.step(t.optims[phase])
        t.scheds[phase].step()
        pending.append((step, phase, {k: v.detach() for k, v in terms.items()}))
    t.scaler.update()
    if t.ema is not None:
        # decay ramps up from 0.1 so early samples are not the initial weights
        decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
        t.ema.multi_avg_fn = get_ema_multi_avg_fn(decay)
        t.ema.update_parameters(t.net)
    if run.hooks.on_step is not None:
        run.hooks.on_step(step, t.net)


def _save(run: _Run, step: int) -> Path | None:
    """The checkpoint of ``step`` (written by the main process; the others wait)."""
    path = None
    if run.dist.is_main:
        keep = run.cfg.keep_checkpoints
        path = ckpt.save_checkpoint(run.run_dir, step, run.info, run.training, keep)
    run.dist.barrier()
    return path


def _stop(run: _Run, step: int, name: str) -> None:
    """End a run stopped by a signal (its checkpoint is written)."""
    if run.log is not None:
        run.log.write({"step": step, "event": "stopped by a signal"})
        run.log.close()
    raise TrainingStopped(
        f"stopped by {name} at step {step}/{run.total}; checkpoint saved in {run.run_dir} "
        "(continue with {resume=True})",
        exit_code=128 + int(signal.Signals[name]),
    )


def _only_phase(net: torch.nn.Module, params: list[torch.nn.Parameter]) -> None:
    """Let only this phase's parameters collect gradients (saves the other sides' work)."""
    mine = {id(p) for p in params}
    for p in net.parameters():
        p.requires_grad_(id(p) in mine)


def _check_finite(
    pending: list[tuple[int, str, dict[str, torch.Tensor]]], dist: Distributed, run_dir: Path
) -> None:
    """Stop on the first non-finite loss since the last log, naming its step and phase
    (one device sync; called before every log line and checkpoint)."""
    losses = torch.stack([terms["loss"].float() for _, _, terms in pending])
    bad = (~torch.isfinite(losses)).nonzero()
    if dist.any(bool(bad.numel())):
        where = "another process"
        if bad.numel():
            s, phase, _ = pending[int(bad[0, 0])]
            where = f"step {s}, {phase} phase"
        kept = ckpt.list_checkpoints(run_dir)
        last = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint yet"
        raise TrainingStopped(f"non-finite loss at {where}; stopped ({last})")


class _Monitor:
    """Turns the loss terms gathered between log steps into one stats record: means
    over steps and processes, throughput, learning rates, GPU memory; and watches the
    discriminator's accuracy for a collapse sign."""

    def __init__(self, run: _Run, start: int):
        self.cfg, self.dist, self.scheds, self.log = run.cfg, run.dist, run.training.scheds, run.log
        self.batch = run.batch
        self.progress, self.event, self.t_start = run.hooks.progress, run.event, run.t_start
        self.t_last, self.step_last = time.perf_counter(), start
        self.won_since: int | None = None

    def record(self, step: int, pending: list[tuple[int, str, dict[str, torch.Tensor]]]):
        sums: dict[str, list[torch.Tensor]] = {}
        for _, phase, terms in pending:
            for k, v in terms.items():
                sums.setdefault(f"{phase}/{k}", []).append(v.float().reshape(()))
        pending.clear()
        keys = sorted(sums)
        means = self.dist.mean(torch.stack([torch.stack(sums[k]).mean() for k in keys]))
        now = time.perf_counter()
        stats: dict[str, Any] = {
            "step": step,
            **{k: round(float(v), 5) for k, v in zip(keys, means.tolist(), strict=True)},
            "samples_per_s": round(self.batch * (step - self.step_last) / (now - self.t_last), 2),
            "seconds": round(now - self.t_start, 2),
            **{f"lr/{p}": s.get_last_lr()[0] for p, s in self.scheds.items()},
        }
        if self.dist.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.dist.device)
            stats["gpu_mem_gib"] = round(peak / 2**30, 3)
        self.t_last, self.step_last = now, step
        self._watch_discriminator(step, stats.get("discriminator/d_acc"))
        if self.log is not None:
            self.log.write(stats)
            self.progress.record(TASK, stats)
        return stats

    def _watch_discriminator(self, step: int, accuracy: float | None) -> None:
        if accuracy is None or accuracy < 0.99:
            self.won_since = None
            return
        if self.won_since is None:
            self.won_since = step - self.cfg.log_every
        if step - self.won_since >= self.cfg.collapse_steps:
            self.event(
                f"warning: step {step}: the discriminator has been right on >= 99% of real "
                f"and fake inputs since step {self.won_since} (a collapse sign; look at the "
                "sample grids, lower lr_d or raise r1_gamma)"
            )
            self.won_since = step  # report again only after another stretch


def _resumable(
    out: Path, model: str | ModelConfig | None, overrides: dict[str, Any]
) -> tuple[Path, ckpt.Checkpoint]:
    """The newest run in ``out`` with a checkpoint; what the caller set explicitly
    (``model``, ``overrides``) must agree with the settings it was started with."""
    state = newest_fitted(out)
    if state is None:
        raise InputError(out, "{resume}: no run with a checkpoint here")
    if isinstance(model, ModelConfig):
        asked = model.to_dict()
    else:
        asked = overrides | ({"variant": model} if model else {})
    _refuse_difference(state, asked, {})
    return state.path.parent.parent, state


def fitted_runs(out: str | os.PathLike[str]) -> list[Path]:
    """The runs in ``out`` that have a checkpoint, oldest first."""
    return [r for r in runs_in(Path(out)) if ckpt.list_checkpoints(r)]


def newest_fitted(out: str | os.PathLike[str]) -> ckpt.Checkpoint | None:
    """The newest checkpoint of the newest run in ``out`` that has one (None: none)."""
    runs = fitted_runs(out)
    return ckpt.Checkpoint.load(runs[-1]) if runs else None


def differing_setting(
    state: ckpt.Checkpoint, model: dict[str, Any], training: dict[str, Any]
) -> tuple[str, str, str] | None:
    """The first setting named in ``model`` (ModelConfig fields, as a config file
    spells them) or ``training`` (TrainConfig fields) whose value differs from the
    one ``state`` was fitted with: ``(name, saved, asked)`` as shown to a user."""
    saved = state.model_config
    wanted = ModelConfig.from_dict(saved.to_dict() | model, source="the run's settings")
    pairs = [(n, getattr(saved, n), getattr(wanted, n)) for n in model]
    pairs += [(n, getattr(state.train_config, n), v) for n, v in training.items()]
    for name, had, asks in pairs:
        if had != asks:
            return name, _shown(had), _shown(asks)
    return None


def check_resumed_training(out: str | os.PathLike[str], **asked: Any) -> None:
    """Refuse a resume whose explicitly given training settings (``warp=True``...)
    contradict those the newest run in ``out`` was started with: a resumed run keeps
    its own, so a silent mismatch would train other than the caller believes."""
    state = newest_fitted(out)
    if state is not None:  # else train() says there is nothing to resume
        _refuse_difference(state, {}, asked)


def _refuse_difference(
    state: ckpt.Checkpoint, model: dict[str, Any], training: dict[str, Any]
) -> None:
    found = differing_setting(state, model, training)
    if found is not None:
        name, had, asks = found
        raise ConfigError(
            f"{{resume}}: this checkpoint has {name} {had}, the run asks for {asks}",
            prefix=f"{state.path}: ",
        )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _shared_path(path: Path, dist: Distributed) -> Path:
    """Rank 0's run folder, told to every process."""
    if not dist.active:
        return path
    import torch.distributed as tdist

    box = [str(path)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _write_config(run_dir: Path, info: ckpt.RunInfo, cache_dir: Path, world: int) -> None:
    docs = info.documents()
    doc = {
        "medaug_version": __version__,
        "data": str(cache_dir),
        "processes": world,
        **{k: docs[k] for k in ("model_config", "train_config", "preprocess_config")},
    }
    write_json(run_dir / "config.json", doc)


def _sampler(training: ckpt.Trainables) -> GenerativeModel:
    """The weights samples come from: the EMA copy where there is one."""
    return training.ema.module if training.ema is not None else training.net


def _write_samples(
    run_dir: Path, model: GenerativeModel, cfg: TrainConfig, step: int, layouts: Any = None
) -> None:
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    n = cfg.n_samples if layouts is None else layouts.shape[0]
    image, label = model.to_pair(model.sample(n, gen, layouts))
    if not model.config.image_channels:  # a mask generator: its layouts, shaded
        image = label.float() / max(1, model.config.classes - 1) * 2 - 1
        label = LY.target_of(label, model.config.layout)
    channel = model.config.image_channels // 2
    save_grid(pair_tiles(image, label, channel), run_dir / "samples" / f"step_{step:08d}.png")


def _write_reals(
    run_dir: Path, model: GenerativeModel, dataset, cfg: TrainConfig
) -> torch.Tensor | None:
    """``samples/reals.png``: training pairs to compare with, a seeded pick uniform
    over the items (not the sampler's target-slice weighting); returns a conditional
    model's layouts of those pairs (samples are drawn on them, so each sample tile
    sits under its real one)."""
    if not model.config.image_channels and not model.conditional:
        return None  # a mask generator: no image to show, no layouts to draw on
    path = run_dir / "samples" / "reals.png"
    n = min(cfg.n_samples, len(dataset))
    picks = next(iter(StepBatches(None, len(dataset), n, 0, 1, cfg.seed, 0, 1)))
    items = [dataset[i] for i in picks]
    batch = {
        k: torch.stack([it[k] for it in items])
        for k in ("image", "label", "context")
        if k in items[0]
    }
    if not path.exists():
        if model.config.image_channels:
            channel = model.config.image_channels // 2
            save_grid(pair_tiles(batch["image"], batch["label"].to(torch.uint8), channel), path)
    if not model.conditional:
        return None
    device = next(model.parameters()).device
    return model.layout_of(model.inputs({k: v.to(device) for k, v in batch.items()}))


@contextlib.contextmanager
def _signals(caught: list[str]) -> Iterator[None]:
    """SIGTERM / SIGINT set a flag the loop checks after each step (cluster
    preemption); a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
