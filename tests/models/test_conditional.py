"""Mask-conditioned models (``condition="mask"``), every variant in 2D and 3D: image +
layout one-hot in and out, an encoder that sees the image alone, each phase's loss
falling on a fixed batch, and outputs labelled exactly by the layout they were given,
for each of the three layouts.

Tiny networks on 16^2 / 16^3 grids (``TINY_MODEL``, SPADE's hidden layer cut to 8).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medaug.errors import ConfigError
from medaug.models import GenerativeModel, ModelConfig, Noise, build_model
from medaug.models import losses as L
from medaug.models.networks import SegmentationDiscriminator
from medaug.models.registry import BUILTIN
from medaug.preprocess import layout as LY
from tests.models.test_models import structured_batch, tiny

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

CASES = [(v, d) for d in (2, 3) for v in BUILTIN]
#: The richest layout: 0 outside the body, 1..4 tissue, the label classes from 5.
TISSUE = "target+body+tissue"
#: Adam steps on the fixed batch, per phase (3D steps cost ~4x a 2D one).
STEPS = {2: 30, 3: 20}


def conditional(variant: str, dims: int, layout: str = TISSUE, **kw) -> ModelConfig:
    return tiny(variant, dims, condition="mask", layout=layout, spade_hidden=8, **kw)


def conditioned_batch(dims: int, n: int = 4, image_channels: int = 1) -> dict[str, torch.Tensor]:
    """``structured_batch``'s disks with a context map: outside the body beyond radius
    0.95, the four tissue classes in bands along x inside it."""
    batch = structured_batch(dims, n)
    g = torch.linspace(-1, 1, 16)
    grids = torch.meshgrid(*[g] * dims, indexing="ij")
    r = torch.sqrt(sum(c.square() for c in grids))
    tissue = 1 + ((grids[0] + 1) * 2).long().clamp(max=3)
    context = torch.where(r < 0.95, tissue, 0).expand(n, 1, *[16] * dims)
    image = batch["image"].repeat(1, image_channels, *[1] * dims)
    return {"image": image, "label": batch["label"], "context": context.clone()}


def onehot(layout: torch.Tensor, classes: int) -> torch.Tensor:
    """``(B, *grid)`` class map -> ``(B, classes, *grid)`` float one-hot."""
    return F.one_hot(layout.long(), classes).movedim(-1, 1).float()


def encoder_in_channels(model: GenerativeModel) -> int:
    return model.encoder.conv.body[0].in_channels


@pytest.mark.parametrize(("variant", "dims"), CASES)
def test_shapes_joint_tensors_and_an_image_only_encoder(variant: str, dims: int) -> None:
    c = 3 if dims == 2 else 1  # 2D as 2.5D: one context slice either side
    torch.manual_seed(0)
    model = build_model(conditional(variant, dims, image_channels=c))
    k = model.config.layout_classes
    assert k == 4 + 2  # outside body, four tissues; background and pancreas
    grid = (16,) * dims
    batch = conditioned_batch(dims, n=3, image_channels=c)

    x = model.inputs(batch)
    assert x.shape == (3, c + k, *grid)
    assert torch.equal(x[:, :c], batch["image"])
    layout = LY.compose(batch["label"][:, 0].long(), batch["context"][:, 0], TISSUE)
    assert torch.equal(x[:, c:].argmax(1), layout)
    assert set(layout.unique().tolist()) == {0, 1, 2, 3, 4, 5}

    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    out = model.decode(z, x[:, c:])
    assert out.shape == (3, c + k, *grid)
    assert torch.equal(out[:, c:], x[:, c:])  # the layout passes through unchanged
    assert out[:, :c].abs().max() <= 1.0
    sampled = model.sample(5, torch.Generator().manual_seed(2), onehot(layout[[0, 1, 2, 0, 1]], k))
    assert sampled.shape == (5, c + k, *grid)
    with pytest.raises(ConfigError, match="needs a layout"):
        model.sample(2)
    image, label = model.to_pair(out)
    assert image.shape == (3, c, *grid) and label.shape == (3, 1, *grid)
    assert label.dtype == torch.uint8
    assert torch.equal(label[:, 0], batch["label"][:, 0].to(torch.uint8))

    if model.has_encoder:
        joint = build_model(tiny(variant, dims, image_channels=c))
        assert encoder_in_channels(model) == c < encoder_in_channels(joint) == c + 2
        torch.manual_seed(3)  # AVB's posterior moments are over noise draws
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (3, 8)
        other = torch.cat([x[:, :c], x[:, c:].roll(1, dims=1)], dim=1)  # another layout
        torch.manual_seed(3)
        assert torch.equal(model.encode(other)[0], mu)  # appearance: the image alone
        recon = model.reconstruct(x)
        assert recon.shape == x.shape and torch.equal(recon[:, c:], x[:, c:])
    else:
        with pytest.raises(ConfigError, match="no encoder"):
            model.encode(x)
    for phase in model.phases:
        terms = model.losses(batch, phase)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])
        assert "label_ce" not in terms  # no label channels to learn: they are given


def fit_phase(model: GenerativeModel, batch: dict, phase: str, steps: int) -> list[dict]:
    """``steps`` Adam steps of one phase on ``batch`` with the same noise draws every
    time (a fixed objective); the loss terms of each step."""
    opt = torch.optim.Adam(model.phase_parameters(phase), lr=5e-3)
    history = []
    for _ in range(steps):
        model._fakes = []  # the other side's outputs are drawn afresh each step
        opt.zero_grad()
        terms = model.losses(batch, phase, Noise(4, "cpu", torch.Generator().manual_seed(3)))
        terms["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


@pytest.mark.parametrize(("variant", "dims"), CASES)
def test_each_phase_loss_falls_on_a_fixed_batch(variant: str, dims: int) -> None:
    """The term each phase is there to lower: pixel L1 for the reconstruction-based
    generators, the discriminator's loss for every discriminator or critic, and the
    GAN generator's adversarial loss against its discriminator at initial weights."""
    batch = conditioned_batch(dims)
    for phase in build_model(conditional(variant, dims)).phases:
        torch.manual_seed(0)
        model = build_model(conditional(variant, dims))
        history = fit_phase(model, batch, phase, STEPS[dims])
        if phase == "discriminator":
            term, fall = "d_adv", 0.5
        elif "pixel_l1" in history[0]:
            term, fall = "pixel_l1", 0.6
        else:  # a GAN's generator: no reconstruction, only the fixed critic's verdict
            term, fall = "g_adv", 0.98
        first = sum(h[term] for h in history[:5]) / 5
        last = sum(h[term] for h in history[-5:]) / 5
        assert last < fall * first, (phase, term, first, last)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels", LY.CHANNELS)
