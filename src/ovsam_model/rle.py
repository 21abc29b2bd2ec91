"""COCO run-length encoding of label images: every object's RLE from one sort of the pixels.

A label image (H, W) with 0 = background holds non-overlapping objects. One stable sort of its column-major
pixels (COCO RLE counts pixels column by column) gives each label's pixel indices in order, from which the
uncompressed runs follow directly; pycocotools compresses them. This costs one sort per image instead of one
full-image mask per object, so thousands of objects stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def label_pixels(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(label id, sorted column-major pixel indices) of every non-zero label of an (H, W) integer array."""
    flat = np.asarray(labels).T.ravel()  # column-major (Fortran) order
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return
    values = flat[nonzero]
    if values.min() < 0:
        raise ValueError(f"negative label {int(values.min())}: COCO ids are >= 0; relabel the layer")
    order = np.argsort(values, kind="stable")
    values, pixels = values[order], nonzero[order]
    ids, starts = np.unique(values, return_index=True)
    yield from zip((int(i) for i in ids), np.split(pixels, starts[1:]))


def pixel_bbox(pixels: np.ndarray, height: int) -> list[float]:
    """COCO [x, y, w, h] of column-major pixel indices of an image ``height`` rows high."""
    rows, cols = pixels % height, pixels // height
    return [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)]


def pixel_rle(pixels: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    """Compressed COCO RLE (``counts`` as str, JSON-ready) of sorted column-major pixel indices."""
    from pycocotools import mask as mask_utils  # a C extension: loaded only where RLEs are made

    height, width = size
    rle = mask_utils.frPyObjects(
        {"size": [height, width], "counts": runs(pixels, height * width)}, height, width
    )
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def label_rles(labels: np.ndarray) -> list[tuple[int, dict[str, Any], int, list[float]]]:
    """(label id, RLE, area in pixels, COCO [x, y, w, h]) of every non-zero label of an (H, W) array."""
    height, width = labels.shape
    return [
        (label_id, pixel_rle(part, (height, width)), int(part.size), pixel_bbox(part, height))
        for label_id, part in label_pixels(labels)
    ]


def runs(pixels: np.ndarray, total: int) -> list[int]:
    """Uncompressed COCO RLE counts (zeros, ones, zeros, ...) of sorted column-major pixel indices."""
    breaks = np.flatnonzero(np.diff(pixels) != 1)
    run_starts = np.concatenate([[pixels[0]], pixels[breaks + 1]])
    run_ends = np.concatenate([pixels[breaks], [pixels[-1]]]) + 1
    gaps = run_starts - np.concatenate([[0], run_ends[:-1]])
    counts = np.stack([gaps, run_ends - run_starts], axis=1).ravel()
    tail = total - int(run_ends[-1])
    return [int(c) for c in counts] + ([tail] if tail else [])
