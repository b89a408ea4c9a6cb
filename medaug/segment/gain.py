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
   optionally ``synth-only``, ``real+labels2image`` (the cheap baseline: images
   painted from the regime's real labels, :mod:`medaug.segment.labels2image`, at
   ``ratio``; ``painting`` fitted to the regime's class intensities or SynthSeg's wide
   draw) and ``real+classical+labels2image`` (the same under classical augmentation:
   the fair rival of ``real+classical+synth``).
5. **Statistics.** Per arm and regime: mean test Dice over runs (folds x seeds), its
   standard deviation and 95% t interval; and a paired comparison with ``real`` over
   every (test case, seed) pair (the same seed starts both arms from the same weights
   and real items): the mean difference with its 95% t interval, paired t and
   Wilcoxon. The same comparison against each of the arm's fair rivals that ran
   (``RIVALS``: ``real+classical+synth`` against ``real+classical`` and
   ``real+classical+labels2image``, ``real+synth`` against ``real+labels2image``).

Everything resumes: the cache and generators by their own keys and checkpoints, the
synthetic folders by their records, each run by its result file under ``runs/``. Folds
are independent, so ``only_folds`` runs some of them (one job per fold, as nnU-Net
trains fold by fold); a later run over every fold in the same folder reuses their
records and writes the whole table.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medaug
from medaug.data.synthetic import SyntheticDataset
from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, InputError
from medaug.io.atomic import write_json, write_text
from medaug.preprocess.cache import Cache
from medaug.preprocess.config import PreprocessConfig
from medaug.preprocess.splits import make_splits, recorded_sides
from medaug.progress import Progress, progress_of
from medaug.segment import labels2image
from medaug.segment.config import (
    ARMS,
    DEFAULT_ARMS,
    MIXED_ARMS,
    PAINTED_ARMS,
    RIVALS,
    GainConfig,
    SegmentConfig,
    default_sweep,
    parse_train_patients,
)
from medaug.segment.evaluate import score
from medaug.segment.plot import gain_plot
from medaug.segment.segmenter import data_cache
from medaug.segment.stats import interval, paired
from medaug.segment.train import fit
from medaug.synth.fidelity_filter import JudgeFactory, require_judge
from medaug.synth.run import synthesize
from medaug.train.checkpoint import Checkpoint
from medaug.train.distributed import pick_device
from medaug.train.fit import fit_or_resume
from medaug.train.spec import DEFAULT_STEPS_CPU, GeneratorSpec

RESULT = "gain.json"
#: The task ``run_gain`` reports to its progress (segmenter runs).
TASK = "gain"


@dataclass(frozen=True)
class Regime:
    """One cell of the sweep: the first ``patients`` training patients of a fold.

    Attributes:
        fold: the split it belongs to.
        patients: real training patients (``"all"`` resolved to a count).
        cases: their cases (the real training set).
        test_cases: the fold's test cases.
    """

    fold: int
    patients: int
    cases: tuple[str, ...]
    test_cases: tuple[str, ...]

    @property
    def folder(self) -> Path:
        """Its place in the experiment folder (generator, synthetic cases)."""
        return Path("folds") / f"fold{self.fold}" / f"n{self.patients}"

    def __str__(self) -> str:
        return f"fold {self.fold}, {self.patients} patient(s)"


