"""Flip, resize and crop keep image and masks aligned; boxes follow the masks."""

from __future__ import annotations

import numpy as np
import torch

from ovsam_model.data.transforms import (
    hflip,
    mask_areas,
    masks_to_boxes,
    random_crop_window,
    random_resize_scale,
    resize_crop,
    resize_longest_side,
    resized_shape,
)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((30, 40, 3), dtype=np.float32)
    masks = np.zeros((2, 30, 40), dtype=bool)
    masks[0, 5:15, 2:12] = True
    masks[1, 20:28, 30:38] = True
    image[masks.any(axis=0)] = 200.0
    return image, masks


def test_hflip_mirrors_columns() -> None:
    image, masks = _scene()
    flipped_image, flipped_masks = hflip(image, masks)
    np.testing.assert_array_equal(flipped_masks[0], masks[0][:, ::-1])
    assert masks_to_boxes(flipped_masks[None, 0]).tolist() == [[28.0, 5.0, 38.0, 15.0]]
    np.testing.assert_array_equal(flipped_image[:, :, 0], image[:, ::-1, 0])


def test_integer_upscale_matches_pixel_repeat() -> None:
    image, masks = _scene()
    out_image, out_masks = resize_crop(image, masks, 2.0)
    assert out_image.shape == (3, 60, 80) and out_masks.shape == (2, 60, 80)
    expected = np.kron(masks, np.ones((1, 2, 2), dtype=bool)).astype(bool)
    np.testing.assert_array_equal(out_masks, expected)
    assert masks_to_boxes(out_masks).tolist() == [[4.0, 10.0, 24.0, 30.0], [60.0, 40.0, 76.0, 56.0]]
    assert float(out_image[0, 20, 10]) == 200.0 and float(out_image[0, 1, 70]) == 0.0


def test_crop_window_and_instances_outside_it() -> None:
    image, masks = _scene()
    out_image, out_masks = resize_crop(image, masks, 1.0, (0, 0, 16, 16))
    assert out_image.shape == (3, 16, 16)
    assert mask_areas(out_masks).tolist() == [100, 0]  # the second instance lies outside the crop
    torch.testing.assert_close(out_image[0], torch.from_numpy(image[:16, :16, 0]))


def test_downscale_keeps_masks_aligned_with_the_image() -> None:
    image, masks = _scene()
    out_image, out_masks = resize_crop(image, masks, 0.5)
    assert out_masks.shape == (2, 15, 20)
    inside = out_image[0][torch.from_numpy(out_masks.any(axis=0))]
    assert float(inside.mean()) > 150.0


def test_random_scale_and_crop_window_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scale = random_resize_scale(rng, 300, 400, 1024, (0.9, 2.0))
        assert 0.9 * 1024 / 400 <= scale <= 2.0 * 1024 / 400
        h, w = resized_shape(300, 400, scale)
        top, left, ch, cw = random_crop_window(rng, h, w, 1024)
        assert 0 <= top <= h - ch and 0 <= left <= w - cw and ch == min(h, 1024) and cw == min(w, 1024)


def test_eval_resize_makes_the_longest_side_exact() -> None:
    image = np.zeros((333, 500, 3), dtype=np.float32)
    out_image, out_masks, scale = resize_longest_side(image, np.zeros((0, 333, 500), dtype=bool), 1024)
    assert out_image.shape == (3, 682, 1024) and out_masks.shape == (0, 682, 1024)
    assert scale == 1024 / 500


def test_boxes_of_empty_masks_are_zero() -> None:
    masks = torch.zeros((2, 5, 5), dtype=torch.bool)
    masks[1, 4, 4] = True
    assert masks_to_boxes(masks).tolist() == [[0.0, 0.0, 0.0, 0.0], [4.0, 4.0, 5.0, 5.0]]
    assert masks_to_boxes(torch.zeros((0, 5, 5), dtype=torch.bool)).shape == (0, 4)
