"""Background prompts for training objectness: points and boxes on empty areas of an image.

A background prompt names no object: its mask target is empty, its class target the background column and its
IoU target 0. Points are drawn where the distance to every object is larger than ``margin`` pixels (Euclidean
distance transform of the union of the object masks); boxes are drawn around such points, with the sides of the
image's own objects (scaled by ``BOX_SCALES``), and are kept only if they hold at most ``MAX_OBJECT_FRACTION``
of any object's area, so a background box never holds a recognisable part of an object. Frames as in
:mod:`ovsam_model.data.prompts`: points (x, y) pixels, boxes XYXY with exclusive right/bottom edges.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

BOX_SCALES = (0.5, 1.0, 1.5)  # background box sides, as multiples of a random object's box side
MAX_OBJECT_FRACTION = 0.1  # most of any one object's area a background box may hold
BOX_TRIES = 20  # candidate boxes drawn per background box before giving up on it


def free_pixels(masks: np.ndarray, margin: float) -> np.ndarray:
    """Flat indices of the pixels farther than ``margin`` pixels from every object of bool (M, h, w) masks."""
    union = masks.any(axis=0) if masks.shape[0] else np.zeros(masks.shape[1:], dtype=bool)
    if not union.any():
        return np.arange(union.size)
    distance = distance_transform_edt(~union)
    return np.flatnonzero(distance > margin)


def _object_sides(masks: np.ndarray) -> np.ndarray:
    """(M, 2) (width, height) of each mask's box, in pixels (at least 1)."""
    sides = np.ones((masks.shape[0], 2), dtype=np.float64)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            sides[i] = (cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
    return sides


def _background_box(
    masks: np.ndarray, areas: np.ndarray, free: np.ndarray, sides: np.ndarray, rng: np.random.Generator
) -> np.ndarray | None:
    """One XYXY box centred on a free pixel that holds at most MAX_OBJECT_FRACTION of any object, or None."""
    h, w = masks.shape[1:]
    for _ in range(BOX_TRIES):
        row, col = np.divmod(int(rng.choice(free)), w)
        side = sides[int(rng.integers(len(sides)))] * BOX_SCALES[int(rng.integers(len(BOX_SCALES)))]
        half_w, half_h = max(1.0, side[0] / 2), max(1.0, side[1] / 2)
        x0, x1 = int(max(0, round(col - half_w))), int(min(w, round(col + half_w)))
        y0, y1 = int(max(0, round(row - half_h))), int(min(h, round(row + half_h)))
        if x1 <= x0 or y1 <= y0:
            continue
        inside = masks[:, y0:y1, x0:x1].reshape(masks.shape[0], -1).sum(axis=1)
        if np.all(inside <= MAX_OBJECT_FRACTION * areas):
            return np.array([x0, y0, x1, y1], dtype=np.float32)
    return None


def sample_background_prompts(
    masks: torch.Tensor | np.ndarray,
    rng: np.random.Generator,
    *,
    num_prompts: int,
    box_fraction: float = 21 / 40,
    points_per_prompt: int = 1,
    margin: float = 8.0,
) -> dict[str, torch.Tensor]:
    """Up to ``num_prompts`` background prompts for one image with bool [M, h, w] object masks.

    ``round(num_prompts * box_fraction)`` are boxes, the rest point prompts of ``points_per_prompt`` points.
    An image without pixels farther than ``margin`` from every object gets none; a box that finds no place
    after ``BOX_TRIES`` candidates is dropped. Returns ``background_boxes`` float32 [Nb, 4] and
    ``background_points`` float32 [Np, P, 2] (x, y), ``background_point_labels`` float32 [Np, P] (all 1).
    """
    if num_prompts < 0:
        raise ValueError(f"num_prompts must be 0 or more, got {num_prompts}.")
    if margin < 0:
        raise ValueError(f"margin must be 0 or more, got {margin}.")
    if points_per_prompt < 1:
        raise ValueError(f"points_per_prompt must be >= 1, got {points_per_prompt}.")
    masks_np = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks, dtype=bool)
    num_boxes = int(round(num_prompts * box_fraction))
    free = free_pixels(masks_np, margin) if num_prompts > 0 else np.zeros(0, np.int64)
    boxes: list[np.ndarray] = []
    points = np.zeros((0, points_per_prompt, 2), dtype=np.float32)
    if free.size:
        sides = _object_sides(masks_np) if masks_np.shape[0] else np.full((1, 2), 16.0)
        areas = masks_np.reshape(masks_np.shape[0], -1).sum(axis=1)
        for _ in range(num_boxes):
            box = _background_box(masks_np, areas, free, sides, rng)
            if box is not None:
                boxes.append(box)
        num_points = num_prompts - num_boxes
        chosen = rng.choice(free, size=(num_points, points_per_prompt), replace=True)
        rows, cols = np.divmod(chosen, masks_np.shape[2])
        points = np.stack([cols, rows], axis=-1).astype(np.float32)
    return {
        "background_boxes": torch.from_numpy(np.stack(boxes) if boxes else np.zeros((0, 4), np.float32)),
        "background_points": torch.from_numpy(points),
        "background_point_labels": torch.ones(points.shape[:2], dtype=torch.float32),
    }
