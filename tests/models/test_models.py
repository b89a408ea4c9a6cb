"""Every variant in 2D and 3D: shapes, a loss that goes down, sampling, save/load."""

from __future__ import annotations

import io
import json

import pytest
import torch

from medaug.errors import ConfigError
from medaug.models import ModelConfig, Noise, build_model, model_config, variant_names
from tests.conftest import TINY_MODEL

VARIANTS = variant_names()
CASES = [(v, d) for d in (2, 3) for v in VARIANTS]


def tiny(variant: str, dims: int, **kw) -> ModelConfig:
    return model_config(variant, dims=dims, grid=(16,) * dims, **(TINY_MODEL | kw))


def structured_batch(dims: int, n: int = 4) -> dict[str, torch.Tensor]:
    """Bright disks of varying size on a dark background, labelled 1 inside."""
    g = torch.linspace(-1, 1, 16)
    grids = torch.meshgrid(*[g] * dims, indexing="ij")
    r = torch.sqrt(sum(c.square() for c in grids))
    radius = torch.linspace(0.3, 0.7, n).view(n, *[1] * dims)
    label = (r < radius).float()
    image = (
        label * 1.2
        - 0.6
        + 0.05 * torch.randn(n, *[16] * dims, generator=torch.Generator().manual_seed(0))
    )
    return {"image": image.unsqueeze(1), "label": label.unsqueeze(1)}


@pytest.mark.parametrize(("variant", "dims"), CASES)
def test_shapes_and_ranges(variant: str, dims: int) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(variant, dims))
    batch = structured_batch(dims, n=3)
    x = model.inputs(batch)
    assert x.shape == (3, 1 + 2, *[16] * dims)
    assert torch.equal(x[:, 2], batch["label"][:, 0])  # one-hot: channel 2 = class 1

    out = model.sample(5, torch.Generator().manual_seed(1))
    assert out.shape == (5, 3, *[16] * dims)
    assert out[:, :1].abs().max() <= 1.0  # image through tanh
    torch.testing.assert_close(out[:, 1:].sum(1), torch.ones(5, *[16] * dims))  # softmax
    image, label = model.to_pair(out)
    assert image.shape == (5, 1, *[16] * dims) and label.dtype == torch.uint8
    assert set(label.unique().tolist()) <= {0, 1}

    if model.has_encoder:
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (3, 8)
        assert model.reconstruct(x).shape == x.shape
    else:
        with pytest.raises(ConfigError, match="no encoder"):
            model.encode(x)
    for phase in model.phases:
        terms = model.losses(batch, phase)
        assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"])


@pytest.mark.parametrize(("variant", "dims"), CASES)
def test_each_phase_loss_decreases_on_a_fixed_batch(variant: str, dims: int) -> None:
    batch = structured_batch(dims)

    def noise() -> Noise:  # the same draws every time: a fixed objective
        return Noise(4, "cpu", torch.Generator().manual_seed(3))

    for phase in build_model(tiny(variant, dims)).phases:
        torch.manual_seed(0)  # each phase against the other side at its initial weights
        model = build_model(tiny(variant, dims))
        params = model.phase_parameters(phase)
        opt = torch.optim.Adam(params, lr=5e-3)
        first = last = None
        for _ in range(30):
            model._fakes = []
            opt.zero_grad()
            loss = model.losses(batch, phase, noise())["loss"]
            loss.backward()
            opt.step()
            first = float(loss.detach()) if first is None else first
            last = float(loss.detach())
        assert last < first * 0.96, (phase, first, last)


@pytest.mark.parametrize(("variant", "dims"), CASES)
def test_save_load_gives_identical_samples(variant: str, dims: int) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(variant, dims))
    buffer = io.BytesIO()
    torch.save({"config": model.config.to_json(), "weights": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    torch.manual_seed(123)  # a different init, overwritten by the load
    again = build_model(ModelConfig.from_dict(json.loads(saved["config"])))
    again.load_state_dict(saved["weights"])
    a = model.sample(3, torch.Generator().manual_seed(7))
    b = again.sample(3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, model.sample(3, torch.Generator().manual_seed(8)))


def test_presets_scale_sizes_and_bad_names_fail() -> None:
    counts = {
        p: sum(
            x.numel()
            for x in build_model(model_config("vae", dims=2, grid=(64, 64), preset=p)).parameters()
        )
        for p in ("cpu", "gpu-small")
    }
    assert counts["cpu"] < counts["gpu-small"]
    cfg = model_config("vaegan", dims=3, grid=(128, 128, 128), preset="gpu-large")
    assert cfg.channels == (64, 128, 256, 512, 512, 512) and cfg.latent_dim == 256
    with pytest.raises(ConfigError, match="unknown model 'vqgan'; choose one of vae, gan"):
        model_config("vqgan", dims=2, grid=(64, 64))
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        model_config("vae", dims=2, grid=(64, 64), preset="huge")
    with pytest.raises(ConfigError, match="too small"):
        model_config("vae", dims=2, grid=(4, 4))
    with pytest.raises(ConfigError, match=r"model config: unknown setting\(s\) depth; known: "):
        ModelConfig.from_dict({"variant": "vae", "depth": 3})


def test_gan_r1_penalty_and_hinge_loss() -> None:
    model = build_model(tiny("gan", 2, r1_gamma=10.0, adv_loss="hinge"))
    terms = model.losses(structured_batch(2), "discriminator")
    assert terms["r1"] > 0
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.phase_parameters("discriminator"))
