"""The training loop: run folders, checkpoints, resume, DDP on CPU, guards, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medaug.data import Cache
from medaug.errors import ConfigError, InputError
from medaug.models import variant_names
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.progress import Progress
from medaug.train import TrainConfig, TrainingStopped, load_checkpoint, load_model, train
from medaug.train.checkpoint import Checkpoint
from medaug.train.config import default_batch
from medaug.train.runs import read_stats
from tests.conftest import TINY_MODEL, run_cli

CASES = [(v, d) for d in (2, 3) for v in variant_names()]
#: TINY_MODEL, mask-conditioned, with OASIS's segmentation discriminator
SEGMENTING = TINY_MODEL | {"condition": "mask", "discriminator": "segmentation",
                           "spade_hidden": 8}  # fmt: skip


def quick(dims: int, **kw) -> TrainConfig:
    base = {"steps": 6, "batch_size": 4 if dims == 2 else 2, "log_every": 2}
    base |= {"checkpoint_every": 3, "sample_every": 6, "warmup_steps": 2, "n_samples": 4}
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="session")
def caches(dicom_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """16^2 slice and 16^3 volume caches of the three phantom patients, all for training."""
    root = tmp_path_factory.mktemp("caches")
    out = {}
    for dims, key in ((2, "grid_2d"), (3, "grid_3d")):
        cfg = PreprocessConfig(dims=dims, **{key: (16,) * dims})  # type: ignore[arg-type]
        out[dims] = preprocess(dicom_cohort, root / f"c{dims}", cfg, val_fraction=0.0).out
    return out


def run(caches, out: Path, variant: str, dims: int, **kw):
    return train(
        caches[dims], out, model=variant, config=quick(dims, **kw), model_overrides=TINY_MODEL
    )


def test_a_run_folder_holds_config_stats_events_samples_and_checkpoints(caches, tmp_path):
    result = run(caches, tmp_path, "vaegan", 2, warmup_steps=4)
    run_dir = tmp_path / "00000-vaegan-2d"
    assert result.run_dir == run_dir and result.step == 6
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_config"]["variant"] == "vaegan"
    assert config["model_config"]["grid"] == [16, 16]
    assert config["train_config"]["steps"] == 6
    assert config["preprocess_config"]["grid_2d"] == [16, 16]

    stats = read_stats(run_dir)
    assert [s["step"] for s in stats] == [2, 4, 6]
    for s in stats:
        assert s["samples_per_s"] > 0
        assert {"generator/loss", "generator/kl", "discriminator/d_acc", "lr/generator"} <= set(s)
    assert stats[0]["lr/generator"] < stats[-1]["lr/generator"] == pytest.approx(2e-4)  # warm-up
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    for name in ("reals.png", "step_00000006.png"):
        png = Image.open(run_dir / "samples" / name)
        assert png.mode == "RGB" and png.size == (4 * 256 + 3 * 2, 256)  # 4 tiles, 16 px x 16

    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_00000003.pt", "step_00000006.pt"]
    state = torch.load(run_dir / "checkpoints" / names[-1], weights_only=True)  # no code runs
    assert state["step"] == 6 and state["format"] == 1
    assert json.loads(state["preprocess_config"])["hu_window"] == [-160, 240]
    assert json.loads(state["fingerprint"])["cases"] == 3
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    assert "torch" in state["rng"]

    model, pp = load_model(run_dir)
    assert pp.grid == (16, 16)
    image, label = model.to_pair(model.sample(2, torch.Generator().manual_seed(0)))
    assert image.shape == (2, 1, 16, 16) and label.dtype == torch.uint8


@pytest.mark.parametrize(
    ("variant", "dims", "model"),
    [(v, d, TINY_MODEL) for v, d in CASES] + [(v, d, SEGMENTING) for v, d in CASES if v != "vae"],
    ids=[f"{v}-{d}" for v, d in CASES] + [f"{v}-{d}-segmentation" for v, d in CASES if v != "vae"],
)
def test_a_run_stopped_by_sigterm_resumes_to_the_same_weights(
    caches, tmp_path, variant, dims, model
):
    whole = train(caches[dims], tmp_path / "whole", model=variant, config=quick(dims),
                  model_overrides=model)  # fmt: skip

    def preempt(step: int, _model: torch.nn.Module) -> None:
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 4/6") as stop:
        train(
            caches[dims],
            tmp_path / "cut",
            model=variant,
            config=quick(dims),
            model_overrides=model,
            on_step=preempt,
        )
    assert stop.value.exit_code == 143
    assert load_checkpoint(tmp_path / "cut" / f"00000-{variant}-{dims}d")["step"] == 4
    resumed = train(
        caches[dims],
        tmp_path / "cut",
        model=variant,
        config=quick(dims),
        model_overrides=model,
        resume=True,
    )
    assert resumed.resumed_from == 4 and resumed.step == 6
    a = load_checkpoint(whole.run_dir)
    b = load_checkpoint(resumed.run_dir)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    for k, v in whole.last.items():
        if "/" in k and "grad_norm" not in k:
            assert resumed.last[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_moved_pairs_resume_to_the_same_weights(caches, tmp_path):
    """TrainConfig.warp draws each pair's move from (seed, step, position): a run cut at
    step 4 and resumed ends where the whole run does."""
    cfg = quick(2, warp=True)
    whole = train(caches[2], tmp_path / "whole", model="vaegan", config=cfg,
                  model_overrides=SEGMENTING)  # fmt: skip
    train(caches[2], tmp_path / "cut", model="vaegan", config=cfg.replace(steps=4),
          model_overrides=SEGMENTING)  # fmt: skip
    resumed = train(caches[2], tmp_path / "cut", model="vaegan", config=cfg,
                    model_overrides=SEGMENTING, resume=True)  # fmt: skip
    assert resumed.resumed_from == 4 and Checkpoint.load(resumed.run_dir).train_config.warp
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    still = train(caches[2], tmp_path / "still", model="vaegan", config=cfg.replace(warp=False),
                  model_overrides=SEGMENTING)  # fmt: skip
    moved = load_checkpoint(still.run_dir)["model"]
    assert any(not torch.equal(moved[n], t) for n, t in a["model"].items())  # it did move


def test_a_checkpoint_gives_back_the_spec_it_was_fitted_to(caches, tmp_path):
    from medaug.train.fit import fit_or_resume
    from medaug.train.spec import GeneratorSpec

    spec = GeneratorSpec(variant="gan", steps=2, discriminator="segmentation", kl_weight=4.0,
                         augment=("translation",), warp=True)  # fmt: skip
    path = fit_or_resume(Cache(caches[2]), tmp_path / "g", spec, device="cpu",
                         overrides=TINY_MODEL | {"spade_hidden": 8})  # fmt: skip
    back = GeneratorSpec.of(Checkpoint.load(path))
    assert back == spec.replace(preset="cpu")
    assert fit_or_resume(Cache(caches[2]), tmp_path / "g", spec, device="cpu") == path  # reused


def test_a_run_fitted_to_other_settings_is_not_reused(caches, tmp_path):
    """fit_or_resume in a folder whose run was fitted without moved pairs (or on other
    cases) fits a new run beside it and says why, instead of reusing the old one; asked
    for the old settings again, it uses the old run instead of fitting a third."""
    from medaug.train.fit import fit_or_resume
    from medaug.train.runs import runs_in
    from medaug.train.spec import GeneratorSpec

    cache, out = Cache(caches[2]), tmp_path / "g"
    still = GeneratorSpec(variant="gan", steps=2, warp=False)
    first = fit_or_resume(cache, out, still, device="cpu", overrides=TINY_MODEL)
    notes: list[str] = []
    moved = fit_or_resume(cache, out, still.replace(warp=True), device="cpu",
                          overrides=TINY_MODEL, progress=notes.append)  # fmt: skip
    assert moved != first and len(runs_in(out)) == 2
    assert any("warp False, not True" in n for n in notes), notes
    assert Checkpoint.load(moved).train_config.warp
    # the same spec again: the newest run is reused; on fewer cases: fitted anew
    assert fit_or_resume(cache, out, still.replace(warp=True), device="cpu") == moved
    notes.clear()
    other = fit_or_resume(cache, out, still.replace(warp=True), cache.case_ids[:1],
                          device="cpu", overrides=TINY_MODEL, progress=notes.append)  # fmt: skip
    assert other != moved and any("other training cases" in n for n in notes), notes
    # back to the first settings: the older run fitted to them is used, not refitted
    notes.clear()
    back = fit_or_resume(cache, out, still, device="cpu", overrides=TINY_MODEL,
                         progress=notes.append)  # fmt: skip
    assert back == first and len(runs_in(out)) == 3
    assert any("fitted before with these settings" in n for n in notes), notes


def first_gradients(into: dict[str, torch.Tensor]):
    """An ``on_step`` hook that keeps every parameter's gradient after step 1."""

    def hook(step: int, model: torch.nn.Module) -> None:
        if step == 1:
            into.update(
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            )

    return hook


