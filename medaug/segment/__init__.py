"""Segmentation: a MONAI U-Net trained on real and synthetic pairs, its scores, and the
augmentation-gain experiment that measures what synthetic pairs are worth."""

from __future__ import annotations

from medaug.segment.config import GainConfig, SegmentConfig
from medaug.segment.evaluate import evaluate_segmenter, score
from medaug.segment.segmenter import load_segmenter
from medaug.segment.train import fit, train_segmenter

__all__ = [
    "GainConfig",
    "SegmentConfig",
    "evaluate_segmenter",
    "fit",
    "load_segmenter",
    "score",
    "train_segmenter",
]
