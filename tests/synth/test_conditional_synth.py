"""Mask-conditioned generators from training to synthesis: the checkpoint records and
rebuilds its conditioning and resumes only as itself; every synthetic label is exactly
the layout its case was drawn on, whether the layouts are real (transformed training
masks), learned (a mask generator fitted beside the model) or the user's label maps;
the seed decides everything; ``style`` is recorded; user mask paths stay out of the
manifest; and bad masks at the command line fail in one line naming the file.

Once per module, on the two-patient phantom (``nifti_cohort``): a 2D cache on a 32x32
grid and a 3D one on 16^3 (both with context maps), a conditional 2D VAE-GAN on the
richest layout (target+body+tissue), a conditional 3D GAN (target) and an
unconditional 2D VAE, each trained for a step or two.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from medaug.data.datasets import SliceDataset
from medaug.data.synthfolder import SynthFolder
from medaug.errors import ConfigError, InputError
from medaug.models import GenerativeModel
from medaug.models.config import MASK_KL_WEIGHT
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess import layout as LY
from medaug.preprocess.cache import Cache, case_number
from medaug.preprocess.transforms import unit_to_hu
from medaug.segment import fidelity
from medaug.synth import SynthConfig, Synthesizer, synthesize
from medaug.synth.masks import RealMasks, UserMasks
from medaug.train import TrainConfig, train
from medaug.train.checkpoint import Checkpoint, list_checkpoints
from tests.conftest import TINY_MODEL, run_cli
from tests.synth.test_masks import pancreas, write_map
from tests.synth.test_synth import manifest, nifti, one_error_line, same_cases
from tests.test_small_cohorts import medaug
from tests.train.test_train import Told

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

TISSUE = "target+body+tissue"
SHORT = TrainConfig(
    steps=2, batch_size=2, log_every=1, checkpoint_every=2, sample_every=2, warmup_steps=1,
    n_samples=2,
)  # fmt: skip
#: The 2D conditional model's overrides (32x32: four channel levels).
MASK_2D = TINY_MODEL | {
    "channels": (8, 8, 8, 8), "condition": "mask", "layout": TISSUE, "spade_hidden": 8,
}  # fmt: skip


@dataclass(frozen=True)
class World:
    """The caches and trained runs (read-only: copy a run to change it)."""

    cache2: Path
    cache3: Path
    runs2: Path  # folder of runs: the conditional 2D VAE-GAN's
    run2: Path  # its run folder
    trained: GenerativeModel  # its network after the last step, as trained (not EMA)
    runs3: Path  # the conditional 3D GAN, layout target
    plain: Path  # the unconditional 2D VAE's checkpoint


@pytest.fixture(scope="module")
def world(nifti_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("conditional")
    pp2, pp3 = PreprocessConfig(grid_2d=(32, 32)), PreprocessConfig(dims=3, grid_3d=(16,) * 3)
    cache2 = preprocess(nifti_cohort, root / "cache2", pp2, workers=1).out
    cache3 = preprocess(nifti_cohort, root / "cache3", pp3, workers=1).out
    last: dict[str, GenerativeModel] = {}

    def keep(step: int, net: GenerativeModel) -> None:
        last["net"] = copy.deepcopy(net).eval()

    run2 = train(
        cache2, root / "runs2", model="vaegan", config=SHORT, model_overrides=MASK_2D, on_step=keep
    )
    one = SHORT.replace(steps=1, batch_size=1, checkpoint_every=1, sample_every=1)
    mask_3d = TINY_MODEL | {"condition": "mask", "layout": "target", "spade_hidden": 8}
    train(cache3, root / "runs3", model="gan", config=one, model_overrides=mask_3d)
    plain = train(
        cache2,
        root / "plain",
        model="vae",
        config=one,
        model_overrides=TINY_MODEL | {"channels": (8, 8, 8, 8)},
    )
    assert run2.checkpoint is not None and plain.checkpoint is not None
    return World(
        cache2, cache3, root / "runs2", run2.run_dir, last["net"], root / "runs3", plain.checkpoint
    )


def synthesizer(
    world: World, masks: object = "real", model: Path | None = None, cache: Path | None = None
) -> Synthesizer:
    """The Synthesizer a synthesis of ``model`` (the 2D one) used, to replay its plans."""
    real = Cache(cache or world.cache2)
    return Synthesizer(model or world.runs2, real=real, masks=masks, device="cpu")


def assert_labels_are_layouts(out: Path, synth: Synthesizer) -> None:
    """Every written label is exactly the label classes of its case's layout."""
    channels = synth.model.config.layout
    cases = manifest(out)["cases"]
    assert cases
    for rec in cases:
        label, _ = nifti(out / rec["label"])
        expected = LY.target_of(synth.layout(rec["params"]), channels)
        if synth.dims == 2 and expected.ndim == 2:  # a 2D case: one slice (or a stack)
            expected = expected[..., None]
        np.testing.assert_array_equal(label, expected, err_msg=rec["case"])
        assert rec["label_voxels"]["pancreas"] == int((expected == 1).sum()) > 0


