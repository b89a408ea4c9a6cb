"""Differentiable discriminator augmentation: shapes, gradients, label channels kept
one-hot and in step with the image, determinism across a split batch, known shifts."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from medaug.errors import ConfigError
from medaug.models import Noise
from medaug.models.augment import POLICY, diff_augment

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

CLASSES = 3


def joint(dims: int, batch: int = 4, side: int = 16, seed: int = 0) -> torch.Tensor:
    """``(B, 1 + CLASSES, *grid)``: a random image in (-1, 1) and a random one-hot map."""
    g = torch.Generator().manual_seed(seed)
    grid = (side,) * dims
    image = torch.rand((batch, 1, *grid), generator=g) * 1.8 - 0.9
    classes = torch.randint(0, CLASSES, (batch, *grid), generator=g)
    onehot = torch.nn.functional.one_hot(classes, CLASSES).movedim(-1, 1).float()
    return torch.cat([image, onehot], dim=1)


Draw = Callable[..., torch.Tensor]


def seeded_draw(seed: int, batch: int = 4, rows: slice = slice(None)) -> Draw:
    """Like :class:`~medaug.models.base.Noise`: the global batch's normals, these rows."""
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn((batch, *shape), generator=g)[rows]

    return draw


def fixed_draw(batch: int, uniforms: list[float]) -> Draw:
    """Every call returns the normals whose CDF is ``uniforms``, for each sample."""
    z = math.sqrt(2.0) * torch.erfinv(2 * torch.tensor(uniforms) - 1)

    def draw(*shape: int) -> torch.Tensor:
        assert shape == (len(uniforms),)
        return z.expand(batch, -1).clone()

    return draw


@pytest.mark.parametrize("dims", [2, 3])
def test_shape_dtype_and_gradient(dims):
    x = joint(dims).requires_grad_()
    out = diff_augment(x, 1, seeded_draw(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[:, :1].abs().sum() > 0 and x.grad[:, 1:].abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_translation_keeps_labels_one_hot_and_in_step_with_the_image(dims):
    x = joint(dims)
    x[:, :1] = 2 * x[:, 2:3] - 1  # the image is label channel 1, mapped to [-1, 1]
    out = diff_augment(x, 1, seeded_draw(3), policy=("translation",))
    labels = out[:, 1:]
    assert not torch.equal(out, x)
    assert torch.equal(labels.sum(dim=1), torch.ones_like(labels[:, 0]))
    assert ((labels == 0) | (labels == 1)).all()
    assert torch.equal(out[:, 0], 2 * labels[:, 1] - 1)


@pytest.mark.parametrize("dims", [2, 3])
def test_cutout_zeroes_one_box_of_the_image_only(dims):
    x = joint(dims)
    out = diff_augment(x, 1, seeded_draw(0), policy=("cutout",))
    assert torch.equal(out[:, 1:], x[:, 1:])
    zeroed = (out[:, 0] == 0).flatten(1).sum(dim=1)
    assert zeroed.tolist() == [4**dims] * 4  # a side of 16 / 4 along each axis
    kept = out[:, 0] != 0
    assert torch.equal(out[:, 0][kept], x[:, 0][kept])


@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_changes_the_image_only_and_within_range(dims):
    x = joint(dims)
    out = diff_augment(x, 1, seeded_draw(0), policy=("intensity",))
    assert torch.equal(out[:, 1:], x[:, 1:])
    before, after = x[:, 0].flatten(1), out[:, 0].flatten(1)
    shift = after.mean(dim=1) - before.mean(dim=1)
    ratio = after.std(dim=1) / before.std(dim=1)
    assert (shift.abs() <= 0.25 + 1e-5).all() and (shift.abs() > 0).all()
    assert ((ratio >= 0.75 - 1e-5) & (ratio <= 1.25 + 1e-5)).all()


def test_p_zero_or_empty_policy_returns_the_input():
    x = joint(2)
    assert torch.equal(diff_augment(x, 1, seeded_draw(0), p=0.0), x)
    assert torch.equal(diff_augment(x, 1, seeded_draw(0), policy=()), x)


def test_p_gates_each_sample():
    # gate uniform 0.3: applied when p = 0.5, skipped (bit-identical) when p = 0.2
    x = joint(2)
    draw = fixed_draw(4, [0.3, 0.9, 0.1])
    assert not torch.equal(diff_augment(x, 1, draw, policy=("intensity",), p=0.5), x)
    assert torch.equal(diff_augment(x, 1, draw, policy=("intensity",), p=0.2), x)


@pytest.mark.parametrize("dims", [2, 3])
def test_same_draws_same_output_and_a_split_batch_matches_the_whole(dims):
    x = joint(dims)
    whole = diff_augment(x, 1, seeded_draw(7))
    assert torch.equal(diff_augment(x, 1, seeded_draw(7)), whole)
    assert not torch.equal(diff_augment(x, 1, seeded_draw(8)), whole)
    halves = [diff_augment(x[r], 1, seeded_draw(7, rows=r)) for r in (slice(0, 2), slice(2, 4))]
    assert torch.equal(torch.cat(halves), whole)
    # the trainer's own Noise, two "ranks" of a global batch of 4
    ranks = []
    for offset in (0, 2):
        noise = Noise(2, generator=torch.Generator().manual_seed(7), global_batch=4, offset=offset)
        ranks.append(diff_augment(x[offset : offset + 2], 1, noise))
    assert torch.equal(torch.cat(ranks), whole)


def test_translation_by_a_known_amount_moves_a_voxel_and_replicates_edges():
    # 16 voxels a side: shifts in [-2, 2], uniform u gives floor(5 u) - 2
    x = torch.cat([torch.full((1, 1, 16, 16), -1.0), torch.ones(1, 1, 16, 16)], dim=1)
    x[0, 0, 5, 7] = 1.0
    x[0, 0, 0, 12] = 0.5  # on the top edge
    out = diff_augment(x, 1, fixed_draw(1, [0.5, 0.9, 0.3]), policy=("translation",))
    bright = (out[0, 0] == 1.0).nonzero().tolist()
    assert bright == [[7, 6]]  # moved by (+2, -1)
    assert out[0, 0, :3, 11].tolist() == [0.5, 0.5, 0.5]  # the top row, repeated
    assert torch.equal(out[:, 1:], x[:, 1:])


def test_bf16_autocast_keeps_dtype_and_gradient():
    x = joint(2).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = diff_augment(x, 1, seeded_draw(0))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    labels = out[:, 1:]
    assert torch.equal(labels.sum(dim=1), torch.ones_like(labels[:, 0]))
    out.float().square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad.float()).all()
    assert x.grad.abs().sum() > 0


def test_unknown_op_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'.*" + ", ".join(POLICY)):
        diff_augment(joint(2), 1, policy=("translation", "flip"))
    with pytest.raises(ConfigError, match="p must be in"):
        diff_augment(joint(2), 1, p=1.5)
