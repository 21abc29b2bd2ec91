"""How the automatic annotator decodes grid points: on an image encoded whole, or on a tiled (large) image.

Both views give the same things: the point grid (image pixels, with each point's grid cell), a batch of points
decoded into predicted IoU, stability score, class probabilities (background last) and, per point, its mask
in the form the painter takes and its box; and a coverage map of accepted objects, so that later points inside
them need not be decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything.utils.amg import calculate_stability_score
from torchvision.ops import masks_to_boxes

from ..prompts import PromptSet
from .instances import class_names_of

# Mask logits offset of the stability score (SAM's default): the IoU of the masks thresholded at -1 and +1.
STABILITY_OFFSET = 1.0
# Resolution of the coverage map of a tiled image (the image is large: one cell per COVER_STRIDE pixels).
COVER_STRIDE = 4


@dataclass
class Decoded:
    """n decoded points. iou, stability: float32 (n,); probabilities: float32 (n, K + 1), background last;
    boxes: float32 (n, 4) XYXY image pixels of each mask (zeros when empty); areas: float32 (n,) mask areas in
    image pixels; masks: n masks in the painter's form (``paint_instances``)."""

    iou: np.ndarray
    stability: np.ndarray
    probabilities: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    masks: list[Any]


def grid_points(size: tuple[int, int], spacing: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Points every ``spacing`` pixels over an (H, W) image, half a spacing from the edges.

    Returns ((n, 2) float32 (x, y) pixels, (n, 2) int64 (row, col) grid cells, (rows, cols) of the grid)."""
    h, w = size
    xs = np.arange(spacing / 2, w, spacing, dtype=np.float32)
    ys = np.arange(spacing / 2, h, spacing, dtype=np.float32)
    r, c = np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij")
    cells = np.stack([r.ravel(), c.ravel()], axis=1)
    return np.stack([xs[cells[:, 1]], ys[cells[:, 0]]], axis=1), cells, (len(ys), len(xs))


class WholeView:
    """An image encoded whole: points decoded with ``predict_torch`` on its features; masks stay low-resolution
    logits (float16 [4g, 4g]) until painted; coverage is kept in that low-resolution frame."""

    kind = "logits"

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        (h, w), (hi, wi) = predictor.original_size, predictor.input_size
        self.to_input = np.array([wi / w, hi / h], np.float32)
        self.side = predictor.model.config.image_size
        self.covered: torch.Tensor | None = None

    def grid(self, per_side: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        h, w = self.predictor.original_size
        points, cells, shape = grid_points((per_side, per_side), 1.0)  # per_side x per_side cells
        return points * np.array([w / per_side, h / per_side], np.float32), cells, shape

    def decode(self, points: np.ndarray, multimask: bool) -> Decoded:
        predictor = self.predictor
        prompt = torch.from_numpy(points * self.to_input).to(predictor.device)[:, None, :]
        labels = torch.ones(len(points), 1, device=predictor.device)
        out = predictor.predict_torch(
            predictor.features, PromptSet(prompt, labels, None), multimask_output=multimask
        )
        logits = out.low_res_logits[:, 0].float().cpu()
        foreground = logits > 0
        scale = self.side / logits.shape[-1]
        boxes = masks_to_boxes(foreground)
        boxes[:, 2:] += 1  # masks_to_boxes gives the last cell; boxes end after it
        boxes = boxes * scale / torch.from_numpy(np.tile(self.to_input, 2))
        return Decoded(
            iou=out.iou[:, 0].float().cpu().numpy(),
            stability=calculate_stability_score(logits, 0.0, STABILITY_OFFSET).numpy(),
            probabilities=out.probabilities.float().cpu().numpy(),
            boxes=boxes.clamp_(min=0).numpy(),
            areas=foreground.flatten(1).sum(dim=1).numpy() * self.cell_area(logits.shape[-1]),
            masks=list(logits.to(torch.float16)),
        )

    def cell_area(self, cells: int) -> float:
        """Image pixels per cell of a ``cells`` x ``cells`` low-resolution mask."""
        side = self.side / cells
        return float(side * side / (self.to_input[0] * self.to_input[1]))

    def cover(self, decoded: Decoded, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        union = (torch.stack([decoded.masks[i] for i in rows]) > 0).any(dim=0)
        self.covered = union if self.covered is None else self.covered | union

    def is_covered(self, points: np.ndarray) -> np.ndarray:
        if self.covered is None:
            return np.zeros(len(points), bool)
        cells = self.covered.shape[-1]
        xy = np.clip((points * self.to_input * cells / self.side).astype(np.int64), 0, cells - 1)
        return self.covered[xy[:, 1], xy[:, 0]].numpy()


class TiledView:
    """A tiled image: each point decoded on its tile by ``predictor.predict`` (masks cropped to their boxes);
    ``per_side`` points per tile side; coverage kept every ``COVER_STRIDE`` image pixels."""

    kind = "crops"

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        h, w = predictor.original_size
        self.covered = np.zeros((-(-h // COVER_STRIDE), -(-w // COVER_STRIDE)), bool)

    def grid(self, per_side: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        tiles = self.predictor.tile_grid
        side = max(max(t.size) for t in tiles) if tiles else max(self.predictor.original_size)
        return grid_points(self.predictor.original_size, side / per_side)

    def decode(self, points: np.ndarray, multimask: bool) -> Decoded:
        predictor = self.predictor
        k = len(class_names_of(predictor))
        out = predictor.predict(
            points=points[:, None, :],
            point_labels=np.ones((len(points), 1), np.float32),
            multimask_output=multimask,
            top_k=k,
        )
        probabilities = out.probabilities(k)
        logits = torch.from_numpy(out.low_res_logits[:, 0].astype(np.float32))
        masks = [(crop[0], (int(r), int(c))) for crop, (r, c) in zip(out.masks.crops, out.masks.offsets)]
        areas = np.array([m.sum() for m, _ in masks], np.float32)
        boxes = np.array([_crop_box(m, r, c) if m.any() else np.zeros(4) for m, (r, c) in masks], np.float32)
        return Decoded(
            iou=out.iou[:, 0].astype(np.float32),
            stability=calculate_stability_score(logits, 0.0, STABILITY_OFFSET).numpy(),
            probabilities=probabilities,
            boxes=boxes.reshape(len(points), 4),
            areas=areas,
            masks=masks,
        )

    def cover(self, decoded: Decoded, rows: np.ndarray) -> None:
        for i in rows:
            crop, (r, c) = decoded.masks[i]
            ys, xs = np.nonzero(crop)
            self.covered[(ys + r) // COVER_STRIDE, (xs + c) // COVER_STRIDE] = True

    def is_covered(self, points: np.ndarray) -> np.ndarray:
        cells = (points // COVER_STRIDE).astype(np.int64)
        return self.covered[cells[:, 1], cells[:, 0]]


def _crop_box(crop: np.ndarray, r: int, c: int) -> np.ndarray:
    """float32 (4,) XYXY image-frame bounds (end exclusive) of a non-empty bool crop at (r, c)."""
    ys, xs = np.nonzero(crop)
    return np.array([c + xs.min(), r + ys.min(), c + xs.max() + 1, r + ys.max() + 1], np.float32)
