"""Overlap resolution: proposals painted best first into one label image, each taking only free pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# Low-resolution masks brought to the original size per step (each is a float image at the padded model size
# and one at the original size before it becomes bool).
UPSCALE_STEP = 8
# A proposal keeps its place only if at least this fraction of its mask is still free when it is painted.
MIN_FREE_FRACTION = 0.5
# A painted object lying at least this fraction inside a later, larger mask is taken to be a part of that
# object (a fragment found first) and gives its place to the whole, if the whole's confidence is at least
# CONTAIN_CONFIDENCE times its own.
CONTAIN_FRACTION = 0.8
CONTAIN_CONFIDENCE = 0.5
# Rows of the label image renumbered at once when fragments were replaced (bounds the temporary copy).
RENUMBER_ROWS = 1024


def paint_instances(
    predictor: Any,
    masks: Sequence[Any],
    kind: str,
    size: tuple[int, int],
    min_area: int,
    confidence: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``masks`` (best first) into an int32 (H, W) label image with ids 1, 2, ... in painting order.

    kind "logits": each mask is float16 [4g, 4g] low-resolution logits of an image encoded whole (upsampled
    with the predictor's model); "crops": each is (bool (h, w) crop, (row, col) offset) in the image frame.
    A mask keeps its place if at least ``min_area`` pixels and ``MIN_FREE_FRACTION`` of it are still free.
    confidence (one per mask): when given, painted objects lying ``CONTAIN_FRACTION`` inside a later mask
    whose confidence is at least ``CONTAIN_CONFIDENCE`` times theirs are replaced by it (a fragment of an
    object found before the whole). Returns (labels, indices into ``masks`` of the objects painted, in id
    order).
    """
    labels = np.zeros(size, np.int32)
    painted: list[int] = []  # index into masks of each provisional id - 1
    areas: list[int] = []  # pixels each provisional id holds now (0 once replaced)
    spans: list[tuple[slice, slice]] = []  # the box each provisional id was painted in
    for index, mask, offset in _full_masks(predictor, masks, kind, size):
        r, c = offset
        region = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (region == 0)
        parts = _contained_parts(region, mask, areas, painted, confidence, index)
        if len(parts):
            free |= mask & np.isin(region, parts)
        taken = int(free.sum())
        if taken < max(min_area, 1) or taken < MIN_FREE_FRACTION * area:
            continue
        for part in parts:  # the fragments give way: their pixels outside this mask are freed too
            box = labels[spans[part - 1]]
            box[box == part] = 0
            areas[part - 1] = 0
        painted.append(index)
        areas.append(taken)
        spans.append((slice(r, r + mask.shape[0]), slice(c, c + mask.shape[1])))
        region[free] = len(painted)
    survivors = np.flatnonzero(np.array(areas, np.int64) > 0)
    if len(survivors) < len(painted):  # ids 1..n again, in place a band of rows at a time (large images)
        lookup = np.zeros(len(painted) + 1, np.int32)
        lookup[survivors + 1] = np.arange(1, len(survivors) + 1, dtype=np.int32)
        for start in range(0, size[0], RENUMBER_ROWS):
            band = labels[start : start + RENUMBER_ROWS]
            band[...] = lookup[band]
    return labels, np.array(painted, np.int64)[survivors]


def _contained_parts(
    region: np.ndarray,
    mask: np.ndarray,
    areas: list[int],
    painted: list[int],
    confidence: np.ndarray | None,
    index: int,
) -> np.ndarray:
    """Provisional ids of painted objects lying ``CONTAIN_FRACTION`` inside ``mask`` (over the labels
    ``region``) and confident enough to give way to it (none when ``confidence`` is None)."""
    if confidence is None:
        return np.zeros(0, np.int32)
    under = region[mask]
    ids, counts = np.unique(under[under > 0], return_counts=True)
    parts = [
        int(i)
        for i, n in zip(ids, counts)
        if n >= CONTAIN_FRACTION * areas[i - 1]
        and confidence[index] >= CONTAIN_CONFIDENCE * confidence[painted[i - 1]]
    ]
    return np.array(parts, np.int32)


def _full_masks(predictor: Any, masks: Sequence[Any], kind: str, size: tuple[int, int]):
    """(index, bool mask, (row, col) offset) of each mask at the original size, cropped to its pixels."""
    if kind == "crops":
        for index, (crop, offset) in enumerate(masks):
            yield index, crop, offset
        return
    model = predictor.model
    for start in range(0, len(masks), UPSCALE_STEP):
        chunk = torch.stack([m.float() for m in masks[start : start + UPSCALE_STEP]])[:, None]
        full = (model.upscale_masks(chunk.to(predictor.device), predictor.input_size, size) > 0)[:, 0]
        for offset, mask in enumerate(full.cpu().numpy()):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                yield start + offset, np.zeros((0, 0), bool), (0, 0)
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            yield start + offset, mask[r0:r1, c0:c1], (int(r0), int(c0))
