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
  2D 64^2, ``cpu`` preset, ``--steps`` steps (batch 16, seed ``--seed``, 0 by
  default), ``--n`` prior cases;
  label fidelity = the segmenter's Dice on each synthetic slice against that
  slice's own label, over slices whose label holds the pancreas;
- ``labels2image:fitted`` and ``labels2image:wide``: ``--n`` slices painted from the
  training patients' real labels (:mod:`medaug.segment.labels2image`; class
  intensities fitted to those patients' scans, or SynthSeg's wide draw). Its labels
  are the real labels, so its fidelity is high by construction: the painted organ
  sits exactly where the label says; only its contrast is drawn;
- real held-out: the same segmenter on the 2 held-out patients' slices, as they
  are (the reference);
- moved real (conditional rows on ``real`` masks): the same segmenter on the real
  training slices each synthetic layout was cut from, moved by that pair's own
  moves. That is the fidelity a perfect renderer of the moved layouts would reach:
  the segmenter loses Dice on moved anatomy whoever drew it, so a generator is held
  to this control and the held-out reference together.

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
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from common import (
    load_rows,
    machine_facts,
    make_workdir,
    print_machine,
    save_rows,
    table,
    write_report,
)

from medaug.data import Cache, load_split
from medaug.data.phantom import ORGAN_LABELS, write_cohort
from medaug.data.synthfolder import SynthFolder
from medaug.evaluate import metrics as M
from medaug.evaluate.fidelity import STEPS
from medaug.evaluate.fidelity import train as train_segmenter
from medaug.models import variant_names
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess.transforms import unit_to_hu
from medaug.segment import fidelity, labels2image
from medaug.segment.config import PAINTINGS
from medaug.segment.stats import paired
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
    organs = args.organs
    cohort = workdir / ("phantom-organs" if organs else "phantom")
    write_cohort(cohort, patients=8, seed=0, fmt="dicom", labels="organs" if organs else "pancreas")
    labels = {name: [ORGAN_LABELS[name][0]] for name in ("pancreas", *organs)}
    config = PreprocessConfig(
        grid_2d=(args.grid, args.grid), spacing_mm=(args.spacing, args.spacing, 2.5),
        labels=labels, context_labels=organs,
    )  # fmt: skip
    name = "cache" if (args.grid, args.spacing) == (64, 1.5) else f"cache{args.grid}"
    name += "-organs-" + "+".join(organs) if organs else ""
    out = preprocess(cohort, workdir / name, config, val_fraction=0.25, seed=0).out
    train_ids, held_ids = load_split(out)
    return cohort, Cache(out), train_ids, held_ids


def reference(
    cache: Cache, train_ids: list[str], held_ids: list[str], workdir: Path, args
) -> tuple[fidelity.Segmenter, dict[str, Any]]:
    """The segmenter (trained once, reused) and its Dice on the held-out real slices."""
    grid = "" if (args.grid, args.spacing) == (64, 1.5) else f"-grid{args.grid}-sp{args.spacing:g}"
    organs = "-organs-" + "+".join(args.organs) if args.organs else ""  # its own cache
    judge = "" if args.judge_augment == "none" else f"-{args.judge_augment}"
    folder = workdir / f"segmenter-steps{args.segmenter_steps}{grid}{organs}{judge}"
    seg = train_segmenter(cache, train_ids, folder, steps=args.segmenter_steps, seed=0,
                          device=args.device, augment=args.judge_augment,
                          note=_note)  # fmt: skip
    images, labels, names = fidelity.real_items(cache, held_ids)
    return seg, fidelity.score_pairs(seg, images, labels, names, cache.config)[1]


def spec_overrides(spec: str) -> dict[str, Any]:
    """``vaegan:mask:target+body:translation+cutout:kl_weight=8`` -> ModelConfig overrides
    (and ``train.NAME`` entries for TrainConfig fields)."""
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
        try:
            doc[name] = json.loads(value)
        except json.JSONDecodeError:  # discriminator=segmentation
            doc[name] = value
    return doc


