"""The augmentation-gain experiment: do synthetic pairs raise segmentation Dice?

Design, in the order ``run_gain`` follows it:

1. **Split by patient.** The cohort's patients are split into test and training
   patients (``make_splits``, the same function and seed as ``medaug preprocess``: K
   folds, or one held-out fraction). The split is recorded in ``gain.json``.
2. **Sweep the real data.** For each fold, the training patients are put in a seeded
   order and the first N of them are the real training set of the N-patient regime
   (so the 2-patient set is inside the 4-patient set).
3. **One generator per regime.** Without ``--model``, a generator is trained on the N
   patients of each regime only: synthetic pairs must not carry information from
   labelled patients the real-only arm does not have. With ``--model``, one given
   generator serves every regime and the table says how many patients it saw.
   Either way the generator's recorded training cases (content hashes in its
   checkpoint) are compared with the test cases, and a generator that saw a test
   patient is refused.
4. **Arms, step-matched.** Every arm trains the same U-Net from the same initial
   weights (the seed) for the same number of steps with the same batch size:
   ``real``; ``real+classical`` (MONAI affine, elastic, intensity, noise);
   ``real+synth`` (synthetic items at ``ratio``); ``real+classical+synth``; and
   optionally ``synth-only`` and ``real+labels2image`` (the cheap baseline: images
   painted from the regime's real labels, :mod:`medaug.segment.labels2image`, at
   ``ratio``).
5. **Statistics.** Per arm and regime: mean test Dice over runs (folds x seeds), its
   standard deviation and 95% t interval; and a paired comparison with ``real`` over
   every (test case, seed) pair (the same seed starts both arms from the same weights
   and real items): the mean difference with its 95% t interval, paired t and
   Wilcoxon.

Everything resumes: the cache and generators by their own keys and checkpoints, the
synthetic folders by their records, each run by its result file under ``runs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import medaug
from medaug.errors import ConfigError, InputError
from medaug.segment.config import SegmentConfig

ARMS = (
    "real", "real+classical", "real+synth", "real+classical+synth", "synth-only",
    "real+labels2image",
)  # fmt: skip
DEFAULT_ARMS = ARMS[:4]
#: Arms that mix real items with other items at ``ratio``.
MIXED_ARMS = ("real+synth", "real+classical+synth", "real+labels2image")
RESULT = "gain.json"


def parse_train_patients(values: Sequence[str | int]) -> list[int | str]:
    """``["2", "4,8", "all"]`` -> ``[2, 4, 8, "all"]`` (sorted, unique)."""
    out: set[int | str] = set()
    for value in values:
        for part in str(value).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                out.add("all")
            elif part.isdigit() and int(part) >= 1:
                out.add(int(part))
            else:
                raise ConfigError(f"--train-cases takes patient counts >= 1 or 'all', got {part!r}")
    if not out:
        raise ConfigError("--train-cases needs at least one patient count")
    numbers = sorted(v for v in out if isinstance(v, int))
    return [*numbers, *(["all"] if "all" in out else [])]


def plan_folds(
    cache: Any,
    train_patients: Sequence[int | str],
    folds: int | None,
    test_fraction: float,
    seed: int,
) -> list[dict[str, Any]]:
    """The experiment's patient-level splits and the nested real training sets.

    Returns:
        one dict per fold: ``fold``, ``test_patients``, ``test_cases``,
        ``training_patients`` (in sweep order) and ``regimes`` (N -> case ids).

    Raises:
        ConfigError: fewer patients than folds or than a regime needs.
        InputError: a fold whose test cases hold no target voxels.
    """
    from medaug.data.splits import make_splits

    patients = {c: str(cache.records[c].get("patient", c)) for c in cache.case_ids}
    n_patients = len(set(patients.values()))
    if folds is not None and folds > n_patients:
        raise ConfigError(
            f"--folds {folds} needs at least {folds} patients; the data have {n_patients}"
        )
    if n_patients < 2:
        raise ConfigError(
            f"the gain experiment needs at least 2 patients; the data have {n_patients}"
        )
    if folds is None and not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    doc = make_splits(patients, test_fraction, folds, seed)
    target = cache.config.target_class
    plans = []
    for k, split in enumerate(doc["splits"]):
        test_cases = split["val"]
        pool = sorted({patients[c] for c in split["train"]})
        order = [pool[i] for i in np.random.default_rng([seed, k]).permutation(len(pool))]
        if not any(np.any(np.asarray(cache.array(c, "label")) == target) for c in test_cases):
            raise InputError(
                cache.root,
                f"the test patients of fold {k} hold no {cache.config.target} voxels: "
                "nothing to measure Dice on",
            )
        regimes: dict[str, list[str]] = {}
        for n in train_patients:
            count = len(order) if n == "all" else int(n)
            if count > len(order):
                n_test = len({patients[c] for c in test_cases})
                raise ConfigError(
                    f"--train-cases {n}: fold {k} has only {len(order)} training patients "
                    f"({n_patients} patients, {n_test} for testing)"
                )
            chosen = set(order[:count])
            regimes[str(count)] = sorted(c for c, p in patients.items() if p in chosen)
        plans.append(
            {
                "fold": k,
                "test_patients": sorted({patients[c] for c in test_cases}),
                "test_cases": list(test_cases),
                "training_patients": order,
                "regimes": regimes,
            }
        )
    return plans


def check_generator(state: dict[str, Any], cache: Any, test_cases: Sequence[str]) -> dict[str, Any]:
    """Refuse a generator that cannot be used for this experiment.

    Args:
        state: the checkpoint (``load_checkpoint``).
        cache: the experiment's cache.
        test_cases: the fold's test cases.

    Returns:
        ``{"training_cases", "training_patients"}`` of the generator in this cache.

    Raises:
        ConfigError: another preprocessing grid, no recorded split, or a test patient
            among its training cases (leakage).
    """
    from medaug.data.splits import recorded_sides
    from medaug.preprocess.config import PreprocessConfig
    from medaug.train.checkpoint import configs

    path = state.get("path", "checkpoint")
    docs = configs(state)
    check_grid(
        PreprocessConfig.from_dict(docs["preprocess_config"], source=str(path)), cache.config, path
    )
    sides = recorded_sides(cache, docs["split"])
    if sides is None:
        raise ConfigError(
            f"{path}: the checkpoint records no training cases, so it cannot be shown "
            "never to have seen a test patient"
        )
    seen = set(sides[0])
    leaked = sorted(seen & set(test_cases))
    if leaked:
        who = sorted({str(cache.records[c].get("patient", c)) for c in leaked})
        raise ConfigError(
            f"{path}: the generator was trained on {len(who)} test patient(s) "
            f"({', '.join(who[:3])}); a gain measured on them would be leakage. Train it "
            "on the experiment's training patients (gain.json: folds) or leave out --model"
        )
    patients = sorted({str(cache.records[c].get("patient", c)) for c in seen})
    return {"training_cases": sorted(seen), "training_patients": patients}


def check_grid(generator: Any, experiment: Any, path: Any) -> None:
    """Refuse a generator whose preprocessing config differs from the experiment's:
    its cases would sit on another grid, and its recorded content hashes could not
    be matched with the experiment's cases."""
    for name in ("dims", "grid", "spacing_mm", "hu_window", "labels", "crop", "margin_mm"):
        a, b = getattr(generator, name), getattr(experiment, name)
        if a != b:
            raise ConfigError(
                f"{path}: generator trained on a different preprocessing grid "
                f"({name} {a} against the experiment's {b}); preprocess with its config"
            )


