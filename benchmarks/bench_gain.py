"""Does it help? The gain experiment on a phantom cohort, recorded in the results file.

Runs ``medaug gain`` (:func:`medaug.segment.gain.run_gain`) with the settings below
in ``--workdir`` (resumable: every generator, synthesis and segmenter run is kept
there, so a killed run, or one that adds arms, redoes only what is missing), then adds
one row per (regime, arm) to ``benchmarks/results/gain.json`` with the commit,
command, machine facts and wall time. ``--table`` prints the README's tables from
that file, so figures accumulate from session to session.

Rows are keyed by what they measured: the cohort seed, grid and spacing, the
segmenter steps, the ratio, the synthetic count, the painting, the generator spec and
the regime. Each row keeps its runs (Dice per test case), so an experiment too long
for one session runs a few folds at a time (``--only-folds``): every session adds its
runs to the rows, which are recomputed from all of them, and an arm with some folds
still missing says so (``runs`` against ``runs_planned``, ``folds_run``).

Run (the issue's headline: 2D 64^2 at 3 mm, 4 folds x 3 seeds, 2 real patients)::

    python benchmarks/bench_gain.py --workdir /work/runs/gain64 --train-cases 2
    python benchmarks/bench_gain.py --workdir W --cohort-seed 1      # a second cohort
    python benchmarks/bench_gain.py --workdir W --steps 1500 --only-folds 0 1  # a session's share
    python benchmarks/bench_gain.py --table
    python benchmarks/bench_gain.py --plot docs/gain-phantom.png   # the rows of these settings
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import load_rows, machine_facts, make_workdir, save_rows

from medaug.data.phantom import write_cohort
from medaug.evaluate import fidelity
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.progress import Notes
from medaug.segment import GainConfig, SegmentConfig
from medaug.segment.config import ARMS
from medaug.segment.gain import run_gain, summarize
from medaug.segment.plot import gain_plot
from medaug.synth.layouts import SOURCES
from medaug.train.distributed import pick_device
from medaug.train.spec import GeneratorSpec

RESULTS = Path(__file__).resolve().parent / "results" / "gain.json"


def cache_for(workdir: Path, args: argparse.Namespace) -> Path:
    """The cohort (8 phantom patients of ``--cohort-seed``) and its 2D cache."""
    cohort = workdir / f"phantom-seed{args.cohort_seed}"
    write_cohort(cohort, patients=args.patients, seed=args.cohort_seed, fmt="dicom")
    config = PreprocessConfig(grid_2d=(args.grid, args.grid),
                              spacing_mm=(args.spacing, args.spacing, 2.5))  # fmt: skip
    return preprocess(cohort, workdir / f"cache-seed{args.cohort_seed}", config).out


def key_of(args: argparse.Namespace, spec: GeneratorSpec, regime: int, arm: str) -> str:
    parts = (args.cohort_seed, args.grid, args.spacing, args.steps, args.ratio, args.synth_n,
             args.painting, json.dumps(spec.to_dict(), sort_keys=True))  # fmt: skip
    # a filter's rows get a part of their own; the unfiltered rows keep their keys
    kept: tuple[str, ...] = ()
    kept += (f"min_fidelity={args.min_fidelity:g}",) if args.min_fidelity is not None else ()
    kept += ("masks=learned",) if args.masks == "learned" else ()
    return "|".join(str(p) for p in (*parts, *kept, regime, arm))


def experiment_of(key: str) -> str:
    """A row key without its regime and arm: the experiment the row belongs to."""
    return key.rsplit("|", 2)[0]


#: The arms' order in the tables and the plot's legend.
ARM_ORDER = {a: i for i, a in enumerate(ARMS)}


def compact(run: dict[str, Any], commit: str | None) -> dict[str, Any]:
    """What the results file keeps of one segmenter run: enough to recompute the rows
    (Dice per test case for the paired comparisons) and to say where it was measured."""
    test = run["test"]
    return {
        "fold": run["fold"], "regime": run["regime"], "arm": run["arm"], "seed": run["seed"],
        "steps": run["steps"], "items_real": run["items_real"],
        "items_synthetic": run["items_synthetic"], "commit": commit,
        "test": {"dice": test["dice"], "hd95_mm": test["hd95_mm"],
                 "surface_dice": test["surface_dice"],
                 "cases": [{"case": c["case"], "dice": c["dice"]} for c in test["cases"]]},
    }  # fmt: skip


def record(doc: dict[str, Any], args, spec: GeneratorSpec, facts, wall_s: float) -> None:
    """Add the experiment's runs to the results file and rewrite its rows from them.

    Each row keeps its runs (:func:`compact`), so runs of the same experiment from
    other sessions (other folds: ``--only-folds``) join it and the row is recomputed
    from all of them; a run of the same fold, arm and seed replaces the earlier one.
    A row recorded before rows kept their runs stays unless the new runs are as many.
    """
    path = args.results
    kept, rows = load_rows(path)
    commit = facts.get("medaug_source")
    planned = len(doc["splits"]) * args.seeds
    session = {
        "commit": commit, "command": " ".join(sys.argv), "wall_s": round(wall_s, 1),
        "folds": doc.get("folds_run"), "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    for regime in sorted({r["regime"] for r in doc["runs"]}):
        runs: dict[tuple[int, str, int], dict[str, Any]] = {}
        sessions: list[dict[str, Any]] = []
        for arm in ARMS:  # the experiment's earlier runs of this regime, every arm
            earlier = rows.get(key_of(args, spec, regime, arm), {})
            runs |= {(r["fold"], r["arm"], r["seed"]): r for r in earlier.get("run_records", [])}
            sessions += [s for s in earlier.get("sessions", []) if s not in sessions]
        runs |= {
            (r["fold"], r["arm"], r["seed"]): compact(r, commit)
            for r in doc["runs"]
            if r["regime"] == regime
        }
        sessions.append(session)
        arms = [a for a in ARMS if any(k[1] == a for k in runs)]
        for row in summarize(list(runs.values()), arms):
            key = key_of(args, spec, regime, row["arm"])
            mine = sorted((r for r in runs.values() if r["arm"] == row["arm"]),
                          key=lambda r: (r["fold"], r["seed"]))  # fmt: skip
            old = rows.get(key)
            if old is not None and "run_records" not in old and old["runs"] > row["runs"]:
                print(f"kept the earlier row of {row['arm']} at {regime} patients ({old['runs']} "
                      f"runs, recorded without its runs) over {row['runs']} new run(s)",
                      file=sys.stderr)  # fmt: skip
                continue
            rows[key] = {
                "key": key, "cohort_seed": args.cohort_seed, "patients": args.patients,
                "grid": args.grid, "spacing_mm": args.spacing, "regime": regime,
                "arm": row["arm"], "runs": row["runs"], "runs_planned": planned,
                "folds_run": sorted({r["fold"] for r in mine}),
                "folds": args.folds, "seeds": args.seeds, "segmenter_steps": args.steps,
                "ratio": args.ratio, "synth_n": args.synth_n, "painting": args.painting,
                "min_fidelity": args.min_fidelity, "masks": args.masks,
                "generator": spec.to_dict(), "dice": row["dice"], "hd95_mm": row["hd95_mm"],
                "surface_dice": row["surface_dice"], "vs_real": row.get("vs_real"),
                "vs": row.get("vs") or {}, "commit": commit, "command": session["command"],
                "machine": {k: facts.get(k) for k in ("cpu_count", "platform", "torch",
                                                       "torch_threads", "loadavg_at_start")},
                "wall_s": round(wall_s, 1), "recorded": session["recorded"],
                "sessions": sessions, "run_records": mine,
            }  # fmt: skip
    save_rows(path, kept, rows)
    print(f"recorded {len(doc['runs'])} run(s) in {path}", file=sys.stderr)


def _diff(vs: dict[str, Any] | None) -> str:
    if not vs or vs.get("mean_difference") is None:
        return ""
    ci = vs.get("ci95")
    interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
    p = vs.get("t_p")
    return f"{vs['mean_difference']:+.3f}{interval}" + ("" if p is None else f", p {p:.2g}")


def print_table(path: Path) -> None:
    """The README's gain tables, one per experiment (cohort, grid, settings)."""
    rows = json.loads(path.read_text())["rows"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(experiment_of(r["key"]), []).append(r)
    for group in groups.values():
        r0 = group[0]
        spec = GeneratorSpec.from_dict(r0["generator"])
        kept = r0.get("min_fidelity")
        kept_text = "" if kept is None else f" kept at label fidelity >= {kept:g}"
        if r0.get("masks") == "learned":
            kept_text += " on learned layouts"
        print(
            f"\nCohort seed {r0['cohort_seed']} ({r0['patients']} phantom patients), 2D "
            f"{r0['grid']}² at {r0['spacing_mm']:g} mm, {r0['folds']} folds x {r0['seeds']} "
            f"seeds, U-Net {r0['segmenter_steps']} steps; ratio {r0['ratio']}, "
            f"{r0['synth_n']} synthetic cases per regime{kept_text} from a {spec.describe()} "
            f"({spec.steps} steps{', moved pairs' if spec.resolved_warp else ''}); "
            f"painting {r0['painting']}\n"
        )
        print("| real patients | arm | runs | Dice mean ± sd | ΔDice vs real [95% CI], p | "
              "against its rivals |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: (r["regime"], ARM_ORDER.get(r["arm"], 99))):
            d = r["dice"]
            sd = "" if d["sd"] is None else f" ± {d['sd']:.3f}"
            runs = f"{r['runs']}" + ("" if r["runs"] == r["runs_planned"]
                                     else f" of {r['runs_planned']}")  # fmt: skip
            rivals = "; ".join(f"vs {k}: {_diff(v)}" for k, v in r["vs"].items())
            print(f"| {r['regime']} | {r['arm']} | {runs} | {d['mean']:.3f}{sd} | "
                  f"{_diff(r['vs_real'])} | {rivals} |")  # fmt: skip


def plot_rows(args: argparse.Namespace, spec: GeneratorSpec, path: Path) -> Path:
    """``gain.png`` of one experiment from the results file: every regime recorded with
    the settings given (cohort seed, grid, spacing, steps, ratio, count, painting,
    generator), so a plot needs no workdir and shows regimes run in other sessions."""
    rows = json.loads(args.results.read_text())["rows"]
    experiment = experiment_of(key_of(args, spec, 0, ""))
    mine = [r for r in rows if experiment_of(r["key"]) == experiment]
    if not mine:
        raise SystemExit(f"{args.results}: no rows recorded with these settings ({experiment})")
    mine.sort(key=lambda r: (ARM_ORDER.get(r["arm"], 99), r["regime"]))
    return gain_plot({"summary": mine}, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, help="experiment folder (resumable)")
    p.add_argument("--cache", type=Path, help="a 2D cache to use instead of the phantom's")
    p.add_argument("--cohort-seed", type=int, default=0, help="phantom cohort seed (0)")
    p.add_argument("--patients", type=int, default=8, help="phantom patients (8)")
    p.add_argument("--grid", type=int, default=64, help="2D grid side (64)")
    p.add_argument("--spacing", type=float, default=3.0, help="in-plane mm (3)")
    p.add_argument("--train-cases", nargs="+", default=["2"], help="regimes (2)")
    p.add_argument("--folds", type=int, default=4, help="folds (4)")
    p.add_argument("--seeds", type=int, default=3, help="segmenter seeds (3)")
    p.add_argument(
        "--only-folds", type=int, nargs="+",
        help="run these folds only (a session's share: rows join runs across sessions)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=300, help="segmenter steps per run (300)")
    p.add_argument(
        "--arms", default=",".join(ARMS[:4] + ARMS[5:]), help="arms (all but synth-only)"
    )
    p.add_argument("--ratio", type=float, default=0.5, help="synthetic share (0.5)")
    p.add_argument("--synth-n", type=int, default=200, help="synthetic cases per regime (200)")
    p.add_argument("--painting", default="fitted", help="labels2image draw (fitted)")
    p.add_argument("--min-fidelity", type=float, default=None,
                   help="keep only synthetic pairs a segmenter of the regime's patients "
                        "reads at this Dice (default: all)")  # fmt: skip
    p.add_argument("--masks", choices=SOURCES, default="real",
                   help="synthetic layouts: real masks moved, or drawn by a mask "
                        "generator (real)")  # fmt: skip
    p.add_argument(
        "--generator-steps", type=int, help="generator steps (900 on a CPU, 1800 on a GPU)"
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="results file")
    p.add_argument("--table", action="store_true", help="print the results file's tables")
    p.add_argument(
        "--plot", type=Path, metavar="PNG",
        help="plot the recorded rows of the experiment these settings select, every regime",
    )  # fmt: skip
    args = p.parse_args(argv)
    if not (args.table or args.plot) and args.workdir is None:
        p.error("--workdir is needed to run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the steps that run on this machine (900 on a CPU unless given), as the rows record
    spec = GeneratorSpec(steps=args.generator_steps).for_device(pick_device("auto").type)
    if args.table or args.plot:
        if args.table:
            print_table(args.results)
        if args.plot:
            print(f"wrote {plot_rows(args, spec, args.plot)}", file=sys.stderr)
        return 0
    started = time.perf_counter()
    facts = machine_facts({"torch": torch.__version__, "torch_threads": torch.get_num_threads()})
    workdir = make_workdir(args.workdir)
    cache = args.cache or cache_for(workdir, args)
    cfg = GainConfig(
        train_patients=tuple(args.train_cases), seeds=args.seeds, folds=args.folds,
        only_folds=None if args.only_folds is None else tuple(args.only_folds),
        arms=(args.arms,), ratio=args.ratio, synth_n=args.synth_n, painting=args.painting,
        min_fidelity=args.min_fidelity, masks=args.masks,
        generator=spec, segment=SegmentConfig(steps=args.steps),
    )  # fmt: skip
    doc = run_gain(cache, workdir, cfg, progress=Notes(lambda m: print(m, file=sys.stderr)),
                   judge=fidelity.judge)  # fmt: skip
    record(doc, args, spec, facts, time.perf_counter() - started)
    print((workdir / "gain.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
