"""Mask clean-up that follows the prompts: what a user means by a click or a box.

SAM-style decoders often switch on small disconnected patches far from the prompt (another object of the same
look, a bright speck). A click means "the object under this point", so a click-only prompt keeps the connected
parts of its mask that hold a positive point (the largest part when no positive point lies on the mask). A box
means "the object inside", so a box prompt's mask is clipped to the box. Both also decide what gets named: a
click is named from the box of its cleaned mask, which a stray patch would otherwise stretch across the image.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# Logit written where a part of a mask is removed (SAM's logits rarely go below -30; any negative value works
# for the threshold at 0, a clear one keeps bilinear upsampling from reviving the removed part).
REMOVED_LOGIT = -20.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def keep_prompted_components(
    logits: torch.Tensor, points: torch.Tensor, point_labels: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Keep, in each mask, the 8-connected parts that hold a positive point.

    Args:
        logits: [N, M, h, w] low-resolution mask logits of N click prompts (the padded model-input frame).
        points: [N, P, 2] (x, y) in the model-input frame (``image_size`` pixels); point_labels: [N, P], 1 for
            positive points (others are ignored).
        image_size: side of the padded model input.

    Returns new logits where the other parts are set to ``REMOVED_LOGIT``; a mask that no positive point
    touches keeps its largest part; an empty mask is unchanged.
    """
    n, m, h, w = logits.shape
    foreground = (logits > 0).cpu().numpy()
    scale = np.array([w / image_size, h / image_size])
    cells = np.floor(points.detach().cpu().numpy() * scale).astype(np.int64)  # (x, y) low-res cells
    cells = np.clip(cells, 0, [w - 1, h - 1])
    positive = point_labels.detach().cpu().numpy() == 1
    keep = np.ones_like(foreground)
    for i in range(n):
        xs, ys = cells[i, positive[i], 0], cells[i, positive[i], 1]
        for j in range(m):
            parts, count = ndimage.label(foreground[i, j], structure=_EIGHT_CONNECTED)
            if count <= 1:
                continue
            chosen = np.unique(parts[ys, xs])
            chosen = chosen[chosen > 0]
            if chosen.size == 0:  # no click on the mask: its largest part
                sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
                chosen = np.array([int(np.argmax(sizes)) + 1])
            keep[i, j] = np.isin(parts, chosen) | ~foreground[i, j]
    keep_t = torch.from_numpy(keep).to(logits.device)
    return torch.where(keep_t, logits, logits.new_tensor(REMOVED_LOGIT))


def clip_masks_to_boxes(masks: np.ndarray, boxes: np.ndarray) -> None:
    """Switch off, in place, the pixels of bool masks (N, M, H, W) outside their XYXY boxes (N, 4), in pixels
    of the same frame. Pixel (r, c) stays when floor(x0) <= c <= x1 and floor(y0) <= r <= y1, so a box whose
    corners are the first and last pixel of an object (inclusive) keeps all of it."""
    height, width = masks.shape[-2:]
    for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes, dtype=np.float64)):
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.floor(x1)) + 1, width), min(int(np.floor(y1)) + 1, height)
        mask[:, :r0] = False
        mask[:, r1:] = False
        mask[:, :, :c0] = False
        mask[:, :, c1:] = False
