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
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from medaug import __version__
from medaug.errors import ConfigError, InputError, MedaugError
from medaug.models import GenerativeModel, ModelConfig, Noise, build_model, model_config
from medaug.preprocess.cache import Cache
from medaug.preprocess.splits import split_record
from medaug.train import checkpoint as ckpt
from medaug.train.config import TrainConfig
from medaug.train.distributed import Distributed
from medaug.train.runs import StatsLog, check_writable, new_run_dir, runs_in
from medaug.viz import pair_tiles, save_grid


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
    run_dir: Path
    step: int  # steps done in total (including those before a resume)
    steps: int  # the run's planned total
    seconds: float
    last: dict[str, float]  # the last logged stats
    checkpoint: Path | None
    events: list[str] = field(default_factory=list)
    resumed_from: int = 0


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
    ):
        w = np.ones(size) if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.float64)
        self.global_batch, self.local = global_batch, global_batch // world
        self.rank, self.seed, self.start, self.stop = rank, seed, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            g = torch.Generator().manual_seed(step_seed(self.seed, step, 0))
            idx = torch.multinomial(self.weights, self.global_batch, True, generator=g)
            yield idx[self.rank * self.local : (self.rank + 1) * self.local].tolist()


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


def prepare_data(
    data: str | Path, out: Path, dims: int | None, dist: Distributed, quiet: bool = True
) -> Path:
    """A cache folder for ``data``: itself if it is one, else preprocess it (defaults)
    into ``out/cache-<dims>d`` (reused by later runs on the same scans)."""
    data = Path(data)
    if Cache.exists(data):
        return data
    if not data.exists():
        raise InputError(data, "no such file or folder")
    cache = out / f"cache-{dims or 2}d"
    if dist.is_main:
        from medaug.preprocess import PreprocessConfig, preprocess

        preprocess(data, cache, PreprocessConfig(dims=3 if dims == 3 else 2))
    dist.barrier()
    return cache


def _dataset(cache_dir: Path, fold: int, dims: int | None, cases):
    from medaug.data.datasets import SliceDataset, VolumeDataset

    cache = Cache(cache_dir)
    cdims = cache.config.dims
    if dims is not None and dims != cdims:
        raise ConfigError(
            f"{cache_dir}: a cache made for {cdims}D given to a {dims}D model "
            f"(make one with `medaug preprocess ... --dims {dims}`)"
        )
    train_cases = list(cases[0]) if cases is not None else cache.split(fold)[0]
    if not train_cases:
        raise ConfigError(f"{cache_dir}: no training cases in this split")
    if cdims == 2:
        ds = SliceDataset(cache, train_cases)
        return cache, ds, ds.sample_weights()
    return cache, VolumeDataset(cache, train_cases), None


def train(
    data: str | Path,
    out: str | Path,
    *,
    model: str | ModelConfig = "vaegan",
    dims: int | None = None,
    preset: str = "cpu",
    config: TrainConfig | None = None,
    model_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    cases: tuple[Sequence[str], Sequence[str]] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    on_step: Callable[[int, GenerativeModel], None] | None = None,
) -> TrainResult:
    """Train a generative model on a cache (or a scan folder, preprocessed first).

    Args:
        data: a cache from ``medaug preprocess`` or a folder of scans.
        out: folder of numbered run folders (``out/00003-vaegan-2d``).
        model: a variant name (sized by ``preset`` for the data) or a full config.
        dims: 2 or 3; must match the cache (default: the cache's).
        preset: ``cpu``, ``gpu-small`` or ``gpu-large``.
        config: training settings (default ``TrainConfig()``).
        model_overrides: ModelConfig fields to change (loss weights, sizes).
        resume: continue the newest run in ``out`` from its newest checkpoint; it
            must hold the same variant, dims and grid. ``config.steps`` may extend it.
        cases: explicit ``(training, held-out)`` case ids of the cache instead of
            ``config.fold`` of its ``splits.json`` (the gain experiment trains one
            generator per subset of patients); both sides go into the checkpoint.
        on_start: called with (first step, total steps) on the main process.
        on_log: called with each stats record on the main process.
        on_event: called with warnings (collapse signs) on the main process.
        on_step: called after every step with the step count and the model (hooks).

    Returns:
        what was done; the run folder holds the rest.

    Raises:
        ConfigError / InputError: before training, for anything that cannot work.
        TrainingStopped: a signal stopped the run (checkpoint saved: resume it) or a
            loss became non-finite (the last good checkpoint is kept).
    """
    cfg = config or TrainConfig()
    out = Path(out)
    check_writable(out)
    dist = Distributed.from_env(cfg.device)
    try:
        return _train(
            data, out, model, dims, preset, cfg, model_overrides or {}, resume, cases, dist,
            on_start, on_log, on_event, on_step,
        )  # fmt: skip
    finally:
        dist.close()


