"""Synthesis benchmarks for medaug: how fast ``synthesize`` writes cases, and how good
each variant's cases are after the same training budget.

Prints the machine facts and one Markdown table per section, and writes the same
results as JSON to ``<workdir>/bench_synth.json`` (or ``--json``). Everything is made
under ``--workdir``: the phantom DICOM cohort (8 patients, seed 0) in ``phantom/``,
the caches in ``caches/``, training runs, synthesis folders. Without ``--workdir`` a
temporary folder is used and deleted at the end.

Sections:

1. CPU throughput of ``synthesize(out, n, model=ckpt, device="cpu")``: a 2D 64^2 and a
   3D 32^3 vaegan at the ``cpu`` preset (a few training steps: the speed of sampling
   does not depend on the weights), NIfTI output; and the 2D model with
   ``fmt="both", stack=True`` (DICOM series + NIfTI of 32-slice volumes) at a smaller
   n. Next to the whole call, the same cases are sampled alone
   (``Synthesizer.generate`` on the same plans and batches) and written alone (the
   writer ``synthesize`` uses, on a thread pool of the same size), which gives the
   share of writing. Target (the issue): 500 2D cases in under 30 s on 2 cores.
2. GPU only (without CUDA the section prints one line saying it was skipped): 3D
   128^3 volumes at the ``gpu-small`` preset, sampling alone, writing alone and
   ``synthesize`` (sampling overlapped with writing), with 4, 8 and 16 writer threads:
   is writing the bottleneck?
3. Quality per variant at a fixed budget: each variant trained ``--steps`` steps
   (2D 64^2, ``cpu`` preset, batch 16, seed 0), ``--n`` prior cases synthesized and
   measured by ``evaluate`` against the phantom cohort: MMD on pixels and on features,
   MS-SSIM diversity, memorization, empty labels, reconstruction error. Each
   variant's result is kept under the workdir and reused by a later run with the same
   settings (``--fresh`` redoes them).

Usage::

    python benchmarks/bench_synth.py                # everything, ~16 min on 2 idle cores
    python benchmarks/bench_synth.py --sections 1   # throughput only, ~3 min
    python benchmarks/bench_synth.py --sections 3 --variants vae,gan --steps 100 --n 50
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from common import machine_facts, make_workdir, print_machine, shape_name, table, write_report

from medaug.data.phantom import write_cohort
from medaug.evaluate import evaluate
from medaug.models import variant_names
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.synth import Synthesizer, synthesize
from medaug.synth.output import CaseWriter
from medaug.synth.run import DEFAULT_SLICES
from medaug.train import TrainConfig, train

#: The issue's target for section 1: 500 2D cases in under this many seconds (2 cores).
TARGET_2D_S = 30.0
TARGET_2D_CASES = 500
#: The 3D grid of section 2, and its isotropic spacing: the phantom is 120 mm long,
#: which covers 128 slices of 1.5 mm well enough (``min_coverage``), not of 2.5 mm.
GPU_GRID = (128, 128, 128)
GPU_SPACING_MM = 1.5
GPU_WRITERS = (4, 8, 16)


def mib(path: Path) -> float:
    """Size of every file under ``path`` (MiB)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / (1 << 20)


# ---------------------------------------------------------------------------------
# Data and models


def prepare_data(workdir: Path) -> tuple[Path, Path, Path]:
    """The phantom cohort and its 2D 64^2 and 3D 32^3 caches (reused when there)."""
    cohort = workdir / "phantom"
    write_cohort(cohort, patients=8, seed=0, fmt="dicom")  # keeps patients on disk
    cache_2d = workdir / "caches" / "2d_64"
    cache_3d = workdir / "caches" / "3d_32"
    # the default 20% of patients held out: evaluate's memorization check needs them
    preprocess(cohort, cache_2d, PreprocessConfig(dims=2, grid_2d=(64, 64)), seed=0)
    preprocess(cohort, cache_3d, PreprocessConfig(dims=3, grid_3d=(32, 32, 32)), seed=0)
    return cohort, cache_2d, cache_3d