# ---- the checkpoint ----------------------------------------------------------------------


def test_the_checkpoint_records_rebuilds_and_resumes_its_conditioning(
    world: World, tmp_path: Path
) -> None:
    ckpt = Checkpoint.load(world.runs2)
    assert ckpt.step == 2
    assert (ckpt.model_config.condition, ckpt.model_config.layout) == ("mask", TISSUE)
    cond = ckpt.conditioning
    assert cond is not None and cond["channels"] == TISSUE
    assert cond["classes"] == [
        "outside body", "air/lung", "fat", "soft tissue", "bone/contrast", "pancreas",
    ]  # fmt: skip
    assert set(cond["derived"]) == {"pancreas", "body", "tissue"}
    assert "-500 HU" in cond["derived"]["body"]
    assert Checkpoint.load(world.plain).conditioning is None

    rebuilt = ckpt.build_model(ema=False)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 8, generator=gen)
    layout = torch.randint(0, 6, (3, 32, 32), generator=gen)
    onehot = torch.nn.functional.one_hot(layout, 6).movedim(-1, 1).float()
    with torch.no_grad():
        out = rebuilt.decode(z, onehot)
        assert torch.equal(out, world.trained.decode(z, onehot))
    assert torch.equal(rebuilt.to_pair(out)[1][:, 0], LY.target_of(layout, TISSUE).byte())

    runs = tmp_path / "runs"
    shutil.copytree(world.runs2, runs)
    run = runs / world.run2.name
    more = train(
        world.cache2,
        runs,
        model="vaegan",
        config=SHORT.replace(steps=4),
        model_overrides=MASK_2D,
        resume=True,
    )
    assert (more.run_dir, more.resumed_from, more.step) == (run, 2, 4)
    resumed = Checkpoint.load(runs)
    assert resumed.step == 4 and resumed.model_config == ckpt.model_config
    saved = list_checkpoints(run)
    for change, said in (
        ({"condition": "none"}, "condition mask, the run asks for none"),
        ({"layout": "target"}, f"layout {TISSUE}, the run asks for target"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"this checkpoint has {said}")):
            train(
                world.cache2,
                runs,
                model="vaegan",
                config=SHORT.replace(steps=6),
                model_overrides=MASK_2D | change,
                resume=True,
            )
    assert list_checkpoints(run) == saved


# ---- synthesis ---------------------------------------------------------------------------


