"""The cheap baseline every learned generator must beat: images drawn from real labels.

SynthSeg (Billot et al. 2020) trains segmenters on images painted from label maps,
each class a Gaussian of random mean and spread; TorchIO implements it as
``RandomLabelsToImage``. Here the label maps are the real training labels, joined
with the tissue classes every CT has: the layout ``target+body+tissue`` that the
mask-conditioned generators render (:mod:`medaug.preprocess.layout`), from the
context map preprocessing caches beside each label (body outline and HU bands
``tissue_hu``, read before the HU window). The painted baseline and the generators
therefore see the same classes, computed once:

=====  =============================  =========================================
class  what                           from
=====  =============================  =========================================
0      outside the body               the cached context (largest body component)
1      air or lung inside the body    HU below ``tissue_hu[0]``
2      fat                            HU below ``tissue_hu[1]``
3      soft tissue                    HU below ``tissue_hu[2]``
4      bone or contrast               HU from ``tissue_hu[2]``
5      the target structure           the real label (it overrides the rest)
=====  =============================  =========================================

Every item draws one mean per class from that class's CT-plausible HU range
(:data:`MEAN_HU`), one noise sd and one blur (partial volume, as TorchIO advises),
from a generator seeded with ``(seed, item)``; :func:`render` then applies TorchIO's
deterministic ``LabelsToImage`` and ``Blur`` (TorchIO's own split of a random
transform into drawn parameters and a deterministic twin). The pair's label is the
real label, so image and label agree by construction: the organ is where the label
says, only its contrast against the surroundings is random.

MONAI has no labels-to-image transform (1.6); TorchIO's is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medaug.data.datasets import SliceDataset, VolumeDataset
from medaug.preprocess import layout as LY
from medaug.preprocess.transforms import hu_to_unit

#: The gain experiment's arm: real items mixed with labels2image items at ``--ratio``.
ARM = "real+labels2image"
#: Class names by value (:func:`tissue_classes`): the layout target+body+tissue.
CLASSES = ("outside body", "air/lung", "fat", "soft tissue", "bone/contrast", "target")
TARGET = len(CLASSES) - 1
#: Range of each class's mean intensity, HU, drawn uniformly per item.
MEAN_HU = ((-1000.0, -900.0), (-1000.0, -600.0), (-140.0, -60.0), (-10.0, 90.0),
           (150.0, 700.0), (20.0, 150.0))  # fmt: skip
#: Range of the within-class noise sd (HU) and of the blur sd (voxels).
STD_HU = (5.0, 25.0)
BLUR_VOXELS = (0.3, 1.0)
#: labels2image items per real training item (each with its own draw).
VARIANTS = 8


def tissue_classes(label: np.ndarray, context: np.ndarray, target: int) -> np.ndarray:
    """The class map an item is painted from: the layout ``target+body+tissue``.

    Args:
        label: (X, Y) or (X, Y, Z) class map.
        context: the cached context map of the same shape (0 outside the body, 1..4
            tissue by HU band; ``preprocess.layout.context_map``).
        target: the label value of the target structure (other label values take
            their tissue class: only the target is painted as itself).

    Returns:
        uint8 class map with values 0..5 (:data:`CLASSES`).
    """
    target_only = (np.asarray(label) == target).astype(np.uint8)
    return LY.compose(target_only, np.asarray(context), "target+body+tissue").astype(np.uint8)


def draw(rng: np.random.Generator) -> dict[str, Any]:
    """Everything random about one labels2image item: per-class means and noise sds
    (HU), the blur sd (voxels) and the noise seed. A plain dict (JSON-ready)."""
    return {
        "mean_hu": [round(float(rng.uniform(*r)), 2) for r in MEAN_HU],
        "std_hu": [round(float(rng.uniform(*STD_HU)), 2) for _ in MEAN_HU],
        "blur_voxels": round(float(rng.uniform(*BLUR_VOXELS)), 3),
        "noise_seed": int(rng.integers(2**31)),
    }


def render(classes: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Paint a class map with drawn ``params`` (deterministic): TorchIO's
    ``LabelsToImage`` (a Gaussian per class), then ``Blur``.

    Args:
        classes: (X, Y) or (X, Y, Z) class map from :func:`tissue_classes`.
        params: from :func:`draw`.

    Returns:
        float32 HU image of the same shape.
    """
    import torchio as tio

    volume = classes if classes.ndim == 3 else classes[..., None]
    present = sorted(int(v) for v in np.unique(volume))
    # LabelsToImage takes one mean and sd per label present, in sorted order
    means = [params["mean_hu"][v] for v in present]
    stds = [params["std_hu"][v] for v in present]
    subject = tio.Subject(
        label=tio.LabelMap(tensor=torch.from_numpy(volume[None].astype(np.int64)))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params["noise_seed"])  # LabelsToImage draws its noise from torch
        painted = tio.LabelsToImage("label", mean=means, std=stds, image_key="image")(subject)
    sigma = params["blur_voxels"]
    blur = tio.Blur(std=(sigma, sigma, sigma if classes.ndim == 3 else 0.0))
    blurred: Any = blur(painted)
    image = blurred["image"].data[0].numpy()
    return (image if classes.ndim == 3 else image[..., 0]).astype(np.float32)