def quick_model(cache: Path, runs: Path, preset: str, device: str, batch: int = 4) -> Path:
    """A vaegan checkpoint after 2 steps: enough for throughput, which ignores weights."""
    config = TrainConfig(
        steps=2,
        batch_size=batch,
        log_every=1,
        sample_every=2,
        checkpoint_every=2,
        n_samples=2,
        device=device,
    )
    result = train(cache, runs, model="vaegan", preset=preset, config=config)
    assert result.checkpoint is not None
    return result.checkpoint


# ---------------------------------------------------------------------------------
# 1 and 2. Throughput: synthesize, sampling alone, writing alone


def time_synthesis(
    checkpoint: Path,
    n: int,
    scratch: Path,
    *,
    fmt: str = "nifti",
    stack: bool = False,
    device: str,
    repeat: int,
    batch_size: int = 16,
    writers: int | None = None,
) -> dict[str, Any]:
    """Time ``synthesize`` of ``n`` prior cases, and its two halves on their own.

    Each round (``repeat`` of them, after a small warm-up call) runs the following;
    every other round puts the whole call last:

    - ``synthesize`` into an empty folder: the whole call, and its own ``seconds``
      (the sample-and-write loop, without loading the checkpoint, the manifest and
      the preview);
    - sampling alone: ``Synthesizer.generate`` on the same plans, in the same chunks
      and decoder batches as ``synthesize``;
    - writing alone: the cases from the step before written by ``synthesize``'s own
      case writer (NIfTI/DICOM files and the case record) on a thread pool of the
      same size.

    Returns the medians and every run's times.
    """
    threads = writers or min(4, os.cpu_count() or 1)  # synthesize's default pool
    out = scratch / "synth"
    kw: dict[str, Any] = dict(
        model=checkpoint, fmt=fmt, stack=stack, device=device, batch_size=batch_size
    )
    shutil.rmtree(scratch, ignore_errors=True)
    synthesize(out, min(n, 4), writers=threads, **kw)  # warm-up: imports, first calls
    shutil.rmtree(out)

    synth = Synthesizer(checkpoint, device=device)
    slices = DEFAULT_SLICES  # what synthesize stacks without real cases
    per_call = max(1, batch_size // slices) if stack and synth.dims == 2 else batch_size
    plans = [synth.plan(i, mode="prior", seed=0, stack=stack, slices=slices) for i in range(n)]

    runs: dict[str, list[float]] = {"call_s": [], "loop_s": [], "sample_s": [], "write_s": []}
    facts: dict[str, Any] = {}

    def whole_call() -> None:
        gc.collect()
        t0 = time.perf_counter()
        result = synthesize(out, n, writers=threads, **kw)
        runs["call_s"].append(time.perf_counter() - t0)
        runs["loop_s"].append(result.seconds)
        facts["written"] = result.written
        facts["shape"] = result.manifest["cases"][0]["shape"]
        facts["mib"] = sum(
            mib(out / d) for d in ("images", "labels", "dicom") if (out / d).exists()
        )
        shutil.rmtree(out)

    def halves() -> None:
        gc.collect()
        t0 = time.perf_counter()
        cases = []
        for start in range(0, n, per_call):
            cases += synth.generate(plans[start : start + per_call], batch_size)
        runs["sample_s"].append(time.perf_counter() - t0)
        writer = CaseWriter(scratch / "write", fmt, False, synth.classes, synth.sha256)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads, "bench-write") as pool:
            list(pool.map(writer.write, cases))
        runs["write_s"].append(time.perf_counter() - t0)
        del cases
        shutil.rmtree(scratch / "write")

    for rep in range(repeat):  # alternate the order, so that drift in load hits both
        for step in (whole_call, halves) if rep % 2 == 0 else (halves, whole_call):
            step()
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "n": n,
        "written": facts["written"],
        "case_shape": list(facts["shape"]),
        "format": fmt,
        "stack": stack,
        "writers": threads,
        "batch_size": batch_size,
        "device": device,
        "mib_per_case": facts["mib"] / max(facts["written"], 1),
        "median": med,
        "runs": runs,
        "write_share": med["write_s"] / (med["sample_s"] + med["write_s"]),
        "overlap": (med["sample_s"] + med["write_s"]) / med["loop_s"],
    }


