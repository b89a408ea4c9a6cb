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

Two forms of the draw (``PAINTINGS``), each per item from a generator seeded
with ``(seed, item)``:

- ``wide`` (SynthSeg's): one mean per class from that class's CT-plausible HU range
  (:data:`MEAN_HU`), one noise sd from :data:`STD_HU`. The organ's contrast against
  its surroundings is random, often far from any real scan's.
- ``fitted``: each class's mean drawn around the mean that class has in the training
  cases' own images (:func:`class_stats`; spread: the sd of the per-case means, at
  least :data:`MEAN_SPREAD_FLOOR_HU`), its noise sd a share (:data:`NOISE_SHARE`) of
  the class's within-case sd. The images look like the training scans' intensities
  on new label maps; classes the cases lack fall back to the wide ranges.

Both then draw one blur (partial volume, as TorchIO advises); :func:`render` applies
TorchIO's deterministic ``LabelsToImage`` and ``Blur`` (TorchIO's own split of a
random transform into drawn parameters and a deterministic twin). The pair's label is
the real label, so image and label agree by construction: the organ is where the
label says.

MONAI has no labels-to-image transform (1.6); TorchIO's is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medaug.data.datasets import SliceDataset, VolumeDataset
from medaug.errors import ConfigError
from medaug.preprocess import layout as LY
from medaug.preprocess.transforms import hu_to_unit, unit_to_hu
from medaug.segment.config import PAINTINGS

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
#: ``fitted``: the least spread (HU sd) of a class's drawn mean around its real mean
#: (two training cases give a poor estimate of the spread between scans).
MEAN_SPREAD_FLOOR_HU = 5.0
#: ``fitted``: the noise sd's range, as a share of the class's within-case sd (the
#: blur and the class's own partial-volume edges make up the rest).
NOISE_SHARE = (0.5, 1.0)


def tissue_classes(
    label: np.ndarray, context: np.ndarray, target: int, organs: Sequence[int] = ()
) -> np.ndarray:
    """The class map an item is painted from: the layout ``target+body+tissue``, and
    the context organs of a multi-organ label map after it.

    Args:
        label: (X, Y) or (X, Y, Z) class map.
        context: the cached context map of the same shape (0 outside the body, 1..4
            tissue by HU band; ``preprocess.layout.context_map``).
        target: the label value of the target structure (other label values take
            their tissue class: only the target is painted as itself).
        organs: label values of context organs (``PreprocessConfig.context_labels``),
            each painted as its own class ``len(CLASSES) + i``, as the generators see
            them in their layout.

    Returns:
        uint8 class map with values 0..5 (:data:`CLASSES`), then the organs'.
    """
    label = np.asarray(label)
    target_only = (label == target).astype(np.uint8)
    classes = LY.compose(target_only, np.asarray(context), "target+body+tissue").astype(np.uint8)
    for i, value in enumerate(organs):
        classes[label == value] = len(CLASSES) + i
    return classes


def context_organs(config: Any) -> list[int]:
    """The label values of a preprocessing config's context labels (numbered last)."""
    return list(range(config.output_classes + 1, len(config.labels) + 1))


def wide_range(c: int) -> tuple[float, float]:
    """The ``wide`` draw's mean HU range of class ``c`` (a context organ: soft tissue's)."""
    return MEAN_HU[c] if c < len(MEAN_HU) else MEAN_HU[3]


def class_stats(cache: Any, cases: Sequence[str]) -> list[dict[str, float] | None]:
    """Each class's intensity in the cases' cached images (windowed HU), for the
    ``fitted`` draw.

    Returns:
        per class of :data:`CLASSES`: ``mean_hu`` over all its voxels, ``spread_hu``
        (the sd of the per-case means; 0 for one case) and ``within_sd_hu`` (the pooled
        within-case sd); None for a class no case has.
    """
    window, target = cache.config.hu_window, cache.config.target_class
    organs = context_organs(cache.config)
    k = len(CLASSES) + len(organs)
    counts = np.zeros((len(cases), k))  # voxels, HU sum, HU² sum per case and class
    sums, squares = np.zeros_like(counts), np.zeros_like(counts)
    for i, case in enumerate(cases):
        hu = unit_to_hu(np.asarray(cache.array(case, "image"), np.float64), window).ravel()
        label, context = cache.array(case, "label"), cache.array(case, "context")
        flat = tissue_classes(label, context, target, organs).ravel()
        counts[i] = np.bincount(flat, minlength=k)[:k]
        sums[i] = np.bincount(flat, weights=hu, minlength=k)[:k]
        squares[i] = np.bincount(flat, weights=hu**2, minlength=k)[:k]
    stats: list[dict[str, float] | None] = []
    for c in range(k):
        has = counts[:, c] > 0
        if not has.any():
            stats.append(None)
            continue
        n = counts[has, c]
        case_means = sums[has, c] / n
        mean = float(sums[has, c].sum() / n.sum())
        # law of total variance: within-case = total - voxel-weighted spread of case means
        total = squares[has, c].sum() / n.sum() - mean**2
        between = float(np.sum(n * (case_means - mean) ** 2) / n.sum())
        stats.append(
            {"mean_hu": round(mean, 2), "spread_hu": round(float(np.std(case_means)), 2),
             "within_sd_hu": round(float(np.sqrt(max(total - between, 0.0))), 2)}
        )  # fmt: skip
    return stats


