"""Agreement between proposals: how many of the proposals that overlap a mask give (nearly) the same mask.

Grid points all over an object mostly decode to the whole object, while a part of it comes from the few points
on that part; a mask that many overlapping proposals agree with is an object, one that few agree with a part
or a stray blob. The share of overlapping proposals whose mask IoU with it is at least ``AGREE_IOU`` ranks the
proposals much better than the predicted IoU alone (see benchmarks/README.md, "Segment everything").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

# Two proposals agree when their masks' IoU is at least this.
AGREE_IOU = 0.7
# Low-resolution masks are compared at most this many cells a side (pooled), and this many rows at a time.
COMPARE_SIDE, ROWS = 128, 256


def agreement(kind: str, masks: Sequence[Any], boxes: np.ndarray) -> np.ndarray:
    """float32 (M,): for each proposal, the share of the proposals overlapping it (itself included) whose mask
    IoU with it is at least ``AGREE_IOU``. kind and masks as ``paint_instances`` takes them; boxes (M, 4) XYXY."""
    if len(masks) == 0:
        return np.zeros(0, np.float32)
    if kind == "logits":
        return _agreement_dense(masks)
    return _agreement_crops(masks, boxes)


def _agreement_dense(masks: Sequence[torch.Tensor]) -> np.ndarray:
    """Low-resolution logits [L, L] of an image encoded whole: IoUs from one matrix product, ``ROWS`` at a time."""
    fg = (torch.stack(list(masks)).float() > 0).float()[:, None]
    if fg.shape[-1] > COMPARE_SIDE:
        fg = (F.avg_pool2d(fg, fg.shape[-1] // COMPARE_SIDE) >= 0.5).float()
    flat = fg.flatten(1)
    area = flat.sum(dim=1)
    out = np.zeros(len(flat), np.float32)
    for start in range(0, len(flat), ROWS):
        inter = flat[start : start + ROWS] @ flat.T
        union = area[start : start + ROWS, None] + area[None] - inter
        iou = inter / union.clamp(min=1)
        agree = (iou >= AGREE_IOU).sum(dim=1).float()
        touching = (inter > 0).sum(dim=1).float().clamp(min=1)
        out[start : start + ROWS] = (agree / touching).numpy()
    return out


def _agreement_crops(masks: Sequence[tuple[np.ndarray, tuple[int, int]]], boxes: np.ndarray) -> np.ndarray:
    """Bool crops with their (row, col) offsets (a tiled image): only pairs whose boxes overlap are compared."""
    n = len(masks)
    agree, touching = np.ones(n, np.float32), np.ones(n, np.float32)  # each agrees with itself
    areas = np.array([m.sum() for m, _ in masks], np.float64)
    b = torch.from_numpy(np.asarray(boxes, np.float32))
    for start in range(0, n, ROWS):
        overlap = box_iou(b[start : start + ROWS], b) > 0
        for i, j in zip(*np.nonzero(overlap.numpy())):
            i = int(i) + start
            if j <= i:
                continue
            inter = _intersection(masks[i], masks[int(j)])
            if inter == 0:
                continue
            same = inter / (areas[i] + areas[j] - inter) >= AGREE_IOU
            for k in (i, int(j)):
                touching[k] += 1
                agree[k] += same
    return agree / touching


def _intersection(a: tuple[np.ndarray, tuple[int, int]], b: tuple[np.ndarray, tuple[int, int]]) -> int:
    """Pixels two offset bool crops share."""
    (ma, (ra, ca)), (mb, (rb, cb)) = a, b
    r0, c0 = max(ra, rb), max(ca, cb)
    r1, c1 = min(ra + ma.shape[0], rb + mb.shape[0]), min(ca + ma.shape[1], cb + mb.shape[1])
    if r1 <= r0 or c1 <= c0:
        return 0
    part_a = ma[r0 - ra : r1 - ra, c0 - ca : c1 - ca]
    part_b = mb[r0 - rb : r1 - rb, c0 - cb : c1 - cb]
    return int(np.count_nonzero(part_a & part_b))