def test_two_gloo_processes_train_like_one(caches, tmp_path):
    """torchrun --nproc_per_node 2 on the CPU: same global batch, same gradients, same run.

    What must agree is what does not depend on one CPU's rounding: the gradients of step
    1 (same weights, same batch, the two processes' halves averaged: equal up to the
    order of summation) and the losses. Weights after several Adam steps are compared on
    average only: Adam divides a gradient by its own magnitude, so a gradient that is
    rounding noise around 0 still moves its weight by a full learning rate, in a
    direction that depends on the machine.

    Besides the twelve variants as they are, every variant with a discriminator with
    OASIS's segmentation discriminator: its class weights count the voxels of the
    whole global batch (summed over the processes), and its LabelMix draws follow the
    global batch's noise.
    """
    cases = [(v, d, TINY_MODEL) for v, d in CASES]
    cases += [(v, d, SEGMENTING) for v, d in CASES if v != "vae"]
    jobs, single, grads = [], {}, {}
    for variant, dims, model in cases:
        cfg = quick(dims, steps=4, checkpoint_every=4, log_every=1)
        name = f"{variant}-{dims}" + ("-seg" if model is SEGMENTING else "")
        jobs.append({"variant": variant, "cache": str(caches[dims]), "train": cfg.to_dict(),
                     "out": str(tmp_path / "ddp" / name), "model": model,
                     "grads": str(tmp_path / f"{name}.grads.pt")})  # fmt: skip
        grads[name] = {}
        single[name] = train(
            caches[dims], tmp_path / "one" / name, model=variant, config=cfg,
            model_overrides=model, on_step=first_gradients(grads[name]),
        )  # fmt: skip
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": jobs, "model": TINY_MODEL}))
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(worker), str(plan)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, one in single.items():
        run_dir = next((tmp_path / "ddp" / name).glob("0000*"))
        config = json.loads((run_dir / "config.json").read_text())
        assert config["processes"] == 2

        ddp_grads = torch.load(tmp_path / f"{name}.grads.pt", weights_only=True)
        assert ddp_grads.keys() == grads[name].keys() and ddp_grads, name
        scale = max(float(g.abs().max()) for g in grads[name].values())
        for key, g in grads[name].items():
            # float32 sums in another order: <= 1.2e-6 of the largest gradient here, checked at
            # 1e-4 of it; gradients of another batch differ by the order of the gradient
            worst = float((ddp_grads[key] - g).abs().max()) / scale
            # the segmentation discriminator's class-balanced weights (N / (classes x
            # count)) reach hundreds on a rare class of a tiny grid, and scale the same
            # rounding up: up to 1.2e-4 of the largest seen, checked at 1e-3
            limit = 1e-3 if name.endswith("-seg") else 1e-4
            assert worst < limit, f"{name} {key}: gradients differ by {worst:.2e} of the largest"

        for x, y in zip(read_stats(run_dir), read_stats(one.run_dir), strict=True):
            assert x["generator/loss"] == pytest.approx(y["generator/loss"], rel=1e-3), name
        a, b = load_checkpoint(one.run_dir), load_checkpoint(run_dir)
        diff = torch.cat([(b["model"][k] - t).abs().flatten() for k, t in a["model"].items()])
        # a few weights may differ by a few lr (see above); on average they agree to
        # 5e-8..3e-6 over the 12 models, while weights of another seed differ by ~5e-2
        assert float(diff.mean()) < 5e-5, name


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(caches, tmp_path):
    cfg = quick(2, log_every=1)
    cache = caches[2]

    def break_weights(step: int, model: torch.nn.Module) -> None:
        if step == 3:  # after the checkpoint of step 3: the step-4 loss is NaN
            model.encoder.head.weight.data.fill_(float("nan"))

    with pytest.raises(TrainingStopped) as stop:
        train(cache, tmp_path, model="vae", config=cfg, model_overrides=TINY_MODEL,
              on_step=break_weights)  # fmt: skip
    message = str(stop.value)
    assert "non-finite loss at step 4, generator phase" in message
    assert message.endswith("step_00000003.pt)")
    names = [p.name for p in (tmp_path / "00000-vae-2d" / "checkpoints").iterdir()]
    assert names == ["step_00000003.pt"]
    assert stop.value.exit_code == 1


