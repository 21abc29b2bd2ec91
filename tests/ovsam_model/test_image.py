"""The documented contrast rule that maps any 2D image to the model's 0..255 RGB input."""

from __future__ import annotations

import numpy as np
import pytest

from ovsam_model.image import to_model_rgb


def test_uint8_rgb_is_used_as_is():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_model_rgb(image), image.astype(np.float32))


def test_grey_16bit_uses_percentiles_and_repeats_channels():
    image = np.linspace(0, 60000, 100 * 100).reshape(100, 100).astype(np.uint16)
    out = to_model_rgb(image)
    assert out.shape == (100, 100, 3) and out.dtype == np.float32
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    lo, hi = np.percentile(image, (0.5, 99.5))
    mid = image[50, 50]
    assert out[50, 50, 0] == pytest.approx((mid - lo) * 255 / (hi - lo), rel=1e-4)


def test_contrast_limits_override_the_percentiles():
    image = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    out = to_model_rgb(image, contrast_limits=(100, 300))
    np.testing.assert_allclose(out[..., 0], [[0, 0], [127.5, 255]])


def test_channel_layouts():
    two = np.stack([np.zeros((4, 4)), np.ones((4, 4))], axis=-1).astype(np.float32)
    out = to_model_rgb(two, contrast_limits=(0, 1))
    np.testing.assert_allclose(out[0, 0], [0, 255, 127.5])
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert to_model_rgb(rgba).shape == (4, 4, 3)
    many = np.zeros((4, 4, 7), np.uint16)
    assert to_model_rgb(many).shape == (4, 4, 3)


def test_flat_image_does_not_divide_by_zero():
    assert (to_model_rgb(np.full((8, 8), 5.0)) == 0).all()


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_pixels_are_refused(bad):
    image = np.zeros((4, 4), np.float32)
    image[1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_model_rgb(image)
