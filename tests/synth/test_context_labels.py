"""Multi-organ label maps as context: ``PreprocessConfig.context_labels`` names the
label classes that condition a mask-conditioned generator (in its layout, beside the
HU-derived tissue classes) and are left out of every synthetic label; the painted
baseline paints them as their own classes, as the generators see them.

Once per module: a two-patient phantom written with its organ labels (pancreas 1,
liver 2, spleen 3, kidneys 4, ...), a 2D cache on a 32x32 grid with liver and kidneys
as context, and a conditional VAE-GAN trained for two steps on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medaug.data.phantom import ORGAN_LABELS, make_patient, write_cohort
from medaug.errors import ConfigError
from medaug.preprocess import PreprocessConfig, preprocess
from medaug.preprocess import layout as LY
from medaug.preprocess.cache import Cache
from medaug.preprocess.pipeline import cache_settings
from medaug.segment.labels2image import CLASSES, TARGET, Labels2ImageDataset, class_stats
from medaug.synth import Synthesizer, synthesize
from medaug.train import train
from tests.conftest import SMALL, run_cli
from tests.synth.test_conditional_synth import MASK_2D, SHORT, TISSUE
from tests.synth.test_synth import manifest, nifti

pytestmark = pytest.mark.usefixtures("one_thread_per_process")

#: liver first on purpose: the config numbers output classes before context ones
LABELS = {"liver": [2], "pancreas": [1], "kidneys": [4]}
CONTEXT = PreprocessConfig(grid_2d=(32, 32), labels=LABELS, context_labels=("liver", "kidneys"))


@dataclass(frozen=True)
class Organs:
    cohort: Path
    cache: Path
    run: Path


@pytest.fixture(scope="module")
def organs(tmp_path_factory: pytest.TempPathFactory) -> Organs:
    root = tmp_path_factory.mktemp("organs")
    write_cohort(root / "cohort", patients=2, seed=0, fmt="nifti", config=SMALL, labels="organs")
    cache = preprocess(root / "cohort", root / "cache", CONTEXT, workers=1).out
    run = train(cache, root / "runs", model="vaegan", config=SHORT, model_overrides=MASK_2D)
    return Organs(root / "cohort", cache, run.run_dir)


def test_context_labels_are_numbered_after_the_output_classes():
    assert list(CONTEXT.labels) == ["pancreas", "liver", "kidneys"]
    assert (CONTEXT.target_class, CONTEXT.output_classes) == (1, 1)
    with pytest.raises(ConfigError, match="'spleen' is not one of labels"):
        PreprocessConfig(labels=LABELS, context_labels=["spleen"])
    with pytest.raises(ConfigError, match="the target 'pancreas' cannot be context"):
        PreprocessConfig(labels=LABELS, context_labels=["pancreas"])
    # a YAML string is one name; a config without context keeps its caches' keys
    assert PreprocessConfig(labels=LABELS, context_labels="liver").context_labels == ("liver",)
    assert "context_labels" not in cache_settings(PreprocessConfig())
    assert cache_settings(CONTEXT)["context_labels"] == ["liver", "kidneys"]


def test_the_phantom_writes_its_organs_on_the_same_image(tmp_path: Path):
    plain, _ = make_patient(0, 0, SMALL)
    scan, _ = make_patient(0, 0, SMALL, labels="organs")
    np.testing.assert_array_equal(scan.image, plain.image)
    assert plain.label is not None and scan.label is not None
    np.testing.assert_array_equal(scan.label == 1, plain.label == 1)
    present = set(np.unique(scan.label).tolist())
    assert {1, 2, 3, 4, 5} <= present <= {0, *(v for v, _ in ORGAN_LABELS.values())}
    write_cohort(tmp_path, patients=1, fmt="nifti", config=SMALL, labels="organs")
    names = json.loads((tmp_path / "dataset.json").read_text())["labels"]
    assert names["2"] == "liver" and names["4"] == "kidneys"
    # a resumed cohort keeps its labels
    with pytest.raises(ConfigError, match="holds a phantom cohort with organs labels"):
        write_cohort(tmp_path, patients=2, fmt="nifti", config=SMALL)


def test_context_organs_condition_the_generator_and_stay_out_of_its_labels(
    organs: Organs, tmp_path: Path
):
    result = synthesize(
        tmp_path / "s", 4, model=organs.run, input=organs.cache, masks="real", device="cpu"
    )
    synth = Synthesizer(organs.run, real=Cache(organs.cache), masks="real", device="cpu")
    assert synth.model.config.layout == TISSUE
    offset = LY.context_offset(TISSUE)
    organs_seen: set[int] = set()
    for rec in manifest(result.out)["cases"]:
        layout = synth.layout(rec["params"])
        label, _ = nifti(result.out / rec["label"])
        organs_seen |= set(np.unique(layout[layout > offset + 1]).tolist())
        # the label is the layout's target, and nothing of its context organs
        np.testing.assert_array_equal(label[..., 0], (layout == offset + 1).astype(np.uint8))
        assert set(rec["label_voxels"]) == {"pancreas"}
    assert organs_seen == {offset + 2, offset + 3}  # liver and kidneys are in the layouts
    datalist = json.loads((result.out / "dataset.json").read_text())
    assert datalist["labels"] == {"0": "background", "1": "pancreas"}


def test_the_painted_baseline_paints_context_organs_as_their_own_classes(organs: Organs):
    cache = Cache(organs.cache)
    stats = class_stats(cache, cache.case_ids)
    assert len(stats) == len(CLASSES) + 2
    liver, kidneys = stats[len(CLASSES)], stats[len(CLASSES) + 1]
    assert liver is not None and kidneys is not None
    assert stats[TARGET] is not None
    # the phantom's kidneys (cortex 160 HU) are brighter than its liver (60 HU)
    assert kidneys["mean_hu"] > liver["mean_hu"] + 30
    data = Labels2ImageDataset(cache, cache.case_ids, seed=0)
    painted = [data[j] for j in range(len(data.real))]
    classes = np.unique(np.concatenate([c.ravel() for c in data._classes.values()]))
    assert {len(CLASSES), len(CLASSES) + 1} <= set(classes.tolist())
    assert all(set(np.unique(p["label"].numpy()).tolist()) <= {0, 1} for p in painted)


def test_the_phantom_command_writes_organ_labels(tmp_path: Path):
    proc = run_cli("phantom", tmp_path / "p", "--patients", "1", "--shape", "32", "32", "8",
                   "--format", "nifti", "--labels", "organs")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    label, _ = nifti(tmp_path / "p" / "labelsTr" / "PANCREAS_0001.nii.gz")
    assert label.max() > 1
