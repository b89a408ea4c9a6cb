"""Synthesis: sample image + label pairs from a trained generator and write them as
NIfTI, DICOM and training lists.

``Synthesizer`` samples in memory; ``synthesize`` writes a whole output folder."""

from __future__ import annotations

from medaug.synth.config import MODES, SynthConfig
from medaug.synth.run import SynthResult, synthesize
from medaug.synth.sampler import SynthCase, Synthesizer

__all__ = ["MODES", "SynthCase", "SynthConfig", "SynthResult", "Synthesizer", "synthesize"]