@dataclass(frozen=True)
class FoldPlan:
    """One patient-level split of the experiment and its nested real training sets.

    Attributes:
        fold: its number.
        test_patients / test_cases: held out for testing.
        training_patients: the other patients, in the sweep's seeded order.
        regimes: N -> the cases of the first N training patients (N as text, as in
            ``gain.json``).
    """

    fold: int
    test_patients: list[str]
    test_cases: list[str]
    training_patients: list[str]
    regimes: dict[str, list[str]]

    def cells(self) -> list[Regime]:
        test = tuple(self.test_cases)
        return [Regime(self.fold, int(n), tuple(c), test) for n, c in self.regimes.items()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_folds(
    cache: Any,
    train_patients: Sequence[int | str] | None,
    folds: int | None,
    test_fraction: float,
    seed: int,
    on_event: Callable[[str], None] | None = None,
) -> list[FoldPlan]:
    """The experiment's patient-level splits and the nested real training sets.

    Args:
        train_patients: real patients per regime; None: the default sweep, cut to the
            smallest fold's training patients (:func:`default_sweep`, told to
            ``on_event``).

    Returns:
        one :class:`FoldPlan` per fold.

    Raises:
        ConfigError: fewer patients than folds or than a regime needs.
        InputError: a fold whose test cases hold no target voxels.
    """
    patients = {c: str(cache.records[c].get("patient", c)) for c in cache.case_ids}
    n_patients = len(set(patients.values()))
    if folds is not None and folds > n_patients:
        raise ConfigError(
            f"{{folds}} {folds} needs at least {folds} patients; the data have {n_patients}"
        )
    if n_patients < 2:
        raise ConfigError(
            f"the gain experiment needs at least 2 patients; the data have {n_patients}"
        )
    if folds is None and not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"{{test_fraction}} must be in (0, 1), got {test_fraction}")
    doc = make_splits(patients, test_fraction, folds, seed)
    if train_patients is None:
        fewest = min(len({patients[c] for c in split["train"]}) for split in doc["splits"])
        train_patients, adapted = default_sweep(fewest)
        if adapted is not None and on_event is not None:
            on_event(adapted)
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
                    f"{{train_patients}} {n}: fold {k} has only {len(order)} training patients "
                    f"({n_patients} patients, {n_test} for testing)"
                )
            chosen = set(order[:count])
            regimes[str(count)] = sorted(c for c, p in patients.items() if p in chosen)
        test_patients = sorted({patients[c] for c in test_cases})
        plans.append(FoldPlan(k, test_patients, list(test_cases), order, regimes))
    return plans


