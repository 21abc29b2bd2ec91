"""Turning scientific images into the 3-channel, 0..255 input the model expects.

The contrast rule (documented in the README, used by the predictor, the datasets and the plugin):

1. The image is (H, W) grey, (H, W, 3) RGB, or (H, W, C) multichannel with C == 2 or C > 4 channels
   (C == 4 is RGBA: alpha is dropped). Channels are always the last axis.
2. ``uint8`` RGB/grey images are used as they are: their values already are the 0..255 the model was
   trained on.
3. Every other dtype (``uint16``, ``int``, ``float``, ``bool``) is rescaled linearly per image (not per
   channel, so colour balance is kept) from ``contrast_limits`` to 0..255. Without explicit limits, the
   0.5th and 99.5th percentiles of the finite pixels are used. Values outside the limits saturate at
   0 or 255: that is the rescaling, not silent clipping of in-range data.
4. Grey images are repeated into 3 channels. Two channels become (c0, c1, mean); more than four channels are
   reduced to their first three (pass a 3-channel view to choose others).
5. NaN or infinite pixels raise a ``ValueError``: there is no safe value to put in their place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an image array and return it as (H, W, C) with C >= 1 (no copy where possible)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(
            f"Expected a 2D image of shape (H, W) or (H, W, C); got an array of shape {image.shape}. "
            "For stacks, pass one slice at a time (e.g. stack[z])."
        )
    if image.ndim == 3 and image.shape[2] > 16 and image.shape[0] <= 16:
        raise ValueError(
            f"Image of shape {image.shape} looks channels-first; move the channel axis last "
            "(np.moveaxis(image, 0, -1))."
        )
    if image.size == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"The image is empty (shape {image.shape}).")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"Unsupported image dtype {image.dtype}; use an integer, float or bool array.")
    if image.ndim == 2:
        image = image[:, :, None]
    return image


def contrast_limits_of(
    image: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """The default contrast limits of an image: percentiles of its finite values."""
    values = np.asarray(image)
    if values.dtype == bool:
        values = values.view(np.uint8)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise ValueError(
                "The image contains NaN or infinite pixels; replace them (e.g. np.nan_to_num) before segmenting."
            )
    if values.size > 4_000_000:  # percentiles of a strided sample are within a grey level and far cheaper
        step = int(np.ceil(np.sqrt(values.size / 4_000_000)))
        values = values[::step, ::step]
    lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def check_contrast_limits(contrast_limits: Sequence[float]) -> tuple[float, float]:
    """(low, high) as two finite floats with low <= high, else a ValueError naming what is wrong."""
    try:
        lo, hi = (float(v) for v in contrast_limits)
    except (TypeError, ValueError):
        raise ValueError(
            f"contrast_limits must be two numbers (low, high) in the image's units, got {contrast_limits!r}."
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"contrast_limits must be finite, got ({lo}, {hi}).")
    if lo > hi:
        raise ValueError(f"contrast_limits ({lo}, {hi}) are inverted: give (low, high) with low <= high.")
    return lo, hi


def to_model_rgb(
    image: np.ndarray,
    contrast_limits: Sequence[float] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Map any 2D image to a float32 (H, W, 3) array in 0..255 by the module's contrast rule.

    Args:
        image: (H, W) or (H, W, C) array of any integer, float or bool dtype.
        contrast_limits: (low, high) in the image's own units; overrides the percentile rule (the plugin passes
            the napari layer's contrast limits, so the model sees what the user sees).
        percentiles: the percentiles used when no contrast limits are given.

    Returns:
        float32 array of shape (H, W, 3) with values in [0, 255].
    """
    image = check_image(image)
    channels = image.shape[2]
    if channels == 4:
        image = image[:, :, :3]
    elif channels == 2:
        image = np.concatenate([image, image.mean(axis=2, keepdims=True)], axis=2)
    elif channels > 4:
        image = image[:, :, :3]
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(
            "The image contains NaN or infinite pixels; replace them (e.g. np.nan_to_num) before segmenting."
        )

    out: np.ndarray
    if image.dtype == np.uint8 and contrast_limits is None:
        out = image.astype(np.float32)
    else:
        if contrast_limits is not None:
            lo, hi = check_contrast_limits(contrast_limits)
        elif image.dtype == bool:
            lo, hi = 0.0, 1.0  # False black, True white
        else:
            lo, hi = contrast_limits_of(image, percentiles)
        # A flat image (or flat limits) maps to black rather than dividing by zero; the span is relative so
        # that limits near the int64 range, where lo + 1 == lo in floating point, are flat too.
        span = hi - lo if hi > lo else max(1.0, abs(lo) * 1e-6)
        # 64-bit pixels are mapped in float64 (float32 overflows past 3.4e38); others in float32.
        work = image.astype(np.float64 if image.dtype.itemsize >= 8 else np.float32)
        out = np.subtract(work, lo) * (255.0 / span)
        np.clip(out, 0.0, 255.0, out=out)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out, dtype=np.float32)
