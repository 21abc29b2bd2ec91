"""Checks of what callers hand the session: each bad input is one ``ValueError`` that names the problem and
the fix (instead of an ``IndexError`` or ``AttributeError`` from deep inside). No Qt, no napari."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

GROUP_RULES = ("refine", "per_positive")


def check_settings(*, top_k: Any, unknown_threshold: Any, group: Any) -> tuple[int, float]:
    """(top_k, unknown_threshold) as int and float, or ValueError."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1 (alternatives kept per object), not {top_k!r}.")
    if group not in GROUP_RULES:
        raise ValueError(f"group must be one of {', '.join(map(repr, GROUP_RULES))}, not {group!r}.")
    return int(top_k), check_threshold(unknown_threshold)


def check_threshold(value: Any) -> float:
    """An ``unknown`` threshold: a probability in [0, 1]."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"unknown_threshold is a class probability in [0, 1], not {value!r}.")
    return threshold


def check_image(data: Any, rgb: bool) -> None:
    """An image array of shape (..., H, W), or (..., H, W, C) with ``rgb``."""
    if not hasattr(data, "shape") or not hasattr(data, "ndim") or not hasattr(data, "__getitem__"):
        raise ValueError(
            f"An image is an array (numpy, zarr, dask) of shape (..., H, W) or (..., H, W, C); got "
            f"{type(data).__name__}."
        )
    if data.ndim - int(rgb) < 2 or 0 in tuple(data.shape):
        raise ValueError(
            f"An image needs two non-empty spatial axes; got shape {tuple(data.shape)} (rgb={rgb})."
        )


def check_contrast_limits(limits: Sequence[float] | None) -> tuple[float, float] | None:
    """(low, high) as floats with low < high, both finite, or None."""
    if limits is None:
        return None
    try:
        low, high = (float(v) for v in limits)
    except (TypeError, ValueError):
        raise ValueError(f"contrast_limits are two numbers (low, high), not {limits!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"contrast_limits need finite low < high; got ({low:g}, {high:g}).")
    return low, high


def check_slice_index(
    slice_index: Any, leading_shape: tuple[int, ...], labels_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The leading indices of one slice, each inside the image."""
    try:
        index = tuple(int(i) for i in slice_index)
    except (TypeError, ValueError):
        raise ValueError(f"slice_index is a tuple of whole numbers, not {slice_index!r}.") from None
    if len(index) != len(leading_shape):
        raise ValueError(f"slice_index {index} does not fit an image of shape {labels_shape}.")
    if any(not 0 <= i < n for i, n in zip(index, leading_shape)):
        raise ValueError(f"slice_index {index} is outside the image's slices {leading_shape}.")
    return index


def check_labels(labels: Any, shape: tuple[int, ...] | None) -> None:
    """An integer labels array, of ``shape`` when the image is known."""
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        raise ValueError(f"Labels are an integer array (numpy, zarr); got {type(labels).__name__}.")
    if np.dtype(labels.dtype).kind not in "iu":
        raise ValueError(f"Labels need an integer dtype, not {labels.dtype}.")
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"Labels of shape {tuple(labels.shape)} do not fit the image, whose labels are {tuple(shape)}: "
            "use a labels array of the image's shape (without its colour axis)."
        )


def check_multiscale(levels: Any, rgb: bool) -> Any:
    """Level 0 (full resolution) of a multiscale image, after checking that its levels make one pyramid: the
    same axes and channels on every level, each level smaller than the one before (never larger)."""
    levels = list(levels)
    if not levels:
        raise ValueError("A multiscale image needs at least one level (level 0: full resolution).")
    for level in levels:
        check_image(level, rgb)
    first = levels[0]
    for i in range(1, len(levels)):
        level, previous = levels[i], levels[i - 1]
        shape, before = tuple(int(s) for s in level.shape), tuple(int(s) for s in previous.shape)
        if len(shape) != len(first.shape):
            raise ValueError(
                f"Level {i} of this multiscale image has {len(shape)} axes {shape}, level 0 has "
                f"{len(first.shape)} {tuple(first.shape)}: every level must be the same image at a lower "
                "resolution (open the pyramid's levels in order, full resolution first)."
            )
        if rgb and shape[-1] != int(first.shape[-1]):
            raise ValueError(
                f"Level {i} of this multiscale image has {shape[-1]} channels, level 0 has "
                f"{int(first.shape[-1])}: every level needs the same channels."
            )
        spatial = slice(-3, -1) if rgb else slice(-2, None)
        if any(a > b for a, b in zip(shape, before)) or shape[spatial] == before[spatial]:
            raise ValueError(
                f"Level {i} of this multiscale image {shape} is not smaller than level {i - 1} {before}: the "
                "levels must go from full resolution (level 0) down; check their order, or open the full-"
                "resolution array alone."
            )
    return first
