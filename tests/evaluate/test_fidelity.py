"""Label fidelity against known answers: a "generator" that hands back real pairs scores
the held-out real Dice, one whose labels sit away from the organ scores near 0; the
evaluate report, ``segment eval`` on a synthesis folder, and the bad inputs."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from medaug.data import Cache, load_split
from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, InputError
from medaug.evaluate import evaluate
from medaug.evaluate.fidelity import PREVIEW
from medaug.evaluate.verdict import verdict
from medaug.io.nifti import write_volume
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess.pipeline import grid_affine
from medaug.preprocess.transforms import unit_to_hu
from medaug.segment import (
    SegmentConfig,
    evaluate_segmenter,
    fidelity,
    load_segmenter,
    train_segmenter,
)
from medaug.synth import output
from tests.conftest import run_cli
from tests.synth.test_synth import error_lines, one_error_line

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

#: A small U-Net that reaches Dice ~0.6 on the held-out slices in ~4 s.
SEG = SegmentConfig(steps=200, batch_size=8, channels=(8, 16, 32), strides=(2, 2), res_units=0,
                    device="cpu")  # fmt: skip
#: 16x16 at 6 mm: a 96 mm field in which the pancreas is a part, not the whole picture.
GRID = PreprocessConfig(grid_2d=(16, 16), spacing_mm=(6.0, 6.0, 2.5))


def pairs_folder(out: Path, cache: Cache, case_ids: list[str], split, shift: int = 0) -> Path:
    """A synthesis-shaped folder whose "synthetic" pairs are the slices of real cached
    cases (one slice per case, as a 2D generator writes them); ``shift`` rolls each
    label that many voxels along x and y, away from the organ the image shows."""
    config = cache.config
    done = {}
    for case_id in case_ids:
        images = np.asarray(cache.array(case_id, "image"), dtype=np.float32)  # (Z, X, Y)
        labels = np.asarray(cache.array(case_id, "label"))
        for image, label in zip(images, labels, strict=True):
            i = len(done)
            name = f"synth_{i:04d}"
            hu = np.rint(unit_to_hu(image, config.hu_window))[..., None].astype(np.int16)
            lab = np.roll(label, (shift, shift), axis=(0, 1))[..., None].astype(np.uint8)
            affine = grid_affine(config, hu.shape)
            write_volume(hu, affine, out / "images" / f"{name}.nii.gz")
            write_volume(lab, affine, out / "labels" / f"{name}.nii.gz")
            files = {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"}
            done[i] = {"case": name, "index": i, "shape": list(hu.shape), "params": {}, **files}
    info = {
        "checkpoint": {"file": "none", "sha256": "0" * 64, "step": 0, "variant": "real", "dims": 2},
        "preprocess_config": config.to_dict(),
        "classes": {"pancreas": 1},
        "real_cases": len(cache.case_ids),
        "split": split,
    }
    output.manifest(out, {"mode": "real pairs", "seed": 0}, info, len(done), done)
    return out


@pytest.fixture(scope="module")
def world(pairs_world, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The pairs world's cohort on a coarser grid, a segmenter trained on its training
    cases, and two synthesis-shaped folders of the held-out patient's real slices
    (as a "generator" trained on those cases would write them): true labels, and
    labels shifted off the organ."""
    root = tmp_path_factory.mktemp("fidelity")
    cache = Cache(preprocess(pairs_world["cohort"], root / "cache", GRID, val_fraction=0.25).out)
    _, held = load_split(cache.root)
    seg = train_segmenter(cache.root, root / "seg", config=SEG).checkpoint.parent
    split = load_segmenter(seg)[3]  # the training cases by content hash
    return {
        **pairs_world,
        "seg": seg,
        "grid_cache": cache.root,
        "real": pairs_folder(root / "real", cache, held, split),
        "shifted": pairs_folder(root / "shifted", cache, held, split, shift=8),
    }


# ---- known answers ---------------------------------------------------------------------


