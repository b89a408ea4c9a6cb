"""Measuring synthetic scans against real ones: distribution distances, diversity,
label plausibility, HU per tissue, memorization, and model likelihoods."""

from __future__ import annotations

from medaug.evaluate.run import EVALUATION, evaluate

__all__ = ["EVALUATION", "evaluate"]
