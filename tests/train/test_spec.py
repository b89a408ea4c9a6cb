"""GeneratorSpec: the one description of the generator medaug fits, its defaults and
what reaches the model config."""

from __future__ import annotations

import pytest

from medaug.errors import ConfigError
from medaug.segment import GainConfig
from medaug.train import TrainConfig
from medaug.train import spec as S
from medaug.train.spec import GeneratorSpec


def test_the_default_is_a_mask_conditioned_2d_vaegan_with_the_measured_discriminator():
    spec = GeneratorSpec()
    assert (spec.variant, spec.dims, spec.condition, spec.layout) == (
        "vaegan", 2, "mask", "target+body+tissue"
    )  # fmt: skip
    assert spec.resolved_discriminator == S.DEFAULT_DISCRIMINATOR
    assert spec.model_overrides() == {
        "condition": "mask", "layout": "target+body+tissue",
        "discriminator": S.DEFAULT_DISCRIMINATOR, "kl_weight": S.DEFAULT_KL_WEIGHT,
    }  # fmt: skip
    assert (S.DEFAULT_DISCRIMINATOR, S.DEFAULT_KL_WEIGHT) == ("segmentation", 8.0)
    # the gain experiment's generator is the same spec, trained shorter
    assert GainConfig().generator == spec


def test_steps_follow_the_device_unless_given():
    # 900 keeps a 2-core CPU fit within synth's 15 minutes; a GPU gets the longer budget
    spec = GeneratorSpec()
    assert spec.steps is None
    assert (spec.steps_for("cpu"), spec.steps_for("cuda"), spec.steps_for("mps")) == (
        S.DEFAULT_STEPS_CPU, S.DEFAULT_STEPS_ACCELERATOR, S.DEFAULT_STEPS_ACCELERATOR
    )  # fmt: skip
    assert (S.DEFAULT_STEPS_CPU, S.DEFAULT_STEPS_ACCELERATOR) == (900, 1800)
    assert spec.train_overrides("cuda")["steps"] == 1800
    given = GeneratorSpec(steps=40)
    assert (given.steps_for("cpu"), given.steps_for("cuda")) == (40, 40)
    # what a results file records: the budget that ran, everything else unchanged
    fixed = spec.for_device("cpu")
    assert fixed == spec.replace(steps=900) and fixed.to_dict()["steps"] == 900
    assert given.for_device("cuda") == given


def test_auto_resolves_per_variant_and_condition():
    assert GeneratorSpec(condition="none").model_overrides() == {
        "condition": "none", "discriminator": "patch"
    }  # fmt: skip
    for variant in ("vae", "aae", "avb"):  # no image discriminator unless asked
        assert GeneratorSpec(variant=variant).resolved_discriminator == "patch"
    # the KL weight: 8 for a mask-conditioned model with a KL term, else the variant's
    assert GeneratorSpec(variant="gan").model_overrides().get("kl_weight") is None
    assert GeneratorSpec(variant="vae").model_overrides()["kl_weight"] == 8.0
    assert "kl_weight" not in GeneratorSpec(condition="none").model_overrides()
    asked = GeneratorSpec(variant="aae", discriminator="segmentation", kl_weight=8,
                          augment="translation,cutout")  # fmt: skip
    assert asked.model_overrides() == {
        "condition": "mask", "layout": "target+body+tissue", "discriminator": "segmentation",
        "kl_weight": 8, "augment": "translation,cutout",
    }  # fmt: skip
    assert asked.describe() == (
        "mask-conditioned (target+body+tissue) aae generator, segmentation discriminator"
    )
    assert GeneratorSpec(condition="none", variant="gan").describe() == "gan generator"


def test_a_mask_conditioned_gan_trains_with_the_measured_adam_settings():
    """OASIS's Adam for the GAN with the segmentation discriminator (it washed out with
    the shared settings); every other spec keeps TrainConfig's."""
    gan = GeneratorSpec(variant="gan").train_overrides("cpu")
    assert {k: gan[k] for k in ("lr", "lr_d", "betas")} == S.GAN_OPTIMIZER
    assert S.GAN_OPTIMIZER == {"lr": 1e-4, "lr_d": 4e-4, "betas": (0.0, 0.999)}
    assert TrainConfig(**gan).betas == (0.0, 0.999)  # a valid TrainConfig
    for other in (GeneratorSpec(), GeneratorSpec(variant="gvae"),
                  GeneratorSpec(variant="gan", discriminator="patch"),
                  GeneratorSpec(variant="gan", condition="none")):  # fmt: skip
        assert set(other.train_overrides("cpu")) == {"steps", "warp"}, other


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"condition": "none", "discriminator": "segmentation"},
         "needs a mask-conditioned model: add --condition mask"),
        ({"discriminator": "unet"}, "discriminator must be auto, patch or segmentation"),
        ({"variant": "vqgan"}, "unknown model 'vqgan'"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"preset": "huge"}, "unknown preset 'huge'"),
        ({"layout": "target+bone"}, "layout must be one of"),
    ],
)  # fmt: skip
def test_impossible_specs_fail_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as err:
        GeneratorSpec(**fields)
    assert "\n" not in str(err.value)


def test_a_spec_from_a_file_names_unknown_fields():
    doc = {"variant": "gan", "steps": 40, "augment": ["translation"]}
    assert GeneratorSpec.from_dict(doc) == GeneratorSpec(variant="gan", steps=40,
                                                         augment=("translation",))  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) generator_steps"):
        GeneratorSpec.from_dict({"generator_steps": 40})
