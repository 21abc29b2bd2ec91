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


def paint_instances(
    predictor: Any, masks: Sequence[Any], kind: str, size: tuple[int, int], min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``masks`` (best first) into an int32 (H, W) label image with ids 1, 2, ... in painting order.

    kind "logits": each mask is float16 [4g, 4g] low-resolution logits of an image encoded whole (upsampled
    with the predictor's model); "crops": each is (bool (h, w) crop, (row, col) offset) in the image frame.
    A mask keeps its place if at least ``min_area`` pixels and ``MIN_FREE_FRACTION`` of it are still free.
    Returns (labels, indices into ``masks`` of the objects painted, in id order).
    """
    labels = np.zeros(size, np.int32)
    kept: list[int] = []
    for index, mask, offset in _full_masks(predictor, masks, kind, size):
        r, c = offset
        region = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
        area = int(mask.sum())
        free = mask & (region == 0)
        taken = int(free.sum())
        if area == 0 or taken < max(min_area, 1) or taken < MIN_FREE_FRACTION * area:
            continue
        kept.append(index)
        region[free] = len(kept)
    return labels, np.array(kept, np.int64)


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