def test_real_masks_label_each_case_exactly_and_the_seed_decides(
    world: World, tmp_path: Path
) -> None:
    def run(name: str, seed: int):
        return synthesize(
            tmp_path / name,
            4,
            model=world.runs2,
            input=world.cache2,
            masks="real",
            seed=seed,
            device="cpu",
        )

    a = run("a", 0)
    assert_labels_are_layouts(a.out, synthesizer(world))
    doc = a.manifest
    assert doc["conditioning"]["channels"] == TISSUE
    assert (doc["conditioning"]["masks"], doc["settings"]["masks"]) == ("real", "real")
    training = {case_number(c["case"]) for c in Checkpoint.load(world.runs2).split["train"]}
    layouts = [c["params"]["layout"] for c in doc["cases"]]
    assert {lp["masks"] for lp in layouts} == {"real"}
    assert {lp["source"] for lp in layouts} <= training  # never a held-out patient's mask

    b = run("b", 0)
    assert [c["params"] for c in b.manifest["cases"]] == [c["params"] for c in doc["cases"]]
    same_cases(a.out, b.out, 4)
    c = run("c", 1)
    for mine, other in zip(doc["cases"], c.manifest["cases"], strict=True):
        assert mine["params"]["layout"] != other["params"]["layout"]
        image, _ = nifti(a.out / mine["image"])
        assert not np.array_equal(image, nifti(c.out / other["image"])[0]), mine["case"]
    labels = [[nifti(r.out / rec["label"])[0] for rec in r.manifest["cases"]] for r in (a, c)]
    assert not all(np.array_equal(x, y) for x, y in zip(*labels, strict=True))

    volumes = synthesize(tmp_path / "3d", 2, model=world.runs3, input=world.cache3, device="cpu")
    assert volumes.manifest["conditioning"]["channels"] == "target"
    assert_labels_are_layouts(
        volumes.out, synthesizer(world, model=world.runs3, cache=world.cache3)
    )


def test_the_moved_real_control_puts_real_anatomy_under_each_written_label(
    world: World, tmp_path: Path
) -> None:
    """fidelity.moved_real_items: for each pair of a 2D real-mask folder, its source
    slice moved by its own moves, labelled exactly as the pair was written; a 3D
    folder has no such control."""
    out = synthesize(
        tmp_path / "a", 4, model=world.runs2, input=world.cache2, masks="real", device="cpu"
    ).out
    folder = SynthFolder.open(out)
    images, labels, names = fidelity.moved_real_items(folder, Cache(world.cache2))
    _, written, written_names = fidelity.synthetic_items(folder)
    assert names == written_names == [c["case"] for c in manifest(out)["cases"]]
    np.testing.assert_array_equal(labels == 1, written == 1)
    assert images.shape == labels.shape and images.min() >= -1.0
    volumes = synthesize(tmp_path / "3d", 1, model=world.runs3, input=world.cache3, device="cpu")
    with pytest.raises(ConfigError, match="not one moved real slice"):
        fidelity.moved_real_items(SynthFolder.open(volumes.out), Cache(world.cache3))


def test_style_records_the_case_and_keeps_the_layouts(world: World, tmp_path: Path) -> None:
    kw = dict(model=world.runs2, input=world.cache2, device="cpu")
    source = synthesizer(world).real_cases()[0]  # a training case: held-out ones are refused
    style = case_number(source)
    free = synthesize(tmp_path / "free", 3, **kw)
    styled = synthesize(tmp_path / "styled", 3, style=style, **kw)
    assert styled.manifest["conditioning"]["style"] == style
    assert styled.manifest["settings"]["style"] == style
    for f, s in zip(free.manifest["cases"], styled.manifest["cases"], strict=True):
        assert s["params"]["style"] == style and "style" not in f["params"]
        assert s["params"]["layout"] == f["params"]["layout"]  # the same masks...
        for kind, same in (("label", True), ("image", False)):  # ...in the style case's appearance
            a, b = nifti(free.out / f[kind])[0], nifti(styled.out / s[kind])[0]
            assert np.array_equal(a, b) == same, (kind, s["case"])
    assert_labels_are_layouts(styled.out, synthesizer(world))

    # each case: the style case's posterior mean (slice style_slice) decoded on its layout
    synth = Synthesizer(world.runs2, real=Cache(world.cache2), style=style, device="cpu")
    params = synth.plan(0)
    assert params["style"] == style and params == styled.manifest["cases"][0]["params"]
    k, cache, model = params["style_slice"], synth.real, synth.model
    assert k in cache.records[source]["target_slices"]
    batch = {
        kind: torch.from_numpy(np.array(cache.array(source, kind)[k]))[None, None]
        for kind in ("image", "label", "context")
    }
    layout = torch.from_numpy(synth.layout(params)).long()[None]
    with torch.no_grad():
        mu, _ = model.encode(model.inputs(batch))
        x = model.decode(mu, torch.nn.functional.one_hot(layout, 6).movedim(-1, 1).float())
    (case,) = synth.generate([params])
    np.testing.assert_allclose(
        case.image[:, :, 0], unit_to_hu(x[0, 0].numpy(), synth.config.hu_window), atol=1e-3
    )