def variant_result(
    spec: str, cache: Cache, train_ids: list[str], held_ids: list[str], seg, workdir: Path, args
) -> dict[str, Any]:
    """Train, synthesize and score one generator; kept in ``folder/result.json``."""
    variant, overrides = spec.split(":")[0], spec_overrides(spec)
    # train.NAME=VALUE: a TrainConfig field (train.lr_d=4e-4, train.betas=0/0.999: ','
    # separates the rows)
    training = {k[6:]: v for k, v in overrides.items() if k.startswith("train.")}
    overrides = {k: v for k, v in overrides.items() if not k.startswith("train.")}
    if "betas" in training:
        training["betas"] = tuple(float(b) for b in str(training["betas"]).split("/"))
    conditional = overrides.get("condition") == "mask"
    cases = train_ids[: args.train_patients] if args.train_patients else train_ids
    key = (
        f"{spec.replace(':', '_').replace(',', '-').replace('/', '-')}-steps{args.steps}-n{args.n}"
        f"-seg{args.segmenter_steps}-{args.device}-grid{args.grid}"
        + (f"-sp{args.spacing:g}" if args.spacing != 1.5 else "")
        + f"-p{len(cases)}"
        + (f"-{args.masks}" if conditional else "")
        + ("-organs-" + "+".join(args.organs) if args.organs else "")
        + (f"-seed{args.seed}" if args.seed else "")  # seed 0's folders keep their names
    )
    trained_key = key  # the generator does not depend on the judge: another judge rescores it
    if args.judge_augment != "none":
        key += f"-judge-{args.judge_augment}"
    folder = workdir / "variants" / key
    kept = folder / "result.json"
    if kept.exists() and not args.fresh:
        _note(f"{variant}: reusing {kept}")
        found = json.loads(kept.read_text())
        if conditional and args.masks == "real" and "versus" not in found.get("moved_real", {}):
            _note(f"{variant}: scoring the moved real control of {folder / 'synth'}")
            found["moved_real"] = moved_control(folder / "synth", cache, seg, found["pairs"])
            kept.write_text(json.dumps(found, indent=2) + "\n")
        return {**found, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    config = TrainConfig(steps=args.steps, batch_size=16, seed=args.seed, sample_every=args.steps,
                         checkpoint_every=args.steps, device=args.device, **training)  # fmt: skip
    held = [c for c in cache.case_ids if c not in cases]
    runs = workdir / "variants" / trained_key / "runs"
    done = sorted(runs.glob("*/checkpoints/step_*.pt")) if trained_key != key else []
    trained: Any
    if done and not args.fresh:  # trained for the other judge: scored again here
        _note(f"{spec}: reusing the generator of {runs}")
        first = runs.parent / "result.json"
        seconds = json.loads(first.read_text()).get("train_s") if first.exists() else None
        trained = SimpleNamespace(checkpoint=done[-1], seconds=seconds, run_dir=done[-1].parents[1])
    else:
        _note(f"{spec}: training {args.steps} steps on {len(cases)} patients")
        trained = train(cache.root, folder / "runs", model=variant, preset="cpu", config=config,
                        model_overrides=overrides, cases=(cases, held))  # fmt: skip
    assert trained.checkpoint is not None
    extra: dict[str, Any] = {}
    if conditional:  # layouts from the generator's own training cases' masks
        extra = {"input": cache.root, "masks": args.masks, "mask_steps": args.steps}
    result: dict[str, Any] = {
        "generator": spec, "settings": overrides | {f"train.{k}": v for k, v in training.items()},
        "train_s": trained.seconds,
        "steps": args.steps, "patients": len(cases), "masks": args.masks if conditional else None,
        "kl_nats": final_stat(trained.run_dir, "generator/kl"),
        "context_labels": list(args.organs), "seed": args.seed,
    }  # fmt: skip
    _note(f"{spec}: synthesizing {args.n} prior cases")
    synth = synthesize(folder / "synth", args.n, model=trained.checkpoint, seed=args.seed,
                       device=args.device, **extra)  # fmt: skip
    images, labels, names = fidelity.synthetic_items(SynthFolder.open(synth.out), cache.config)
    rows, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
    result |= {"summary": summary, "pairs": rows}
    if conditional and args.masks == "real":
        result["moved_real"] = moved_control(Path(synth.out), cache, seg, rows)
    result["image"] = image_measures(images, labels, cache, cases, held_ids)
    if conditional and variant != "gan":  # posterior samples: the first training case's look
        _note(f"{spec}: synthesizing {args.n} cases in one training case's style")
        styled = synthesize(folder / "synth-style", args.n, model=trained.checkpoint,
                            seed=args.seed, device=args.device, style=0, **extra)  # fmt: skip
        s_img, s_lab, s_names = fidelity.synthetic_items(SynthFolder.open(styled.out), cache.config)
        result["style_summary"] = fidelity.score_pairs(seg, s_img, s_lab, s_names, cache.config)[1]
    kept.write_text(json.dumps(result, indent=2) + "\n")
    return result


def moved_control(
    synth_dir: Path, cache: Cache, seg, pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The judge's fidelity on the real slices a synthesis folder's layouts were cut
    from, moved by each pair's own moves: what a perfect renderer of those moved
    layouts would reach (the judge loses Dice on moved anatomy whoever drew it). Its
    summary, and ``versus``: the generator's pairs (``pairs``, their per-pair rows)
    against it, paired layout by layout."""
    images, labels, names = fidelity.moved_real_items(SynthFolder.open(synth_dir), cache)
    rows, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
    control = {r["case"]: r["dice"] for r in rows if "dice" in r}
    both = [(r["dice"], control[r["case"]]) for r in pairs if "dice" in r and r["case"] in control]
    ours, theirs = zip(*both, strict=True) if both else ((), ())
    return summary | {"versus": paired(ours, theirs)}


def final_stat(run_dir: Path, name: str, last: int = 4) -> float | None:
    """Mean of a logged training statistic over the last ``last`` log lines."""
    lines = (Path(run_dir) / "stats.jsonl").read_text().splitlines()
    values = [json.loads(line).get(name) for line in lines[-last:]]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def sharpness(images: np.ndarray) -> float:
    """Mean gradient magnitude of 2D items ``(N, X, Y)`` in [-1, 1] units per voxel."""
    gx, gy = np.gradient(images.astype(np.float64), axis=(1, 2))
    return float(np.sqrt(gx**2 + gy**2).mean())


def image_measures(
    images: np.ndarray, labels: np.ndarray, cache: Cache, train_cases: list[str],
    held_ids: list[str],
) -> dict[str, Any]:  # fmt: skip
    """What the synthetic images look like against the held-out real slices: HU inside
    the target label, sharpness, diversity (MS-SSIM between pairs) and memorization
    (nearest training slice closer than 95% of held-out slices come)."""
    pp = cache.config
    real_img, real_lab, _ = fidelity.real_items(cache, held_ids)
    train_img, _, _ = fidelity.real_items(cache, train_cases)
    target = pp.target_class
    hu = {}
    for name, img, lab in (("synthetic", images, labels), ("real", real_img, real_lab)):
        values = unit_to_hu(img[lab == target], pp.hu_window)
        hu[name] = (
            {"mean": float(values.mean()), "sd": float(values.std())} if values.size else None
        )
    small = 32
    mem = M.memorization(M.downsample(images, small), M.downsample(train_img, small),
                         M.downsample(real_img, small))  # fmt: skip
    return {
        "target_hu": hu,
        "target_hu_difference": None
        if not (hu["synthetic"] and hu["real"])
        else hu["synthetic"]["mean"] - hu["real"]["mean"],
        "sharpness_ratio": sharpness(images) / sharpness(real_img),
        "diversity_ms_ssim": M.diversity(images),
        "diversity_ms_ssim_real": M.diversity(real_img),
        "memorized_share": mem["flagged_fraction"],
    }


def baseline(
    cache: Cache, train_ids: list[str], held_ids: list[str], seg, args, form: str
) -> dict[str, Any]:
    """labels2image painted from the labels of the patients the generators trained on,
    with the ``form`` draw (fitted to those patients' intensities, or wide)."""
    cases = train_ids[: args.train_patients] if args.train_patients else train_ids
    images, labels, names = labels2image.items(cache, cases, args.n, seed=0, form=form)
    rows, summary, _ = fidelity.score_pairs(seg, images, labels, names, cache.config)
    return {"generator": f"labels2image:{form}", "summary": summary, "pairs": rows,
            "patients": len(cases), "context_labels": list(args.organs),
            "image": image_measures(images, labels, cache, cases, held_ids)}  # fmt: skip


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


#: The committed results file that README tables are printed from.
RESULTS = Path(__file__).resolve().parent / "results" / "fidelity.json"


def record(
    path: Path, results: list[dict[str, Any]], ref: dict[str, Any], facts: dict[str, Any],
    args: argparse.Namespace, wall_s: float,
) -> None:  # fmt: skip
    """Add (or replace) each row of this run in the results file, keyed by what it
    measured: generator, grid, spacing, training patients, steps, masks, and where
    they are not the first rows' (empty, none, 0): context organs, judge, seed."""
    doc, rows = load_rows(path)
    for r in results:
        patients = r.get("patients") or 6
        key = "|".join(str(v) for v in (r["generator"], args.grid, args.spacing,
                                        patients, r.get("steps"), r.get("masks")))  # fmt: skip
        if r.get("context_labels"):  # organ context (keys of HU-only rows stay as they were)
            key += "|context=" + "+".join(r["context_labels"])
        if args.judge_augment != "none":  # another judge: rows of their own
            key += f"|judge={args.judge_augment}"
        if r.get("seed"):  # another generator seed: a row of its own
            key += f"|seed={r['seed']}"
        if r.get("reused") and key in rows:  # measured before: keep its row and provenance
            if r.get("moved_real") is not None:  # a control scored later is added
                rows[key]["moved_real"] = r["moved_real"]
            continue
        rows[key] = {
            "key": key, "generator": r["generator"], "grid": args.grid,
            "spacing_mm": args.spacing, "patients": patients, "steps": r.get("steps"),
            "n": args.n, "masks": r.get("masks"), "settings": r.get("settings"),
            "train_s": r.get("train_s"), "kl_nats": r.get("kl_nats"),
            "context_labels": r.get("context_labels") or [],
            "judge_augment": args.judge_augment, "seed": r.get("seed") or 0,
            "summary": r["summary"], "style_summary": r.get("style_summary"),
            "moved_real": r.get("moved_real"), "image": r.get("image"), "reference": ref,
            "commit": facts.get("medaug_source"), "command": " ".join(sys.argv),
            "machine": {k: facts.get(k) for k in ("cpu_count", "platform", "torch",
                                                   "torch_threads", "loadavg_at_start")},
            "wall_s": wall_s, "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
        }  # fmt: skip
    save_rows(path, doc, rows)
    _note(f"recorded {len(results)} row(s) in {path}")


TABLE_HEADER = [
    "generator", "grid", "patients", "steps", "train min", "KL nats", "label fidelity",
    "median", "below 0.5", "HD95 mm", "x reference", "x moved real", "style fidelity",
    "pancreas HU (real)",
    "sharpness x real", "MS-SSIM (real)", "memorized",
]  # fmt: skip


def print_table(path: Path) -> None:
    """The README's fidelity table, printed from the results file."""
    doc = json.loads(path.read_text())

    def f(v: Any, spec: str = ".3f") -> str:
        return "–" if v is None else format(v, spec)

    out = []
    for r in doc["rows"]:
        s, im, ref = r["summary"], r.get("image") or {}, r["reference"]
        hu = im.get("target_hu") or {}
        syn, real = hu.get("synthetic") or {}, hu.get("real") or {}
        style = r.get("style_summary") or {}
        moved = (r.get("moved_real") or {}).get("dice")
        out.append([
            r["generator"] + (f" (context: {', '.join(r['context_labels'])})"
                              if r.get("context_labels") else "")
            + (" (learned masks)" if r.get("masks") == "learned" else "")
            + (f" (seed {r['seed']})" if r.get("seed") else "")
            + (" [judge: classical]" if r.get("judge_augment") == "classical" else ""),
            f"{r['grid']}² {r['spacing_mm']:g} mm", str(r["patients"]),
            f(r.get("steps"), "d"),
            f(None if r.get("train_s") is None else r["train_s"] / 60, ".1f"),
            f(r.get("kl_nats"), ".1f"), f(s["dice"]), f(s["dice_median"]),
            f(s["below_threshold"], ".0%"), f(s["hd95_mm"], ".1f"),
            f(None if s["dice"] is None else s["dice"] / ref["dice"], ".2f"),
            f(None if s["dice"] is None or not moved else s["dice"] / moved, ".2f"),
            f(style.get("dice")),
            f"{f(syn.get('mean'), '.0f')}±{f(syn.get('sd'), '.0f')} "
            f"({f(real.get('mean'), '.0f')}±{f(real.get('sd'), '.0f')})",
            f(im.get("sharpness_ratio"), ".2f"),
            f"{f(im.get('diversity_ms_ssim'), '.2f')} "
            f"({f(im.get('diversity_ms_ssim_real'), '.2f')})",
            f(im.get("memorized_share"), ".0%"),
        ])  # fmt: skip
    print(table(TABLE_HEADER, out))


CONTROL_HEADER = [
    "generator", "grid", "patients", "steps", "seed", "label fidelity",
    "moved real (same layouts)",
    "difference [95% CI]", "p (paired t)", "x reference", "moved real x reference",
]  # fmt: skip


def print_control_table(path: Path) -> None:
    """The README's control table: each conditional row against the real slices its own
    layouts were cut from, moved alike (what a perfect renderer would reach), paired
    layout by layout."""
    doc = json.loads(path.read_text())
    out = []
    for r in doc["rows"]:
        moved = r.get("moved_real") or {}
        vs = moved.get("versus")
        if not vs:
            continue
        lo, hi = vs["ci95"]
        ref = r["reference"]["dice"]
        out.append([
            r["generator"] + (" [judge: classical]" if r.get("judge_augment") == "classical"
                              else ""),
            f"{r['grid']}² {r['spacing_mm']:g} mm", str(r["patients"]), str(r["steps"]),
            str(r.get("seed") or 0),
            f"{r['summary']['dice']:.3f}", f"{moved['dice']:.3f}",
            f"{vs['mean_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
            "–" if vs["t_p"] is None else f"{vs['t_p']:.2g}",
            f"{r['summary']['dice'] / ref:.3f}", f"{moved['dice'] / ref:.3f}",
        ])  # fmt: skip
    print(table(CONTROL_HEADER, out))


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
    parser.add_argument(
        "--organs",
        type=lambda v: tuple(o for o in v.split(",") if o),
        default=(),
        help="context organs: the phantom's organ labels as context_labels, e.g. "
        "liver,spleen,kidneys,aorta,ivc,vertebrae (default: none, HU context only)",
    )
    parser.add_argument(
        "--judge-augment",
        default="none",
        choices=("none", "classical"),
        help="the judging segmenter's augmentation (none: the rows so far; classical: "
        "medaug evaluate's judge, robust to the moves synthesis makes)",
    )
    parser.add_argument("--steps", type=int, default=2000, help="generator steps (2000)")
    parser.add_argument("--n", type=int, default=200, help="synthetic cases per row (200)")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="the generators' training and sampling seed (0); the judge keeps seed 0, so "
        "rows of two seeds are scored by the same segmenter",
    )  # fmt: skip
    parser.add_argument(
        "--segmenter-steps",
        type=int,
        default=STEPS,
        help=f"steps of the judging segmenter ({STEPS})",
    )
    parser.add_argument("--device", default="cpu", help="training and sampling device (cpu)")
    parser.add_argument("--fresh", action="store_true", help="redo results kept in the workdir")
    parser.add_argument(
        "--results", type=Path, default=RESULTS,
        help="add the rows to this results file (default benchmarks/results/fidelity.json)",
    )  # fmt: skip
    parser.add_argument(
        "--table", action="store_true", help="print the table of the results file and stop"
    )
    parser.add_argument(
        "--control-table", action="store_true",
        help="print the results file's conditional rows against their moved real control "
        "and stop",
    )  # fmt: skip
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
    if args.table:
        print_table(args.results)
        return 0
    if args.control_table:
        print_control_table(args.results)
        return 0
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
        results = [
            variant_result(v, cache, train_ids, held_ids, seg, workdir, args) for v in args.variants
        ]
        results += [baseline(cache, train_ids, held_ids, seg, args, f) for f in PAINTINGS]
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
            f"batch 16, seed {args.seed}), judges every row. Label fidelity: its Dice on each "
            "synthetic slice against that slice's own label, mean over the slices whose label "
            f"holds the pancreas ({args.n} prior cases per variant); 'below 0.5': their share "
            "under Dice 0.5. Empty labels are counted apart; their false positives are the area "
            f"the segmenter calls pancreas anyway. labels2image: {args.n} slices painted from "
            "the training patients' real labels (TorchIO LabelsToImage), per-class "
            "intensities fitted to those patients' scans or drawn wide (SynthSeg); its "
            "labels are the real labels, so its "
            "fidelity is high by construction, and a learned generator must beat it to be "
            f"worth its cost. Reference: the same segmenter on the {len(held_ids)} held-out "
            "patients' slices as they are; moved real (in the results file): on the real "
            "slices each conditional row's layouts were cut from, moved alike, what a "
            "perfect renderer of those layouts would reach."
        )
        report = {"facts": facts, "args": {k: str(v) for k, v in vars(args).items()},
                  "reference": ref, "results": results}  # fmt: skip
        if args.json or scratch is None:
            write_report(args.json or workdir / "bench_fidelity.json", report)
        if args.results:
            record(args.results, results, ref, facts, args, time.perf_counter() - started)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
