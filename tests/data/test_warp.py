"""Moved training pairs (TrainConfig.warp): image, label and context move as one, by
the draw real-mask synthesis makes, the same for any key whatever the process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medaug.data.warp import WarpedPairs, draw_moves, warp, warp_pair
from medaug.train.loop import StepBatches
from medaug.train.spec import DEFAULT_WARP, GeneratorSpec

SPACING = (3.0, 3.0, 2.5)
STILL = {"rotate_deg": [0.0], "scale": [1.0, 1.0], "translate_vox": [0.0, 0.0], "elastic": None}


def item() -> dict:
    """A 24x24 item: a bright square (label 1) on a ramp, context 3 inside a disc."""
    x, y = np.mgrid[:24, :24]
    image = np.linspace(-0.5, 0.5, 24)[:, None] * np.ones((1, 24))
    label = np.zeros((24, 24), np.uint8)
    label[8:12, 10:14] = 1
    image[label == 1] = 0.9
    context = (np.hypot(x - 12, y - 12) < 11).astype(np.float32) * 3
    return {"image": torch.tensor(image[None], dtype=torch.float32),
            "label": torch.tensor(label[None]), "context": torch.tensor(context[None]),
            "case": 7}  # fmt: skip


def test_a_whole_voxel_shift_moves_image_label_and_context_together():
    it = item()
    moved = warp_pair(it, SPACING, {**STILL, "translate_vox": [3.0, -2.0]})
    label = moved["label"][0].numpy()
    assert label.dtype == np.uint8 and moved["case"] == 7
    np.testing.assert_array_equal(np.argwhere(label == 1).min(0), [11, 8])  # 8+3, 10-2
    np.testing.assert_allclose(moved["image"][0, 11:15, 8:12].numpy(), 0.9, atol=1e-5)
    assert moved["image"][0, 0, 0] == pytest.approx(-1.0)  # outside the source: air
    assert moved["context"][0, 0, 0] == 0 and moved["context"][0, 14, 10] == 3
    # the label is moved exactly as synthesis moves a mask
    np.testing.assert_array_equal(
        label, warp(it["label"][0].numpy(), SPACING, [0.0], [1.0, 1.0], [3.0, -2.0])
    )
    still = warp_pair(it, SPACING, STILL)
    np.testing.assert_allclose(still["image"].numpy(), it["image"].numpy(), atol=1e-5)


def test_each_key_draws_its_own_move_and_draws_it_again():
    class Items:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> dict:
            return item()

    pairs = WarpedPairs(Items(), SPACING, seed=5)
    a, b, c = pairs[(1, 10, 0)], pairs[(1, 10, 0)], pairs[(1, 10, 1)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])  # another position in the batch
    assert torch.equal(pairs[1]["image"], item()["image"])  # an index alone: as it is
    moves = draw_moves(np.random.default_rng(0), (24, 24))
    json.dumps(moves)  # recordable
    assert abs(moves["rotate_deg"][0]) <= 15 and 0.9 <= min(moves["scale"]) <= 1.1


def test_keyed_batches_hold_the_same_indices_with_their_step_and_position():
    plain = StepBatches(None, 10, 4, rank=1, world=2, seed=3, start=5, stop=7)
    keyed = StepBatches(None, 10, 4, rank=1, world=2, seed=3, start=5, stop=7, keyed=True)
    for step, (p, k) in enumerate(zip(plain, keyed, strict=True), start=5):
        assert [i for i, _, _ in k] == p
        assert [(s, j) for _, s, j in k] == [(step, 2), (step, 3)]  # rank 1: positions 2, 3


def test_the_spec_sets_warp_and_reads_it_back():
    assert GeneratorSpec().resolved_warp is DEFAULT_WARP
    assert GeneratorSpec(condition="none").resolved_warp is False
    assert GeneratorSpec(warp=True).train_overrides("cpu") == {"steps": 900, "warp": True}