def _train(
    data, out, model, dims, preset, cfg, overrides, resume, cases, dist, on_start, on_log,
    on_event, on_step,
) -> TrainResult:  # fmt: skip
    t_start = time.perf_counter()
    device = dist.device
    events: list[str] = []

    def event(msg: str) -> None:
        events.append(msg)
        if dist.is_main and on_event is not None:
            on_event(msg)

    cache_dir = prepare_data(data, out, dims, dist)
    if cases is not None:
        cases = (list(cases[0]), list(cases[1]))
    cache, dataset, weights = _dataset(cache_dir, cfg.fold, dims, cases)
    pp = cache.config
    if isinstance(model, ModelConfig):
        mcfg = model
    else:
        mcfg = model_config(
            model,
            dims=pp.dims,
            grid=pp.grid,
            image_channels=1 + 2 * pp.context_slices if pp.dims == 2 else 1,
            classes=len(pp.labels) + 1,
            preset=preset,
            **overrides,
        )
    if tuple(mcfg.grid) != tuple(pp.grid) or mcfg.dims != pp.dims:
        raise ConfigError(f"model grid {mcfg.grid} does not match the cache grid {pp.grid}")

    # ---- resume or start a run ---------------------------------------------------
    state: ckpt.Checkpoint | None = None
    if resume:
        run_dir, state = _resumable(out, mcfg)
        cfg = state.train_config.replace(steps=cfg.steps, epochs=cfg.epochs, device=cfg.device)
    if cfg.batch_size % dist.world:
        raise ConfigError(f"batch size {cfg.batch_size} does not split over {dist.world} processes")
    if cfg.batch_size > len(dataset):
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the training set "
            f"({len(dataset)} {'slices' if pp.dims == 2 else 'volumes'} in fold {cfg.fold})"
        )
    total = cfg.steps
    if cfg.epochs is not None:
        total = max(1, math.ceil(cfg.epochs * len(dataset) / cfg.batch_size))
    amp = _amp(cfg, device)
    if not resume:
        run_dir = new_run_dir(out, mcfg.variant, mcfg.dims) if dist.is_main else out
        run_dir = _shared_path(run_dir, dist)

    # ---- model, optimisers, EMA --------------------------------------------------
    torch.manual_seed(cfg.seed)
    net: GenerativeModel = build_model(mcfg).to(device)
    dist.broadcast_module(net)
    memory_format = torch.channels_last if mcfg.dims == 2 else torch.channels_last_3d
    if device.type == "cuda":
        net = net.to(memory_format=memory_format)  # type: ignore[call-overload]
    optims, scheds = {}, {}
    phase_params = {phase: net.phase_parameters(phase) for phase in net.phases}
    for phase, params in phase_params.items():
        lr = cfg.lr if phase == "generator" else cfg.lr_d
        optims[phase] = torch.optim.Adam(params, lr=lr, betas=cfg.betas)
        scheds[phase] = torch.optim.lr_scheduler.LambdaLR(
            optims[phase], lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps))
        )
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    training = ckpt.Trainables(net, optims, scheds, ema, scaler)
    start = 0
    if state is not None:
        start = state.restore(training)
        if start >= total:
            raise ConfigError(
                f"{run_dir}: already trained {start} steps; pass a larger --steps to go on"
            )
    split = split_record(cache, cfg.fold, cases)
    info = ckpt.RunInfo(mcfg, cfg.replace(steps=total), pp, cache.fingerprint(), split)
    if dist.is_main:
        _write_config(run_dir, info, cache_dir, dist.world)

    # ---- data ----------------------------------------------------------------------
    batches = StepBatches(
        weights, len(dataset), cfg.batch_size, dist.rank, dist.world, cfg.seed, start, total
    )
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    local = cfg.batch_size // dist.world
    log = StatsLog(run_dir) if dist.is_main else None
    if dist.is_main:
        _write_reals(run_dir, net, dataset, cfg)
        if on_start is not None:
            on_start(start, total)

    # ---- the loop ----------------------------------------------------------------------
    stop_signal: list[str] = []
    pending: list[tuple[int, str, dict[str, torch.Tensor]]] = []
    last: dict[str, Any] = {}
    saved_path: Path | None = None
    monitor = _Monitor(cfg, dist, scheds, log, on_log, event, t_start, start)
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    step = start
    with _signals(stop_signal):
        for step, batch in zip(range(start + 1, total + 1), loader, strict=False):
            batch = {
                k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in batch.items()
            }
            if device.type == "cuda":
                batch["image"] = batch["image"].contiguous(memory_format=memory_format)
            gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, step, 1))
            noise = Noise(local, device, gen, cfg.batch_size, dist.rank * local)
            for phase, params in phase_params.items():
                _only_phase(net, params)
                optims[phase].zero_grad(set_to_none=True)
                with autocast:
                    terms = net.losses(batch, phase, noise)
                scaler.scale(terms["loss"]).backward()
                dist.average_gradients(params)
                scaler.unscale_(optims[phase])
                if cfg.grad_clip > 0:
                    terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optims[phase])
                scheds[phase].step()
                pending.append((step, phase, {k: v.detach() for k, v in terms.items()}))
            scaler.update()
            if ema is not None:
                # decay ramps up from 0.1 so early samples are not the initial weights
                decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))
                ema.multi_avg_fn = get_ema_multi_avg_fn(decay)
                ema.update_parameters(net)
            if on_step is not None:
                on_step(step, net)

            at_log = step % cfg.log_every == 0 or step == total
            at_ckpt = step % cfg.checkpoint_every == 0 or step == total
            # one process alone checks its flag every step; a job agrees at syncs only
            stopping = bool(stop_signal)
            if dist.active:
                stopping = dist.any(stopping) if at_log or at_ckpt else False
            if at_log or at_ckpt or stopping:
                _check_finite(pending, dist, run_dir)
            if at_log:
                last = monitor.record(step, pending)
            if dist.is_main and (step % cfg.sample_every == 0 or step == total):
                _write_samples(run_dir, _sampler(net, ema), cfg, step)
            if at_ckpt or stopping:
                if dist.is_main:
                    saved_path = ckpt.save_checkpoint(
                        run_dir, step, info, training, cfg.keep_checkpoints
                    )
                dist.barrier()
            if stopping:
                if log is not None:
                    log.write({"step": step, "event": "stopped by a signal"})
                    log.close()
                name = stop_signal[0] if stop_signal else "SIGTERM"
                raise TrainingStopped(
                    f"stopped by {name} at step {step}/{total}; checkpoint saved in {run_dir} "
                    "(continue with --resume)",
                    exit_code=128 + int(signal.Signals[name]),
                )
    if log is not None:
        log.close()
    return TrainResult(
        run_dir,
        step,
        total,
        time.perf_counter() - t_start,
        last,
        saved_path,
        events,
        resumed_from=start,
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

    def __init__(self, cfg, dist, scheds, log, on_log, event, t_start, start):
        self.cfg, self.dist, self.scheds, self.log = cfg, dist, scheds, log
        self.on_log, self.event, self.t_start = on_log, event, t_start
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
            "samples_per_s": round(
                self.cfg.batch_size * (step - self.step_last) / (now - self.t_last), 2
            ),
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
            if self.on_log is not None:
                self.on_log(stats)
        return stats

    def _watch_discriminator(self, step: int, accuracy: float | None) -> None:
        if accuracy is None or accuracy < 0.99:
            self.won_since = None
            return
        if self.won_since is None:
            self.won_since = step - self.cfg.log_every
        if step - self.won_since >= self.cfg.collapse_steps:
            self.event(
                f"step {step}: the discriminator has been right on >= 99% of real and fake "
                f"inputs since step {self.won_since} (a collapse sign; look at the sample "
                "grids, lower lr_d or raise r1_gamma)"
            )
            self.won_since = step  # report again only after another stretch


def _resumable(out: Path, mcfg: ModelConfig) -> tuple[Path, ckpt.Checkpoint]:
    """The newest run in ``out`` with a checkpoint, checked against ``mcfg``."""
    runs = [r for r in runs_in(out) if ckpt.list_checkpoints(r)]
    if not runs:
        raise InputError(out, "--resume: no run with a checkpoint here")
    run_dir = runs[-1]
    state = ckpt.Checkpoint.load(run_dir)
    saved = state.model_config
    for name in ("variant", "dims", "grid", "image_channels", "classes"):
        if getattr(saved, name) != getattr(mcfg, name):
            raise ConfigError(
                f"{state.path}: --resume: this checkpoint has {name} "
                f"{getattr(saved, name)}, the run asks for {getattr(mcfg, name)}"
            )
    return run_dir, state


def _shared_path(path: Path, dist: Distributed) -> Path:
    """Rank 0's run folder, told to every process."""
    if not dist.active:
        return path
    import torch.distributed as tdist

    box = [str(path)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _write_config(run_dir: Path, info: ckpt.RunInfo, cache_dir: Path, world: int) -> None:
    from medaug.io.atomic import write_json

    docs = info.documents()
    doc = {
        "medaug_version": __version__,
        "data": str(cache_dir),
        "processes": world,
        **{k: docs[k] for k in ("model_config", "train_config", "preprocess_config")},
    }
    write_json(run_dir / "config.json", doc)


def _sampler(net: GenerativeModel, ema: Any) -> GenerativeModel:
    """The weights samples come from: the EMA copy where there is one."""
    return ema.module if ema is not None else net


def _write_samples(run_dir: Path, model: GenerativeModel, cfg: TrainConfig, step: int) -> None:
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    image, label = model.to_pair(model.sample(cfg.n_samples, gen))
    channel = model.config.image_channels // 2
    save_grid(pair_tiles(image, label, channel), run_dir / "samples" / f"step_{step:08d}.png")


def _write_reals(run_dir: Path, model: GenerativeModel, dataset, cfg: TrainConfig) -> None:
    """``samples/reals.png``: training pairs drawn as the sampler draws them, to compare."""
    path = run_dir / "samples" / "reals.png"
    if path.exists():
        return
    n = min(cfg.n_samples, len(dataset))
    picks = next(iter(StepBatches(None, len(dataset), n, 0, 1, cfg.seed, 0, 1)))
    items = [dataset[i] for i in picks]
    image = torch.stack([it["image"] for it in items])
    label = torch.stack([it["label"] for it in items]).to(torch.uint8)
    channel = model.config.image_channels // 2
    save_grid(pair_tiles(image, label, channel), path)


@contextlib.contextmanager
def _signals(caught: list[str]) -> Iterator[None]:
    """SIGTERM / SIGINT set a flag the loop checks after each step (cluster
    preemption); a second SIGINT interrupts at once."""
    import threading

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
