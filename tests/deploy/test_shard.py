"""Sharded synthesis (``medaug synth --shard K/N``) and ``medaug synth-merge``: three
shards merged equal one unsharded run (voxels, manifest, datalist, preview); the
merge refuses shards that do not belong together, in one line, and resumes when
killed.

A tiny 2D VAE-GAN is trained once per module on a three-patient phantom cohort.
Cases are decoded one at a time (``batch_size=1``) so that sharded and unsharded
runs decode the very same batches and can be compared bit for bit (other batch
sizes agree to 1 HU, see tests/synth).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medaug.cli import app
from medaug.data.phantom import write_cohort
from medaug.errors import ConfigError, InputError
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.synth import output, synthesize
from medaug.synth.merge import merge
from medaug.train import TrainConfig, train
from tests.conftest import SMALL, TINY_MODEL, run_cli

N = 7
#: n = 7 over 3 shards: [0, 1], [2, 3], [4, 5, 6]
RANGES = [(0, 2), (2, 4), (4, 7)]
SYNTH = {"mode": "perturb", "device": "cpu", "batch_size": 1, "writers": 1}


@dataclass(frozen=True)
class World:
    cohort: Path
    model: Path
    other_model: Path
    whole: Path
    shards: list[Path]


pytestmark = pytest.mark.usefixtures("one_thread_per_process")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("shard-world")
    cohort = root / "cohort"
    write_cohort(cohort, patients=3, seed=0, fmt="dicom", config=SMALL)
    cache = preprocess(cohort, root / "cache", PreprocessConfig(dims=2, grid_2d=(16, 16))).out
    steps = dict(steps=2, log_every=2, checkpoint_every=2, sample_every=2, warmup_steps=1)
    models = []
    for seed in (0, 1):
        cfg = TrainConfig(batch_size=4, n_samples=4, seed=seed, **steps)
        result = train(cache, root / f"runs{seed}", config=cfg, model_overrides=TINY_MODEL)
        assert result.checkpoint is not None
        models.append(result.checkpoint)
    whole = synthesize(root / "whole", N, input=cohort, model=models[0], **SYNTH).out
    shards = []
    for k in range(3):
        shard = synthesize(
            root / "run" / f"shard_{k}", N, input=cohort, model=models[0], shard=(k, 3), **SYNTH
        )
        assert shard.n == len(range(*RANGES[k])) and shard.written == shard.n
        shards.append(shard.out)
    return World(cohort, models[0], models[1], whole, shards)


def without_timing(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "written"}


def voxels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def assert_same_as_whole(merged: Path, whole: Path) -> None:
    a = json.loads((merged / "manifest.json").read_text())
    b = json.loads((whole / "manifest.json").read_text())
    assert without_timing(a) == without_timing(b)
    assert a["complete"] and len(a["cases"]) == N and "shard" not in a["settings"]
    assert (merged / "dataset.json").read_text() == (whole / "dataset.json").read_text()
    for i in range(N):
        for kind in ("images", "labels"):
            x, ax = voxels(merged / kind / f"synth_{i:04d}.nii.gz")
            y, ay = voxels(whole / kind / f"synth_{i:04d}.nii.gz")
            np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(ax, ay)
    pa = np.asarray(Image.open(merged / "preview.png"))
    pb = np.asarray(Image.open(whole / "preview.png"))
    np.testing.assert_array_equal(pa, pb)


# ---- the shards themselves ------------------------------------------------------------


def test_each_shard_writes_its_own_range_with_global_names_and_seeds(world: World):
    seeds = set()
    for k, shard in enumerate(world.shards):
        doc = json.loads((shard / "manifest.json").read_text())
        start, stop = RANGES[k]
        assert doc["settings"]["shard"] == [k, 3]
        assert doc["indices"] == [start, stop] and doc["n"] == N and doc["complete"]
        assert [c["index"] for c in doc["cases"]] == list(range(start, stop))
        names = sorted(p.name for p in (shard / "images").iterdir())
        assert names == [f"synth_{i:04d}.nii.gz" for i in range(start, stop)]
        for case in doc["cases"]:
            assert case["params"]["seed"] == [0, case["index"]]
            seeds.add(tuple(case["params"]["seed"]))
    assert len(seeds) == N  # no two shards share a case seed


def test_a_shard_refuses_bad_requests_before_writing(world: World, tmp_path: Path):
    for shard, message in (((3, 3), "0 <= K < N"), ((0, 8), "more shards than cases")):
        with pytest.raises(ConfigError, match=message):
            synthesize(tmp_path / "x", N, model=world.model, shard=shard, device="cpu")
    with pytest.raises(ConfigError, match="shard needs model"):
        synthesize(tmp_path / "x", N, input=world.cohort, shard=(0, 2), device="cpu")
    assert not (tmp_path / "x").exists()
    # a folder of another shard is not resumed as this one
    with pytest.raises(InputError, match=r"other settings \(shard \[0, 3\] -> \[1, 3\]\)"):
        synthesize(world.shards[0], N, input=world.cohort, model=world.model, shard=(1, 3), **SYNTH)


def test_a_killed_shard_resumes(world: World, tmp_path: Path):
    shard = tmp_path / "shard_2"
    shutil.copytree(world.shards[2], shard)
    (shard / output.RECORDS / "synth_0005.json").unlink()
    again = synthesize(shard, N, input=world.cohort, model=world.model, shard=(2, 3), **SYNTH)
    assert again.written == 1 and again.n == 3 and again.manifest["complete"]


# ---- merging ----------------------------------------------------------------------------


@pytest.mark.slow
def test_three_merged_shards_equal_one_unsharded_run(world: World, tmp_path: Path):
    shards = [tmp_path / "run" / s.name for s in world.shards]
    for src, dst in zip(world.shards, shards, strict=True):
        shutil.copytree(src, dst)
    out = tmp_path / "run"  # the shards sit inside the merged folder, as under Slurm
    result = run_cli("synth-merge", out, *reversed(shards))
    assert result.returncode == 0, result.stderr
    assert f"Merged 3 shards: {N} cases in {out}" in result.stdout
    assert_same_as_whole(out, world.whole)
    # hard links, not copies; the shards are left whole
    merged = out / "images" / "synth_0003.nii.gz"
    assert merged.stat().st_ino == (shards[1] / "images" / "synth_0003.nii.gz").stat().st_ino
    assert json.loads((shards[1] / "manifest.json").read_text())["complete"]

    again = run_cli("synth-merge", out, *shards, "--json")  # a finished merge: same files
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["linked"] == 0
    assert_same_as_whole(out, world.whole)


def test_a_killed_merge_resumes(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_record = output.write_record
    calls = []

    def dying(out: Path, record: dict) -> None:
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(record["index"])
        write_record(out, record)

    monkeypatch.setattr(output, "write_record", dying)
    out = tmp_path / "merged"
    with pytest.raises(KeyboardInterrupt):
        merge(out, world.shards)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    monkeypatch.setattr(output, "write_record", write_record)
    result = merge(out, world.shards)
    assert result.linked == N - 4 and result.n == N
    assert_same_as_whole(out, world.whole)


def cli_error(*args: str | Path) -> str:
    """Run ``medaug ARGS`` in process; expect exit 1 and one error line; return it."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medaug: error: "), result.stderr
    return lines[0]