def test_bad_training_requests_fail_before_training(caches, tmp_path):
    with pytest.raises(ConfigError, match="a cache made for 3D given to a 2D model"):
        train(caches[3], tmp_path, model="vae", dims=2)
    with pytest.raises(ConfigError, match=r"batch size 5000 is larger than the training set \("):
        train(caches[2], tmp_path, model="vae", config=TrainConfig(batch_size=5000))
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        train(caches[2], tmp_path, config=TrainConfig(device="tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="this machine has no CUDA GPU"):
            train(caches[2], tmp_path, config=TrainConfig(device="cuda"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="a-file/runs: output folder is not writable"):
        train(caches[2], blocker / "runs")
    with pytest.raises(InputError, match="resume: no run with a checkpoint here"):
        train(caches[2], tmp_path / "empty", resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="amp fp16 needs CUDA"):
            train(caches[2], tmp_path, config=TrainConfig(amp="fp16", batch_size=4))
    with pytest.raises(ConfigError, match="unknown preset 'gpu-xl'"):
        train(caches[2], tmp_path, preset="gpu-xl")
    assert not list(tmp_path.glob("0000*"))  # nothing was started


class Told(Progress):
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.starts: list[tuple[str, int, int]] = []
        self.advanced: dict[str, int] = {}
        self.records: dict[str, list[dict]] = {}

    def note(self, message: str) -> None:
        self.notes.append(message)

    def start(self, task: str, total: int, done: int = 0) -> None:
        self.starts.append((task, total, done))

    def advance(self, task: str, n: int = 1) -> None:
        self.advanced[task] = self.advanced.get(task, 0) + n

    def record(self, task: str, record: dict) -> None:
        self.records.setdefault(task, []).append(record)


def test_the_default_batch_fits_a_small_training_set_and_says_so(caches, tmp_path):
    ids = Cache(caches[3]).case_ids
    two = (ids[:2], ids[2:])  # a 2-volume training set
    short = {"log_every": 1, "checkpoint_every": 2, "sample_every": 2, "warmup_steps": 1}
    cfg = TrainConfig(steps=2, n_samples=2, **short)
    assert cfg.batch_size is None
    notes: list[str] = []
    result = train(caches[3], tmp_path, model="vae", config=cfg, cases=two,
                   model_overrides=TINY_MODEL, progress=notes.append)  # fmt: skip
    said = "batch 2: the training set has 2 volumes (default 16)"
    assert notes == [said] and result.events == [said]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["train_config"]["batch_size"] == 2
    assert result.checkpoint is not None
    assert Checkpoint.load(result.checkpoint).train_config.batch_size == 2
    # a resumed run keeps the batch it saved, and has nothing new to say about it; one
    # Progress object hears where training starts, every stats record, and the notes
    told = Told()
    again = train(caches[3], tmp_path, model="vae", config=cfg.replace(steps=4), cases=two,
                  model_overrides=TINY_MODEL, resume=True, progress=told)  # fmt: skip
    assert again.step == 4 and told.notes == []
    assert told.starts == [("training", 4, 2)]
    assert [r["step"] for r in told.records["training"]] == [3, 4] and told.advanced == {}
    assert again.checkpoint is not None
    assert Checkpoint.load(again.checkpoint).train_config.batch_size == 2
    # a batch asked for is never changed
    with pytest.raises(ConfigError, match=r"batch size 3 is larger than the training set \(2 vol"):
        train(caches[3], tmp_path / "x", model="vae", config=cfg.replace(batch_size=3), cases=two)


def test_the_default_batch_rule():
    assert default_batch(100, 1, "slices") == (16, None)
    assert default_batch(100, 4, "slices") == (16, None)
    assert default_batch(1, 1, "volumes") == (
        1,
        "batch 1: the training set has 1 volume (default 16)",
    )
    assert default_batch(3, 2, "volumes") == (
        2,
        "batch 2: the training set has 3 volumes and it splits evenly over 2 processes "
        "(default 16)",
    )
    assert default_batch(40, 3, "slices") == (
        15,
        "batch 15: it splits evenly over 3 processes (default 16)",
    )
    with pytest.raises(ConfigError, match="the training set has 1 volume, fewer than the 2 proc"):
        default_batch(1, 2, "volumes")


def test_cli_trains_resumes_and_reports_mismatches_in_one_line(caches, tmp_path):
    args = ["--out", tmp_path, "--steps", "2", "--batch-size", "4", "--quiet"]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"model": TINY_MODEL, "train": {"log_every": 1}}))
    done = run_cli("train", caches[2], "--model", "gan", "--config", cfg, *args)
    assert done.returncode == 0, done.stderr
    assert "Trained 00000-gan-2d: step 2/2" in done.stdout

    more = run_cli("train", caches[2], "--model", "gan", "--config", cfg, *args[:3], "4",
                   "--resume", "--json")  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["step"] == 4

    wrong = run_cli("train", caches[2], "--model", "vae", "--config", cfg, *args, "--resume")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        f"medaug: error: {tmp_path}/00000-gan-2d/checkpoints/step_00000004.pt: --resume: "
        "this checkpoint has variant gan, the run asks for vae"
    ]
    dims = run_cli("train", caches[3], "--dims", "2", *args)
    assert dims.returncode == 1 and "Traceback" not in dims.stderr
    assert "a cache made for 3D given to a 2D model" in dims.stderr
    unknown = run_cli("train", caches[2], "--model", "vqgan", *args)
    assert unknown.returncode == 2 and "'vqgan' is not one of" in unknown.stderr


