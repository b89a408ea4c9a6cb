"""medaug gain: the whole experiment on the phantom cohort with tiny settings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medaug.data import Cache
from medaug.errors import ConfigError, InputError
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.segment import SegmentConfig
from medaug.segment.config import DEFAULT_TRAIN_PATIENTS, RIVALS, default_sweep
from medaug.segment.gain import ARMS, parse_train_patients, plan_folds, run_gain
from medaug.train import TrainConfig, train
from medaug.train.checkpoint import Checkpoint
from medaug.train.spec import GeneratorSpec
from tests.conftest import SMALL, TINY_MODEL, run_cli
from tests.synth.test_synth import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

TINY = SegmentConfig(steps=3, batch_size=4, channels=(4, 8, 16), strides=(2, 2), res_units=0)
PP = PreprocessConfig(grid_2d=(16, 16))
GEN = dict(steps=4, batch_size=4, log_every=2, checkpoint_every=4, sample_every=4, warmup_steps=2,
           n_samples=4)  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medaug.data.phantom import write_cohort

    out = tmp_path_factory.mktemp("gain") / "cohort"
    write_cohort(out, patients=4, seed=0, fmt="dicom", config=SMALL)
    return out


@pytest.fixture(scope="module")
def experiment(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gain") / "out"
    doc = run_gain(
        cohort, out, train_patients=[1, "all"], seeds=2, folds=2, segment=TINY, synth_n=6,
        generator=GeneratorSpec(steps=4), preprocess_config=PP, arms=ARMS, device="cpu",
    )  # fmt: skip
    return out, doc


def test_gain_json_has_every_run_and_a_row_per_regime_and_arm(experiment):
    out, doc = experiment
    assert json.loads((out / "gain.json").read_text()) == doc
    assert doc["settings"]["train_patients"] == [1, "all"]
    runs = doc["runs"]
    assert len(runs) == 2 * 2 * len(ARMS) * 2  # folds x regimes x arms x seeds
    assert {(r["regime"], r["arm"]) for r in doc["summary"]} == {
        (n, a) for n in (1, 2) for a in ARMS
    }
    for row in doc["summary"]:
        assert row["runs"] == 4 and len(row["dice"]["ci95"]) == 2
        assert row["dice"]["ci95"][0] <= row["dice"]["mean"] <= row["dice"]["ci95"][1]
        if row["arm"] != "real":
            # every patient is tested once, with each of the 2 seeds: 4 x 2 pairs
            assert row["vs_real"]["pairs"] == 8 and len(row["vs_real"]["ci95"]) == 2
    table = (out / "gain.md").read_text()
    assert table.startswith("| real patients | arm | runs | Dice mean | sd | 95% CI |")
    assert "| ΔDice vs real | ΔDice 95% CI (pairs) |" in table and " (8) |" in table
    # the second table: each arm against its fair rivals (RIVALS), 4 rows per regime
    rivals = sum(len(v) for v in RIVALS.values())
    assert table.count("\n| 1 |") == len(ARMS) + rivals
    assert "| 1 | real+classical+synth | real+classical | " in table
    row = next(r for r in doc["summary"] if (r["regime"], r["arm"]) == (1, "real+classical+synth"))
    assert set(row["vs"]) == {"real+classical", "real+classical+labels2image"}
    dice = {(r["fold"], r["arm"], r["seed"], c["case"]): c["dice"]
            for r in runs if r["regime"] == 1 for c in r["test"]["cases"]}  # fmt: skip
    diffs = [d - dice[(f, "real+classical", s, c)]
             for (f, a, s, c), d in dice.items() if a == "real+classical+synth"]  # fmt: skip
    vs = row["vs"]["real+classical"]
    assert vs["pairs"] == 8 and vs["mean_difference"] == pytest.approx(np.mean(diffs))
    with Image.open(out / "gain.png") as png:
        assert png.size[0] > 400 and png.size[1] > 300


def test_splits_are_by_patient_and_regimes_nest(experiment, cohort: Path):
    out, doc = experiment
    cache = Cache(out / "cache")
    patient = {c: cache.records[c]["patient"] for c in cache.case_ids}
    tested = []
    for split in doc["splits"]:
        test = set(split["test_patients"])
        assert {patient[c] for c in split["test_cases"]} == test
        small, full = split["regimes"]["1"], split["regimes"]["2"]
        assert set(small) < set(full)
        assert {patient[c] for c in full}.isdisjoint(test)
        assert len({patient[c] for c in small}) == 1
        tested += sorted(test)
    assert sorted(tested) == sorted(set(patient.values()))  # 2 folds: each patient once


def test_arms_are_step_matched_and_differ_only_in_their_data(experiment):
    _, doc = experiment
    runs = doc["runs"]
    assert {(r["steps"], r["batch_size"]) for r in runs} == {(3, 4)}
    for r in runs:
        assert r["items_real"] + r["items_synthetic"] == 12
        if r["arm"] in ("real", "real+classical"):
            assert r["items_synthetic"] == 0
        if r["arm"] == "synth-only":
            assert r["items_real"] == 0
    # one generator per fold and regime, trained on that regime's patients only
    gens = doc["generators"]
    assert {(g["fold"], g["regime"]) for g in gens} == {(f, n) for f in (0, 1) for n in (1, 2)}
    assert all(g["training_patients"] == g["regime"] for g in gens)
    assert all(g["leakage_check"].startswith("passed") for g in gens)


def test_a_second_run_reuses_every_result(experiment, cohort: Path):
    out, doc = experiment
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run_gain(
        cohort, out, train_patients=[1, "all"], seeds=2, folds=2, segment=TINY, synth_n=6,
        generator=GeneratorSpec(steps=4), preprocess_config=PP, arms=ARMS, device="cpu",
    )  # fmt: skip
    assert again["summary"] == doc["summary"]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps


def test_more_synthetic_pairs_redo_the_synthetic_runs_only(experiment, cohort: Path, tmp_path):
    """A larger ``synth_n`` extends the synthesis folders and trains the synthetic arms
    anew; a record made on fewer pairs is never taken for it, the real arms are kept."""
    out = tmp_path / "out"
    shutil.copytree(experiment[0], out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    arms = ["real", "real+synth"]
    more = run_gain(
        cohort, out, train_patients=[1], seeds=2, folds=2, segment=TINY, synth_n=8,
        generator=GeneratorSpec(steps=4), preprocess_config=PP, arms=arms, device="cpu",
    )  # fmt: skip
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    new = sorted(set(after) - set(before))
    assert len(new) == 2 * 2 and all("-real+synth-" in name for name in new)  # folds x seeds
    real = [r for r in more["runs"] if r["arm"] == "real"]
    assert len(real) == 4 and all(after[n] == before[n] for n in before)
    assert more["settings"]["synth_n"] == 8


def test_one_fold_at_a_time_runs_that_fold_only(experiment, cohort: Path, tmp_path: Path):
    """``only_folds`` trains and scores the folds it names and leaves the others alone;
    its runs are the same records a whole run makes, so a later whole run reuses them."""
    out = tmp_path / "out"
    shutil.copytree(experiment[0], out)
    for path in (out / "runs").glob("fold1-*"):
        path.unlink()  # fold 1 as if its job had not run yet
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    settings = dict(
        train_patients=[1, "all"], seeds=2, folds=2, segment=TINY, synth_n=6, arms=ARMS,
        generator=GeneratorSpec(steps=4), preprocess_config=PP, device="cpu",
    )  # fmt: skip
    part = run_gain(cohort, out, only_folds=[0], **settings)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == before
    assert part["folds_run"] == [0] and len(part["splits"]) == 2
    assert {r["fold"] for r in part["runs"]} == {0} and len(part["runs"]) == 2 * len(ARMS) * 2
    assert all(row["runs"] == 2 for row in part["summary"])  # one fold x 2 seeds
    assert "2-fold cross-validation (fold 0 only)" in (out / "gain.md").read_text()
    whole = run_gain(cohort, out, **{**settings, "arms": ["real"]})  # fold 1 runs, 0 reused
    new = sorted(set(p.name for p in (out / "runs").iterdir()) - set(before))
    assert len(new) == 2 * 2 and all(n.startswith("fold1-") and "-real-" in n for n in new)
    assert whole["folds_run"] == [0, 1]
    first = {(row["regime"], row["arm"]): row for row in experiment[1]["summary"]}
    assert whole["summary"][0]["dice"] == first[(1, "real")]["dice"]  # the same runs again


def test_labels2image_arms_with_every_patient_tested_once(cohort: Path, tmp_path: Path):
    arms = ["real", "real+labels2image", "real+classical+labels2image"]
    doc = run_gain(
        cohort, tmp_path / "g", train_patients=[1], seeds=2, folds=4, segment=TINY,
        arms=arms, preprocess_config=PP, device="cpu",
    )  # fmt: skip
    assert doc["generators"] == []  # no generator is trained for the cheap baseline
    tested = sorted(p for split in doc["splits"] for p in split["test_patients"])
    assert len(tested) == 4 and len(set(tested)) == 4  # 4 folds: each patient once
    painted = [r for r in doc["runs"] if r["arm"] == "real+labels2image"]
    assert len(painted) == 4 * 2 and all(r["items_synthetic"] > 0 for r in painted)
    row = next(r for r in doc["summary"] if r["arm"] == "real+labels2image")
    assert row["vs_real"]["pairs"] == 4 * 2  # (test case, seed) pairs
    # the fair rival of real+classical+synth: painted items under classical augmentation
    both = [r for r in doc["runs"] if r["arm"] == "real+classical+labels2image"]
    assert len(both) == 4 * 2 and all(r["items_synthetic"] > 0 for r in both)
    plain = {(r["fold"], r["seed"]): r["test"]["dice"] for r in painted}
    assert any(plain[(r["fold"], r["seed"])] != r["test"]["dice"] for r in both)  # augmented
    # the same seed gives the same per-case Dice
    again = run_gain(
        cohort, tmp_path / "g2", train_patients=[1], seeds=2, folds=4, segment=TINY,
        arms=arms, preprocess_config=PP, device="cpu",
    )  # fmt: skip
    dice = {(r["fold"], r["arm"], r["seed"]): r["test"]["cases"] for r in doc["runs"]}
    assert {(r["fold"], r["arm"], r["seed"]): r["test"]["cases"] for r in again["runs"]} == dice
    assert "| 1 | real+labels2image | 8 |" in (tmp_path / "g" / "gain.md").read_text()
    assert doc["settings"]["painting"] == "fitted"

    # the other painting redoes the painted arms only: real runs are kept
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "g" / "runs").iterdir()}
    wide = run_gain(
        cohort, tmp_path / "g", train_patients=[1], seeds=1, folds=4, segment=TINY,
        arms=arms[:2], preprocess_config=PP, device="cpu", painting="wide",
    )  # fmt: skip
    now = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "g" / "runs").iterdir()}
    added = sorted(set(now) - set(stamps))
    assert len(added) == 4 and all("-real+labels2image-" in name for name in added)
    assert all(now[name] == stamps[name] for name in stamps)
    painted_wide = {(r["fold"], r["seed"]): r["test"]["dice"] for r in wide["runs"]
                    if r["arm"] == "real+labels2image"}  # fmt: skip
    assert painted_wide != plain

    # the command line: --arms picks the arms (real always runs), --painting the draw
    proc = run_cli("gain", "--input", tmp_path / "g" / "cache", "--out", tmp_path / "cli",
                   "--arms", "real+labels2image", "--train-cases", "1", "--seeds", "1",
                   "--steps", "2", "--batch-size", "4", "--device", "cpu", "--quiet",
                   "--painting", "wide")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "cli" / "gain.json").read_text())
    assert [r["arm"] for r in written["summary"]] == ["real", "real+labels2image"]
    assert written["settings"]["painting"] == "wide"


def generator_on(cache_dir: Path, cases: list[str], out: Path) -> Path:
    cache = Cache(cache_dir)
    others = [c for c in cache.case_ids if c not in cases]
    result = train(cache_dir, out, model="vaegan", config=TrainConfig(**GEN),
                   model_overrides=TINY_MODEL, cases=(cases, others))  # fmt: skip
    assert result.checkpoint is not None
    return result.checkpoint


def test_a_generator_that_saw_a_test_patient_is_refused(experiment, cohort, tmp_path: Path):
    out, doc = experiment
    split = {"fold": 0, **doc["splits"][0]}
    # trained on the same patients the one-split experiment below tests on
    from medaug.data.splits import make_splits

    cache = Cache(out / "cache")
    patients = {c: cache.records[c]["patient"] for c in cache.case_ids}
    test = make_splits(patients, 0.2, None, 0)["splits"][0]["val"]
    leaky = generator_on(out / "cache", test + split["regimes"]["1"], tmp_path / "leaky")
    with pytest.raises(ConfigError, match="trained on 1 test patient") as err:
        run_gain(cohort, tmp_path / "g", model=leaky, train_patients=[1], seeds=1, segment=TINY,
                 synth_n=4, preprocess_config=PP, device="cpu")  # fmt: skip
    assert "leakage" in str(err.value)
    clean = [c for c in cache.case_ids if c not in test]
    ok = generator_on(out / "cache", clean, tmp_path / "clean")
    doc2 = run_gain(cohort, tmp_path / "g2", model=ok, train_patients=[1], seeds=1, segment=TINY,
                    synth_n=4, device="cpu")  # fmt: skip
    assert doc2["generators"][0]["training_patients"] == len({patients[c] for c in clean})
    assert "one given generator" in (tmp_path / "g2" / "gain.md").read_text()


def test_a_generator_on_another_grid_is_refused(experiment, cohort, tmp_path: Path):
    coarser = PreprocessConfig(grid_2d=(16, 16), spacing_mm=(2.0, 2.0, 2.5))
    other = preprocess(cohort, tmp_path / "coarse", coarser)
    ckpt = generator_on(other.out, Cache(other.out).case_ids[:2], tmp_path / "g")
    with pytest.raises(ConfigError, match=r"different preprocessing grid \(spacing_mm"):
        run_gain(cohort, tmp_path / "g", model=ckpt, train_patients=[1], segment=TINY,
                 preprocess_config=PP, device="cpu")  # fmt: skip


def test_a_test_set_without_target_is_refused(experiment, tmp_path: Path):
    out, _ = experiment
    cache = tmp_path / "cache"
    shutil.copytree(out / "cache", cache)
    for path in (cache / "cases").glob("*_label.npy"):
        np.save(path, np.zeros_like(np.load(path)))
    with pytest.raises(InputError, match="hold no pancreas voxels"):
        run_gain(cache, tmp_path / "g", train_patients=[1], segment=TINY, device="cpu")


def test_sweep_values_parse_and_bad_ones_are_refused():
    assert parse_train_patients(["4,2", "all", "2"]) == [2, 4, "all"]
    for bad in (["0"], ["two"], [""]):
        with pytest.raises(ConfigError):
            parse_train_patients(bad)


def test_the_default_sweep_shrinks_to_the_smallest_fold_and_says_so(experiment):
    assert default_sweep(4) == (DEFAULT_TRAIN_PATIENTS, None)
    assert default_sweep(3) == (
        (2, "all"),
        "real patients per regime: 2, all (the default 2, 4, all cut to what the smallest "
        "fold trains on: 3 patients)",
    )
    assert default_sweep(1)[0] == ("all",) and default_sweep(1)[1].endswith("1 patient)")
    # 4 patients, half for testing: 2 train, so 2 and all (both 2) are one regime
    cache, notes = Cache(experiment[0] / "cache"), []
    plans = plan_folds(cache, None, None, 0.5, 0, on_event=notes.append)
    assert [list(p.regimes) for p in plans] == [["2"]]
    assert notes == [default_sweep(2)[1]] and "all (the default" in notes[0]
    with pytest.raises(ConfigError, match="4: fold 0 has only 2 training patients"):
        plan_folds(cache, [4], None, 0.5, 0)  # asked for: still refused


class _EverywhereTarget:
    """A judge that calls every voxel target: a 2D pair's Dice is then
    2|L| / (|L| + N) for a label of |L| target voxels on a grid of N, a known ranking."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "judge.txt"
        self.path.write_text("every voxel is target")

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.ones(images.shape, np.uint8)

    def describe(self) -> dict:
        return {"source": "every voxel is target"}