def throughput_row(label: str, r: dict[str, Any]) -> list[str]:
    med = r["median"]
    fmt = r["format"] + (" (stacked)" if r["stack"] else "")
    return [
        label,
        shape_name(tuple(r["case_shape"])),
        fmt,
        str(r["writers"]),
        str(r["written"]),
        f"{med['call_s']:.2f}",
        f"{med['loop_s']:.2f}",
        f"{r['written'] / med['call_s']:.1f}",
        f"{r['written'] / med['sample_s']:.1f}",
        f"{r['written'] / med['write_s']:.1f}",
        f"{r['write_share']:.0%}",
        f"{r['overlap']:.2f}x",
        f"{r['mib_per_case']:.3f}",
    ]


THROUGHPUT_HEADER = [
    "model",
    "case",
    "format",
    "writers",
    "cases",
    "synthesize s",
    "loop s",
    "cases/s",
    "sample alone cases/s",
    "write alone cases/s",
    "write share",
    "overlap",
    "MiB/case",
]


def bench_cpu(
    cache_2d: Path, cache_3d: Path, workdir: Path, args: argparse.Namespace
) -> tuple[list[list[str]], dict[str, Any]]:
    runs = workdir / "throughput" / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    print("  training 2-step vaegan models (2D, 3D) ...", file=sys.stderr, flush=True)
    ckpt_2d = quick_model(cache_2d, runs, "cpu", "cpu")
    ckpt_3d = quick_model(cache_3d, runs, "cpu", "cpu")
    plan = [
        ("vaegan 2D", ckpt_2d, args.cases, "nifti", False),
        ("vaegan 3D", ckpt_3d, args.cases, "nifti", False),
        ("vaegan 2D", ckpt_2d, args.dicom_cases, "both", True),
    ]
    rows, records = [], {}
    for label, ckpt, n, fmt, stack in plan:
        key = f"{label} {fmt}{' stack' if stack else ''}"
        print(f"  {key}, {n} cases ...", file=sys.stderr, flush=True)
        r = time_synthesis(
            ckpt,
            n,
            workdir / "throughput" / "scratch",
            fmt=fmt,
            stack=stack,
            device="cpu",
            repeat=args.repeat,
            batch_size=args.batch_size,
        )
        rows.append(throughput_row(label, r))
        records[key] = r
    return rows, records


def bench_gpu(
    cohort: Path,
    workdir: Path,
    args: argparse.Namespace,
    *,
    device: str = "cuda",
    grid: tuple[int, int, int] = GPU_GRID,
    writers: tuple[int, ...] = GPU_WRITERS,
) -> tuple[list[list[str]], dict[str, Any]]:
    """Section 2 (``device``, ``grid`` and ``writers`` are there to try it on a CPU)."""
    spacing = (GPU_SPACING_MM,) * 3
    cache = workdir / "caches" / f"3d_{grid[0]}_iso{GPU_SPACING_MM:g}"
    config = PreprocessConfig(dims=3, grid_3d=grid, spacing_mm=spacing)
    preprocess(cohort, cache, config, val_fraction=0.0)
    runs = workdir / "throughput" / "gpu-runs"
    shutil.rmtree(runs, ignore_errors=True)
    print(f"  training a 1-step gpu-small vaegan at {shape_name(grid)} ...", file=sys.stderr)
    ckpt = quick_model(cache, runs, "gpu-small", device, batch=2)
    rows, records = [], {}
    for threads in writers:
        print(f"  {args.gpu_cases} volumes, {threads} writers ...", file=sys.stderr, flush=True)
        r = time_synthesis(
            ckpt,
            args.gpu_cases,
            workdir / "throughput" / "gpu-scratch",
            device=device,
            repeat=args.repeat,
            batch_size=args.batch_size,
            writers=threads,
        )
        rows.append(throughput_row("vaegan 3D gpu-small", r))
        records[f"writers {threads}"] = r
    return rows, records


