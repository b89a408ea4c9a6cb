"""medaug segment: the U-Net's training, its checkpoint and its scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medaug.data import Cache, load_split
from medaug.errors import ConfigError, InputError
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.segment import SegmentConfig, fit, load_segmenter, score
from medaug.segment.evaluate import case_metrics, predict
from medaug.train.checkpoint import load_checkpoint
from tests.conftest import run_cli
from tests.synth.test_synth import error_lines, one_error_line

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

TINY = SegmentConfig(steps=3, batch_size=4, channels=(4, 8, 16), strides=(2, 2), res_units=0)


# ---- metrics against known answers ----------------------------------------------------


def cube(shape=(20, 20, 10), lo=(5, 5, 3), hi=(12, 12, 7), shift=(0, 0, 0)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    sl = tuple(slice(a + s, b + s) for a, b, s in zip(lo, hi, shift, strict=True))
    m[sl] = 1
    return m


def test_identical_masks_score_perfectly():
    m = cube()
    r = case_metrics(m, m, (1.5, 1.5, 2.5), 2.0)
    assert r["dice"] == 1.0 and r["hd95_mm"] == 0.0 and r["surface_dice"] == 1.0
    assert r["target_voxels"] == r["predicted_voxels"] == 7 * 7 * 4


def test_a_shift_along_x_shows_in_mm_and_in_dice():
    truth, pred = cube(), cube(shift=(2, 0, 0))
    r = case_metrics(pred, truth, (1.5, 1.5, 2.5), 2.0)
    assert r["dice"] == pytest.approx(2 * 5 / 14, abs=1e-4)  # 5 of 7 columns overlap
    assert r["hd95_mm"] == pytest.approx(3.0)  # two voxels of 1.5 mm
    # surface Dice: within 2 mm -> the faces parallel to x (shifted 3 mm) disagree
    loose = case_metrics(pred, truth, (1.5, 1.5, 2.5), 3.5)["surface_dice"]
    assert r["surface_dice"] < loose == pytest.approx(1.0)


def test_a_missed_structure_scores_zero_and_no_distance():
    r = case_metrics(np.zeros((20, 20, 10), np.uint8), cube(), (1.0, 1.0, 1.0), 2.0)
    assert r["dice"] == 0.0 and r["surface_dice"] == 0.0 and r["hd95_mm"] is None


# ---- training and scoring -------------------------------------------------------------


def test_fit_is_step_matched_and_repeatable(pairs_world):
    cache = Cache(pairs_world["cache"])
    train, _ = load_split(cache.root)
    from medaug.data.synthetic import SyntheticDataset

    synth = SyntheticDataset(pairs_world["synthetic"], intensity="unit")
    a = fit(cache, train, TINY, None)
    b = fit(cache, train, TINY, None)
    c = fit(cache, train, TINY.replace(ratio=0.5, augment="classical"), synth)
    only = fit(cache, train, TINY.replace(synthetic_only=True), synth)
    for f in (a, c, only):
        assert f.steps == 3 and f.items_real + f.items_synthetic == 3 * 4
    assert a.items_synthetic == 0 and 0 < c.items_synthetic < 12 and only.items_real == 0
    for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_2d_prediction_covers_every_slice_of_a_case(pairs_world):
    cache = Cache(pairs_world["cache"])
    train, val = load_split(cache.root)
    f = fit(cache, train, TINY, None)
    pred = predict(f.net, cache, val[0], TINY)
    z, x, y = cache.array(val[0], "label").shape
    assert pred.shape == (x, y, z) and pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    doc = score(f.net, cache, val, TINY)
    assert [r["case"] for r in doc["cases"]] == val
    assert 0.0 <= doc["dice"] <= 1.0


def test_3d_scores_a_volume_larger_than_the_window(pairs_world, tmp_path: Path):
    pp = PreprocessConfig(dims=3, grid_3d=(16, 16, 16))
    cache = Cache(preprocess(pairs_world["cohort"], tmp_path / "c3", pp, val_fraction=0.25).out)
    train, val = load_split(cache.root)
    cfg = TINY.replace(batch_size=2)
    f = fit(cache, train, cfg, None)
    pred = predict(f.net, cache, val[0], cfg)
    assert pred.shape == (16, 16, 16)
    # a model window smaller than the case: the sliding window tiles it
    small = Cache(cache.root)
    small.config = PreprocessConfig(dims=3, grid_3d=(8, 8, 8))
    assert predict(f.net, small, val[0], cfg).shape == (16, 16, 16)


def test_a_test_set_without_target_voxels_is_refused(pairs_world, tmp_path: Path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(pairs_world["cache"], cache_dir)
    _, val = load_split(cache_dir)
    for c in val:
        path = cache_dir / "cases" / f"{c}_label.npy"
        np.save(path, np.zeros_like(np.load(path)))
    cache = Cache(cache_dir)
    f = fit(cache, load_split(cache_dir)[0], TINY, None)
    with pytest.raises(InputError, match="hold no pancreas voxels"):
        score(f.net, cache, val, TINY)


def test_the_ratio_must_be_in_0_1():
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        SegmentConfig(ratio=1.0)


# ---- the command line -----------------------------------------------------------------


def test_segment_train_and_eval_from_the_cli(pairs_world, tmp_path: Path):
    out = tmp_path / "seg"
    args = ("--steps", "3", "--batch-size", "4", "--device", "cpu", "--quiet")
    synth = ("--synthetic", pairs_world["synthetic"], "--augment", "classical")
    proc = run_cli("segment", "train", pairs_world["cache"], "--out", out, *synth, *args)
    assert proc.returncode == 0, proc.stderr
    assert "held-out cases" in proc.stdout and "case_" in proc.stdout
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 3 and training["items_real"] + training["items_synthetic"] == 12
    assert training["config"]["ratio"] == 0.5 and training["config"]["augment"] == "classical"
    held = json.loads((out / "evaluation.json").read_text())
    _, val = load_split(pairs_world["cache"])
    assert [r["case"] for r in held["cases"]] == val
    assert set(held["cases"][0]) >= {"dice", "hd95_mm", "surface_dice"}

    # the checkpoint loads without code and rebuilds the same net
    state = torch.load(out / "segmenter.pt", weights_only=True)
    assert state["kind"] == "segmenter"
    _, cfg, pp, split = load_segmenter(out)
    assert cfg.steps == 3 and pp.grid_2d == (16, 16) and split["val"][0]["case"] == val[0]
    with pytest.raises(InputError, match="segmenter checkpoint, not a generator"):
        load_checkpoint(out / "segmenter.pt")

    # eval on the scans: preprocessed with the model's config, training cases left out
    proc = run_cli("segment", "eval", out, pairs_world["cohort"], "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["left_out_training_cases"] == 3
    assert [r["dice"] for r in doc["cases"]] == [r["dice"] for r in held["cases"]]


@pytest.mark.parametrize(
    "case",
    ["ratio", "no-labels", "not-a-model", "only-training-cases", "ratio-without-synthetic"],
)
def test_bad_segment_input_fails_with_one_line(pairs_world, tmp_path: Path, case: str):
    base = ("segment", "train", pairs_world["cache"], "--out", tmp_path / "o", "--steps", "2",
            "--batch-size", "4", "--quiet")  # fmt: skip
    if case == "ratio":
        proc = run_cli(*base, "--synthetic", pairs_world["synthetic"], "--ratio", "1.0")
        assert "[0, 1)" in one_error_line(proc)
    elif case == "no-labels":
        synth = tmp_path / "synthetic"
        shutil.copytree(pairs_world["synthetic"], synth)
        shutil.rmtree(synth / "labels")
        proc = run_cli(*base, "--synthetic", synth)
        line = one_error_line(proc)
        assert "synth_0000" in line and "no label file" in line
    elif case == "not-a-model":
        bad = tmp_path / "segmenter.pt"
        bad.write_bytes(b"\x00" * 64)
        line = error_lines(run_cli("segment", "eval", bad, pairs_world["cache"]))[-1]
        assert str(bad) in line and "not a readable medaug checkpoint" in line
    elif case == "only-training-cases":
        out = tmp_path / "seg"
        assert run_cli(*base[:3], "--out", out, *base[5:]).returncode == 0
        train, _ = load_split(pairs_world["cache"])
        part = tmp_path / "train-only"
        shutil.copytree(pairs_world["cache"], part)
        index = json.loads((part / "index.json").read_text())
        index["cases"] = [c for c in index["cases"] if c["case_id"] in train]
        (part / "index.json").write_text(json.dumps(index))
        line = error_lines(run_cli("segment", "eval", out, part))[-1]
        assert "every case is one the segmenter trained on" in line
    else:
        assert "needs --synthetic" in one_error_line(run_cli(*base, "--ratio", "0.3"))
    assert not (tmp_path / "o" / "segmenter.pt").exists()


def test_classical_augmentation_is_seeded_and_leaves_monai_tracking_alone():
    from monai.data import MetaTensor, get_track_meta

    from medaug.segment.augment import classical

    x, y = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    item = {
        "image": (x / 16 - 1)[None],
        "label": ((x - 16) ** 2 + (y - 16) ** 2 < 50).float()[None],
    }
    augment = classical(2)
    outs = []
    for seed in (3, 3, 4):
        augment.set_random_state(seed=seed)
        outs.append(augment(dict(item)))
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])
    assert set(torch.unique(outs[0]["label"]).tolist()) <= {0.0, 1.0}  # nearest for labels
    assert not isinstance(outs[0]["image"], MetaTensor)  # plain tensors: no affine history
    assert get_track_meta()  # the process-wide setting is as it was
