"""Training benchmarks for medaug: throughput and peak memory of the training loop.

Prints the machine facts and one Markdown table per section, and writes the same
results as JSON to ``<workdir>/bench_train.json``. The phantom DICOM cohort is
generated under ``<workdir>/data`` on the first run (the same folder that
``bench_io.py`` and ``bench_preprocess.py`` use, so it is shared with them) and
reused afterwards; the training caches go to ``<workdir>/caches``.

Sections:

1. CPU throughput per variant: ``medaug.train.train`` at the ``cpu`` preset on a 2D
   64^2 cache (batch 16) and a 3D 32^3 cache (batch 4). Samples/s come from the
   run's ``stats.jsonl``, leaving out the first log interval (warm-up); each run is
   a fresh process, which reports its peak RSS (VmHWM).
2. The same networks trained by medaug's loop and by a plain fp32 PyTorch loop in the
   style of the MONAI generative tutorials (``DataLoader(shuffle=True)``, one Adam per
   phase, ``loss.item()`` every step, no EMA, no clipping), alternating in one
   process. Target: medaug's loop not slower on the CPU (>= 0.95x given the noise),
   at least 1.5x faster on a GPU.
3. GPU (only with CUDA): throughput, peak GPU memory and the share of the GPU's peak
   bf16 rate reached at the ``gpu-small`` and ``gpu-large`` presets, 2D 128^2 and
   256^2, 3D 64^3 and 128^3. FLOPs per step are counted with
   ``torch.utils.flop_counter.FlopCounterMode``.

Usage::

    python benchmarks/bench_train.py            # full run
    python benchmarks/bench_train.py --quick    # smoke run: vae and gan, a few steps each
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from common import (
    DEFAULT_WORKDIR,
    HIGH_WATER_SOURCE,
    MIB,
    Row,
    fmt_x,
    make_workdir,
    markdown_table,
    package_version,
    print_machine,
    run_memory_probe,
    shape_name,
    table,
    write_report,
)
from common import machine_facts as common_machine_facts
from torch.utils.data import DataLoader

from medaug.data import SliceDataset, VolumeDataset
from medaug.data.phantom import PhantomConfig, write_cohort
from medaug.models import ModelConfig, build_model, variant_names
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.train import TrainConfig, train

CPU_TARGET = 0.95  # "not slower", allowing for noise on a shared 2-core machine
GPU_TARGET = 1.5

#: Dense bf16 tensor-core peak (TFLOP/s) by a piece of the CUDA device name, first
#: match wins (so "H100 PCIe" comes before "H100", which means the SXM part).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)

#: (dims, grid, batch) of the CPU rows: the issue's 2D 64^2 and 3D 32^3.
CPU_SHAPES = ((2, (64, 64), 16), (3, (32, 32, 32), 4))

#: (steps, log_every) per dims, full and --quick. The first log interval is the
#: warm-up and is not timed, so the timed steps are steps - log_every.
CPU_STEPS = {"full": {2: (60, 10), 3: (20, 5)}, "quick": {2: (3, 1), 3: (3, 1)}}
REFERENCE_STEPS = {"full": {2: (30, 10), 3: (12, 4)}, "quick": {2: (3, 1), 3: (3, 1)}}
GPU_STEPS = {"full": (30, 10), "quick": (6, 2)}

#: (dims, grid, batch) of the GPU rows, each at both GPU presets.
GPU_SHAPES = (
    (2, (128, 128), 32),
    (2, (256, 256), 32),
    (3, (64, 64, 64), 8),
    (3, (128, 128, 128), 2),
)
GPU_PRESETS = ("gpu-small", "gpu-large")

#: (dims, grid, batch, preset) of section 2's GPU rows.
GPU_REFERENCE_SHAPES = ((2, (128, 128), 32, "gpu-small"), (3, (64, 64, 64), 8, "gpu-small"))

#: Run in a fresh interpreter: one medaug training run, its stats and peak RSS.
#: argv: cache, variant, benchmarks folder, JSON keyword arguments of ``medaug_run``.
TRAIN_PROBE = (
    """
import json, resource, sys, warnings

warnings.simplefilter("ignore")
cache, variant, here, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, here)
"""
    + HIGH_WATER_SOURCE
    + """
import torch
import bench_train
import medaug.models

torch.set_num_threads(kwargs.pop("threads"))
medaug.models.variant_names()  # imports every variant, hence MONAI's networks
try:
    import torch.utils.tensorboard  # what the stats log opens