def draw(
    rng: np.random.Generator,
    stats: Sequence[dict[str, float] | None] | None = None,
    classes: int | None = None,
) -> dict[str, Any]:
    """Everything random about one labels2image item: per-class means and noise sds
    (HU), the blur sd (voxels) and the noise seed. A plain dict (JSON-ready).

    Args:
        rng: the item's generator.
        stats: :func:`class_stats` for the ``fitted`` form; None: the ``wide`` form.
        classes: the wide form's class count (default :data:`CLASSES`; more with
            context organs).
    """
    fits = [None] * (classes or len(MEAN_HU)) if stats is None else list(stats)
    # all means, then all sds: the wide form draws as it always did
    mean_hu = [
        rng.uniform(*wide_range(c)) if fit is None
        else rng.normal(fit["mean_hu"], max(fit["spread_hu"], MEAN_SPREAD_FLOOR_HU))
        for c, fit in enumerate(fits)
    ]  # fmt: skip
    std_hu = [
        rng.uniform(*STD_HU) if fit is None else fit["within_sd_hu"] * rng.uniform(*NOISE_SHARE)
        for fit in fits
    ]
    return {
        "mean_hu": [round(float(m), 2) for m in mean_hu],
        "std_hu": [round(float(s), 2) for s in std_hu],
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
        cases: the real cases whose labels are painted (the arm's training cases); the
            ``fitted`` form also takes its intensities from them.
        seed: the draws.
        variants: painted copies per real item.
        form: ``wide`` or ``fitted`` (:data:`~medaug.segment.config.PAINTINGS`).
    """

    intensity = "unit"

    def __init__(
        self,
        cache: Any,
        cases: Sequence[str],
        seed: int = 0,
        variants: int = VARIANTS,
        form: str = "fitted",
    ):
        if form not in PAINTINGS:
            raise ConfigError(f"labels2image form must be {' or '.join(PAINTINGS)}, got {form!r}")
        self.form = form
        self.stats = class_stats(cache, cases) if form == "fitted" else None
        self.organs = context_organs(cache.config)
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

    @property
    def settings(self) -> dict[str, Any]:
        """What makes its items (beside the cases): the gain runs' keys hold it."""
        return {"form": self.form, "variants": self.variants, "seed": self.seed}

    def __getitem__(self, j: int) -> dict[str, Any]:
        k = j % len(self.real)
        item = self.real[k]
        window = self.config.hu_window
        if k not in self._classes:
            label = item["label"][0].numpy().astype(np.uint8)
            context = item["context"][0].numpy()
            target = self.config.target_class
            self._classes[k] = tissue_classes(label, context, target, self.organs)
        rng = np.random.default_rng([self.seed, j])
        params = draw(rng, self.stats, len(CLASSES) + len(self.organs))
        painted = render(self._classes[k], params)
        label = self.config.output_label(item["label"])  # context organs are not written
        return {
            "image": torch.from_numpy(hu_to_unit(painted, window).astype(np.float32))[None],
            "label": label,
            "case": item["case"],
            "case_id": item["case_id"],
        }


def items(
    cache: Any, cases: Sequence[str], n: int, seed: int = 0, form: str = "fitted"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` labels2image items as arrays, for scoring (the fidelity benchmark).

    Returns:
        ``(images (n, X, Y[, Z]) in [-1, 1], labels, names)``: ``n`` items of a
        :class:`Labels2ImageDataset` picked at random (seeded), so every real case
        can appear, each at most once per painted copy.
    """
    data = Labels2ImageDataset(cache, cases, seed, form=form)
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
    "class_stats",
    "context_organs",
    "draw",
    "items",
    "render",
    "tissue_classes",
]
