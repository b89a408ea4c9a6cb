"""medaug: more labelled CT scans for people who train segmentation models.

The top-level package stays light so that ``import medaug`` and ``medaug --help``
are instant; the stages live in their own modules (``medaug.io``, ``medaug.data``,
``medaug.synth``, ``medaug.segment``). The names a segmentation pipeline needs are
importable from here and load their module on first use:

- ``medaug.Synthesizer(checkpoint).sample(n)``: image + label MetaTensor pairs in
  memory, for on-the-fly augmentation inside a training loop.
- ``medaug.SyntheticDataset(synth_dir, transform=...)``: the cases ``medaug synth``
  wrote, as a PyTorch / MONAI dataset of dicts.
- ``medaug.mix(real_ds, synth_ds, ratio)``: one dataset whose items are synthetic
  with probability ``ratio``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Synthesizer": "medaug.synth.sampler",
    "SyntheticDataset": "medaug.data.synthetic",
    "mix": "medaug.data.synthetic",
    "MixedDataset": "medaug.data.synthetic",
}

if TYPE_CHECKING:
    from medaug.data.synthetic import MixedDataset, SyntheticDataset, mix
    from medaug.synth.sampler import Synthesizer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medaug' has no attribute {name!r}")


__all__ = ["MixedDataset", "Synthesizer", "SyntheticDataset", "__version__", "mix"]
