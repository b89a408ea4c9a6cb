"""Training data: the built-in phantom cohort (and, later, cached datasets and splits)."""

from __future__ import annotations
