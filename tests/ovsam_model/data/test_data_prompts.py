"""Prompt sampling: counts, tiling, points inside their masks, exact or jittered boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovsam_model.data.prompts import jitter_boxes, sample_mask_points, sample_prompts, tiled_targets
from ovsam_model.data.transforms import masks_to_boxes


@pytest.fixture
def three_masks() -> torch.Tensor:
    masks = torch.zeros((3, 40, 50), dtype=torch.bool)
    masks[0, 2:10, 3:20] = True
    masks[1, 20:38, 30:33] = True
    masks[2, 15:16, 5:6] = True  # a single pixel
    return masks


def test_tiling_when_fewer_instances_than_prompts(three_masks: torch.Tensor) -> None:
    rng = np.random.default_rng(0)
    targets = tiled_targets(3, 40, rng)
    assert sorted(np.bincount(targets).tolist()) == [13, 13, 14]
    prompts = sample_prompts(three_masks, masks_to_boxes(three_masks), rng)
    assert len(prompts["box_targets"]) == 21 and len(prompts["point_targets"]) == 19
    all_targets = torch.cat([prompts["box_targets"], prompts["point_targets"]])
    assert sorted(torch.bincount(all_targets).tolist()) == [13, 13, 14]


def test_more_instances_than_prompts_truncates() -> None:
    targets = tiled_targets(100, 40, np.random.default_rng(0))
    assert len(targets) == 40 and len(set(targets.tolist())) == 40


def test_points_lie_in_their_masks_and_boxes_are_exact(three_masks: torch.Tensor) -> None:
    boxes = masks_to_boxes(three_masks)
    prompts = sample_prompts(three_masks, boxes, np.random.default_rng(1), points_per_prompt=3)
    assert prompts["points"].shape == (19, 3, 2) and prompts["points"].dtype == torch.float32
    assert prompts["point_labels"].shape == (19, 3) and bool((prompts["point_labels"] == 1).all())
    for points, target in zip(prompts["points"], prompts["point_targets"]):
        for x, y in points.tolist():
            assert three_masks[target, int(y), int(x)]
    torch.testing.assert_close(prompts["boxes"], boxes[prompts["box_targets"]])


def test_box_fraction_and_prompt_count() -> None:
    masks = torch.ones((1, 8, 8), dtype=torch.bool)
    prompts = sample_prompts(
        masks, masks_to_boxes(masks), np.random.default_rng(0), num_prompts=10, box_fraction=0
    )
    assert len(prompts["boxes"]) == 0 and prompts["boxes"].shape == (0, 4) and len(prompts["points"]) == 10


def test_points_are_distinct_when_the_mask_allows() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:4, 2:4] = True
    points = sample_mask_points(mask, 4, np.random.default_rng(0))
    assert len({tuple(p) for p in points.tolist()}) == 4
    assert sample_mask_points(mask, 9, np.random.default_rng(0)).shape == (9, 2)  # with replacement


def test_box_jitter_stays_inside_the_image() -> None:
    boxes = torch.tensor([[10.0, 10.0, 30.0, 20.0], [0.0, 0.0, 5.0, 5.0]])
    jittered = jitter_boxes(boxes, 0.3, (25, 40), np.random.default_rng(0))
    assert not torch.equal(jittered, boxes)
    assert bool((jittered[:, 2] > jittered[:, 0]).all() and (jittered[:, 3] > jittered[:, 1]).all())
    assert float(jittered[:, [0, 2]].max()) <= 40 and float(jittered[:, [1, 3]].max()) <= 25
    assert float(jittered.min()) >= 0
    assert torch.equal(jitter_boxes(boxes, 0.0, (25, 40), np.random.default_rng(0)), boxes)


def test_no_instances_is_an_error() -> None:
    with pytest.raises(ValueError, match="without instances"):
        tiled_targets(0, 40, np.random.default_rng(0))
