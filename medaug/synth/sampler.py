"""Synthetic image + label pairs from a trained generator, in memory.

A :class:`Synthesizer` turns case numbers into cases. Everything random about case
``i`` (its latent draws, its source case, its slice, its interpolation weight) comes
from generators seeded with ``(seed, i)`` alone, so the same seed gives the same
cases whatever the batch size, and a resumed run makes exactly the cases a whole run
would have made.

Modes:

- ``prior``: ``z ~ N(0, I)``.
- ``perturb``: real case ``i mod R`` is encoded and decoded at
  ``mu + strength * eps`` (``eps ~ N(0, I)``, in units of the prior's scale), so the
  anatomy stays near a real one and its label comes along.
- ``interpolate``: two distinct real cases ``a``, ``b`` and ``t ~ U(0.2, 0.8)``;
  decoded at ``(1 - t) mu_a + t mu_b``. The ends are left out: ``t`` near 0 or 1
  would give near-copies of a real case.

A mask-conditioned model (``condition=mask``) renders each case around a layout
(:mod:`medaug.synth.layouts`: ``masks`` real, learned or the user's label maps),
planned from ``(seed, i)`` as the latents are; the case's label is exactly the
layout's label classes. ``perturb`` keeps its source case's own layout, and
``style`` takes the appearance (posterior mean) of one real case for every layout.

A 2D model makes one slice per case, or with ``stack`` a volume of slices decoded
along one latent path: for ``prior`` a smooth path through random anchors (one every
:data:`ANCHOR_EVERY` slices, spherical interpolation in between); for ``perturb`` the
source's slices shifted by one shared ``eps``; for ``interpolate`` slice ``k`` of
``a`` paired with the slice at the same relative height of ``b``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from medaug.errors import ConfigError
from medaug.preprocess import transforms as T
from medaug.preprocess.cache import case_number
from medaug.preprocess.pipeline import grid_affine
from medaug.preprocess.splits import training_cases
from medaug.synth.config import MODES
from medaug.synth.layouts import CaseLayouts, LayoutSource, open_layouts
from medaug.synth.masks import RealMasks
from medaug.train.checkpoint import Checkpoint, file_sha256
from medaug.train.distributed import pick_device

Mode = Literal["prior", "perturb", "interpolate"]
#: Slices between two random anchors of a stacked 2D prior sample.
ANCHOR_EVERY = 8
#: Interpolation weights are drawn from this range (no near-copies of the ends).
T_RANGE = (0.2, 0.8)


@dataclass
class SynthCase:
    """One synthetic case on the model grid.

    Attributes:
        index: the case number (its name is ``synth_0000`` for 0).
        image: (X, Y, Z) float32 Hounsfield units.
        label: (X, Y, Z) uint8 class map.
        affine: (4, 4) RAS affine (the config's spacing, centred on the origin).
        params: how it was made (mode, source case indices, slice, t, strength).
    """

    index: int
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return case_name(self.index)


def case_name(index: int) -> str:
    return f"synth_{index:04d}"


class Synthesizer:
    """Sample image + label pairs from a checkpoint (no files written).

    Args:
        checkpoint: a checkpoint file or a run folder (its newest checkpoint), or a
            :class:`~medaug.train.checkpoint.Checkpoint` already read.
        real: a cache of real cases preprocessed with the model's config; needed by
            ``perturb`` and ``interpolate``.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default CUDA when available.
        ema: use the EMA weights where the run kept them.
        masks: a conditional model's layouts: ``real`` (the default; needs ``real``),
            ``learned``, a label map file or folder, or a layout source object.
        style: a real case number whose appearance every case takes (needs ``real``).

    Example:
        >>> synth = Synthesizer("runs/00003-vaegan-2d")             # doctest: +SKIP
        >>> pairs = synth.sample(8, seed=0)                          # doctest: +SKIP
        >>> pairs[0]["image"].shape, pairs[0]["label"].dtype          # doctest: +SKIP
        (torch.Size([1, 64, 64, 1]), torch.uint8)
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | Checkpoint,
        *,
        real: Any = None,
        device: str | torch.device | None = None,
        ema: bool = True,
        masks: str | os.PathLike[str] | LayoutSource | None = None,
        style: int | None = None,
    ):
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
        self._checkpoint = ckpt
        self.checkpoint = ckpt.path
        self.step = ckpt.step
        #: the training / validation cases of the checkpoint, by content hash (or None)
        self.split: dict[str, Any] | None = ckpt.split
        self.device = pick_device(str(device or "auto"))
        self.model = ckpt.build_model(ema=ema, device=self.device)
        self.config = ckpt.preprocess
        self.sha256 = ckpt.sha256
        self.real = real
        if real is not None and real.config.to_dict() != self.config.to_dict():
            raise ConfigError(
                f"{real.root}: real cases preprocessed with another config than the model's"
            )
        self._posteriors: dict[tuple[str, int | None], torch.Tensor] = {}
        self._sources: list[str] | None = None
        self.style = style
        #: a conditional model's layout channels and how each is derived (its checkpoint's)
        self.conditioning: dict[str, Any] | None = ckpt.conditioning
        self.layouts: LayoutSource | None = None
        self.masks: str | None = None  # what the manifest calls the layout source
        if not self.model.conditional:
            if masks is not None or style is not None:
                what = "{masks}" if masks is not None else "{style}"
                raise ConfigError(
                    f"{what} needs a mask-conditioned model, and {ckpt.path} generates "
                    "image and label together (train one with condition mask)"
                )
            return
        if style is not None:
            self._check_style(style)
        self.layouts, self.masks = self._open_masks(masks)

    def _open_masks(self, masks: Any) -> tuple[LayoutSource, str]:
        """The layout source and what the manifest calls it (never a path: it may
        name a patient)."""
        if masks is None or isinstance(masks, (str, os.PathLike, list, tuple)):
            given = "arrays" if isinstance(masks, (list, tuple)) else str(masks or "real")
            source = open_layouts(
                masks or "real", checkpoint=self._checkpoint, real=self.real,
                cases=self.real_cases(), device=self.device,
            )  # fmt: skip
            return source, given if given in ("real", "learned", "arrays") else "user"
        return masks, type(masks).__name__

    def _check_style(self, style: int) -> None:
        if not self.model.has_encoder:
            raise ConfigError(
                f"{{style}} takes a real case's appearance through the encoder, and a "
                f"{self.model.name} model has none"
            )
        if self.real is None or _case_id(style) not in self.real.records:
            where = f"the cache {self.real.root}" if self.real is not None else "no cache"
            raise ConfigError(f"{{style}} case {style} is not in {where}")
        if _case_id(style) not in self.real_cases():  # as perturb: no held-out patient's look
            raise ConfigError(
                f"{{style}} case {style} is held out from this generator's training; "
                "take the appearance of one of its training cases"
            )

    @property
    def dims(self) -> int:
        return self.model.dims

    @property
    def classes(self) -> dict[str, int]:
        """Class name -> value in the label maps (background is 0); context labels are
        not written."""
        names = list(self.config.labels)[: self.config.output_classes]
        return {name: k + 1 for k, name in enumerate(names)}

    def real_cases(self) -> list[str]:
        """The real cases ``perturb`` and ``interpolate`` start from: the generator's
        training cases when its checkpoint recorded them (a held-out patient must not
        reach a synthetic training set through a near-copy), else every real case."""
        if self.real is None:
            return []
        if self._sources is None:
            self._sources = training_cases(self.real, self.split)
        return self._sources

    def check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"{{mode}} must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "prior":
            return
        if not self.model.has_encoder:
            raise ConfigError(
                f"{{mode}} {mode} encodes real cases, and a {self.model.name} model has no "
                "encoder; use {mode=prior} or a model with one (vae, vaegan, aae, avb, gvae)"
            )
        need = 2 if mode == "interpolate" else 1
        if len(self.real_cases()) < need:
            which = "of the generator's training cases" if self.split else "labelled cases"
            raise ConfigError(
                f"{{mode}} {mode} starts from real cases and needs {need} {which} under "
                f"{{input}}; found {len(self.real_cases())}"
            )

    def check_stack(self, stack: bool, mode: str = "prior") -> None:
        """Refuse what a mask-conditioned 2D model cannot stack (before anything is
        written): its volume is a real case's consecutive slices under one shared
        transform, so it needs ``masks=real``, and its one appearance code a prior
        draw or ``style``."""
        if stack and self.dims == 2 and self.layouts is not None:
            real = isinstance(self.layouts, RealMasks)
            check_conditional_stack("real" if real else self.masks, mode)

    # ---- plans: everything random about case i, from (seed, i) ---------------------
    def plan(
        self,
        index: int,
        *,
        mode: str = "prior",
        seed: int = 0,
        strength: float = 0.5,
        stack: bool = False,
        slices: int = 32,
    ) -> dict[str, Any]:
        """How case ``index`` is made; a plain dict that goes into the manifest."""
        rng = np.random.default_rng([seed, index])
        params: dict[str, Any] = {"mode": mode, "seed": [seed, index]}
        stacked = self.dims == 2 and stack
        self.check_stack(stack, mode)
        cases = self.real_cases()
        if mode == "prior":
            if stacked:
                params["slices"] = slices
        elif mode == "perturb":
            src = index % len(cases)
            params.update(source=case_number(cases[src]), strength=strength)
            if self.dims == 2 and not stack:
                params["slice"] = self._pick_slice(cases[src], rng.random())
        else:
            a, b = rng.choice(len(cases), size=2, replace=False)
            t = float(rng.uniform(*T_RANGE))
            params.update(source=[case_number(cases[a]), case_number(cases[b])], t=round(t, 6))
            if self.dims == 2 and not stack:
                u = rng.random()
                params["slice"] = [self._pick_slice(cases[a], u), self._pick_slice(cases[b], u)]
        if self.layouts is not None:
            params["layout"] = self._plan_layout(params, index, seed)
            if stacked:  # the stack's depth is the source case's, at most `slices`
                params["slices"] = params["layout"]["slices"][1]
        if self.style is not None:
            params["style"] = self.style
            if self.dims == 2:
                params["style_slice"] = self._pick_slice(_case_id(self.style), rng.random())
        return params

    def _plan_layout(self, params: dict[str, Any], index: int, seed: int) -> dict[str, Any]:
        if params["mode"] == "perturb":  # the source case's own layout
            return {"masks": "case", "case": params["source"], "slice": params.get("slice")}
        assert self.layouts is not None
        if "slices" in params:  # check_stack: a stack is drawn from real masks
            assert isinstance(self.layouts, RealMasks)
            plan = self.layouts.plan(index, seed, slices=params["slices"])
            return {**plan, "seed": [seed, index]}
        return {**self.layouts.plan(index, seed), "seed": [seed, index]}

    def layout(self, params: dict[str, Any]) -> np.ndarray:
        """The uint8 layout map of a planned conditional case."""
        lp = params["layout"]
        if lp["masks"] == "case":
            return CaseLayouts(self.real, self.model.config.layout).make(lp)
        assert self.layouts is not None
        return self.layouts.make(lp)

    def _pick_slice(self, case_id: str, u: float) -> int:
        """A target slice of a real case at relative height ``u`` (any slice if none)."""
        rec = self.real.records[case_id]
        on = rec["target_slices"] or list(range(rec["shape"][2]))
        return int(on[min(len(on) - 1, int(u * len(on)))])

    # ---- latents ----------------------------------------------------------------------
    def latents(self, params: dict[str, Any]) -> torch.Tensor:
        """``(S, *latent_shape)``: one latent per output slice (S = 1 for one image)."""
        seed, index = params["seed"]
        gen = torch.Generator().manual_seed(_seed64(seed, index))
        shape = self.model.latent_shape
        mode = params["mode"]
        s = params.get("slices")
        if "style" in params:  # one real case's appearance, every layout (any mode)
            style = self._posterior(_case_id(params["style"]), params.get("style_slice"))
            return style if s is None or "layout" not in params else style.repeat(s, 1)
        if mode == "prior":
            if s is None:
                return torch.randn((1, *shape), generator=gen)
            if "layout" in params:  # a conditional stack: one appearance, every slice
                return torch.randn((1, *shape), generator=gen).repeat(s, 1)
            anchors = torch.randn((math.ceil((s - 1) / ANCHOR_EVERY) + 1, *shape), generator=gen)
            return _anchor_path(anchors, s)
        eps = torch.randn(shape, generator=gen)
        if mode == "perturb":
            mu = self._posterior(_case_id(params["source"]), params.get("slice"))
            return mu + params["strength"] * eps
        a, b = (_case_id(k) for k in params["source"])
        slices = params.get("slice")
        mu_a = self._posterior(a, None if slices is None else slices[0])
        mu_b = self._posterior(b, None if slices is None else slices[1])
        if mu_b.shape[0] != mu_a.shape[0]:  # stacked: pair slices by relative height
            pick = torch.linspace(0, mu_b.shape[0] - 1, mu_a.shape[0]).round().long()
            mu_b = mu_b[pick]
        t = params["t"]
        return (1 - t) * mu_a + t * mu_b

    @torch.no_grad()
    def _posterior(self, case_id: str, z: int | None) -> torch.Tensor:
        """Posterior means of a real case: its volume (3D), one slice, or all slices."""
        zs: list[int | None] = [None]
        if self.dims == 2:
            zs = [z] if z is not None else list(range(self.real.records[case_id]["shape"][2]))
        missing = [k for k in zs if (case_id, k) not in self._posteriors]
        if missing:
            batch = self._real_batch(case_id, missing)
            # a conditional encoder sees the image alone: no layout to compose for it
            x = batch["image"] if self.model.conditional else self.model.inputs(batch)
            mu, _ = self.model.encode(x)
            for k, m in zip(missing, mu.float().cpu(), strict=True):
                self._posteriors[(case_id, k)] = m
        return torch.stack([self._posteriors[(case_id, k)] for k in zs])

    def _real_batch(self, case_id: str, zs: list[int | None]) -> dict[str, torch.Tensor]:
        image = np.asarray(self.real.array(case_id, "image"), dtype=np.float32)  # (Z, X, Y)
        label = np.asarray(self.real.array(case_id, "label"))
        if self.dims == 3:
            img = torch.from_numpy(np.moveaxis(image, 0, -1).copy())[None, None]
            lab = torch.from_numpy(np.moveaxis(label, 0, -1).copy())[None, None]
        else:
            c = self.config.context_slices
            ks = [k for k in zs if k is not None]  # 2D: every entry is a slice number
            rows = [np.clip(np.arange(k - c, k + c + 1), 0, image.shape[0] - 1) for k in ks]
            img = torch.from_numpy(np.stack([image[r] for r in rows]))
            lab = torch.from_numpy(np.stack([label[k] for k in ks]))[:, None]
        return {"image": img.to(self.device), "label": lab.to(self.device).long()}

    # ---- decoding ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, plans: list[dict[str, Any]], batch_size: int = 16) -> list[SynthCase]:
        """Decode the cases of ``plans`` (``batch_size`` latents per decoder call)."""
        zs = [self.latents(p) for p in plans]
        flat = torch.cat(zs) if zs else torch.empty(0)
        layouts = None
        if self.layouts is not None:  # one layout per slice (a stacked 2D case: several)
            maps = [self.layout(p) for p in plans]
            if self.dims == 2:
                maps = [s for m in maps for s in (np.moveaxis(m, -1, 0) if m.ndim == 3 else [m])]
            layouts = torch.from_numpy(np.stack(maps)).long()
        outs = []
        amp = torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda")
        for start in range(0, flat.shape[0], batch_size):
            onehot = None
            if layouts is not None:
                onehot = self.model.onehot(layouts[start : start + batch_size].to(self.device))
            with amp:
                x = self.model.decode(flat[start : start + batch_size].to(self.device), onehot)
            image, label = self.model.to_pair(x.float())
            centre = image.shape[1] // 2  # 2.5D models: the middle channel is the slice
            outs.append((image[:, centre].cpu().numpy(), label[:, 0].cpu().numpy()))
        images = np.concatenate([o[0] for o in outs]) if outs else np.empty(0)
        labels = np.concatenate([o[1] for o in outs]) if outs else np.empty(0)
        cases, start = [], 0
        for params, z in zip(plans, zs, strict=True):
            n = z.shape[0]
            img, lab = images[start : start + n], labels[start : start + n]
            start += n
            if self.dims == 2:  # (S, X, Y) slices -> (X, Y, S)
                img, lab = np.moveaxis(img, 0, -1), np.moveaxis(lab, 0, -1)
            else:
                img, lab = img[0], lab[0]
            hu = T.unit_to_hu(img.astype(np.float32), self.config.hu_window)
            lab = self.config.output_label(lab)  # context labels: out
            cases.append(
                SynthCase(
                    index=params["seed"][1],
                    image=hu.astype(np.float32),
                    label=lab.astype(np.uint8),
                    affine=grid_affine(self.config, hu.shape),
                    params=params,
                )
            )
        return cases

    def sample(
        self,
        n: int,
        *,
        mode: str = "prior",
        seed: int = 0,
        strength: float = 0.5,
        stack: bool = False,
        slices: int = 32,
        batch_size: int = 16,
        start: int = 0,
        masks: Any = None,
    ) -> list[dict[str, Any]]:
        """``n`` pairs as MONAI-style dicts of MetaTensors, in memory.

        A mask-conditioned model draws its layouts from ``masks`` when given (``real``,
        ``learned``, a label map path, or a list of label class maps on the model
        grid, used in turn), else from the source the synthesizer was made with.

        Returns:
            ``[{"image": (1, X, Y, Z) float32 HU, "label": (1, X, Y, Z) uint8,
            "params": {...}}, ...]``; each tensor's ``affine`` is the grid's RAS affine.
        """
        from monai.data import MetaTensor

        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        self.check_mode(mode)
        if masks is not None:
            if not self.model.conditional:
                raise ConfigError("{masks} needs a mask-conditioned model")
            self.layouts, self.masks = self._open_masks(masks)
        plans = [
            self.plan(i, mode=mode, seed=seed, strength=strength, stack=stack, slices=slices)
            for i in range(start, start + n)
        ]
        return [
            {
                "image": MetaTensor(torch.from_numpy(c.image)[None], affine=_tensor(c.affine)),
                "label": MetaTensor(torch.from_numpy(c.label)[None], affine=_tensor(c.affine)),
                "params": c.params,
            }
            for c in self.generate(plans, batch_size)
        ]


