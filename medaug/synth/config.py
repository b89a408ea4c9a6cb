"""The synthesis config: how synthetic cases are drawn and written. Saved in every
synthesis folder's manifest; the settings that decide the cases are also its
``settings`` block, which a resumed run and a merge of shards must match.

Fitting a generator (when none is given) has its own settings: the variant, dims and
steps of :func:`medaug.train.fit.fit_or_resume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from medaug.errors import ConfigError
from medaug.settings import Settings

#: Where latents come from (:mod:`medaug.synth.sampler`).
MODES: tuple[str, ...] = ("prior", "perturb", "interpolate")
FORMATS = ("nifti", "dicom", "both")


@dataclass(frozen=True)
class SynthConfig(Settings):
    """Settings of one synthesis run (the generator's own are in its checkpoint)."""

    SOURCE: ClassVar[str] = "synth config"

    mode: str = "prior"  # prior | perturb | interpolate: where the latents come from
    seed: int = 0  # case i is drawn from (seed, i): same seed, same cases
    strength: float = 0.5  # perturb: latent step, in standard deviations of the prior
    # 2D models: write volumes of stacked slices, not single slices (None: when the
    # images are DICOM, which holds volumes)
    stack: bool | None = None
    slices: int | None = None  # slices of a stacked prior case (None: the real cases' median)
    fmt: str = "nifti"  # nifti | dicom | both: the image files (labels are NIfTI always)
    seg: bool = False  # also write each label as DICOM SEG (needs DICOM images)
    batch_size: int = 16  # latents per decoder call
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    writers: int | None = None  # writer threads (None: up to 4)
    # the fidelity filter (medaug.synth.fidelity_filter): keep only pairs whose label a
    # segmenter agrees with at this Dice or more, in (0, 1]; None keeps every pair
    min_fidelity: float | None = None
    segmenter: str | None = None  # its segmenter.pt (None: trained on the generator's cases)
    fidelity_tries: int = 10  # candidates per case at most: the filter gives up after n * this
    # mask-conditioned models (medaug.synth.layouts): where each case's layout comes from,
    # "real" (the default for them), "learned" or a label map file / folder; and a real
    # case number whose appearance every case takes (None: the mode's latents)
    masks: str | None = None
    style: int | None = None
    mask_steps: int | None = None  # learned: the mask generator's steps (None: the model's)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"{{fmt}} must be nifti, dicom or both, got {self.fmt!r}")
        if self.strength < 0:
            raise ConfigError(f"{{strength}} must be >= 0, got {self.strength}")
        if self.batch_size < 1:
            raise ConfigError(f"{{batch_size}} must be at least 1, got {self.batch_size}")
        if self.mode not in MODES:
            raise ConfigError(f"{{mode}} must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.slices is not None and self.slices < 1:
            raise ConfigError(f"{{slices}} must be at least 1, got {self.slices}")
        if self.writers is not None and self.writers < 1:
            raise ConfigError(f"{{writers}} must be at least 1, got {self.writers}")
        if self.min_fidelity is not None and not 0.0 < self.min_fidelity <= 1.0:
            raise ConfigError(f"{{min_fidelity}} must be in (0, 1], got {self.min_fidelity:g}")
        if self.fidelity_tries < 1:
            raise ConfigError(f"{{fidelity_tries}} must be at least 1, got {self.fidelity_tries}")
        if self.masks is not None:
            object.__setattr__(self, "masks", str(self.masks))
        if self.masks is not None and self.mode == "perturb":
            raise ConfigError(
                "{mode} perturb keeps each source case's own layout; {masks} chooses the "
                "layouts of prior and interpolate cases"
            )
        if self.style is not None and self.mode == "interpolate":
            raise ConfigError(
                "{style} gives every case one real case's appearance: "
                "it does not mix with {mode} interpolate"
            )
        if self.segmenter is not None:  # a path given as os.PathLike is saved as text
            object.__setattr__(self, "segmenter", str(self.segmenter))
        if self.seg and self.fmt == "nifti":
            raise ConfigError(
                "{seg=True} writes the label as DICOM SEG next to a DICOM series: "
                "add {fmt=dicom} (or both)"
            )

    @property
    def stacks(self) -> bool:
        """Whether a 2D model's cases are stacked: asked for, or DICOM without a word."""
        return self.fmt != "nifti" if self.stack is None else self.stack

    def settings(self, stack: bool, slices: int) -> dict[str, Any]:
        """The manifest's ``settings`` block (what decides the cases), for a run that
        stacks (``stack``: asked for, and the model is 2D) ``slices`` slices."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "strength": self.strength if self.mode == "perturb" else None,
            "stack": stack,
            "slices": slices if stack and self.mode == "prior" else None,
            "format": self.fmt,
            "seg": self.seg,
            "masks": self.mask_source,
            "style": self.style,
        }

    @property
    def mask_source(self) -> str | None:
        """``masks`` as the manifest records it: real, learned, or user for a path
        (a path may name a patient, and manifests name none)."""
        return self.masks if self.masks in (None, "real", "learned") else "user"


__all__ = ["FORMATS", "MODES", "SynthConfig"]