def run_gain(
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    train_patients: Sequence[int | str] = (2, 4, "all"),
    seeds: int = 3,
    folds: int | None = None,
    test_fraction: float = 0.2,
    arms: Sequence[str] = DEFAULT_ARMS,
    segment: SegmentConfig | None = None,
    ratio: float = 0.5,
    synth_n: int = 200,
    synth_mode: str = "prior",
    generator_steps: int = 1000,
    variant: str = "vaegan",
    preprocess_config: Any = None,
    seed: int = 0,
    device: str = "auto",
    on_event: Callable[[str], None] | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the augmentation-gain experiment and write ``gain.json``, ``gain.md``, ``gain.png``.

    Args:
        input: labelled scans (any layout ``medaug inspect`` reads) or a cache.
        out: the experiment's folder.
        model: a generator checkpoint to use for every regime instead of training one
            per regime; its preprocessing config becomes the experiment's.
        train_patients: the sweep: real training patients per regime (``"all"``: all
            training patients of the fold).
        seeds: segmenter seeds per arm and regime (0, 1, ...; offset by ``seed``).
        folds: K-fold cross-validation over patients; default one split with
            ``test_fraction`` of the patients for testing.
        test_fraction: share of patients held out when ``folds`` is None.
        arms: which of :data:`ARMS` to run (``real`` always runs: it is the reference).
        segment: the U-Net settings shared by every arm (steps, batch, channels...).
        ratio: synthetic share of the ``+synth`` arms, in [0, 1).
        synth_n: synthetic cases made per regime.
        synth_mode: ``prior`` or ``perturb`` (around the regime's own training cases).
        generator_steps: training steps of each generator.
        variant: the generator trained per regime.
        preprocess_config: ``PreprocessConfig`` for scans (default: 2D, medaug's
            defaults; the model's when ``model`` is given).
        seed: the split, the patient order, the generators and the first segmenter seed.
        device: ``auto``, ``cpu``, ``cuda``...
        on_event: one-line notes.
        on_run: called with each finished run's record.

    Returns:
        the ``gain.json`` document.
    """
    from medaug.io.atomic import write_json, write_text
    from medaug.segment.train import data_cache
    from medaug.train.checkpoint import configs, load_checkpoint

    out = Path(out)
    note = on_event or (lambda _msg: None)
    cfg = (segment or SegmentConfig()).replace(device=device)
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"--ratio must be in [0, 1), got {ratio}")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}")
    arms = ["real", *[a for a in ARMS[1:] if a in arms]]
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if synth_mode not in ("prior", "perturb"):
        raise ConfigError(f"--mode must be prior or perturb, got {synth_mode!r}")
    if model is not None and folds is not None:
        raise ConfigError(
            "--model gives one generator, and --folds needs one per fold: leave out --folds "
            "(one split) or --model (medaug trains a generator per fold and regime)"
        )
    given = None
    if model is not None:
        from medaug.preprocess.config import PreprocessConfig

        given = load_checkpoint(model)
        pp = PreprocessConfig.from_dict(configs(given)["preprocess_config"], source=str(model))
        if preprocess_config is not None:
            check_grid(pp, preprocess_config, model)
        preprocess_config = pp
    whose = "the generator's (--model)" if given is not None else "the --config given"
    cache = data_cache(input, out / "cache", None, note, preprocess_config, whose)
    sweep = parse_train_patients([str(v) for v in train_patients])
    plans = plan_folds(cache, sweep, folds, test_fraction, seed)
    note(
        f"{len(plans)} split(s), {len(plans[0]['test_patients'])} test patient(s) each; "
        f"regimes {', '.join(plans[0]['regimes'])} real patient(s); arms {', '.join(arms)}; "
        f"{seeds} seed(s); {cfg.steps} steps per run"
    )
    needs_synth = any("synth" in a for a in arms)
    generators: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for plan in plans:
        fold = plan["fold"]
        for regime, cases in plan["regimes"].items():
            folder = out / "folds" / f"fold{fold}" / f"n{regime}"
            synth = None
            if needs_synth:
                gen = _generator(
                    given, cache, plan, regime, cases, folder, variant, generator_steps, seed,
                    device, note,
                )  # fmt: skip
                synth_dir = _synthesize(
                    gen, folder / "synthetic", synth_n, synth_mode, seed, cache, device, note
                )
                gen["synthetic"] = str(synth_dir.relative_to(out))
                generators.append(gen)
                from medaug.data.synthetic import SyntheticDataset

                synth = SyntheticDataset(synth_dir, intensity="unit")
            from medaug.segment import labels2image as l2i

            painted = l2i.Labels2ImageDataset(cache, cases, seed) if l2i.ARM in arms else None
            for s in range(seeds):
                for arm in arms:
                    source = painted if arm == l2i.ARM else synth
                    run = _run(
                        out, cache, plan, regime, cases, arm, cfg, seed + s, ratio, source, note
                    )
                    runs.append(run)
                    if on_run is not None:
                        on_run(run)
    doc = {
        "medaug_version": medaug.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "train_patients": sweep,
            "seeds": seeds,
            "folds": folds,
            "test_fraction": None if folds else test_fraction,
            "arms": arms,
            "ratio": ratio,
            "synth_n": synth_n,
            "synth_mode": synth_mode,
            "generator": "given" if given is not None else variant,
            "generator_steps": None if given is not None else generator_steps,
            "seed": seed,
            "segment": cfg.to_dict(),
        },
        "preprocess_config": cache.config.to_dict(),
        "splits": plans,
        "generators": generators,
        "runs": runs,
        "summary": summarize(runs, arms),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / RESULT, doc)
    write_text(out / "gain.md", table(doc))
    from medaug.report import gain_plot

    gain_plot(doc, out / "gain.png")
    return json.loads((out / RESULT).read_text())  # as written: lists, not tuples


def _generator(given, cache, plan, regime, cases, folder, variant, steps, seed, device, note):
    """The regime's generator: the given one, or one trained on its patients only."""
    from medaug.train import TrainConfig, train
    from medaug.train.checkpoint import list_checkpoints, load_checkpoint
    from medaug.train.distributed import pick_device
    from medaug.train.runs import runs_in

    state = given
    if state is None:
        gen_dir = folder / "generator"
        done = [r for r in runs_in(gen_dir) if list_checkpoints(r)]
        state = load_checkpoint(list_checkpoints(done[-1])[-1]) if done else None
        if state is None or int(state["step"]) < steps:
            preset = "cpu" if pick_device(device).type == "cpu" else "gpu-small"
            others = [c for c in cache.case_ids if c not in set(cases)]
            items = _items(cache, cases)
            note(
                f"fold {plan['fold']}, {regime} patient(s): training a {variant} generator "
                f"({steps} steps) on those patients only"
            )
            tcfg = TrainConfig(steps=steps, seed=seed, device=device, batch_size=min(16, items))
            result = train(
                cache.root, gen_dir, model=variant, preset=preset, config=tcfg,
                resume=bool(done), cases=(cases, others),
            )  # fmt: skip
            if result.checkpoint is None:
                raise ConfigError(f"{result.run_dir}: training wrote no checkpoint")
            state = load_checkpoint(result.checkpoint)
    info = check_generator(state, cache, plan["test_cases"])
    path = Path(state["path"])
    from medaug.synth.sampler import file_sha256

    return {
        "fold": plan["fold"],
        "regime": int(regime),
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "training_patients": len(info["training_patients"]),
        "leakage_check": "passed: no test case among its training cases",
    }


def _items(cache: Any, cases: Sequence[str]) -> int:
    if cache.config.dims == 3:
        return len(cases)
    return sum(int(cache.records[c]["shape"][2]) for c in cases)


def _synthesize(gen, out: Path, n: int, mode: str, seed: int, cache: Any, device, note) -> Path:
    from medaug.synth.output import MANIFEST
    from medaug.synth.run import synthesize

    try:
        doc = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        doc = {}
    made = doc.get("settings", {})
    same = (made.get("checkpoint_sha256"), made.get("mode"), made.get("seed")) == (
        gen["sha256"], mode, seed,
    )  # fmt: skip
    if same and doc.get("complete") and doc.get("n") == n:
        return out
    note(f"fold {gen['fold']}, {gen['regime']} patient(s): synthesizing {n} {mode} cases")
    # the same generator and settings: a killed synthesis resumes with its written cases
    resume = same and doc.get("n", 0) <= n
    synthesize(
        out, n, model=gen["checkpoint"], mode=mode, seed=seed, overwrite=not resume,
        input=cache.root if mode == "perturb" else None, device=device,
    )  # fmt: skip
    return out


def _run(out, cache, plan, regime, cases, arm, cfg, seed, ratio, synth, note) -> dict[str, Any]:
    """One segmenter: train on the arm's data, score on the fold's test cases."""
    from medaug.io.atomic import write_json
    from medaug.segment.evaluate import score
    from medaug.segment.train import fit

    run_cfg = cfg.replace(
        seed=seed,
        augment="classical" if "classical" in arm else "none",
        ratio=ratio if arm in MIXED_ARMS else 0.0,
        synthetic_only=arm == "synth-only",
    )
    ident = {
        "fold": plan["fold"],
        "regime": int(regime),
        "arm": arm,
        "seed": seed,
        "config": run_cfg.to_dict(),
        "train_cases": list(cases),
        "test_cases": plan["test_cases"],
        "synthetic": None if synth is None or "synth" not in arm else synth.manifest["settings"],
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    # the key in the name: runs of other settings (steps, ratio...) stay beside these
    path = out / "runs" / f"fold{plan['fold']}-n{regime}-{arm}-seed{seed}-{key}.json"
    if path.exists():
        try:
            done = json.loads(path.read_text())
            if done.get("key") == key:
                return done
        except (OSError, ValueError):
            pass  # a damaged record: the run is redone
    fitted = fit(cache, cases, run_cfg, synth if "synth" in arm or "labels2image" in arm else None)
    scores = score(fitted.net, cache, plan["test_cases"], run_cfg)
    record = {
        "key": key,
        "fold": plan["fold"],
        "regime": int(regime),
        "arm": arm,
        "seed": seed,
        "steps": fitted.steps,
        "batch_size": run_cfg.batch_size,
        "items_real": fitted.items_real,
        "items_synthetic": fitted.items_synthetic,
        "train_patients": int(regime),
        "seconds": round(fitted.seconds, 2),
        "final_loss": fitted.losses[-1][1] if fitted.losses else None,
        "test": scores,
    }
    write_json(path, record)
    note(
        f"fold {plan['fold']}, {regime} patient(s), seed {seed}, {arm}: "
        f"Dice {scores['dice']:.3f} ({fitted.seconds:.0f} s)"
    )
    return record


def summarize(runs: list[dict[str, Any]], arms: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (regime, arm): Dice over runs, and the paired test against ``real``."""
    from medaug.segment.stats import interval, paired

    rows = []
    for regime in sorted({r["regime"] for r in runs}):
        mine = [r for r in runs if r["regime"] == regime]
        reference = _per_case(mine, "real")
        for arm in arms:
            arm_runs = [r for r in mine if r["arm"] == arm]
            if not arm_runs:
                continue
            dice = interval([r["test"]["dice"] for r in arm_runs])
            hd = [r["test"]["hd95_mm"] for r in arm_runs if r["test"]["hd95_mm"] is not None]
            row = {
                "regime": regime,
                "arm": arm,
                "runs": len(arm_runs),
                "dice": dice,
                "hd95_mm": float(np.mean(hd)) if hd else None,
                "surface_dice": float(np.mean([r["test"]["surface_dice"] for r in arm_runs])),
                "steps": sorted({r["steps"] for r in arm_runs}),
                "synthetic_share": float(
                    np.mean(
                        [
                            r["items_synthetic"] / (r["items_synthetic"] + r["items_real"])
                            for r in arm_runs
                        ]
                    )
                ),
            }
            if arm != "real":
                mine_cases = _per_case(mine, arm)
                keys = sorted(set(mine_cases) & set(reference))
                row["vs_real"] = paired([mine_cases[k] for k in keys], [reference[k] for k in keys])
            rows.append(row)
    return rows


def _per_case(runs: list[dict[str, Any]], arm: str) -> dict[tuple[int, str, int], float]:
    """(fold, test case, seed) -> Dice: the pairs of the paired comparison."""
    return {
        (r["fold"], c["case"], r["seed"]): c["dice"]
        for r in runs
        if r["arm"] == arm
        for c in r["test"]["cases"]
    }


def table(doc: dict[str, Any]) -> str:
    """``gain.md``: the summary as a Markdown table, with what it was measured on."""
    s = doc["settings"]
    head = (
        "real patients", "arm", "runs", "Dice mean", "sd", "95% CI", "ΔDice vs real",
        "ΔDice 95% CI (pairs)", "paired p (t / Wilcoxon)", "HD95 mm", "surface Dice",
    )  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in doc["summary"]:
        d = row["dice"]
        sd = "–" if d["sd"] is None else f"{d['sd']:.3f}"
        ci = "–" if d["ci95"] is None else f"[{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
        vs = row.get("vs_real")
        delta = "" if vs is None else f"{vs['mean_difference']:+.3f}"
        dci = "" if vs is None else _diff_ci(vs)
        p = "" if vs is None else f"{_p(vs['t_p'])} / {_p(vs['wilcoxon_p'])}"
        hd = "–" if row["hd95_mm"] is None else f"{row['hd95_mm']:.1f}"
        lines.append(
            f"| {row['regime']} | {row['arm']} | {row['runs']} | {d['mean']:.3f} | {sd} | {ci} | "
            f"{delta} | {dci} | {p} | {hd} | {row['surface_dice']:.3f} |"
        )
    splits = doc["splits"]
    test = len(splits[0]["test_patients"])
    kind = (
        f"{s['folds']}-fold cross-validation"
        if s["folds"]
        else f"one split, {test} test patient(s)"
    )
    seg = s["segment"]
    setup = (
        f"{kind} by patient; {s['seeds']} seed(s) per arm; every run {seg['steps']} steps of "
        f"batch {seg['batch_size']} (MONAI UNet {tuple(seg['channels'])}, DiceCE)."
    )
    gens = doc["generators"]
    if gens:
        if s["generator"] == "given":
            gen = f"one given generator (trained on {gens[0]['training_patients']} patient(s))"
        else:
            gen = (
                f"a {s['generator']} generator per regime ({s['generator_steps']} steps) "
                "trained on that regime's patients only"
            )
        setup += (
            f" Synthetic arms: ratio {s['ratio']}, {s['synth_n']} {s['synth_mode']} cases from "
            f"{gen}; the leakage check passed for every generator."
        )
    lines += [
        "",
        setup,
        "Dice is the test patients' mean per run; the interval is the 95% t interval over runs "
        "(folds x seeds). ΔDice is the mean paired difference from `real` over every "
        "(test case, seed) pair, with its 95% t interval and the paired tests.",
    ]
    return "\n".join(lines) + "\n"


def _diff_ci(vs: dict[str, Any]) -> str:
    ci = vs.get("ci95")
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}] ({vs['pairs']})" if ci else f"– ({vs['pairs']})"


def _p(p: float | None) -> str:
    return "–" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "check_generator",
    "parse_train_patients",
    "plan_folds",
    "run_gain",
    "summarize",
    "table",
]