except ImportError:
    pass
base = high_water_bytes()
run = bench_train.medaug_run(cache, variant, **kwargs)
run.update(baseline_bytes=base, peak_bytes=high_water_bytes())
print(json.dumps(run))
"""
)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_facts() -> dict[str, Any]:
    """Versions, core counts and the GPU, if any."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return common_machine_facts(
        {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda or "none",
            "gpu": gpu,
            "monai": package_version("monai"),
        }
    )


# ---------------------------------------------------------------------------------
# Data


def prepare_cohort(workdir: Path, quick: bool) -> Path:
    """Write (or reuse) the phantom DICOM cohort under ``workdir/data``."""
    patients = 4 if quick else 20
    config = PhantomConfig()
    # same name, seed and config as the cohort of bench_io.py and bench_preprocess.py
    cohort = workdir / "data" / f"cohort_{patients}x{shape_name(config.shape)}"
    write_cohort(cohort, patients=patients, seed=0, fmt="dicom", config=config)
    return cohort


def prepare_cache(cohort: Path, caches: Path, dims: int, grid: tuple[int, ...]) -> Path:
    """A training cache of ``cohort`` on ``grid``; every patient in the training split."""
    if dims == 2:
        config = PreprocessConfig(dims=2, grid_2d=(grid[0], grid[1]))
    else:
        config = PreprocessConfig(dims=3, grid_3d=(grid[0], grid[1], grid[2]))
    cache = caches / f"train_{dims}d_{grid[0]}_{cohort.name}"
    # val_fraction 0: throughput needs no held-out patients, and the 3D rows need as
    # many training volumes as the batch holds. An existing cache is reused as is.
    preprocess(cohort, cache, config, val_fraction=0.0)
    return cache


def cache_size(cache: Path, dims: int) -> int:
    """Training items in a cache: slices (2D) or volumes (3D)."""
    return len(SliceDataset(cache) if dims == 2 else VolumeDataset(cache))


# ---------------------------------------------------------------------------------
# The two loops


def steady_rate(stats: list[dict[str, Any]], batch: int) -> tuple[float, int]:
    """Samples/s and steps over the log intervals after the first (which holds the
    warm-up: first batches, allocator growth)."""
    lines = [s for s in stats if "samples_per_s" in s]
    if len(lines) < 2:
        raise ValueError("need at least two log lines (steps >= 2 * log_every)")
    steps = lines[-1]["step"] - lines[0]["step"]
    return batch * steps / (lines[-1]["seconds"] - lines[0]["seconds"]), steps


def medaug_run(
    cache: str | Path,
    variant: str,
    *,
    preset: str,
    batch: int,
    steps: int,
    log_every: int,
    device: str,
    tmp: str | Path,
) -> dict[str, Any]:
    """One ``medaug.train.train`` run: steady samples/s, step times, stats, model config.

    ``samples_per_s`` is over the log intervals after the first. ``step_s`` are the wall
    times of the same steps, between ``on_step`` calls: true step times on the CPU,
    where every op finishes before the next starts, but not on a GPU, where the loop
    only queues work between its syncs at log steps. The run folder goes to a
    temporary folder under ``tmp`` and is deleted after.
    """
    config = TrainConfig(
        steps=steps,
        batch_size=batch,
        log_every=log_every,
        sample_every=steps,  # one sample grid and one checkpoint, at the end (not timed)
        checkpoint_every=steps,
        n_samples=4,
        device=device,
    )
    ends: list[float] = []  # when each step's on_step hook ran
    with tempfile.TemporaryDirectory(dir=tmp, prefix="runs-") as out:
        result = train(
            cache,
            out,
            model=variant,
            preset=preset,
            config=config,
            on_step=lambda _step, _net: ends.append(time.perf_counter()),
        )
        lines = (result.run_dir / "stats.jsonl").read_text().splitlines()
        doc = json.loads((result.run_dir / "config.json").read_text())
    stats = [json.loads(line) for line in lines]
    rate, timed = steady_rate(stats, batch)
    return {
        "samples_per_s": rate,
        "timed_steps": timed,
        "step_s": step_times(ends, log_every),
        "seconds": result.seconds,
        "gpu_mem_gib": stats[-1].get("gpu_mem_gib"),
        "model_config": doc["model_config"],
        "stats": stats,
    }