def check_conditional_stack(masks: str | None, mode: str) -> None:
    """Refuse a stack a mask-conditioned 2D model cannot make: its volume is a real
    case's consecutive layouts under one transform (``masks`` real, the default) with
    one appearance for every slice (``mode`` prior, ``style`` for a real case's look)."""
    if masks not in (None, "real"):
        raise ConfigError(
            f"{{stack}} with {{masks={masks}}}: a mask-conditioned 2D model stacks a real "
            "case's consecutive layouts; use {masks=real} (the default) or a 3D model"
        )
    if mode != "prior":
        raise ConfigError(
            f"{{stack}} with {{mode={mode}}}: a stacked mask-conditioned case takes one "
            "appearance for all its slices; use {mode=prior} (with {style} for a real "
            "case's look)"
        )


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _seed64(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def _case_id(index: int) -> str:
    return f"case_{index:04d}"


def _anchor_path(anchors: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` latents along a smooth path through ``anchors`` (spherical interpolation,
    which keeps the path at the norm the prior gives its samples)."""
    if anchors.shape[0] == 1:  # a one-slice stack
        return anchors[:n]
    out = []
    for k in range(n):
        pos = k / ANCHOR_EVERY
        i = min(int(pos), anchors.shape[0] - 2)
        out.append(_slerp(anchors[i], anchors[i + 1], pos - i))
    return torch.stack(out)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    af, bf = a.flatten(), b.flatten()
    cos = torch.dot(af, bf) / (af.norm() * bf.norm() + 1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


__all__ = ["MODES", "Mode", "SynthCase", "Synthesizer", "case_name", "file_sha256"]