def test_cli_discriminator_requests_fail_in_one_line(caches, tmp_path):
    """The segmentation discriminator needs a layout; a resume keeps its discriminator."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"model": TINY_MODEL | {"spade_hidden": 8}}))
    args = ["--out", tmp_path, "--steps", "2", "--batch-size", "4", "--quiet", "--config", cfg]
    joint = run_cli("train", caches[2], "--model", "gan", "--discriminator", "segmentation", *args)
    assert joint.returncode == 1 and "Traceback" not in joint.stderr
    assert joint.stderr.strip().splitlines() == [
        "medaug: error: --discriminator segmentation labels each voxel with its layout class, "
        "so it needs a mask-conditioned model: add --condition mask"
    ]
    mask = ["--model", "gan", "--condition", "mask"]
    done = run_cli("train", caches[2], *mask, "--discriminator", "patch", *args)
    assert done.returncode == 0, done.stderr
    saved = json.loads(next(tmp_path.glob("00000-gan-2d/config.json")).read_text())
    assert saved["model_config"]["discriminator"] == "patch"
    other = run_cli("train", caches[2], *mask, "--discriminator", "segmentation", *args,
                    "--resume")  # fmt: skip
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"medaug: error: {tmp_path}/00000-gan-2d/checkpoints/step_00000002.pt: --resume: "
        "this checkpoint has discriminator patch, the run asks for segmentation"
    ]
    moved = run_cli("train", caches[2], *mask, *args, "--resume", "--no-warp")
    assert moved.returncode == 1
    assert moved.stderr.strip().splitlines() == [
        f"medaug: error: {tmp_path}/00000-gan-2d/checkpoints/step_00000002.pt: --resume: "
        "this checkpoint has warp True, the run asks for False"
    ]


def test_cli_resume_takes_the_runs_own_settings(caches, tmp_path):
    """A conditional run resumed with no model options continues as it was; an option
    that contradicts the run is one line naming both values; --steps extends it."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"model": TINY_MODEL | {"spade_hidden": 8}}))
    args = ["--out", tmp_path, "--batch-size", "4", "--quiet", "--config", cfg]
    first = run_cli("train", caches[2], "--model", "gan", "--condition", "mask", "--layout",
                    "target", "--steps", "2", *args)  # fmt: skip
    assert first.returncode == 0, first.stderr
    more = run_cli("train", caches[2], "--steps", "3", "--resume", "--json", *args)
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["step"] == 3
    saved = Checkpoint.load(tmp_path / "00000-gan-2d").model_config
    assert (saved.variant, saved.condition, saved.layout) == ("gan", "mask", "target")
    # a mask-conditioned GAN trains with the measured Adam settings, and resumes with them
    trained = Checkpoint.load(tmp_path / "00000-gan-2d").train_config
    assert (trained.lr, trained.lr_d, trained.betas) == (1e-4, 4e-4, (0.0, 0.999))
    other = run_cli("train", caches[2], "--layout", "target+body", "--condition", "mask",
                    "--steps", "4", "--resume", *args)  # fmt: skip
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"medaug: error: {tmp_path}/00000-gan-2d/checkpoints/step_00000003.pt: --resume: "
        "this checkpoint has layout target, the run asks for target+body"
    ]


def test_cli_preprocesses_a_scan_folder_first(dicom_cohort, tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"model": {"latent_dim": 8, "disc_layers": 1}}))
    done = run_cli("train", dicom_cohort, "--model", "vae", "--out", tmp_path, "--steps", "1",
                   "--batch-size", "2", "--config", cfg, "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache-2d" / "index.json").exists()
    assert np.load(tmp_path / "cache-2d" / "cases" / "case_0000_image.npy").shape[1:] == (64, 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('train:\n  steps: "ten"\n', "tiny.yaml: train: steps must be an integer, got 'ten'"),
        ("train: 5\n", 'tiny.yaml: "train" must be a mapping of settings'),
        ("model:\n  channels: 16\n", "model config: channels must be a list of integers, got 16"),
        ("model:\n  depth: 3\n", "model config: unknown setting(s) depth; known: adv_loss,"),
    ],
)
def test_cli_bad_config_files_fail_in_one_line(caches, tmp_path, text, message):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(text)
    done = run_cli("train", caches[2], "--config", cfg, "--out", tmp_path / "runs", "-q")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not list((tmp_path / "runs").glob("0000*"))