# ---------------------------------------------------------------------------------
# 3. Quality per variant at a fixed budget


def variant_result(
    variant: str, cohort: Path, cache: Path, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train, synthesize and evaluate one variant; kept in ``folder/result.json``."""
    key = f"{variant}-steps{args.steps}-n{args.n}-b{args.train_batch}-{args.device}"
    folder = workdir / "variants" / key
    kept = folder / "result.json"
    if kept.exists() and not args.fresh:
        print(f"  {variant}: reusing {kept}", file=sys.stderr, flush=True)
        return {**json.loads(kept.read_text()), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.train_batch,
        seed=0,
        sample_every=args.steps,
        checkpoint_every=args.steps,
        device=args.device,
    )
    print(f"  {variant}: training {args.steps} steps ...", file=sys.stderr, flush=True)
    trained = train(cache, folder / "runs", model=variant, preset="cpu", config=config)
    assert trained.checkpoint is not None
    print(f"  {variant}: synthesizing {args.n} cases ...", file=sys.stderr, flush=True)
    synth = synthesize(
        folder / "synth", args.n, model=trained.checkpoint, seed=0, device=args.device
    )
    print(f"  {variant}: evaluating ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    doc = evaluate(cohort, folder / "synth", model=trained.checkpoint, seed=0, device=args.device)
    result = {
        "variant": variant,
        "steps": args.steps,
        "n": args.n,
        "train_s": trained.seconds,
        "synth_s": synth.seconds,
        "evaluate_s": time.perf_counter() - t0,
        "last_stats": trained.last,
        "checkpoint": str(trained.checkpoint),
        "evaluation": doc,
    }
    kept.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def quality_row(r: dict[str, Any]) -> list[str]:
    doc = r["evaluation"]
    mem = doc["memorization"]
    labels = doc["labels"]
    model = doc["model"]
    recon = model.get("reconstruction_l1_hu")
    return [
        r["variant"],
        f"{doc['mmd_pixels']:.4f}",
        f"{doc['mmd_features']:.4f}",
        f"{doc['diversity_ms_ssim']['synthetic']:.3f}",
        f"{doc['diversity_ms_ssim']['real']:.3f}",
        f"{mem['flagged_fraction']:.1%}" if "flagged_fraction" in mem else "n/a",
        f"{mem['synthetic_nn_median'] / mem['heldout_nn_median']:.2f}"
        if "heldout_nn_median" in mem
        else "n/a",
        f"{labels['synthetic']['empty_fraction']:.1%}",
        f"{labels['real']['empty_fraction']:.1%}",
        f"{recon:.1f}" if recon is not None else "n/a",
        f"{r['train_s']:.0f}" + (" (kept)" if r.get("reused") else ""),
        f"{r['evaluate_s']:.0f}",
    ]


QUALITY_HEADER = [
    "variant",
    "MMD² pixels",
    "MMD² features",
    "MS-SSIM diversity synthetic",
    "MS-SSIM diversity real",
    "memorization flagged",
    "NN distance synthetic / held-out",
    "empty labels synthetic",
    "empty labels real",
    "recon L1 (HU)",
    "train s",
    "evaluate s",
]


def bench_variants(
    cohort: Path, cache: Path, workdir: Path, args: argparse.Namespace
) -> tuple[list[list[str]], dict[str, Any]]:
    rows, records = [], {}
    for variant in args.variants:
        r = variant_result(variant, cohort, cache, workdir, args)
        rows.append(quality_row(r))
        records[variant] = r
    return rows, records


# ---------------------------------------------------------------------------------
# Output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="1,2,3", help="which sections (default 1,2,3)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep data, models, synthetic cases and bench_synth.json here "
        "(default: a temporary folder, deleted after)",
    )
    parser.add_argument(
        "--json", type=Path, help="JSON report (default: <workdir>/bench_synth.json)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, sections 1-2 (3)")
    parser.add_argument("--cases", type=int, default=500, help="NIfTI cases, section 1 (500)")
    parser.add_argument(
        "--dicom-cases", type=int, default=50, help="stacked DICOM cases, section 1 (50)"
    )
    parser.add_argument("--gpu-cases", type=int, default=200, help="128^3 volumes, section 2")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="synthesize's latents per decoder call (16)"
    )
    parser.add_argument(
        "--variants", help="comma-separated variants for section 3 (default: all six)"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps, section 3")
    parser.add_argument("--n", type=int, default=200, help="synthetic cases, section 3 (200)")
    parser.add_argument("--train-batch", type=int, default=16, help="training batch, section 3")
    parser.add_argument(
        "--device", default="cpu", help="training/sampling device of section 3 (default cpu)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="redo section 3 results kept in the workdir"
    )
    args = parser.parse_args(argv)
    raw = args.sections
    try:
        args.sections = sorted({int(s) for s in raw.split(",") if s.strip()})
    except ValueError:
        args.sections = []
    if not args.sections or not set(args.sections) <= {1, 2, 3}:
        parser.error(f"--sections: comma-separated numbers 1-3, got {raw!r}")
    known = variant_names()
    args.variants = [v.strip() for v in (args.variants or ",".join(known)).split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in known]
    if unknown or not args.variants:
        parser.error(f"--variants: choose from {', '.join(known)} (got {unknown or 'none'})")
    for name in ("repeat", "cases", "dicom_cases", "gpu_cases", "batch_size", "steps", "n"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def print_section_1(rows: list[list[str]], records: dict[str, Any], args) -> None:
    print()
    print("### 1. CPU synthesis throughput (cpu preset, prior mode)")
    print()
    print(table(THROUGHPUT_HEADER, rows))
    print()
    print(
        f"synthesize(out, n, model=ckpt, device='cpu', batch_size={args.batch_size}) into an "
        f"empty folder, median of {args.repeat} rounds after a 4-case warm-up; "
        f"{torch.get_num_threads()} torch threads. 'synthesize s': the whole call (checkpoint "
        "load, manifest, datalist, preview included); 'loop s': its SynthResult.seconds "
        "(sampling and writing only); cases/s = cases / synthesize s. 'sample alone': "
        "Synthesizer.generate on the same plans and batches; 'write alone': synthesize's case "
        "writer (int16 image + uint8 label NIfTI, DICOM series, case record) on a pool of "
        "the same writers. 'write share' = write alone / (sample alone + write alone); "
        "'overlap' = (sample alone + write alone) / loop s, 1x means no overlap. Stacked "
        f"cases have {DEFAULT_SLICES} slices (no real cases given)."
    )
    key = "vaegan 2D nifti"
    if key in records:
        r = records[key]
        seconds = r["median"]["call_s"] * TARGET_2D_CASES / r["written"]
        met = "met" if seconds < TARGET_2D_S else "NOT met"
        print()
        print(
            f"Target: {TARGET_2D_CASES} 2D cases in under {TARGET_2D_S:g} s on 2 cores: "
            f"{seconds:.1f} s ({met}"
            + ("" if r["written"] == TARGET_2D_CASES else ", scaled")
            + f"; {os.cpu_count()} cores)."
        )


def print_section_2(rows: list[list[str]] | None, args) -> None:
    print()
    print("### 2. GPU synthesis throughput, 3D 128^3 (gpu-small preset)")
    print()
    if rows is None:
        print("Skipped: no CUDA device (torch.cuda.is_available() is False).")
        return
    print(table(THROUGHPUT_HEADER, rows))
    print()
    print(
        f"A vaegan trained 1 step on a {shape_name(GPU_GRID)} cache of the phantom "
        f"({GPU_SPACING_MM:g} mm isotropic), synthesize(..., device='cuda', "
        f"batch_size={args.batch_size}, writers=N); bf16 autocast in the decoder. Columns "
        "as in section 1: if 'cases/s' sits at 'write alone' and well below 'sample alone', "
        "writing (gzip of the NIfTI files on the CPU) is the bottleneck."
    )


def print_section_3(rows: list[list[str]], records: dict[str, Any], args) -> None:
    print()
    print(f"### 3. Memorization and diversity per variant after {args.steps} steps")
    print()
    print(table(QUALITY_HEADER, rows))
    print()
    first = next(iter(records.values()))["evaluation"]
    items = first["items"]
    print(
        f"Each variant: train(cache 2D 64^2, preset 'cpu', steps {args.steps}, batch "
        f"{args.train_batch}, seed 0, device {args.device}), synthesize {args.n} prior cases "
        f"(seed 0, EMA weights), evaluate(phantom, synth, model=checkpoint, seed 0). Items: "
        f"{items['synthetic']} synthetic and {items['real']} real slices ({first['split']}). "
        "MMD²: unbiased, Gaussian kernel, median bandwidth, on 32^2 block-averaged pixels "
        "and on standardised features of a segmentation encoder trained 200 steps; 0 = same "
        "distribution. MS-SSIM diversity: mean over 200 random pairs of different slices, "
        "lower = more varied; the real slices are the reference (far below them = varied "
        "in ways real slices are not, far above = mode collapse). Memorization: share of "
        "synthetic slices nearer (in feature space) to a training slice than the 5th "
        "percentile of held-out real slices are; samples from the data distribution score "
        "about 5%, copies 100%. NN distance: median feature distance of synthetic slices to "
        "their nearest training slice over that of held-out real slices (1 = as close as "
        "unseen real data; well above 1 = far from the data, so 0% flagged says little). "
        "Recon L1: held-out slices through encoder and decoder (n/a without an encoder). "
        "train s: TrainResult.seconds; 'kept' = from an earlier run in the same workdir. "
        "Only the time columns depend on machine load."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    facts = machine_facts(
        {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if cuda else "none",
        }
    )
    report: dict[str, Any] = {}
    tables: dict[int, list[list[str]]] = {}
    # without --workdir everything goes to a temporary folder, removed at the end
    with tempfile.TemporaryDirectory(prefix="bench_synth-") as tmp:
        workdir = make_workdir(args.workdir or Path(tmp))
        print(f"Preparing data under {workdir} ...", file=sys.stderr, flush=True)
        cohort, cache_2d, cache_3d = prepare_data(workdir)
        if 1 in args.sections:
            print("1. CPU throughput ...", file=sys.stderr, flush=True)
            tables[1], report["1"] = bench_cpu(cache_2d, cache_3d, workdir, args)
        if 2 in args.sections and cuda:
            print("2. GPU throughput ...", file=sys.stderr, flush=True)
            tables[2], report["2"] = bench_gpu(cohort, workdir, args)
        elif 2 in args.sections:
            report["2"] = {"skipped": "no CUDA device"}
        if 3 in args.sections:
            print("3. Quality per variant ...", file=sys.stderr, flush=True)
            tables[3], report["3"] = bench_variants(cohort, cache_2d, workdir, args)
        total_s = time.perf_counter() - started

        print_machine(facts, quick=False, repeat=args.repeat, total_s=total_s)
        if 1 in args.sections:
            print_section_1(tables[1], report["1"], args)
        if 2 in args.sections:
            print_section_2(tables.get(2), args)
        if 3 in args.sections:
            print_section_3(tables[3], report["3"], args)
        doc = {"machine": facts, "args": vars(args), "total_s": total_s, "sections": report}
        json_path = args.json or (workdir / "bench_synth.json" if args.workdir else None)
        if json_path:
            write_report(json_path, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