def test_real_pairs_score_the_heldout_real_dice_and_the_report_leads_with_it(world, tmp_path):
    out = tmp_path / "real"
    shutil.copytree(world["real"], out)
    doc = evaluate(world["cohort"], out, feature_steps=2, device="cpu", segmenter=world["seg"])
    fid = doc["fidelity"]
    s, r = fid["synthetic"], fid["real_heldout"]
    assert fid["segmenter"]["source"].startswith("given")
    # the "synthetic" pairs are exactly the held-out real slices (HU rounded to integers)
    assert s["pairs"] == r["pairs"] and s["with_target"] == r["with_target"] > 0
    assert s["empty_label"] == r["empty_label"] > 0
    assert r["dice"] > 0.5
    assert s["dice"] == pytest.approx(r["dice"], abs=0.02)
    # per-pair values, empty labels apart with their false-positive area
    saved = json.loads((out / "evaluation.json").read_text())["fidelity"]
    assert len(saved["cases"]) == s["pairs"]
    empty = [c for c in saved["cases"] if c.get("empty_label")]
    assert len(empty) == s["empty_label"] and all("dice" not in c for c in empty)
    assert all(c["false_positive_mm"] == c["predicted_voxels"] * 6.0 * 6.0 for c in empty)
    assert {"dice", "hd95_mm"} <= set(next(c for c in saved["cases"] if "dice" in c))
    assert 0.0 <= s["below_threshold"] <= 1.0
    # the verdict comes first; settings are words; the worst pairs are shown
    from medaug.report import write_report

    page = write_report(out).read_text()
    assert page.index("Verdict") < page.index("Metrics") and "Label fidelity" in page
    assert "{'unit'" not in page and "synthetic slices against" in page
    assert "Worst pairs by label fidelity" in page and (out / PREVIEW).is_file()


