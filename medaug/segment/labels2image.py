"""The cheap baseline every learned generator must beat: images drawn from real labels.

SynthSeg (Billot et al. 2020) trains segmenters on images painted from label maps,
each class a Gaussian of random mean and spread; TorchIO implements it as
``RandomLabelsToImage``. Here the label maps are the real training labels, extended
with tissue classes that every CT has, read from the image's own HU:

=====  =============================  =========================================
class  what                           from
=====  =============================  =========================================
0      outside the body               not in the body outline
1      air or lung inside the body    below :data:`AIR_HU` or at the window floor
2      fat                            below :data:`FAT_HU`
3      soft tissue                    below :data:`BONE_HU`
4      bone or contrast               at or above :data:`BONE_HU`
5      the target structure           the real label (it overrides the rest)
=====  =============================  =========================================

The body outline is the largest connected region of non-air voxels with its holes
filled. Every item draws one mean per class from that class's CT-plausible HU range
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

from medaug.preprocess.transforms import hu_to_unit, unit_to_hu
from medaug.segment.train import real_dataset

#: The gain experiment's arm: real items mixed with labels2image items at ``--ratio``.
ARM = "real+labels2image"
#: Voxels below this HU are air (or lung); so are voxels clipped at the window floor.
AIR_HU = -300.0
#: Voxels in [AIR_HU, FAT_HU) are fat.
FAT_HU = -20.0
#: Voxels at or above this HU are bone or contrast; between FAT_HU and here soft tissue.
BONE_HU = 150.0
#: Class names by value (:func:`tissue_classes`).
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


def tissue_classes(
    image_hu: np.ndarray, label: np.ndarray, target: int, window_floor: float | None = None
) -> np.ndarray:
    """The class map an image is painted from: body outline, HU tissue classes, target.

    Args:
        image_hu: (X, Y) or (X, Y, Z) image in HU.
        label: class map of the same shape.
        target: the label value of the target structure.
        window_floor: the low end of the HU window the image was clipped to: voxels
            there are air whatever their true HU (the default window clips at -160).

    Returns:
        uint8 class map with values 0..5 (:data:`CLASSES`).
    """
    image_hu = np.asarray(image_hu, dtype=np.float32)
    air = image_hu < AIR_HU
    if window_floor is not None:
        air |= image_hu <= window_floor + 0.5
    body = _body(~air)
    classes = np.zeros(image_hu.shape, dtype=np.uint8)
    classes[body & air] = 1
    classes[body & ~air & (image_hu < FAT_HU)] = 2
    classes[body & (image_hu >= FAT_HU) & (image_hu < BONE_HU)] = 3
    classes[body & (image_hu >= BONE_HU)] = 4
    classes[np.asarray(label) == target] = TARGET
    return classes


def _body(solid: np.ndarray) -> np.ndarray:
    """The largest connected region of ``solid`` with its holes filled (per slice in
    a volume too, so bowel gas open to the slice edge above is still inside)."""
    from scipy import ndimage

    regions, count = ndimage.label(solid)
    if count == 0:
        return np.zeros_like(solid)
    sizes = np.bincount(regions.ravel())[1:]
    body = regions == (int(np.argmax(sizes)) + 1)
    if body.ndim == 3:
        for z in range(body.shape[2]):
            body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return ndimage.binary_fill_holes(body)


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


def labels2image(
    image_unit: np.ndarray, label: np.ndarray, config: Any, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One labels2image item from a real item in model units.

    Args:
        image_unit: (X, Y) or (X, Y, Z) real image in [-1, 1].
        label: its class map.
        config: the ``PreprocessConfig`` (HU window, target class).
        rng: the item's generator.

    Returns:
        ``(image in [-1, 1], params)``; the pair's label is ``label`` itself.
    """
    low = config.hu_window[0]
    hu = unit_to_hu(image_unit, config.hu_window)
    classes = tissue_classes(hu, label, config.target_class, window_floor=low)
    params = draw(rng)
    painted = render(classes, params)
    return hu_to_unit(painted, config.hu_window).astype(np.float32), params


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
        self.real = real_dataset(cache, cases)
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
            hu = unit_to_hu(item["image"][0].numpy(), window)
            label = item["label"][0].numpy().astype(np.uint8)
            self._classes[k] = tissue_classes(hu, label, self.config.target_class, window[0])
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
    "labels2image",
    "render",
    "tissue_classes",
]