def test_merge_refuses_shards_that_do_not_belong_together(world: World, tmp_path: Path):
    s0, s1, s2 = world.shards
    out = tmp_path / "out"

    # overlapping: shard 1/2 (cases 3..6) beside 0/3 and 1/3 (cases 0..3)
    half = synthesize(
        tmp_path / "half", N, input=world.cohort, model=world.model, shard=(1, 2), **SYNTH
    ).out
    line = cli_error("synth-merge", out, s0, s1, half)
    assert f"{half}: its cases 3..6 overlap those of {s1} (2..3)" in line
    line = cli_error("synth-merge", out, s0, s0, s1, s2)
    assert "overlap" in line

    # missing: a shard in the middle, or at the end
    line = cli_error("synth-merge", out, s0, s2)
    assert f"{s2}: cases 2..3 of {N} are in no shard given: a shard is missing" in line
    line = cli_error("synth-merge", out, s0, s1)
    assert f"{s1}: cases 4..6 of {N} are in no shard given" in line

    # another checkpoint
    other = synthesize(
        tmp_path / "other", N, input=world.cohort, model=world.other_model, shard=(1, 3), **SYNTH
    ).out
    line = cli_error("synth-merge", out, s0, other, s2)
    assert f"{other}: made from another checkpoint" in line

    # other settings (a different seed)
    seeded = synthesize(
        tmp_path / "seeded", N, input=world.cohort, model=world.model, shard=(1, 3), seed=5,
        **{k: v for k, v in SYNTH.items()},
    ).out  # fmt: skip
    line = cli_error("synth-merge", out, s0, seeded, s2)
    assert f"{seeded}: made with other settings than {s0} (seed)" in line

    # incomplete: a case whose record is missing (killed before it was written)
    cut = tmp_path / "cut"
    shutil.copytree(s2, cut)
    (cut / output.RECORDS / "synth_0005.json").unlink()
    line = cli_error("synth-merge", out, s0, s1, cut)
    assert f"{cut}: shard 2/3 is incomplete (2 of 3 cases written)" in line

    # not a shard, not a folder
    line = cli_error("synth-merge", out, world.whole)
    assert f"{world.whole}: not a shard" in line
    line = cli_error("synth-merge", out, tmp_path / "nowhere")
    assert "nowhere: no such shard folder" in line

    # an output folder that holds something else
    (out / "notes.txt").parent.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    line = cli_error("synth-merge", out, s0, s1, s2)
    assert f"{out}: is not empty (notes.txt...)" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written


def test_synth_cli_shard_option_errors_are_one_line(world: World, tmp_path: Path):
    out = tmp_path / "x"
    base = ("synth", "--model", world.model, "--n", "4", "--out", out, "--device", "cpu")
    assert "expected K/N" in cli_error(*base, "--shard", "two")
    assert "0 <= K < N" in cli_error(*base, "--shard", "2/2")
    assert "more shards than cases" in cli_error(*base, "--shard", "0/5")
    assert "export the merged folder" in cli_error(*base, "--shard", "0/2", "--export", "nnunet")