def chromium() -> str:
    """Debian's headless Chromium, or skip (.ci/run installs it as it installs dcm2niix)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the page is "
                    "not rendered in a browser")  # fmt: skip
    return found


def test_the_report_reads_in_a_browser(world, tmp_path):
    """report.html in headless Chromium as a reader sees it: the verdict is the first
    thing on the page, drawn in its colours at the top of the screenshot; the settings
    read as words; the worst-pairs image is shown."""
    from PIL import Image

    from medaug.report import write_report

    out = tmp_path / "real"
    shutil.copytree(world["real"], out)
    evaluate(world["cohort"], out, feature_steps=2, device="cpu", segmenter=world["seg"])
    page = write_report(out)
    browser = chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    verdict = json.loads((out / "evaluation.json").read_text())["verdict"]
    first = dom.index("<h2>")
    assert dom[first:].startswith("<h2>Verdict</h2>")  # the first section is the verdict
    assert html.escape(verdict[0]["text"], quote=False) in dom
    assert "synthetic slices against" in dom and 'alt="worst pairs"' in dom
    shot = tmp_path / "page.png"
    subprocess.run([*flags, "--window-size=1100,700", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    top = np.asarray(Image.open(shot).convert("RGB"))[:350]
    colours = {(0x1B, 0x7F, 0x3B), (0xB3, 0x59, 0x00), (0x44, 0x44, 0x44)}
    drawn = {tuple(int(v) for v in px) for px in top.reshape(-1, 3)}
    assert drawn & colours, "no verdict line drawn in the first 350 pixels"


def test_labels_away_from_the_organ_score_near_zero(world, tmp_path):
    true = evaluate_segmenter(world["seg"], world["real"], out=tmp_path / "a", device="cpu")
    shifted = evaluate_segmenter(world["seg"], world["shifted"], out=tmp_path / "b", device="cpu")
    assert true["dice"] > 0.5
    assert shifted["dice"] < 0.1
    assert shifted["fidelity"]["below_threshold"] == 1.0


def test_segment_eval_scores_a_synthesis_folder_like_real_cases(world, tmp_path):
    proc = run_cli("segment", "eval", world["seg"], world["real"], "--out", tmp_path, "--json",
                   "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["unit"] == "slice" and doc["cases"][0]["case"].startswith("synth_")
    assert set(doc) >= {"dice", "hd95_mm", "surface_dice", "missed", "cases"}
    assert doc["skipped_without_target"] == len(doc["empty_label_cases"]) > 0
    assert json.loads((tmp_path / "evaluation.json").read_text()) == doc
    table = run_cli("segment", "eval", world["seg"], world["real"], "--out", tmp_path,
                    "--device", "cpu")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "synth_" in table.stdout and "label fidelity" in table.stdout
    assert "with an empty label" in table.stdout


def test_evaluate_trains_its_segmenter_on_the_generator_cases_once(world, tmp_path):
    out = tmp_path / "synth"
    shutil.copytree(world["synthetic"], out)
    doc = evaluate(world["cohort"], out, feature_steps=2, fidelity_steps=3, device="cpu")
    seg = doc["fidelity"]["segmenter"]
    assert seg["source"] == "trained here on the generator's 3 training case(s)"
    assert seg["steps"] == 3
    ckpt = out / "evaluation" / "segmenter" / "segmenter.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = evaluate(world["cohort"], out, feature_steps=2, fidelity_steps=3, device="cpu")
    assert ckpt.stat().st_mtime_ns == stamp  # reused: same cases, steps and seed
    assert again["fidelity"]["synthetic"] == doc["fidelity"]["synthetic"]
    assert doc["verdict"][0]["text"].startswith("Label fidelity")


# ---- words -----------------------------------------------------------------------------


def test_memorization_above_5_percent_is_a_warning():
    doc = {"items": {"unit": "slice"}, "labels": {}, "memorization": {"flagged_fraction": 0.35}}
    assert verdict(doc)[-1][0] == "warning" and "35%" in verdict(doc)[-1][1]
    doc["memorization"]["flagged_fraction"] = 0.04
    assert verdict(doc)[-1][0] == "ok"


def test_empty_labels_count_apart_with_their_false_positive_area():
    pred = np.zeros((3, 8, 8), np.uint8)
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[0, 2:4, 2:4] = 1
    pred[0, 2:4, 2:4] = 1  # a perfect pair
    pred[1, 0, 0:3] = 1  # 3 voxels on an empty label
    rows = fidelity.pair_rows(pred, labels, ["a", "b", "c"], 1, (2.0, 1.5, 3.0))
    assert rows[0]["dice"] == 1.0 and rows[1] == {
        "case": "b", "empty_label": True, "predicted_voxels": 3, "false_positive_mm": 9.0,
    }  # fmt: skip
    s = fidelity.summarize(rows)
    assert (s["dice"], s["with_target"], s["empty_label"], s["empty_fraction"]) == (
        1.0, 1, 2, pytest.approx(2 / 3, abs=1e-4),
    )  # fmt: skip
    assert s["false_positive_mm_mean"] == 4.5 and s["empty_with_false_positive"] == 0.5


# ---- bad input -------------------------------------------------------------------------


def test_a_segmenter_of_another_grid_or_target_is_refused(world, tmp_path):
    coarse = preprocess(world["cohort"], tmp_path / "c", GRID.replace(grid_2d=(8, 8)))
    other = train_segmenter(coarse.out, tmp_path / "s8", config=SEG.replace(steps=1)).checkpoint
    line = one_error_line(run_cli("segment", "eval", other, world["real"], "--device", "cpu"))
    assert str(other) in line and "segmenter trained on another grid (grid 8x8" in line
    with pytest.raises(ConfigError, match=r"another grid \(grid 8x8 against"):
        evaluate(world["cohort"], world["real"], segmenter=other, feature_steps=2, device="cpu")

    # the same grid, another target
    state = torch.load(Path(world["seg"]) / "segmenter.pt", weights_only=True)
    pp = json.loads(state["preprocess_config"])
    pp |= {"labels": {"pancreas": [1], "kidney": [2]}, "target": "kidney"}
    state["preprocess_config"] = json.dumps(pp)
    kidney = tmp_path / "kidney.pt"
    torch.save(state, kidney)
    line = one_error_line(run_cli("segment", "eval", kidney, world["real"], "--device", "cpu"))
    assert str(kidney) in line and "another target (kidney, label 2" in line


def test_a_synthesis_folder_without_labels_is_refused(world, tmp_path):
    out = tmp_path / "nolabels"
    shutil.copytree(world["real"], out)
    shutil.rmtree(out / "labels")
    line = one_error_line(run_cli("segment", "eval", world["seg"], out, "--device", "cpu"))
    assert str(out / "labels" / "synth_0000.nii.gz") in line and "no label file" in line
    proc = run_cli("evaluate", "--real", world["cohort"], "--synthetic", out)
    assert "synth_0000 has no label file" in error_lines(proc)[-1]
    with pytest.raises(InputError, match="no label file"):
        fidelity.synthetic_items(SynthFolder.open(out), GRID)


def test_3d_pairs_are_scored_as_volumes(world, tmp_path):
    from medaug.synth import synthesize
    from medaug.train import TrainConfig, train
    from tests.conftest import TINY_MODEL

    grid = GRID.replace(dims=3, grid_3d=(16, 16, 16))
    cache = preprocess(world["cohort"], tmp_path / "c3", grid, val_fraction=0.25).out
    cfg = TrainConfig(steps=2, batch_size=2, log_every=1, checkpoint_every=2, sample_every=2,
                      warmup_steps=1, n_samples=2)  # fmt: skip
    gen = train(cache, tmp_path / "g3", model="vaegan", config=cfg, model_overrides=TINY_MODEL)
    assert gen.checkpoint is not None
    synth = synthesize(tmp_path / "s3", 3, model=gen.checkpoint, device="cpu").out
    seg = train_segmenter(cache, tmp_path / "seg3", config=SEG.replace(steps=2, batch_size=2))
    images, labels, names = fidelity.synthetic_items(SynthFolder.open(synth), grid)
    assert labels.shape == images.shape
    assert images.shape == (3, 16, 16, 16) and names == ["synth_0000", "synth_0001", "synth_0002"]
    doc = evaluate_segmenter(seg.checkpoint, synth, out=tmp_path / "e", device="cpu")
    assert doc["unit"] == "volume" and len(doc["cases"]) + doc["skipped_without_target"] == 3