class Labels2ImageDataset(Dataset):
    """labels2image items over the real training items of a cache, in [-1, 1].

    Item ``j`` paints real item ``j mod R`` (slices in 2D, volumes in 3D) with the
    draw seeded by ``(seed, j)``, so there are ``variants`` differently painted
    copies of each real label. It mixes with real items like a
    :class:`~medaug.data.SyntheticDataset` with ``intensity="unit"``
    (:func:`medaug.data.synthetic.check_compatible` accepts it).

    Args:
        cache: an open :class:`~medaug.data.Cache`.
        cases: the real cases whose labels are painted (the arm's training cases).
        seed: the draws.
        variants: painted copies per real item.
    """

    intensity = "unit"

    def __init__(self, cache: Any, cases: Sequence[str], seed: int = 0, variants: int = VARIANTS):
        if cache.config.dims == 2:
            self.real: Any = SliceDataset(cache, list(cases), context=0, with_context=True)
        else:
            self.real = VolumeDataset(cache, list(cases), with_context=True)
        self.config = cache.config
        self.root = cache.root
        self.seed = seed
        self.variants = variants
        self._classes: dict[int, np.ndarray] = {}  # class map of each real item, made once

    def __len__(self) -> int:
        return len(self.real) * self.variants

    def __getitem__(self, j: int) -> dict[str, Any]:
        k = j % len(self.real)
        item = self.real[k]
        window = self.config.hu_window
        if k not in self._classes:
            label = item["label"][0].numpy().astype(np.uint8)
            context = item["context"][0].numpy()
            self._classes[k] = tissue_classes(label, context, self.config.target_class)
        painted = render(self._classes[k], draw(np.random.default_rng([self.seed, j])))
        return {
            "image": torch.from_numpy(hu_to_unit(painted, window).astype(np.float32))[None],
            "label": item["label"],
            "case": item["case"],
            "case_id": item["case_id"],
        }


def items(
    cache: Any, cases: Sequence[str], n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` labels2image items as arrays, for scoring (the fidelity benchmark).

    Returns:
        ``(images (n, X, Y[, Z]) in [-1, 1], labels, names)``: ``n`` items of a
        :class:`Labels2ImageDataset` picked at random (seeded), so every real case
        can appear, each at most once per painted copy.
    """
    data = Labels2ImageDataset(cache, cases, seed)
    data.variants = max(1, -(-n // len(data.real)))  # enough painted copies for n items
    picks = np.sort(np.random.default_rng([seed, n]).choice(len(data), n, replace=False))
    images, labels, names = [], [], []
    for j in (int(p) for p in picks):
        item = data[j]
        images.append(item["image"][0].numpy())
        labels.append(item["label"][0].numpy().astype(np.uint8))
        names.append(f"l2i_{j:04d}")
    return np.stack(images), np.stack(labels), names


__all__ = [
    "ARM",
    "CLASSES",
    "Labels2ImageDataset",
    "draw",
    "items",
    "render",
    "tissue_classes",
]
