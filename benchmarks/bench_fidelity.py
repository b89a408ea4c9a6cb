"""Label fidelity of each generator variant, beside the real reference and the cheap
baseline: does a synthetic image show what its label says?

Prints the machine facts and a Markdown table, and writes the results as JSON to
``<workdir>/bench_fidelity.json`` (or ``--json``). Everything is made under
``--workdir`` (a temporary folder, deleted at the end, without it): the phantom
DICOM cohort (8 patients, seed 0), its 2D 64^2 cache with 6 training and 2 held-out
patients, one segmenter, and per variant a training run and a synthesis folder.

The one segmenter (medaug's U-Net, ``--segmenter-steps`` steps, seed 0) is trained
on the 6 training patients, the same cases every generator trains on, and judges
every row:

- each variant (vae, gan, vaegan, aae, avb, gvae) as it is today: unconditional,
  2D 64^2, ``cpu`` preset, ``--steps`` steps (batch 16, seed 0), ``--n`` prior cases;
  label fidelity = the segmenter's Dice on each synthetic slice against that
  slice's own label, over slices whose label holds the pancreas;
- ``labels2image``: ``--n`` slices painted from the training patients' real labels
  (:mod:`medaug.segment.labels2image`). Its labels are the real labels, so its
  fidelity is high by construction: the painted organ sits exactly where the label
  says; only its contrast is random;
- real held-out: the same segmenter on the 2 held-out patients' slices, the
  fidelity a perfect generator would reach.

Results per variant are kept in the workdir and reused by a later run with the same
settings (``--fresh`` redoes them).

A row may also name a mask-conditioned generator, ``VARIANT:mask[:LAYOUT[:AUGMENT]]``
(``vaegan:mask``, ``gan:mask:target:none``), synthesized from ``--masks`` (real
masks under random transforms, or a learned mask generator); ``--train-patients``
trains the generators on the first N training patients only (the segmenter keeps
all of them), and ``--grid`` / ``--spacing`` set the cache (the issue's figures:
``--grid 128 --spacing 1.5``, the whole pancreas in view).

Usage::

    python benchmarks/bench_fidelity.py                     # full budget, ~1.5 h on 2 cores
    python benchmarks/bench_fidelity.py --steps 20 --n 20 --segmenter-steps 20   # smoke run
    python benchmarks/bench_fidelity.py --variants vaegan,aae --workdir /tmp/fid
    python benchmarks/bench_fidelity.py --grid 128 --spacing 1.5 --train-patients 2 \
        --variants vaegan,vaegan:mask --steps 480 --workdir /tmp/cond
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import machine_facts, make_workdir, print_machine, table, write_report

from medaug.data import Cache, load_split
from medaug.data.phantom import write_cohort
from medaug.data.synthfolder import SynthFolder
from medaug.evaluate.fidelity import STEPS
from medaug.evaluate.fidelity import train as train_segmenter
from medaug.models import variant_names
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.segment import fidelity, labels2image
from medaug.synth import synthesize
from medaug.train import TrainConfig, train

HEADER = [
    "generator",
    "label fidelity (Dice)",
    "median",
    "below 0.5",
    "HD95 mm",
    "pairs with a label",
    "empty labels",
    "false positive on empty labels",
    "segmenter on held-out real (reference)",
]


def prepare(workdir: Path, args) -> tuple[Path, Cache, list[str], list[str]]:
    """The cohort and its 2D cache, 6 training / 2 held-out patients (reused)."""
    cohort = workdir / "phantom"
    write_cohort(cohort, patients=8, seed=0, fmt="dicom")
    config = PreprocessConfig(
        grid_2d=(args.grid, args.grid), spacing_mm=(args.spacing, args.spacing, 2.5)
    )
    name = "cache" if (args.grid, args.spacing) == (64, 1.5) else f"cache{args.grid}"
    out = preprocess(cohort, workdir / name, config, val_fraction=0.25, seed=0).out
    train_ids, held_ids = load_split(out)
    return cohort, Cache(out), train_ids, held_ids


def reference(
    cache: Cache, train_ids: list[str], held_ids: list[str], workdir: Path, args
) -> tuple[fidelity.Segmenter, dict[str, Any]]:
    """The segmenter (trained once, reused) and its Dice on the held-out real slices."""
    grid = "" if args.grid == 64 else f"-grid{args.grid}"
    folder = workdir / f"segmenter-steps{args.segmenter_steps}{grid}"
    seg = train_segmenter(cache, train_ids, folder, steps=args.segmenter_steps, seed=0,
                          device=args.device, note=_note)  # fmt: skip
    images, labels, names = fidelity.real_items(cache, held_ids)
    return seg, fidelity.score_pairs(seg, images, labels, names, cache.config)[1]


def spec_overrides(spec: str) -> dict[str, Any]:
    """``vaegan:mask:target+body:translation+cutout:kl_weight=8`` -> ModelConfig overrides."""
    _, *rest = spec.split(":")
    if not rest:
        return {}
    doc: dict[str, Any] = {"condition": rest[0]}
    if len(rest) > 1:
        doc["layout"] = rest[1]
    if len(rest) > 2:  # ops joined by '+' (',' separates the rows)
        doc["augment"] = "" if rest[2] == "none" else rest[2].replace("+", ",")
    for extra in rest[3:]:  # NAME=VALUE: any other ModelConfig field (kl_weight=8)
        name, _, value = extra.partition("=")
        doc[name] = json.loads(value)
    return doc


def variant_result(
    spec: str, cache: Cache, train_ids: list[str], seg, workdir: Path, args
) -> dict[str, Any]:
    """Train, synthesize and score one generator; kept in ``folder/result.json``."""
    variant, overrides = spec.split(":")[0], spec_overrides(spec)
    conditional = overrides.get("condition") == "mask"
    cases = train_ids[: args.train_patients] if args.train_patients else train_ids
    key = (
        f"{spec.replace(':', '_').replace(',', '-')}-steps{args.steps}-n{args.n}"
        f"-seg{args.segmenter_steps}-{args.device}-grid{args.grid}-p{len(cases)}"
        + (f"-{args.masks}" if conditional else "")
    )
    folder = workdir / "variants" / key
    kept = folder / "result.json"
    if kept.exists() and not args.fresh:
        _note(f"{variant}: reusing {kept}")
        return {**json.loads(kept.read_text()), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    config = TrainConfig(steps=args.steps, batch_size=16, seed=0, sample_every=args.steps,
                         checkpoint_every=args.steps, device=args.device)  # fmt: skip
    _note(f"{spec}: training {args.steps} steps on {len(cases)} patients")
    held = [c for c in cache.case_ids if c not in cases]
    trained = train(cache.root, folder / "runs", model=variant, preset="cpu", config=config,
                    model_overrides=overrides, cases=(cases, held))  # fmt: skip
    assert trained.checkpoint is not None
    _note(f"{spec}: synthesizing {args.n} prior cases")
    extra: dict[str, Any] = {}
    if conditional:  # layouts from the generator's own training cases' masks
        extra = {"input": cache.root, "masks": args.masks, "mask_steps": args.steps}
    synth = synthesize(folder / "synth", args.n, model=trained.checkpoint, seed=0,
                       device=args.device, **extra)  # fmt: skip
    images, labels, names = fidelity.synthetic_items(SynthFolder.open(synth.out), cache.config)
    rows, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
    result = {"generator": spec, "train_s": trained.seconds, "summary": summary, "pairs": rows,
              "patients": len(cases), "masks": args.masks if conditional else None}  # fmt: skip
    kept.write_text(json.dumps(result, indent=2) + "\n")
    return result


def baseline(cache: Cache, train_ids: list[str], seg, args) -> dict[str, Any]:
    images, labels, names = labels2image.items(cache, train_ids, args.n, seed=0)
    rows, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
    return {"generator": "labels2image", "summary": summary, "pairs": rows}


def row(name: str, s: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    def f(v: Any, spec: str = ".3f") -> str:
        return "n/a" if v is None else format(v, spec)

    return [
        name,
        f(s["dice"]),
        f(s["dice_median"]),
        f(s["below_threshold"], ".0%"),
        f(s["hd95_mm"], ".1f"),
        f"{s['with_target']} of {s['pairs']}",
        f(s["empty_fraction"], ".0%"),
        "–"
        if not s["empty_label"]
        else f"{f(s['empty_with_false_positive'], '.0%')} of them, "
        f"mean {f(s['false_positive_mm_mean'], '.0f')} mm²",
        f(ref["dice"]),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep everything here (default: a temporary folder, deleted after)",
    )
    parser.add_argument(
        "--json", type=Path, help="JSON report (default <workdir>/bench_fidelity.json)"
    )
    parser.add_argument(
        "--variants",
        help="comma-separated rows: VARIANT or VARIANT:mask[:LAYOUT[:AUGMENT]] "
        "(default: the six, unconditional); separate an AUGMENT's ops with '+'",
    )
    parser.add_argument("--grid", type=int, default=64, help="2D grid side (64)")
    parser.add_argument("--spacing", type=float, default=1.5, help="in-plane mm (1.5)")
    parser.add_argument(
        "--train-patients", type=int, help="generators train on this many patients (all 6)"
    )
    parser.add_argument(
        "--masks", default="real", choices=("real", "learned"), help="conditional rows' masks"
    )
    parser.add_argument("--steps", type=int, default=2000, help="generator steps (2000)")
    parser.add_argument("--n", type=int, default=200, help="synthetic cases per row (200)")
    parser.add_argument(
        "--segmenter-steps",
        type=int,
        default=STEPS,
        help=f"steps of the judging segmenter ({STEPS})",
    )
    parser.add_argument("--device", default="cpu", help="training and sampling device (cpu)")
    parser.add_argument("--fresh", action="store_true", help="redo results kept in the workdir")
    args = parser.parse_args(argv)  # fmt: skip
    known = variant_names()
    args.variants = [v.strip() for v in (args.variants or ",".join(known)).split(",") if v.strip()]
    unknown = [v for v in args.variants if v.split(":")[0] not in known]
    if unknown or not args.variants:
        parser.error(f"--variants: choose from {', '.join(known)} (got {unknown or 'none'})")
    for name in ("steps", "n", "segmenter_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _note(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    facts = machine_facts({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    scratch = None
    if args.workdir is None:
        scratch = tempfile.mkdtemp(prefix="bench_fidelity_")
        args.workdir = Path(scratch)
    workdir = make_workdir(args.workdir)
    try:
        _, cache, train_ids, held_ids = prepare(workdir, args)
        seg, ref = reference(cache, train_ids, held_ids, workdir, args)
        results = [variant_result(v, cache, train_ids, seg, workdir, args) for v in args.variants]
        results.append(baseline(cache, train_ids, seg, args))
        rows = [row(r["generator"], r["summary"], ref) for r in results]
        rows.append(row("real held-out slices (reference)", ref, ref))
        print_machine(facts, quick=False, repeat=1, total_s=time.perf_counter() - started)
        print()
        print(f"### Label fidelity after {args.steps} generator steps")
        print()
        print(table(HEADER, rows))
        print()
        print(
            f"One segmenter (MONAI UNet {list(seg.config.channels)}, {args.segmenter_steps} "
            f"steps, batch 16, seed 0) trained on the {len(train_ids)} training patients, the "
            f"cases every generator trained on ({args.train_patients or len(train_ids)} of "
            f"them; 2D {args.grid}^2 cache, cpu preset, {args.steps} steps, "
            f"batch 16, seed 0), judges every row. Label fidelity: its Dice on each synthetic "
            f"slice against that slice's own label, mean over the slices whose label holds "
            f"the pancreas ({args.n} prior cases per variant); 'below 0.5': their share under "
            "Dice 0.5. Empty labels are counted apart; their false positives are the area "
            f"the segmenter calls pancreas anyway. labels2image: {args.n} slices painted from "
            "the training patients' real labels with random per-class intensities "
            "(SynthSeg / TorchIO LabelsToImage); its labels are the real labels, so its "
            "fidelity is high by construction, and a learned generator must beat it to be "
            f"worth its cost. Reference: the same segmenter on the {len(held_ids)} held-out "
            "patients' slices, what a perfect generator would reach."
        )
        report = {"facts": facts, "args": {k: str(v) for k, v in vars(args).items()},
                  "reference": ref, "results": results}  # fmt: skip
        if args.json or scratch is None:
            write_report(args.json or workdir / "bench_fidelity.json", report)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