def _everywhere_dice(label_file: Path) -> float:
    target = int((np.asarray(nib.load(label_file).dataobj) == 1).sum())
    return 2 * target / (target + 16 * 16)


def test_a_fidelity_filter_trains_on_its_own_pairs_and_keeps_the_rest(
    experiment, cohort: Path, tmp_path: Path
):
    """``min_fidelity`` keeps the pairs its judge passes, in a folder beside the
    unfiltered one: the synthetic arms train anew on them, nothing else is redone."""
    out = tmp_path / "out"
    shutil.copytree(experiment[0], out)
    plain = sorted(out.glob("folds/fold*/n1/*/synthetic"))
    assert len(plain) == 2
    scores = sorted(_everywhere_dice(f) for d in plain for f in (d / "labels").glob("*.nii.gz"))
    threshold = round(scores[len(scores) // 4], 4)  # a quarter of the first candidates fail
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    plain_stamps = [(d / "manifest.json").stat().st_mtime_ns for d in plain]
    settings = dict(
        train_patients=[1], seeds=2, folds=2, segment=TINY, synth_n=6, min_fidelity=threshold,
        generator=GeneratorSpec(steps=4), preprocess_config=PP, device="cpu",
        arms=["real", "real+synth"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"min_fidelity.* needs .*judge"):
        run_gain(cohort, out, **settings)
    doc = run_gain(cohort, out, **settings, judge=lambda *a: _EverywhereTarget(a[2]))
    rejected = 0
    for d in plain:
        kept = d.with_name(f"synthetic-fidelity{threshold:g}")
        manifest = json.loads((kept / "manifest.json").read_text())
        assert manifest["settings"]["min_fidelity"] == threshold
        assert len(manifest["cases"]) == 6
        for case in manifest["cases"]:
            dice = case["params"]["fidelity_dice"]
            assert dice >= threshold
            assert dice == pytest.approx(_everywhere_dice(kept / case["label"]), abs=1e-4)
        rejected += manifest["fidelity_filter"]["rejected"]
    assert rejected >= 1
    assert [(d / "manifest.json").stat().st_mtime_ns for d in plain] == plain_stamps
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    new = sorted(set(after) - set(before))
    assert len(new) == 2 * 2 and all("-real+synth-" in name for name in new)  # folds x seeds
    assert all(after[n] == before[n] for n in before)
    assert doc["settings"]["min_fidelity"] == threshold
    assert f"kept at label fidelity >= {threshold:g}" in (out / "gain.md").read_text()


def test_another_generator_budget_fits_beside_the_first_and_leaves_it(
    experiment, cohort: Path, tmp_path: Path
):
    """A longer ``generator.steps`` fits new generators in folders of their own: the
    first budget's checkpoints and pairs stay, and a run at that budget reuses them."""
    out = tmp_path / "out"
    shutil.copytree(experiment[0], out)
    first = sorted(out.glob("folds/fold*/n1/generator-steps4"))
    assert len(first) == 2

    def stamps() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for d in first for p in d.rglob("*") if p.is_file()}

    before = stamps()
    settings = dict(
        train_patients=[1], seeds=1, folds=2, segment=TINY, synth_n=6, preprocess_config=PP,
        device="cpu", arms=["real", "real+synth"],
    )  # fmt: skip
    longer = run_gain(cohort, out, generator=GeneratorSpec(steps=6), **settings)
    for gen in longer["generators"]:
        assert "generator-steps6" in gen["checkpoint"]
        assert Checkpoint.load(gen["checkpoint"]).step == 6
    assert stamps() == before
    again = run_gain(cohort, out, generator=GeneratorSpec(steps=4), **settings)
    assert [g["sha256"] for g in again["generators"]] == [
        g["sha256"] for g in experiment[1]["generators"] if g["regime"] == 1
    ]
    assert stamps() == before


def test_learned_layouts_train_a_mask_generator_per_regime_and_keep_the_rest(
    experiment, cohort: Path, tmp_path: Path
):
    """``masks="learned"``: each regime's generator gets a mask generator fitted on the
    same patients beside it, the pairs go in a folder of their own and only the
    synthetic arms train anew; the real-mask folders and runs stay as they were."""
    out = tmp_path / "out"
    shutil.copytree(experiment[0], out)
    plain = sorted(out.glob("folds/fold*/n1/*/synthetic"))
    stamps = [(d / "manifest.json").stat().st_mtime_ns for d in plain]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    notes: list[str] = []
    doc = run_gain(
        cohort, out, train_patients=[1], seeds=2, folds=2, segment=TINY, synth_n=6,
        masks="learned", generator=GeneratorSpec(steps=4), preprocess_config=PP,
        device="cpu", arms=["real", "real+synth"], progress=notes.append,
    )  # fmt: skip
    # the mask generators' fitting reaches the caller's progress, as the generators' does
    assert sum(n.startswith("fitting a vaegan mask generator") for n in notes) == 2
    gens = sorted(doc["generators"], key=lambda g: g["fold"])
    for d, gen in zip(plain, gens, strict=True):
        learned = d.with_name("synthetic-learned")
        manifest = json.loads((learned / "manifest.json").read_text())
        assert manifest["settings"]["masks"] == "learned" and len(manifest["cases"]) == 6
        assert all(c["params"]["layout"]["masks"] == "learned" for c in manifest["cases"])
        assert manifest["conditioning"]["cleanup"]["cases"] == 6
        # the mask generator beside the image model, trained on the regime's patient only
        masks = Checkpoint.load(next(d.parent.glob("generator/*/masks/*/checkpoints/*.pt")))
        image = Checkpoint.load(gen["checkpoint"])
        assert masks.model_config.role == "layout"
        assert masks.split["train"] == image.split["train"]
        assert gen["masks"] == "learned" and gen["synthetic"].endswith("synthetic-learned")
    assert [(d / "manifest.json").stat().st_mtime_ns for d in plain] == stamps
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    new = sorted(set(after) - set(before))
    assert len(new) == 2 * 2 and all("-real+synth-" in name for name in new)  # folds x seeds
    assert all(after[n] == before[n] for n in before)
    assert doc["settings"]["masks"] == "learned"
    assert "layouts drawn by a mask generator" in (out / "gain.md").read_text()


@pytest.mark.parametrize(
    "case",
    ["folds", "ratio", "too-many", "model-and-folds", "arm", "fold", "fold-alone", "min-fidelity",
     "min-fidelity-arms", "masks-perturb"],
)  # fmt: skip
def test_bad_gain_input_fails_with_one_line(experiment, cohort, tmp_path: Path, case: str):
    out, _ = experiment
    base = ("gain", "--input", out / "cache", "--out", tmp_path / "g", "--steps", "2", "--quiet")
    extra = {
        "folds": ("--folds", "5"),
        "ratio": ("--ratio", "1.0"),
        "too-many": ("--train-cases", "9"),
        "model-and-folds": ("--folds", "2", "--model", out / "cache"),
        "arm": ("--arms", "real,labels2imag"),
        "fold": ("--folds", "2", "--fold", "2"),
        "fold-alone": ("--fold", "0"),
        "min-fidelity": ("--min-fidelity", "1.5"),
        "min-fidelity-arms": ("--arms", "real,real+classical", "--min-fidelity", "0.5"),
        "masks-perturb": ("--masks", "learned", "--mode", "perturb"),
    }[case]
    line = one_error_line(run_cli(*base, *extra))
    assert {
        "folds": "--folds 5 needs at least 5 patients; the data have 4",
        "ratio": "--ratio must be in [0, 1)",
        "too-many": "--train-cases 9: fold 0 has only",
        "model-and-folds": "--model gives one generator, and --folds needs one per fold",
        "arm": "unknown arm 'labels2imag'; arms are real, real+classical",
        "fold": "--fold takes fold numbers 0 to 1 (--folds 2), got [2]",
        "fold-alone": "--fold picks folds of --folds: give --folds too",
        "min-fidelity": "--min-fidelity must be in (0, 1], got 1.5",
        "min-fidelity-arms": "--min-fidelity filters synthetic pairs, and none of the arms "
        "(real, real+classical) has any",
        "masks-perturb": "--mode perturb keeps each training case's own layout; --masks "
        "learned draws new ones",
    }[case] in line
    assert not (tmp_path / "g" / "gain.json").exists()
    assert os.environ.get("MEDAUG_NOTHING") is None