def check_generator(ckpt: Checkpoint, cache: Any, test_cases: Sequence[str]) -> dict[str, Any]:
    """Refuse a generator that cannot be used for this experiment.

    Args:
        ckpt: the generator's checkpoint.
        cache: the experiment's cache.
        test_cases: the fold's test cases.

    Returns:
        ``{"training_cases", "training_patients"}`` of the generator in this cache.

    Raises:
        ConfigError: another preprocessing grid, no recorded split, or a test patient
            among its training cases (leakage).
    """
    path = ckpt.path
    check_grid(ckpt.preprocess, cache.config, path)
    sides = recorded_sides(cache, ckpt.split)
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
            f"the generator was trained on {len(who)} test patient(s) "
            f"({', '.join(who[:3])}); a gain measured on them would be leakage. Train it "
            "on the experiment's training patients (gain.json: folds) or leave out {model}",
            prefix=f"{path}: ",
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
    config: GainConfig | None = None,
    *,
    model: str | os.PathLike[str] | None = None,
    preprocess_config: PreprocessConfig | None = None,
    progress: Progress | Callable[[str], None] | None = None,
    judge: JudgeFactory | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run the augmentation-gain experiment and write ``gain.json``, ``gain.md``, ``gain.png``.

    Args:
        input: labelled scans (any layout ``medaug inspect`` reads) or a cache.
        out: the experiment's folder.
        config: the experiment (:class:`GainConfig`: the sweep, seeds, folds, arms,
            synthetic ratio and cases, the generators, the U-Net, seed, device).
        model: a generator checkpoint to use for every regime instead of training one
            per regime; its preprocessing config becomes the experiment's.
        preprocess_config: ``PreprocessConfig`` for scans (default: 2D, medaug's
            defaults; the model's when ``model`` is given).
        progress: a :class:`~medaug.progress.Progress` (or a function for the notes):
            notes, each generator's ``training``, what ``synthesize`` reports (a
            mask generator's ``training``, ``synthesizing``), and the ``gain`` task:
            ``start`` with every segmenter run of the experiment, then per finished
            run ``record`` (its record, Dice included) and ``advance``.
        judge: builds the segmenter of the fidelity filter (``min_fidelity``), e.g.
            :func:`medaug.evaluate.fidelity.judge`, which trains it on the regime's
            patients only; needed only with ``min_fidelity``.
        **settings: :class:`GainConfig` fields that override ``config``'s
            (``run_gain(scans, out, train_patients=[2, "all"], seeds=5)``).

    Returns:
        the ``gain.json`` document.
    """
    out = Path(out)
    progress = progress_of(progress)
    note = progress.note
    if isinstance(settings.get("generator"), dict):  # a recipe's generator: mapping
        settings["generator"] = GeneratorSpec.from_dict(settings["generator"], "generator")
    cfg = (config or GainConfig()).replace(**settings)
    # the generators' budget on this device, as gain.json records it
    cfg = cfg.replace(generator=cfg.generator.for_device(pick_device(cfg.device).type))
    if model is not None and cfg.folds is not None:
        raise ConfigError(
            "{model} gives one generator, and {folds} needs one per fold: leave out {folds} "
            "(one split) or {model} (medaug trains a generator per fold and regime)"
        )
    if cfg.min_fidelity is not None and not cfg.needs_synthetic:
        raise ConfigError(
            "{min_fidelity} filters synthetic pairs, and none of the arms "
            f"({', '.join(cfg.arms)}) has any"
        )
    require_judge(cfg.min_fidelity, judge)  # before a generator is fitted, not after
    given = None
    if model is not None:
        given = Checkpoint.load(model)
        if preprocess_config is not None:
            check_grid(given.preprocess, preprocess_config, model)
        preprocess_config = given.preprocess
    whose = "the generator's ({model})" if given is not None else "the {preprocess_config} given"
    cache = data_cache(input, out / "cache", None, note, preprocess_config, whose)
    plans = plan_folds(cache, cfg.train_patients, cfg.folds, cfg.test_fraction, cfg.seed, note)
    if cfg.train_patients is None:  # gain.json records the sweep that ran
        fewest = min(len(plan.training_patients) for plan in plans)
        cfg = cfg.replace(train_patients=default_sweep(fewest)[0])
    note(
        f"{len(plans)} split(s), {len(plans[0].test_patients)} test patient(s) each; "
        f"regimes {', '.join(plans[0].regimes)} real patient(s); arms {', '.join(cfg.arms)}; "
        f"{cfg.seeds} seed(s); {cfg.segment.steps} steps per run"
    )
    if cfg.only_folds is not None:
        note(f"running fold(s) {', '.join(map(str, cfg.only_folds))} of {len(plans)}")
    ran = [p for p in plans if cfg.only_folds is None or p.fold in cfg.only_folds]
    cells = [r for plan in ran for r in plan.cells()]
    progress.start(TASK, len(cells) * cfg.seeds * len(cfg.arms))
    generators: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for regime in cells:
        synth = None
        if cfg.needs_synthetic:
            gen = _synthetic_for(out, regime, cache, cfg, given, progress, judge)
            generators.append(gen)
            synth = SyntheticDataset(out / gen["synthetic"], intensity="unit")
        painted = None
        if any(a in PAINTED_ARMS for a in cfg.arms):
            painted = labels2image.Labels2ImageDataset(
                cache, list(regime.cases), cfg.seed, form=cfg.painting
            )
        for s in range(cfg.seeds):
            for arm in cfg.arms:
                source = painted if arm in PAINTED_ARMS else synth
                run = _run(out, cache, regime, arm, cfg.seed + s, cfg, source, note)
                runs.append(run)
                progress.record(TASK, run)
                progress.advance(TASK)
    doc = {
        "medaug_version": medaug.__version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": cfg.settings(given=given is not None),
        "config": cfg.to_dict(),
        "preprocess_config": cache.config.to_dict(),
        "splits": [plan.to_dict() for plan in plans],
        "folds_run": [plan.fold for plan in ran],
        "generators": generators,
        "runs": runs,
        "summary": summarize(runs, cfg.arms),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / RESULT, doc)
    write_text(out / "gain.md", table(doc))
    gain_plot(doc, out / "gain.png")
    return json.loads((out / RESULT).read_text())  # as written: lists, not tuples


def _synthetic_for(
    out: Path,
    regime: Regime,
    cache: Cache,
    cfg: GainConfig,
    given: Checkpoint | None,
    progress: Progress,
    judge: JudgeFactory | None,
) -> dict[str, Any]:
    """The regime's generator (the given one, or one trained on its patients only),
    checked for leakage, and its synthetic cases; returns the generator's record."""
    folder = out / regime.folder
    if given is None and cfg.generator.steps != DEFAULT_STEPS_CPU:
        # another generator budget in a folder of its own, with its pairs: fitting
        # longer resumes a shorter run in place, and a 900-step experiment would then
        # read the longer checkpoint as its own (the folder names the steps, not the
        # device: a workdir moved from a GPU to a CPU keeps its generators apart)
        folder = folder / f"generator-steps{cfg.generator.steps}"
    ckpt = given
    if ckpt is None:
        progress.note(f"{regime}: a {cfg.generator.describe()} of those patients only")
        path = fit_or_resume(
            cache, folder / "generator", cfg.generator, regime.cases, seed=cfg.seed,
            device=cfg.device, progress=progress,
        )  # fmt: skip
        ckpt = Checkpoint.load(path)
    info = check_generator(ckpt, cache, regime.test_cases)
    # learned layouts and filtered pairs in folders of their own: the default pairs (and
    # the runs made on them) stay, so switching either lever on and off redoes nothing
    name = "synthetic" + ("-learned" if cfg.masks == "learned" else "")
    name += "" if cfg.min_fidelity is None else f"-fidelity{cfg.min_fidelity:g}"
    synth_dir = _synthesize(ckpt, folder / name, regime, cache, cfg, progress, judge)
    return {
        "fold": regime.fold,
        "regime": regime.patients,
        "checkpoint": str(ckpt.path),
        "sha256": ckpt.sha256,
        "training_patients": len(info["training_patients"]),
        "leakage_check": "passed: no test case among its training cases",
        "synthetic": str(synth_dir.relative_to(out)),
        "masks": cfg.masks,
    }


def _synthesize(
    ckpt: Checkpoint,
    out: Path,
    regime: Regime,
    cache: Cache,
    cfg: GainConfig,
    progress: Progress,
    judge: JudgeFactory | None,
) -> Path:
    """``cfg.synth_n`` cases of ``ckpt`` in ``out``: kept when complete, resumed when a
    killed run of the same generator and settings left some, else made anew."""
    n, mode, seed = cfg.synth_n, cfg.synth_mode, cfg.seed
    made = SynthFolder.find(out)
    settings = made.settings if made is not None else {}
    # real masks are synthesize's default for a conditional model: left unset, so the
    # folder's settings (and the keys of the runs made on it) stay as before the lever
    masks = "learned" if cfg.masks == "learned" else None
    fields = ("checkpoint_sha256", "mode", "seed", "min_fidelity", "masks")
    recorded = tuple(settings.get(k) for k in fields)
    same = recorded == (ckpt.sha256, mode, seed, cfg.min_fidelity, masks)
    if made is not None and same and made.complete and made.n == n:
        return out
    kept = f" kept at label fidelity >= {cfg.min_fidelity:g}" if cfg.min_fidelity else ""
    drawn = " on learned layouts" if masks else ""
    progress.note(f"{regime}: synthesizing {n} {mode} cases{drawn}{kept}")
    # the same generator and settings: a killed synthesis resumes with its written cases
    resume = made is not None and same and made.n <= n
    # a conditional generator draws its layouts from its training cases' masks
    needs_real = mode == "perturb" or ckpt.model_config.conditional
    synthesize(
        out, n, model=ckpt, mode=mode, seed=seed, overwrite=not resume,
        input=cache.root if needs_real or cfg.min_fidelity else None, device=cfg.device,
        min_fidelity=cfg.min_fidelity, judge=judge, masks=masks, progress=progress,
    )  # fmt: skip
    return out


def _run(
    out: Path,
    cache: Cache,
    regime: Regime,
    arm: str,
    seed: int,
    cfg: GainConfig,
    synth: SyntheticDataset | labels2image.Labels2ImageDataset | None,
    note,
) -> dict[str, Any]:
    """One segmenter: train on the arm's data (``synth``: the synthetic or painted
    items of a mixed arm), score on the fold's test cases."""
    run_cfg = cfg.segment.replace(
        seed=seed,
        augment="classical" if "classical" in arm else "none",
        ratio=cfg.ratio if arm in MIXED_ARMS else 0.0,
        synthetic_only=arm == "synth-only",
    )
    ident = {
        "fold": regime.fold,
        "regime": regime.patients,
        "arm": arm,
        "seed": seed,
        "config": run_cfg.to_dict(),
        "train_cases": list(regime.cases),
        "test_cases": list(regime.test_cases),
        # the settings block leaves the count out (a larger n extends a folder): the
        # pairs the arm drew from are the folder's settings and its number of cases
        "synthetic": (
            {**synth.manifest["settings"], "cases": synth.folder.n}
            if "synth" in arm and isinstance(synth, SyntheticDataset)
            else None
        ),
    }
    if arm in PAINTED_ARMS and isinstance(synth, labels2image.Labels2ImageDataset):
        ident["painting"] = synth.settings  # only here: earlier runs of other arms keep keys
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    # the key in the name: runs of other settings (steps, ratio...) stay beside these
    name = f"fold{regime.fold}-n{regime.patients}-{arm}-seed{seed}-{key}.json"
    path = out / "runs" / name
    if path.exists():
        try:
            done = json.loads(path.read_text())
            if done.get("key") == key:
                return done
        except (OSError, ValueError):
            pass  # a damaged record: the run is redone
    mixed = synth if "synth" in arm or arm in PAINTED_ARMS else None
    fitted = fit(cache, list(regime.cases), run_cfg, mixed)
    scores = score(fitted.net, cache, list(regime.test_cases), run_cfg)
    record = {
        "key": key,
        "fold": regime.fold,
        "regime": regime.patients,
        "arm": arm,
        "seed": seed,
        "steps": fitted.steps,
        "batch_size": run_cfg.batch_size,
        "items_real": fitted.items_real,
        "items_synthetic": fitted.items_synthetic,
        "train_patients": regime.patients,
        "seconds": round(fitted.seconds, 2),
        "final_loss": fitted.losses[-1][1] if fitted.losses else None,
        "test": scores,
    }
    write_json(path, record)
    note(f"{regime}, seed {seed}, {arm}: Dice {scores['dice']:.3f} ({fitted.seconds:.0f} s)")
    return record


def summarize(runs: list[dict[str, Any]], arms: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (regime, arm): Dice over runs, and the paired test against ``real``."""
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
                row["vs_real"] = _paired(mine_cases, reference)
                rivals = [r for r in RIVALS.get(arm, ()) if r in arms]
                row["vs"] = {r: _paired(mine_cases, _per_case(mine, r)) for r in rivals}
            rows.append(row)
    return rows


def _paired(arm: dict[tuple[int, str, int], float], other: dict[tuple[int, str, int], float]):
    """The paired comparison over the (fold, test case, seed) pairs both arms ran."""
    keys = sorted(set(arm) & set(other))
    return paired([arm[k] for k in keys], [other[k] for k in keys])


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
    against = [
        (row["regime"], row["arm"], rival, vs)
        for row in doc["summary"]
        for rival, vs in (row.get("vs") or {}).items()
    ]
    if against:  # what an arm adds over its fair rivals, on the same pairs
        rival_head = ("real patients", "arm", "against", "ΔDice", "95% CI (pairs)",
                      "paired p (t / Wilcoxon)")  # fmt: skip
        lines += ["", "| " + " | ".join(rival_head) + " |", "|" + "---|" * len(rival_head)]
        for regime, arm, rival, vs in against:
            delta = "–" if vs["mean_difference"] is None else f"{vs['mean_difference']:+.3f}"
            lines.append(
                f"| {regime} | {arm} | {rival} | {delta} | {_diff_ci(vs)} | "
                f"{_p(vs['t_p'])} / {_p(vs['wilcoxon_p'])} |"
            )
    splits = doc["splits"]
    test = len(splits[0]["test_patients"])
    kind = (
        f"{s['folds']}-fold cross-validation"
        if s["folds"]
        else f"one split, {test} test patient(s)"
    )
    if s.get("only_folds"):  # a part of the experiment: the other folds run elsewhere
        only = s["only_folds"]
        kind += f" (fold{'s' * (len(only) > 1)} {', '.join(map(str, only))} only)"
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
            spec = GeneratorSpec.from_dict(s["generator"])
            gen = (
                f"a {spec.describe()} per regime ({spec.steps} steps) "
                "trained on that regime's patients only"
            )
        setup += (
            f" Synthetic arms: ratio {s['ratio']}, {s['synth_n']} {s['synth_mode']} cases"
            + (
                f" (kept at label fidelity >= {s['min_fidelity']:g}, judged by a segmenter "
                "of the regime's patients)"
                if s.get("min_fidelity")
                else ""
            )
            + f" from {gen}"
            + (
                "; layouts drawn by a mask generator fitted on the same patients"
                if s.get("masks") == "learned"
                else ""
            )
            + "; the leakage check passed for every generator."
        )
    lines += [
        "",
        setup,
        "Dice is the test patients' mean per run; the interval is the 95% t interval over runs "
        "(folds x seeds). ΔDice is the mean paired difference from `real` (second table: "
        "from the arm's fair rivals) over every (test case, seed) pair, with its 95% t "
        "interval and the paired tests.",
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
    "MIXED_ARMS",
    "FoldPlan",
    "GainConfig",
    "Regime",
    "SegmentConfig",
    "check_generator",
    "parse_train_patients",
    "plan_folds",
    "run_gain",
    "summarize",
    "table",
]