def step_times(ends: list[float], warmup: int) -> list[float]:
    """Wall time of each step after ``warmup`` from the times the steps ended."""
    return [b - a for a, b in zip(ends[warmup - 1 : -1], ends[warmup:], strict=True)]


def _endless(loader: DataLoader) -> Any:
    while True:
        yield from loader


def reference_run(
    cache: Path, model_config: ModelConfig, batch: int, steps: int, warmup: int, device: str
) -> dict[str, Any]:
    """The same network trained the tutorial way: fp32, ``DataLoader(shuffle=True)``, per
    phase ``zero_grad``, loss, ``backward``, Adam ``step``, and ``loss.item()`` every step.

    Times the steps after ``warmup`` (at least 1), as a whole and one by one;
    ``drop_last`` keeps every batch at ``batch``.
    """
    dataset = SliceDataset(cache) if model_config.dims == 2 else VolumeDataset(cache)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    torch.manual_seed(0)  # medaug's train() seeds the same way: the same initial weights
    model = build_model(model_config).to(device)
    # lr and betas as TrainConfig's defaults; they do not change the cost of a step
    optims = {
        phase: torch.optim.Adam(model.phase_parameters(phase), lr=2e-4, betas=(0.5, 0.999))
        for phase in model.phases
    }
    batches = _endless(loader)
    losses: list[float] = []
    ends: list[float] = []
    for _ in range(steps):
        data = next(batches)
        data = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}
        for phase in model.phases:
            optims[phase].zero_grad()
            loss = model.losses(data, phase)["loss"]
            loss.backward()
            optims[phase].step()
            losses.append(loss.item())  # the tutorials' habit: one host sync per phase
        ends.append(time.perf_counter())
    timed = steps - warmup
    return {
        "samples_per_s": batch * timed / (ends[-1] - ends[warmup - 1]),
        "timed_steps": timed,
        "step_s": step_times(ends, warmup),
        "last_loss": losses[-1],
    }


# ---------------------------------------------------------------------------------
# FLOPs


def synthetic_batch(cfg: ModelConfig, batch: int, device: str) -> dict[str, torch.Tensor]:
    """A batch shaped like the cache's: image in [-1, 1], class map as float."""
    image = torch.rand((batch, cfg.image_channels, *cfg.grid), device=device) * 2 - 1
    label = torch.randint(0, cfg.classes, (batch, 1, *cfg.grid), device=device).float()
    return {"image": image, "label": label}


def flops_per_sample(cfg: ModelConfig, device: str, batch: int = 2) -> float:
    """FLOPs of one training step per sample: forward and backward of every phase.

    Counted at a small batch on synthetic data (every op is per sample, so the count
    scales with the batch), under the autocast the loop uses on ``device``, with only
    the phase's parameters taking gradients, as the loop does.
    """
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    data = synthetic_batch(cfg, batch, device)
    on_cuda = torch.device(device).type == "cuda"
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=on_cuda)
    counter = FlopCounterMode(display=False)
    with counter:
        for phase in model.phases:
            mine = {id(p) for p in model.phase_parameters(phase)}
            for p in model.parameters():
                p.requires_grad_(id(p) in mine)
            with autocast:
                loss = model.losses(data, phase)["loss"]
            loss.backward()
    return counter.get_total_flops() / batch


# ---------------------------------------------------------------------------------
# 1. CPU throughput per variant


