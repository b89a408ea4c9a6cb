"""Differentiable augmentation of what a discriminator sees (DiffAugment-style).

With 2-8 patients a discriminator memorises the real set and stops teaching the
generator. Following Zhao et al. 2020 ("Differentiable Augmentation for Data-Efficient
GAN Training"), the same random transforms are applied to the real *and* the fake
inputs of every discriminator, in both phases, and every transform is differentiable
with respect to its input, so the generator's gradient passes through it.

Inputs are joint tensors ``(B, C + M, *grid)`` (2D or 3D grid): ``C`` image channels
in [-1, 1] followed by ``M`` label channels (one-hot, or softmax probabilities for
fakes). Spatial transforms move image and label channels together, because the
discriminator judges whether the image fits its label map; intensity transforms touch
the image channels only.

Every op first draws its parameters, then applies a deterministic twin. All draws come
from one ``draw(*shape) -> (B, *shape)`` standard-normal source (the trainer's
:class:`~medaug.models.base.Noise`, which draws for the global batch and keeps this
process's rows), turned into uniforms by the normal CDF, so one process and N
data-parallel processes augment each sample alike. The ops of ``policy`` draw in its
order, one call each, gate first (whatever ``p``, so the stream's layout never
depends on it):

- ``translation``: ``draw(1 + D)``: gate, then the shift along each spatial axis.
- ``cutout``: ``draw(1 + D)``: gate, then the box's start along each spatial axis.
- ``intensity``: ``draw(3)``: gate, brightness, contrast.

Example:
    >>> x = torch.cat([torch.rand(2, 1, 16, 16) * 2 - 1, torch.ones(2, 1, 16, 16)], 1)
    >>> diff_augment(x, image_channels=1).shape
    torch.Size([2, 2, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from medaug.errors import ConfigError

#: The ops, in the order they are applied by default.
POLICY = ("translation", "cutout", "intensity")

#: Largest shift, as a fraction of each spatial side (DiffAugment's 1/8).
TRANSLATION_RATIO = 1 / 8
#: Side of the cutout box, as a fraction of each spatial side (DiffAugment's 1/4).
CUTOUT_RATIO = 1 / 4
#: Brightness shift is drawn from U(-BRIGHTNESS, BRIGHTNESS), in image units ([-1, 1]).
BRIGHTNESS = 0.25
#: Contrast factor is drawn from U(1 - CONTRAST, 1 + CONTRAST).
CONTRAST = 0.25

Draw = Callable[..., torch.Tensor]


def diff_augment(
    x: torch.Tensor,
    image_channels: int,
    draw: Draw | None = None,
    *,
    policy: Sequence[str] = POLICY,
    p: float = 1.0,
) -> torch.Tensor:
    """Augment a discriminator's input, differentiably, each sample on its own.

    Call it on the real and on the fake batch alike, with the step's noise source.

    Args:
        x: ``(B, C + M, *grid)``: ``C`` image channels in [-1, 1], then ``M`` label
            channels (one-hot or probabilities); 2 or 3 spatial dims.
        image_channels: ``C``; intensity changes and cutout touch only these.
        draw: ``draw(*shape)`` returns standard-normal draws ``(B, *shape)`` on any
            device (the trainer's :class:`~medaug.models.base.Noise`); default
            ``torch.randn`` on ``x``'s device.
        policy: names from :data:`POLICY`, applied in the order given.
        p: probability that each op is applied to a sample (1 is DiffAugment's
            fixed form).

    Returns:
        a tensor of ``x``'s shape and dtype; image values may leave [-1, 1] (no
        clamp, which would stop the gradient); label channels stay one-hot where
        they were.

    Raises:
        ConfigError: an unknown op in ``policy``, or ``p`` outside [0, 1].
    """
    names = (policy,) if isinstance(policy, str) else tuple(policy)
    unknown = [name for name in names if name not in POLICY]
    if unknown:
        raise ConfigError(
            f"unknown augmentation {unknown[0]!r} in policy; choose from {', '.join(POLICY)}"
        )
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p must be in [0, 1], got {p}")
    if p == 0.0 or not names:
        return x
    if not 1 <= image_channels <= x.shape[1]:
        raise ValueError(f"image_channels={image_channels} does not fit {x.shape[1]} channels")
    if draw is None:
        batch, device = x.shape[0], x.device

        def draw(*shape: int) -> torch.Tensor:
            return torch.randn((batch, *shape), device=device)

    grid = tuple(x.shape[2:])
    for name in names:
        if name == "translation":
            x = _translate(x, _draw_shifts(draw, grid, p, x))
        elif name == "cutout":
            starts, sides = _draw_box(draw, grid, p, x)
            x = _cut_out(x, image_channels, starts, sides)
        else:
            brightness, contrast = _draw_intensity(draw, p, x)
            x = _adjust_intensity(x, image_channels, brightness, contrast)
    return x


# ---- drawing parameters -------------------------------------------------------------
def _uniform(draw: Draw, k: int, x: torch.Tensor) -> torch.Tensor:
    """``(B, k)`` uniforms in [0, 1] in float32 on ``x``'s device, from ``draw(k)``."""
    z = draw(k).to(device=x.device, dtype=torch.float32)
    if tuple(z.shape) != (x.shape[0], k):
        raise ValueError(f"draw({k}) gave {tuple(z.shape)}, expected {(x.shape[0], k)}")
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def _gate(u: torch.Tensor, p: float) -> torch.Tensor:
    """Which samples an op applies to, from uniforms ``(B,)``.

    ``p == 1`` keeps every sample even where float32 rounds the CDF up to 1.
    """
    return torch.ones_like(u, dtype=torch.bool) if p >= 1.0 else u < p


