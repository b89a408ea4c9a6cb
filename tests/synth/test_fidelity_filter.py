"""``synth --min-fidelity``: candidates scored by a segmenter, the failing ones replaced
by new draws; the same seed keeps the same cases at any batch size and on resume."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medaug.errors import ConfigError
from medaug.evaluate.fidelity import judge
from medaug.segment import SegmentConfig, fidelity, train_segmenter
from medaug.synth import synthesize
from medaug.synth.fidelity_filter import case_dice
from medaug.synth.output import read_case
from tests.conftest import run_cli
from tests.synth.test_synth import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

SEG = SegmentConfig(steps=120, batch_size=8, channels=(8, 16, 32), strides=(2, 2), res_units=0,
                    device="cpu")  # fmt: skip


@pytest.fixture(scope="module")
def filter_world(pairs_world, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A segmenter trained on the generator's training cases, twelve unfiltered prior
    cases and each one's Dice against its own label (read-only)."""
    root = tmp_path_factory.mktemp("filter")
    seg = train_segmenter(pairs_world["cache"], root / "seg", config=SEG).checkpoint
    every = synthesize(root / "all", 12, model=pairs_world["checkpoint"], device="cpu")
    scorer = fidelity.load(seg, _config(every.manifest))
    dice = []
    for rec in every.manifest["cases"]:
        hu, label = read_case(every.out, rec)
        dice.append(case_dice(scorer, hu, label, scorer.preprocess))
    return {**pairs_world, "seg": seg, "all": every.out, "dice": dice}


def _config(manifest: dict):
    from medaug.preprocess import PreprocessConfig

    return PreprocessConfig.from_dict(manifest["preprocess_config"])


def voxels(folder: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(str(folder / "images" / f"{name}.nii.gz")).dataobj)


def test_kept_cases_are_the_first_passing_candidates_at_any_batch_size(filter_world, tmp_path):
    dice = filter_world["dice"]
    threshold = sorted(dice)[-3]  # three of the twelve candidates pass
    expected = [c for c, d in enumerate(dice) if d >= threshold][:3]
    assert expected != [0, 1, 2]  # some candidate before the third kept one is rejected
    runs = []
    for batch in (2, 5):
        out = tmp_path / f"b{batch}"
        result = synthesize(out, 3, model=filter_world["checkpoint"], device="cpu",
                            judge=judge, min_fidelity=threshold, segmenter=filter_world["seg"],
                            batch_size=batch)  # fmt: skip
        runs.append(result.manifest)
        params = [c["params"] for c in result.manifest["cases"]]
        assert [p["candidate"] for p in params] == expected
        assert [p["seed"] for p in params] == [[0, c] for c in expected]  # (seed, candidate)
        for p in params:
            assert p["fidelity_dice"] == pytest.approx(dice[p["candidate"]], abs=1e-5)
            assert p["fidelity_dice"] >= round(threshold, 5)
        for i, c in enumerate(expected):  # candidate c is unfiltered case c, named by its rank
            assert np.array_equal(voxels(out, f"synth_{i:04d}"),
                                  voxels(filter_world["all"], f"synth_{c:04d}"))  # fmt: skip
        kept = result.manifest["fidelity_filter"]
        assert kept["candidates_tried"] == expected[-1] + 1
        assert kept["rejected"] == expected[-1] + 1 - 3 and kept["min_dice"] == threshold
        assert result.manifest["settings"]["min_fidelity"] == threshold
    assert runs[0]["cases"] == runs[1]["cases"]

    # a resumed run (2 cases, then 3) continues the stream after the last kept case
    out = tmp_path / "resumed"
    synthesize(out, 2, model=filter_world["checkpoint"], device="cpu", judge=judge,
               min_fidelity=threshold, segmenter=filter_world["seg"])  # fmt: skip
    more = synthesize(out, 3, model=filter_world["checkpoint"], device="cpu", judge=judge,
                      min_fidelity=threshold, segmenter=filter_world["seg"])  # fmt: skip
    assert more.written == 1
    assert [c["params"]["candidate"] for c in more.manifest["cases"]] == expected


def test_a_filter_that_rejects_everything_says_how_far_it_got(filter_world, tmp_path):
    # a segmenter that calls every voxel target: no label is ever matched exactly
    state = torch.load(filter_world["seg"], weights_only=True)
    last = [k for k, v in state["model"].items() if k.endswith("bias") and v.shape == (2,)][-1]
    state["model"][last] = torch.tensor([-50.0, 50.0])
    greedy = tmp_path / "greedy.pt"
    torch.save(state, greedy)
    with pytest.raises(ConfigError, match=r"20 candidate pairs tried \(the limit, 10 per case\)"):
        synthesize(tmp_path / "o", 2, model=filter_world["checkpoint"], device="cpu",
                   judge=judge, min_fidelity=1.0, segmenter=greedy)  # fmt: skip
    args = ("--min-fidelity", "0.99", "--segmenter", greedy, "--device", "cpu", "--quiet")
    model = ("--model", filter_world["checkpoint"], "--n", "1", "--out", tmp_path / "cli")
    line = one_error_line(run_cli("synth", *model, *args))
    assert "--min-fidelity 0.99: 10 candidate pairs tried" in line
    assert "only 0 of 1 passed; the best Dice reached was 0." in line


@pytest.mark.parametrize("case", ["zero", "above-one", "shard", "no-segmenter"])
def test_bad_filter_settings_fail_with_one_line(filter_world, tmp_path, case):
    base = ("synth", "--model", filter_world["checkpoint"], "--n", "2", "--out", tmp_path / "o",
            "--device", "cpu", "--quiet")  # fmt: skip
    extra = {
        "zero": ("--min-fidelity", "0", "--segmenter", filter_world["seg"]),
        "above-one": ("--min-fidelity", "1.5", "--segmenter", filter_world["seg"]),
        "shard": ("--min-fidelity", "0.5", "--segmenter", filter_world["seg"], "--shard", "0/2"),
        "no-segmenter": ("--min-fidelity", "0.5"),
    }[case]
    line = one_error_line(run_cli(*base, *extra))
    assert {
        "zero": "--min-fidelity must be in (0, 1], got 0",
        "above-one": "--min-fidelity must be in (0, 1], got 1.5",
        "shard": "--min-fidelity with --shard",
        "no-segmenter": "--min-fidelity needs a segmenter: give --segmenter SEG, or --input",
    }[case] in line
    assert not (tmp_path / "o" / "images").exists()


def test_without_a_segmenter_one_is_trained_on_the_generator_cases(filter_world, tmp_path):
    out = tmp_path / "o"
    result = synthesize(out, 2, input=filter_world["cache"], model=filter_world["checkpoint"],
                        device="cpu", judge=judge, min_fidelity=0.01)  # fmt: skip
    seg = result.manifest["fidelity_filter"]["segmenter"]
    assert seg["source"].startswith("trained here") and seg["train_cases"] == 3
    assert (out / ".synth" / "segmenter" / "segmenter.pt").is_file()
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["fidelity_filter"] == result.manifest["fidelity_filter"]