def test_the_label_of_every_output_is_exactly_its_layouts(channels: str, dims: int) -> None:
    """Random layouts (every class anywhere), two label classes: ``to_pair`` gives back
    exactly the layout's label classes, for every variant; the image follows the layout."""
    gen = torch.Generator().manual_seed(4)
    grid = (16,) * dims
    for variant in BUILTIN:
        torch.manual_seed(0)
        model = build_model(conditional(variant, dims, channels, classes=3))
        k = model.config.layout_classes
        assert k == LY.context_offset(channels) + 3
        layouts = torch.randint(0, k, (3, *grid), generator=gen)
        z = torch.randn(3, 8, generator=gen)
        expected = LY.target_of(layouts, channels).to(torch.uint8)
        assert set(expected.unique().tolist()) == {0, 1, 2}
        _, label = model.to_pair(model.decode(z, onehot(layouts, k)))
        assert torch.equal(label[:, 0], expected), variant
        _, label = model.to_pair(
            model.sample(3, torch.Generator().manual_seed(5), onehot(layouts, k))
        )
        assert torch.equal(label[:, 0], expected), variant
        other = model.decode(z, onehot(layouts.flip(1), k))
        assert not torch.equal(other[:, :1], model.decode(z, onehot(layouts, k))[:, :1]), variant


def test_condition_and_layout_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="condition must be 'none' or 'mask'"):
        tiny("vae", 2, condition="labels")
    with pytest.raises(ConfigError, match="layout must be one of target, target"):
        tiny("vae", 2, condition="mask", layout="target+bone")
    with pytest.raises(ConfigError, match="no image channels and no condition"):
        tiny("vae", 2, condition="mask", role="layout", image_channels=0)
    cfg = conditional("vaegan", 2, "target+body")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.layout_classes, cfg.encoder_channels, cfg.joint_channels) == (3, 1, 4)
    batch = conditioned_batch(2)
    del batch["context"]
    with pytest.raises(ConfigError, match="needs the cached context map"):
        build_model(cfg).inputs(batch)


# ---- the segmentation discriminator (OASIS) ------------------------------------------

