"""Mask clean-up after the prompts: clicks keep the parts they touch, boxes clip their masks."""

from __future__ import annotations

import numpy as np
import torch

from ovsam_model.postprocess import REMOVED_LOGIT, clip_masks_to_boxes, keep_prompted_components


def _logits(*squares, size=16):
    """[1, 1, size, size] logits: +5 inside the (r0, r1, c0, c1) squares, -5 elsewhere."""
    out = torch.full((1, 1, size, size), -5.0)
    for r0, r1, c0, c1 in squares:
        out[0, 0, r0:r1, c0:c1] = 5.0
    return out


def test_a_click_keeps_the_part_it_touches():
    logits = _logits((1, 5, 1, 5), (10, 15, 10, 15))
    points = torch.tensor([[[12.0 * 4, 11.0 * 4]]])  # (x, y) in a 64-pixel input frame: cell (row 11, col 12)
    out = keep_prompted_components(logits, points, torch.ones(1, 1), image_size=64)
    assert (out[0, 0, 10:15, 10:15] == 5).all()
    assert (out[0, 0, 1:5, 1:5] == REMOVED_LOGIT).all()
    assert (out[0, 0, 6:9] == -5).all()  # background logits untouched


def test_negative_points_do_not_choose_and_an_off_mask_click_keeps_the_largest_part():
    logits = _logits((0, 2, 0, 2), (8, 14, 8, 14))
    points = torch.tensor([[[1.0 * 4, 1.0 * 4], [30.0, 2.0]]])  # a negative click on the small part,
    labels = torch.tensor([[0.0, 1.0]])  # and a positive one on the background
    out = keep_prompted_components(logits, points, labels, image_size=64)
    assert (out[0, 0, 8:14, 8:14] == 5).all() and (out[0, 0, 0:2, 0:2] == REMOVED_LOGIT).all()


def test_one_part_and_empty_masks_are_unchanged():
    for logits in (_logits((3, 9, 3, 9)), _logits()):
        out = keep_prompted_components(logits, torch.tensor([[[0.0, 0.0]]]), torch.ones(1, 1), image_size=64)
        assert torch.equal(out, logits)


def test_boxes_clip_their_masks_keeping_their_edge_pixels():
    masks = np.ones((2, 1, 10, 12), bool)
    clip_masks_to_boxes(masks, np.array([[2.0, 3.0, 5.0, 6.0], [-4.0, 8.5, 30.0, 40.0]]))
    expected = np.zeros((10, 12), bool)
    expected[3:7, 2:6] = True  # rows 3..6 and columns 2..5 are inside (edges included)
    np.testing.assert_array_equal(masks[0, 0], expected)
    assert masks[1, 0, 8:].all() and not masks[1, 0, :8].any()  # clipped to the image too