def _draw_shifts(draw: Draw, grid: tuple[int, ...], p: float, x: torch.Tensor) -> torch.Tensor:
    """Integer shifts ``(B, D)`` in [-s, s] with ``s = round(side * TRANSLATION_RATIO)``."""
    u = _uniform(draw, 1 + len(grid), x)
    most = torch.tensor([int(n * TRANSLATION_RATIO + 0.5) for n in grid], device=x.device)
    shifts = torch.minimum(torch.floor(u[:, 1:] * (2 * most + 1)).long(), 2 * most) - most
    return shifts * _gate(u[:, 0], p)[:, None]


def _draw_box(
    draw: Draw, grid: tuple[int, ...], p: float, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cutout boxes wholly inside the grid: starts and sides, both ``(B, D)``.

    A sample the gate leaves out gets sides of 0 (an empty box).
    """
    u = _uniform(draw, 1 + len(grid), x)
    side = torch.tensor([int(n * CUTOUT_RATIO + 0.5) for n in grid], device=x.device)
    room = torch.tensor(grid, device=x.device) - side
    starts = torch.minimum(torch.floor(u[:, 1:] * (room + 1)).long(), room)
    return starts, side * _gate(u[:, 0], p)[:, None]


def _draw_intensity(draw: Draw, p: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness shifts and contrast factors, both ``(B,)``; 0 and 1 where gated out."""
    u = _uniform(draw, 3, x)
    gate = _gate(u[:, 0], p)
    brightness = (2.0 * u[:, 1] - 1.0) * BRIGHTNESS * gate
    contrast = 1.0 + (2.0 * u[:, 2] - 1.0) * CONTRAST * gate
    return brightness, contrast


# ---- applying them (deterministic, differentiable in x) -------------------------------
def _along(values: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """``(B, n)`` viewed as ``(B, 1, ..., n, ..., 1)`` with ``n`` on ``axis``."""
    shape = [values.shape[0]] + [1] * (ndim - 1)
    shape[axis] = values.shape[1]
    return values.view(shape)


def _translate(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move each sample's content by ``shifts`` ``(B, D)`` voxels, edges replicated.

    Each output voxel is a copy of one input voxel (a gather with clamped indices), so
    one-hot label channels stay one-hot and no voxel is left without a label.
    """
    for d, n in enumerate(x.shape[2:]):
        positions = torch.arange(n, device=x.device)
        source = (positions - shifts[:, d : d + 1]).clamp(0, n - 1)
        x = x.gather(2 + d, _along(source, 2 + d, x.dim()).expand_as(x))
    return x


def _cut_out(
    x: torch.Tensor, image_channels: int, starts: torch.Tensor, sides: torch.Tensor
) -> torch.Tensor:
    """Image channels set to 0 inside each sample's box; label channels untouched."""
    box: torch.Tensor | None = None
    for d, n in enumerate(x.shape[2:]):
        positions = torch.arange(n, device=x.device)
        start, end = starts[:, d : d + 1], (starts + sides)[:, d : d + 1]
        inside = _along((positions >= start) & (positions < end), 2 + d, x.dim())
        box = inside if box is None else box & inside
    assert box is not None
    image = x[:, :image_channels].masked_fill(box, 0.0)
    return torch.cat([image, x[:, image_channels:]], dim=1)


def _adjust_intensity(
    x: torch.Tensor, image_channels: int, brightness: torch.Tensor, contrast: torch.Tensor
) -> torch.Tensor:
    """Add ``brightness`` to the image, then scale it around its own mean by ``contrast``.

    Written as ``image + (contrast - 1) * (image - mean)`` so that a gated-out sample
    (brightness 0, contrast 1) comes back bit-identical.
    """
    image = x[:, :image_channels]
    shape = (-1,) + (1,) * (x.dim() - 1)
    image = image + brightness.to(x.dtype).view(shape)
    # the mean in float32: a bf16 sum over a 3D volume loses too many digits
    mean = image.float().mean(dim=tuple(range(1, x.dim())), keepdim=True).to(x.dtype)
    image = image + (contrast - 1.0).to(x.dtype).view(shape) * (image - mean)
    return torch.cat([image, x[:, image_channels:]], dim=1)