#: Every variant with a discriminator: gan, vaegan and gvae swap their PatchGAN for it;
#: aae and avb add it beside their latent critics.
SEG_CASES = [(v, d) for d in (2, 3) for v in BUILTIN if v != "vae"]


def segmenting(variant: str, dims: int, **kw) -> ModelConfig:
    return conditional(variant, dims, discriminator="segmentation", **kw)


def image_disc(model: GenerativeModel) -> torch.nn.Module:
    return getattr(model, "image_disc", None) or model.discriminator


@pytest.mark.parametrize(("variant", "dims"), SEG_CASES)
def test_segmentation_discriminator_shapes(variant: str, dims: int) -> None:
    """A U-Net over the image alone: per-voxel logits, "fake" plus each layout class,
    on the image's grid; its features feed VAE-GAN's reconstruction."""
    c = 3 if dims == 2 else 1
    torch.manual_seed(0)
    model = build_model(segmenting(variant, dims, image_channels=c))
    k = model.config.layout_classes
    disc = image_disc(model)
    assert isinstance(disc, SegmentationDiscriminator)
    assert disc.stem.conv.in_channels == c  # the image alone, no layout channels
    batch = conditioned_batch(dims, n=3, image_channels=c)
    x = model.inputs(batch)
    out = disc(x[:, :c])
    assert out[-1].shape == (3, 1 + k, *(16,) * dims)
    assert all(f.shape[0] == 3 for f in out[:-1]) and len(out) > 2
    verdict = model._discriminate(disc, x)
    assert torch.equal(verdict.classes, x[:, c:].argmax(1))  # judged against the layout
    owned = {id(p) for p in model.phase_parameters("discriminator")}
    assert {id(p) for p in disc.parameters()} <= owned
    assert not owned & {id(p) for p in model.phase_parameters("generator")}
    for phase in model.phases:
        terms = model.losses(batch, phase)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"]), phase
    if variant in ("aae", "avb"):  # the latent critic stays
        assert not isinstance(model.discriminator if variant == "aae" else model.critic,
                              SegmentationDiscriminator)  # fmt: skip


def test_class_balance_is_inverse_frequency_over_the_classes_present() -> None:
    """OASIS's weights on a known map: 6 voxels, class 0 four times, 1 and 2 once, 3
    absent: w = N / (present * count) = 6 / (3 * 4), 6 / (3 * 1), 6 / (3 * 1)."""
    classes = torch.tensor([[[0, 0, 0], [0, 1, 2]]])
    weights = L.class_balance(classes, 4)
    expected = torch.tensor([[[0.5, 0.5, 0.5], [0.5, 2.0, 2.0]]])
    torch.testing.assert_close(weights, expected)
    # every present class weighs the same in total: 4 * 0.5 == 1 * 2
    # uniform logits over fake + 4 classes: each voxel's CE is log 5, the weights average 1
    logits = torch.zeros(1, 5, 2, 3)
    torch.testing.assert_close(L.seg_real_loss(logits, classes), torch.log(torch.tensor(5.0)))
    torch.testing.assert_close(L.seg_fake_loss(logits), torch.log(torch.tensor(5.0)))
    # a discriminator sure of the right class on real voxels and of "fake" on fakes
    sure = F.one_hot(classes + 1, 5).movedim(-1, 1).float() * 20
    fake = F.one_hot(torch.zeros_like(classes), 5).movedim(-1, 1).float() * 20
    assert L.seg_real_loss(sure, classes) < 1e-6 and L.seg_fake_loss(fake) < 1e-6
    assert L.seg_accuracy(sure, fake) == 1.0 and L.seg_accuracy(fake, sure) == 0.0


@pytest.mark.parametrize(("variant", "dims"), SEG_CASES)
def test_segmentation_discriminator_and_generator_losses_fall(variant: str, dims: int) -> None:
    """On a fixed batch: the discriminator's loss falls when it trains, and the
    generator's loss against the (fixed, initial) segmentation discriminator falls
    when the generator trains (its weight raised to 1, so that it is the generator's
    main term and not a 0.05 share beside the reconstruction)."""
    batch = conditioned_batch(dims)
    d_term = "d_adv" if variant in ("gan", "vaegan", "gvae") else "image_d_adv"
    g_term = "g_adv" if variant in ("gan", "vaegan", "gvae") else "g_image"
    for phase, term, fall in (("discriminator", d_term, 0.8), ("generator", g_term, 0.95)):
        torch.manual_seed(0)
        model = build_model(segmenting(variant, dims, adv_weight=1.0))
        history = fit_phase(model, batch, phase, STEPS[dims])
        first = sum(h[term] for h in history[:5]) / 5
        last = sum(h[term] for h in history[-5:]) / 5
        assert last < fall * first, (phase, term, first, last)