def bench_cpu(
    caches: dict[int, Path], variants: list[str], quick: bool, threads: int, tmp: Path
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    plan = CPU_STEPS["quick" if quick else "full"]
    rows, records = [], []
    for variant in variants:
        for dims, grid, batch in CPU_SHAPES:
            print(f"  {variant} {dims}D ...", file=sys.stderr, flush=True)
            steps, log_every = plan[dims]
            kwargs = {
                "preset": "cpu",
                "batch": batch,
                "steps": steps,
                "log_every": log_every,
                "device": "cpu",
                "tmp": str(tmp),
                "threads": threads,
            }
            here = str(Path(__file__).resolve().parent)
            run: dict[str, Any] = run_memory_probe(
                TRAIN_PROBE, caches[dims], variant, here, json.dumps(kwargs)
            )
            flops = flops_per_sample(ModelConfig.from_dict(run["model_config"]), "cpu")
            rate = run["samples_per_s"]
            over = run["peak_bytes"] - run["baseline_bytes"]
            rows.append(
                [
                    variant,
                    f"{dims}D {shape_name(grid)}",
                    str(batch),
                    f"{rate:.2f}",
                    f"{statistics.median(run['step_s']):.3f} s",
                    f"{run['peak_bytes'] / MIB:.0f} MiB",
                    f"{over / MIB:.0f} MiB",
                    f"{flops * batch / 1e9:.1f}",
                    f"{flops * rate / 1e9:.1f}",
                ]
            )
            records.append(
                {
                    "variant": variant,
                    "dims": dims,
                    "grid": list(grid),
                    "batch": batch,
                    "steps": steps,
                    "log_every": log_every,
                    "flops_per_sample": flops,
                    **run,
                }
            )
    return rows, records


# ---------------------------------------------------------------------------------
# 2. medaug's loop against a reference loop


def compare_loops(
    cache: Path,
    variant: str,
    preset: str,
    batch: int,
    steps: int,
    log_every: int,
    repeat: int,
    device: str,
    tmp: Path,
) -> dict[str, Any]:
    """Alternate medaug and reference runs (ABBA...) so drift hits both alike.

    On the CPU the rate is the batch over the median step time of all timed steps of
    all runs: bursts of other load on a shared machine then hardly move it. On a GPU,
    where only the log-step syncs time the medaug loop, it is the median of the runs'
    rates.
    """
    runs: dict[str, list[dict[str, Any]]] = {"medaug": [], "reference": []}
    model_config: ModelConfig | None = None
    for rep in range(repeat):
        for which in ("medaug", "reference") if rep % 2 == 0 else ("reference", "medaug"):
            if which == "medaug":
                run = medaug_run(
                    cache,
                    variant,
                    preset=preset,
                    batch=batch,
                    steps=steps,
                    log_every=log_every,
                    device=device,
                    tmp=tmp,
                )
                model_config = ModelConfig.from_dict(run.pop("model_config"))
                run.pop("stats")
            else:
                assert model_config is not None  # medaug runs first in the first round
                run = reference_run(cache, model_config, batch, steps, log_every, device)
            runs[which].append(run)

    def rate(which: str) -> float:
        if torch.device(device).type == "cpu":
            return batch / statistics.median(t for r in runs[which] for t in r["step_s"])
        return statistics.median(r["samples_per_s"] for r in runs[which])

    medaug_rate, reference_rate = rate("medaug"), rate("reference")
    return {
        "medaug_samples_per_s": medaug_rate,
        "reference_samples_per_s": reference_rate,
        "ratio": medaug_rate / reference_rate,
        "runs": runs,
        "timed_steps": steps - log_every,
        "warmup_steps": log_every,
        "repeat": repeat,
    }


def bench_reference(
    caches: dict[tuple[int, int], Path],
    variants: list[str],
    quick: bool,
    tmp: Path,
) -> tuple[list[Row], list[dict[str, Any]]]:
    repeat = 1 if quick else 2
    steps_plan = REFERENCE_STEPS["quick" if quick else "full"]
    plan = [("cpu", dims, grid, batch, "cpu") for dims, grid, batch in CPU_SHAPES]
    if torch.cuda.is_available():
        plan += [("cuda", d, g, b, p) for d, g, b, p in GPU_REFERENCE_SHAPES]
    rows, records = [], []
    for device, dims, grid, batch, preset in plan:
        cache = caches[(dims, grid[0])]
        batch = min(batch, cache_size(cache, dims))
        target = GPU_TARGET if device == "cuda" else CPU_TARGET
        for variant in variants:
            print(f"  {variant} {dims}D on {device} ...", file=sys.stderr, flush=True)
            steps, log_every = steps_plan[dims]
            r = compare_loops(cache, variant, preset, batch, steps, log_every, repeat, device, tmp)
            met = r["ratio"] >= target
            amp = "bf16 autocast, channels-last" if device == "cuda" else "fp32 (no autocast)"
            how = (
                "batch / median step time over all timed steps"
                if device == "cpu"
                else "median of the runs' rates"
            )
            rows.append(
                Row(
                    "2",
                    f"{variant}, {dims}D {shape_name(grid)}, batch {batch}, {preset} preset, "
                    f"{device}",
                    f"medaug {r['medaug_samples_per_s']:.2f} vs reference "
                    f"{r['reference_samples_per_s']:.2f} samples/s",
                    fmt_x(r["ratio"]),
                    f">= {target:g}x",
                    "yes" if met else "NO",
                    f"{repeat} alternating runs each, {r['timed_steps']} timed steps after "
                    f"{r['warmup_steps']} warm-up; {how}; medaug: {amp}, EMA, clipping",
                    values={
                        k: r[k]
                        for k in ("medaug_samples_per_s", "reference_samples_per_s", "ratio")
                    },
                )
            )
            records.append(
                {
                    "variant": variant,
                    "device": device,
                    "dims": dims,
                    "grid": list(grid),
                    "batch": batch,
                    "preset": preset,
                    "target": target,
                    "met": met,
                    **r,
                }
            )
    return rows, records


# ---------------------------------------------------------------------------------
# 3. GPU throughput, memory and share of the peak rate


def default_peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def gpu_plan(quick: bool) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Shapes and presets of section 3 (--quick: 2D 128^2 and 3D 64^3 at gpu-small)."""
    return (GPU_SHAPES[::2], GPU_PRESETS[:1]) if quick else (GPU_SHAPES, GPU_PRESETS)


def bench_gpu(
    caches: dict[tuple[int, int], Path],
    variants: list[str],
    quick: bool,
    peak_tflops: float | None,
    tmp: Path,
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    steps, log_every = GPU_STEPS["quick" if quick else "full"]
    shapes, presets = gpu_plan(quick)
    rows, records = [], []
    for variant in variants:
        for dims, grid, batch in shapes:
            cache = caches[(dims, grid[0])]
            batch = min(batch, cache_size(cache, dims))
            for preset in presets:
                print(f"  {variant} {dims}D {grid[0]} {preset} ...", file=sys.stderr, flush=True)
                data = f"{dims}D {shape_name(grid)}"
                gc.collect()  # the last row's model and optimizer state off the GPU first
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                try:
                    run = medaug_run(
                        cache,
                        variant,
                        preset=preset,
                        batch=batch,
                        steps=steps,
                        log_every=log_every,
                        device="cuda",
                        tmp=tmp,
                    )
                    flops = flops_per_sample(ModelConfig.from_dict(run["model_config"]), "cuda")
                except torch.cuda.OutOfMemoryError:
                    rows.append(
                        [variant, data, preset, str(batch), "out of memory", "", "", "", ""]
                    )
                    records.append(
                        {
                            "variant": variant,
                            "dims": dims,
                            "grid": list(grid),
                            "preset": preset,
                            "batch": batch,
                            "oom": True,
                        }
                    )
                    continue
                rate = run["samples_per_s"]
                achieved = flops * rate / 1e12
                share = f"{achieved / peak_tflops:.1%}" if peak_tflops else "unknown"
                rows.append(
                    [
                        variant,
                        data,
                        preset,
                        str(batch),
                        f"{rate:.1f}",
                        f"{run['gpu_mem_gib']:.2f} GiB",
                        f"{flops * batch / 1e12:.3f}",
                        f"{achieved:.1f}",
                        share,
                    ]
                )
                records.append(
                    {
                        "variant": variant,
                        "dims": dims,
                        "grid": list(grid),
                        "preset": preset,
                        "batch": batch,
                        "flops_per_sample": flops,
                        "achieved_tflops": achieved,
                        "peak_tflops": peak_tflops,
                        **run,
                    }
                )
    return rows, records


# ---------------------------------------------------------------------------------
# Output


CPU_HEADER = "variant|data|batch|samples/s|median s/step|peak RSS|over imports|GFLOP/step|GFLOP/s"
GPU_HEADER = "variant|data|preset|batch|samples/s|peak GPU memory|TFLOP/step|TFLOP/s|of peak bf16"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a few steps, vae and gan, 4 patients"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"data, caches and bench_train.json (default: {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--variants", help="comma-separated variants (default: all six; --quick: vae,gan)"
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="the GPU's dense bf16 peak in TFLOP/s (default: from the device name for "
        "H100, H200 and A100, else the share of peak is reported as unknown)",
    )
    args = parser.parse_args(argv)
    known = variant_names()
    default = "vae,gan" if args.quick else ",".join(known)
    args.variants = [v.strip() for v in (args.variants or default).split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in known]
    if unknown or not args.variants:
        parser.error(f"--variants: choose from {', '.join(known)} (got {unknown or 'none'})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = usable_cores()
    # torch would otherwise pick its own count; the subprocesses get the same number
    torch.set_num_threads(threads)
    workdir = make_workdir(args.workdir)
    caches_dir = workdir / "caches"
    caches_dir.mkdir(exist_ok=True)
    facts = machine_facts()
    cuda = torch.cuda.is_available()

    print(f"Preparing data under {workdir / 'data'} ...", file=sys.stderr, flush=True)
    cohort = prepare_cohort(workdir, args.quick)
    caches = {(d, g[0]): prepare_cache(cohort, caches_dir, d, g) for d, g, _ in CPU_SHAPES}
    if cuda:
        for dims, grid, _ in gpu_plan(args.quick)[0]:
            caches[(dims, grid[0])] = prepare_cache(cohort, caches_dir, dims, grid)

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench_train-") as tmp_name:
        tmp = Path(tmp_name)
        print("Running CPU throughput ...", file=sys.stderr, flush=True)
        cpu_caches = {dims: caches[(dims, grid[0])] for dims, grid, _ in CPU_SHAPES}
        cpu_rows, report["1"] = bench_cpu(cpu_caches, args.variants, args.quick, threads, tmp)
        print("Running medaug loop vs reference loop ...", file=sys.stderr, flush=True)
        ref_rows, report["2"] = bench_reference(caches, args.variants, args.quick, tmp)
        gpu_rows: list[list[str]] = []
        peak = args.peak_tflops
        if cuda:
            peak = peak or default_peak_tflops(torch.cuda.get_device_name())
            print("Running GPU throughput ...", file=sys.stderr, flush=True)
            gpu_rows, report["3"] = bench_gpu(caches, args.variants, args.quick, peak, tmp)
        else:
            report["3"] = {"skipped": "no CUDA device"}
    total_s = time.perf_counter() - started

    repeat = 1 if args.quick else 2
    print_machine(facts, args.quick, repeat, total_s)
    mode = "quick" if args.quick else "full"
    timed = "; ".join(f"{d}D: {s - e} of {s} steps" for d, (s, e) in CPU_STEPS[mode].items())
    print()
    print("### 1. CPU throughput per variant (cpu preset)")
    print()
    print(table(CPU_HEADER.split("|"), cpu_rows))
    print()
    print(
        f"medaug.train.train on the phantom caches ({cohort.name}), {threads} torch threads, "
        f"device cpu (no autocast). samples/s over the steps after the first log interval "
        f"({timed}); median s/step: the median wall time of those steps (between on_step "
        "calls), which bursts of other load move less. Peak RSS: VmHWM of a fresh process "
        "per row; 'over imports' subtracts the high-water mark after importing torch, MONAI "
        "and medaug. GFLOP/step: one training step (forward + backward of every phase) by "
        "FlopCounterMode; GFLOP/s = GFLOP/step x samples/s / batch."
    )
    print()
    print("### 2. medaug's training loop vs a plain reference loop")
    print()
    print(markdown_table(ref_rows))
    print()
    print(
        "Same networks and initial weights (build_model, seed 0). Reference: fp32, "
        "DataLoader(shuffle=True, drop_last=True), one Adam per phase, loss.item() every "
        "phase, no EMA, no clipping. Targets: CPU >= 0.95x (not slower, within noise); "
        "GPU >= 1.5x."
    )
    print()
    print("### 3. GPU throughput, memory and share of peak bf16")
    print()
    if cuda:
        print(table(GPU_HEADER.split("|"), gpu_rows))
        print()
        print(
            f"medaug.train.train on phantom caches ({cohort.name}; real data through the "
            "loop's DataLoader, num_workers=0), bf16 autocast, channels-last. Peak GPU "
            "memory: torch.cuda.max_memory_allocated at the last log step. TFLOP/step: "
            "FlopCounterMode over one step on a synthetic batch; peak bf16 "
            + (f"{peak:g} TFLOP/s" if peak else "unknown (pass --peak-tflops)")
            + "."
        )
    else:
        print("Skipped: no CUDA device (section 1's GFLOP columns use the same FLOP counter).")

    doc = {
        "machine": facts,
        "config": {
            "quick": args.quick,
            "variants": args.variants,
            "cohort": str(cohort),
            "caches": {f"{d}d_{g}": str(p) for (d, g), p in caches.items()},
            "torch_threads": threads,
            "peak_tflops": peak,
        },
        "total_s": total_s,
        "rows": [asdict(r) for r in ref_rows],
        "sections": report,
    }
    write_report(workdir / "bench_train.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