def test_a_held_out_case_gives_no_style(world: World) -> None:
    """As perturb, style takes a training case's appearance: a held-out patient's must
    not reach a synthetic training set."""
    training = set(synthesizer(world).real_cases())
    held = [c for c in Cache(world.cache2).case_ids if c not in training]
    with pytest.raises(ConfigError, match="held out from this generator's training"):
        Synthesizer(world.runs2, real=Cache(world.cache2), style=case_number(held[0]), device="cpu")


def test_user_masks_label_cases_and_stay_out_of_the_manifest(
    world: World, nifti_cohort: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "jane_doe_masks"
    folder.mkdir()
    for k, src in enumerate(sorted((nifti_cohort / "labelsTr").glob("*.nii.gz"))):
        shutil.copy(src, folder / f"doe_jane_{k}.nii.gz")  # LPS, 6.25 x 6.25 x 2.5 mm
    result = synthesize(
        tmp_path / "out", 4, model=world.runs2, input=world.cache2, masks=folder, device="cpu"
    )
    user = UserMasks(folder, Checkpoint.load(world.runs2).preprocess, 2)
    doc = result.manifest
    for rec in doc["cases"]:
        lp = rec["params"]["layout"]
        assert lp["masks"] == "user" and "context_case" in lp
        label, _ = nifti(result.out / rec["label"])
        np.testing.assert_array_equal(label[..., 0], user.make(lp), err_msg=rec["case"])
    assert {rec["params"]["layout"]["map"] for rec in doc["cases"]} == {0, 1}
    assert_labels_are_layouts(result.out, synthesizer(world, folder))

    assert doc["settings"]["masks"] == doc["synth_config"]["masks"] == "user"
    assert doc["conditioning"]["masks"] == "user"
    text = (result.out / "manifest.json").read_text()
    assert json.loads(text) == doc
    for secret in (str(tmp_path), folder.name, "doe_jane", "labelsTr"):
        assert secret not in text, secret

    # no path, but their content: another set of maps into this folder is refused
    assert len(doc["settings"]["masks_sha256"]) == 64
    first = sorted(folder.iterdir())[0]
    first.rename(tmp_path / first.name)  # one map fewer: other maps, same settings otherwise
    with pytest.raises(InputError, match="other settings"):
        synthesize(tmp_path / "out", 4, model=world.runs2, input=world.cache2, masks=folder,
                   device="cpu")  # fmt: skip


def test_perturb_takes_no_masks() -> None:
    """perturb keeps each source case's own layout: a --masks source would be ignored."""
    with pytest.raises(ConfigError, match="perturb keeps each source case's own layout"):
        SynthConfig(mode="perturb", masks="real")


def test_learned_masks_fit_a_mask_generator_beside_the_model(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "run"
    shutil.copytree(world.run2, run)
    read: list[bool] = []  # whether each slice the mask generator trained on holds target
    getitem = SliceDataset.__getitem__

    def recording(self: SliceDataset, i: int):
        read.append(bool(self.has_target[i]))
        return getitem(self, i)

    monkeypatch.setattr(SliceDataset, "__getitem__", recording)
    first = synthesize(
        tmp_path / "a",
        3,
        model=run,
        input=world.cache2,
        masks="learned",
        mask_steps=2,
        device="cpu",
    )
    masks = Checkpoint.load(run / "masks")
    mc = masks.model_config
    assert (mc.role, mc.condition, mc.layout, mc.image_channels) == ("layout", "none", TISSUE, 0)
    assert (masks.step, mc.classes, mc.variant) == (2, 6, "vaegan")
    # its own KL weight, and only the slices synthesis draws real masks from: with target
    assert mc.kl_weight == MASK_KL_WEIGHT != Checkpoint.load(run).model_config.kl_weight
    assert not SliceDataset(world.cache2).has_target.all()
    assert read and all(read)
    assert masks.conditioning is not None and masks.conditioning["channels"] == TISSUE
    assert {c["params"]["layout"]["masks"] for c in first.manifest["cases"]} == {"learned"}
    assert first.manifest["conditioning"]["masks"] == "learned"
    assert_labels_are_layouts(first.out, synthesizer(world, "learned", run))
    # the stored generator is used as it is: no input needed, nothing trained again
    stored = list_checkpoints(masks.path.parent.parent)
    again = synthesize(tmp_path / "b", 3, model=run, masks="learned", device="cpu")
    same_cases(first.out, again.out, 3)
    assert list_checkpoints(masks.path.parent.parent) == stored


def test_what_cannot_work_is_refused_before_anything_is_written(world: World, tmp_path: Path):
    out = tmp_path / "out"
    for asked in ({"masks": "real"}, {"masks": "learned"}, {"style": 0}):
        name = next(iter(asked))
        with pytest.raises(ConfigError, match=f"^{name} needs a mask-conditioned model, and "):
            synthesize(out, 2, model=world.plain, input=world.cache2, device="cpu", **asked)
    with pytest.raises(ConfigError, match=r"^stack with masks=learned: a mask-conditioned 2D"):
        synthesize(out, 2, model=world.runs2, input=world.cache2, device="cpu", stack=True,
                   masks="learned")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^stack with mode=interpolate: a stacked mask-"):
        synthesize(out, 2, model=world.runs2, input=world.cache2, device="cpu",
                   fmt="dicom", mode="interpolate")  # fmt: skip
    assert not out.exists()


def test_without_input_real_masks_come_from_the_runs_own_cache(
    world: World, tmp_path: Path
) -> None:
    """`medaug synth --model runs/` after `medaug train`: the run's cache is still there
    and holds its training cases, so it is used (and said); moved away, the error
    asks for --input as before."""
    notes: list[str] = []
    done = synthesize(tmp_path / "own", 2, model=world.runs2, device="cpu",
                      progress=notes.append)  # fmt: skip
    assert any(f"own training cache {world.cache2}" in n for n in notes), notes
    told = Told()  # a Progress object: the cases to write, and each one written
    with_input = synthesize(tmp_path / "given", 2, model=world.runs2, input=world.cache2,
                            device="cpu", progress=told)  # fmt: skip
    assert told.starts == [("synthesizing", 2, 0)] and told.advanced == {"synthesizing": 2}
    assert [c["params"] for c in done.manifest["cases"]] == [
        c["params"] for c in with_input.manifest["cases"]
    ]
    moved = tmp_path / "moved"
    shutil.copytree(world.run2, moved / world.run2.name)
    config = moved / world.run2.name / "config.json"
    config.write_text(config.read_text().replace(str(world.cache2), str(tmp_path / "gone")))
    with pytest.raises(ConfigError, match="give input scans"):
        synthesize(tmp_path / "none", 2, model=moved, device="cpu")


def test_a_2d_conditional_model_stacks_a_real_cases_slices_into_dicom(
    world: World, tmp_path: Path
) -> None:
    """DICOM images with nothing else set: volumes of consecutive layouts of one training
    case under one transform, rendered with one appearance code, labelled exactly by
    their layouts, written as a CT series and a DICOM SEG."""
    out = tmp_path / "dicom"
    done = synthesize(out, 2, model=world.runs2, input=world.cache2, device="cpu",
                      fmt="dicom", seg=True, slices=4)  # fmt: skip
    synth = synthesizer(world)
    cache = Cache(world.cache2)
    assert done.manifest["settings"]["stack"] is True
    for rec in done.manifest["cases"]:
        lp = rec["params"]["layout"]
        first, count = lp["slices"]
        assert rec["params"]["slices"] == count == 4
        case = next(c for c in cache.case_ids if case_number(c) == lp["source"])
        depth = cache.records[case]["shape"][2]
        assert 0 <= first <= depth - count
        layouts = synth.layout(rec["params"])
        assert layouts.shape == (*cache.config.grid, 4)
        masks = RealMasks(cache, [case], TISSUE, 2)  # the same transform on every slice
        for k in range(count):
            one = {**lp, "slice": first + k}
            del one["slices"]
            np.testing.assert_array_equal(layouts[..., k], masks.make(one))
        assert len(list((out / rec["dicom"]).glob("*.dcm"))) == 4
        assert (out / rec["seg"]).exists()
    assert_labels_are_layouts(out, synth)
    # one appearance code: the latents of a stacked case are one draw, repeated
    z = synth.latents(done.manifest["cases"][0]["params"])
    assert z.shape[0] == 4 and torch.equal(z, z[:1].expand_as(z))


# ---- bad input at the command line -------------------------------------------------------

BAD = [
    "no target",
    "unknown value 7",
    "2D map for a 3D model",
    "non-label file in the folder",
    "unconditional model",
    "style not in the cache",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_masks_at_the_cli_fail_in_one_line_naming_the_file(
    world: World, tmp_path: Path, case: str
) -> None:
    model, cache, masks = world.runs2, world.cache2, tmp_path / "bad.nii.gz"
    option = ["--masks", str(masks)]
    if case == "no target":
        write_map(masks, np.zeros((24, 24, 6), dtype=np.uint8))
        named, said = masks, "no 'pancreas' voxels"
    elif case == "unknown value 7":
        data = pancreas()
        data[0, 0, 0] = 7
        write_map(masks, data)
        named, said = masks, "label values 7 are not classes of this model"
    elif case == "2D map for a 3D model":
        write_map(masks, pancreas(shape=(24, 24)))
        model, cache = world.runs3, world.cache3
        named, said = masks, "a 2D map (one slice) cannot condition a 3D model"
    elif case == "non-label file in the folder":
        masks = tmp_path / "masks"
        masks.mkdir()
        write_map(masks / "good.nii.gz", pancreas())
        (masks / "notes.txt").write_text("my labels\n")
        option = ["--masks", str(masks)]
        named, said = masks / "notes.txt", "not a NIfTI label map"
    elif case == "unconditional model":
        model, option = world.plain, ["--masks", "real"]
        named, said = world.plain, "--masks needs a mask-conditioned model"
    else:
        option = ["--style", "9"]
        named, said = world.cache2, "--style case 9 is not in the cache"
    out = tmp_path / "out"
    result = medaug(
        "synth",
        "--model",
        model,
        "--input",
        cache,
        *option,
        "--out",
        out,
        "--n",
        "2",
        "--device",
        "cpu",
        "-q",
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medaug: error: "), result.stderr
    assert str(named) in lines[0] and said in lines[0], lines[0]
    assert not out.exists()


def test_the_real_entry_point_refuses_masks_for_a_joint_model(world: World, tmp_path: Path):
    proc = run_cli(
        "synth",
        "--model",
        world.plain,
        "--input",
        world.cache2,
        "--masks",
        "real",
        "--out",
        tmp_path / "out",
        "--n",
        "2",
        "--device",
        "cpu",
        "-q",
    )
    line = one_error_line(proc)
    assert str(world.plain) in line and "needs a mask-conditioned model" in line
    assert not (tmp_path / "out").exists()