def test_discriminator_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs a mask-conditioned model: add --condition mask"):
        tiny("gan", 2, discriminator="segmentation")
    with pytest.raises(ConfigError, match="discriminator must be one of patch, segmentation"):
        conditional("gan", 2, discriminator="unet")
    cfg = segmenting("vaegan", 2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert "image_disc" not in dict(build_model(segmenting("vae", 2)).named_children())


@pytest.mark.parametrize("dims", [2, 3])
def test_a_latent_map_joins_the_layout_in_every_spade(dims: int) -> None:
    """``latent_map``: the latent, projected and broadcast over the grid, beside the
    layout wherever the layout enters; each sample's image follows its own latent."""
    torch.manual_seed(0)
    model = build_model(conditional("vaegan", dims, latent_map=4))
    k = model.config.layout_classes
    spades = [m for m in model.decoder.modules() if type(m).__name__ == "SPADE"]
    assert spades and all(s.mlp_shared.conv.in_channels == k + 4 for s in spades)
    x = model.inputs(conditioned_batch(dims))
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    moved = z.clone()
    moved[0] += 1.0
    change = (model.decode(z, x[:, 1:]) - model.decode(moved, x[:, 1:])).abs().flatten(1).sum(1)
    assert change[0] > 0 and torch.all(change[1:] == 0)
    plain = build_model(conditional("vaegan", dims))
    assert plain.decoder.to_map is None


@pytest.mark.parametrize("dims", [2, 3])
def test_linear_upsampling_interpolates_between_levels(dims: int) -> None:
    """``upsample="linear"``: every level of both decoders doubles by bi-/trilinear
    interpolation (the grid's shape as with copies), a value the checkpoint keeps; an
    unknown mode is a one-line error."""
    torch.manual_seed(0)
    for cfg in (
        conditional("vaegan", dims, upsample="linear"),
        tiny("vae", dims, upsample="linear"),
    ):
        model = build_model(cfg)
        ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Upsample)]
        assert ups and {u.mode for u in ups} == {"bilinear" if dims == 2 else "trilinear"}
        assert ModelConfig.from_dict(cfg.to_dict()).upsample == "linear"
    x = model.inputs(structured_batch(dims))
    out = model.decode(torch.randn(4, 8), None)
    assert out.shape[2:] == x.shape[2:]
    nearest = build_model(conditional("vaegan", dims))
    assert {m.mode for m in nearest.decoder.modules() if isinstance(m, torch.nn.Upsample)} == {
        "nearest"
    }
    with pytest.raises(ConfigError, match="upsample must be one of nearest, linear"):
        conditional("vaegan", dims, upsample="cubic")


@pytest.mark.parametrize("dims", [2, 3])
def test_a_decoder_started_from_the_layout_has_no_position_template(dims: int) -> None:
    """``start="layout"``: the decoder's first map is a convolution over the layout's
    class shares on the bottom grid beside the latent, with no linear layer from the
    latent. On a layout of one class everywhere, every cell of that map away from the
    border (the convolution's zero padding) is the same; the linear layer's map is a
    learned template that differs from cell to cell. A joint model has no layout to
    start from: an error."""
    torch.manual_seed(0)
    z = torch.randn(2, 8)
    firsts = {}
    for start in ("layout", "latent"):
        cfg = conditional("vaegan", dims, start=start)
        model = build_model(cfg).eval()
        assert (model.decoder.fc is None) == (start == "layout")
        assert ModelConfig.from_dict(cfg.to_dict()).start == start
        k = model.config.layout_classes
        uniform = onehot(torch.full((2, *[16] * dims), k - 1), k)
        with torch.no_grad():
            first = model.decoder._first(z, uniform)
        assert first.shape[2:] == (4,) * dims
        inner = first[(slice(None), slice(None), *[slice(1, 3)] * dims)].flatten(2)
        firsts[start] = (inner - inner[..., :1]).abs().amax().item()
    assert firsts["layout"] < 1e-6 < 1e-2 < firsts["latent"], firsts
    with pytest.raises(ConfigError, match="start"):
        tiny("vaegan", dims, start="layout")
