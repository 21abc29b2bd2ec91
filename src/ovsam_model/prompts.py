"""Prompt validation and the change of frame from original-image pixels to the model-input frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PromptSet:
    """N prompts. points: [N, P, 2] (x, y); point_labels: [N, P] (1, 0, -1 = padding); boxes: [N, 4] XYXY.

    Either points or boxes (or both) are set. Arrays are numpy in the original frame, torch in the input frame.
    """

    points: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes: torch.Tensor | None

    def __len__(self) -> int:
        ref = self.points if self.points is not None else self.boxes
        assert ref is not None
        return int(ref.shape[0])

    def chunks(self, size: int) -> Iterator[PromptSet]:
        for start in range(0, len(self), size):
            stop = start + size
            yield PromptSet(
                None if self.points is None else self.points[start:stop],
                None if self.point_labels is None else self.point_labels[start:stop],
                None if self.boxes is None else self.boxes[start:stop],
            )


@dataclass
class NumpyPrompts:
    """Validated prompts in the original frame (see ``normalize_prompts``)."""

    points: np.ndarray | None  # (N, P, 2) float32 (x, y)
    point_labels: np.ndarray | None  # (N, P) float32
    boxes: np.ndarray | None  # (N, 4) float32 XYXY

    def to_input_frame(
        self, original_size: tuple[int, int], input_size: tuple[int, int], device: torch.device
    ) -> PromptSet:
        """Scale (x, y) by (w_in / W, h_in / H): the frame of the resized, unpadded model input."""
        sx = input_size[1] / original_size[1]
        sy = input_size[0] / original_size[0]
        points = labels = boxes = None
        if self.points is not None and self.point_labels is not None:
            points = torch.as_tensor(self.points * np.array([sx, sy], np.float32), device=device)
            labels = torch.as_tensor(self.point_labels, device=device)
        if self.boxes is not None:
            boxes = torch.as_tensor(self.boxes * np.array([sx, sy, sx, sy], np.float32), device=device)
        return PromptSet(points, labels, boxes)


def normalize_prompts(
    points: np.ndarray | None,
    point_labels: np.ndarray | None,
    boxes: np.ndarray | None,
    image_size: tuple[int, int],
) -> NumpyPrompts:
    """Check prompts against an image of (H, W) and bring them to batched shapes.

    points (P, 2) or (N, P, 2) (x, y); point_labels (P,) or (N, P); boxes (4,) or (N, 4) XYXY. Raises a
    ValueError that names the problem for: no prompt, wrong shapes, points/labels mismatch, NaN coordinates,
    points or boxes outside the image, zero-area or inverted boxes, differing object counts.
    """
    pts = lbl = bxs = None
    if points is not None:
        pts, lbl = _check_points(points, point_labels, image_size)
    elif point_labels is not None:
        raise ValueError("point_labels were given without points.")
    if boxes is not None:
        bxs = _check_boxes(boxes, image_size)
    if pts is None and bxs is None:
        raise ValueError("No prompt given: pass points (with point_labels), boxes, or both.")
    if pts is not None and bxs is not None and len(pts) != len(bxs):
        raise ValueError(
            f"{len(pts)} point groups and {len(bxs)} boxes: with both, each object needs one of each "
            "(points (N, P, 2), boxes (N, 4))."
        )
    if pts is not None and lbl is not None and bxs is None and not (lbl == 1).any(axis=1).all():
        group = int(np.argmin((lbl == 1).any(axis=1)))
        raise ValueError(
            f"Point group {group} has no positive point: without a box, each object needs at least one "
            "positive point (label 1); negative points only say where the object is not."
        )
    return NumpyPrompts(pts, lbl, bxs)


def _as_float_array(name: str, value: object) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be numbers (an array of pixel coordinates), got {value!r:.80}."
        ) from None


def _check_points(points, point_labels, image_size) -> tuple[np.ndarray, np.ndarray]:
    pts = _as_float_array("points", points)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[1] == 0:
        raise ValueError(
            f"points must have shape (P, 2) or (N, P, 2) in (x, y) pixels; got {np.shape(points)}."
        )
    if point_labels is None:
        raise ValueError("point_labels are required with points (1 = positive, 0 = negative).")
    lbl = _as_float_array("point_labels", point_labels)
    if lbl.ndim == 1 and len(pts) == 1:
        lbl = lbl[None]
    if lbl.shape != pts.shape[:2]:
        raise ValueError(
            f"{pts.shape[1] if lbl.ndim == 1 else pts.shape[:2]} points but point_labels of shape {lbl.shape}: "
            "give one label per point."
        )
    if not np.isin(lbl, (-1, 0, 1)).all():
        raise ValueError("point_labels must be 1 (positive), 0 (negative) or -1 (padding).")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or infinite coordinates.")
    h, w = image_size
    real = lbl >= 0
    outside = real & ((pts[..., 0] < 0) | (pts[..., 0] > w) | (pts[..., 1] < 0) | (pts[..., 1] > h))
    if outside.any():
        where = [tuple(int(i) for i in idx) for idx in np.argwhere(outside)[:5]]
        raise ValueError(
            f"Points {where} (object, point) lie outside the {w}x{h} (width x height) image; "
            "points are (x, y) pixels."
        )
    if not real.any(axis=1).all():
        raise ValueError("Every point group needs at least one real (non-padding) point.")
    return pts, lbl


def _check_boxes(boxes, image_size) -> np.ndarray:
    bxs = _as_float_array("boxes", boxes)
    if bxs.ndim == 1:
        bxs = bxs[None]
    if bxs.ndim != 2 or bxs.shape[1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (N, 4) as XYXY pixels; got {np.shape(boxes)}.")
    if not np.isfinite(bxs).all():
        raise ValueError("boxes contain NaN or infinite coordinates.")
    bad = (bxs[:, 2] <= bxs[:, 0]) | (bxs[:, 3] <= bxs[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"Box {i} {bxs[i].tolist()} has zero area or is inverted; boxes are XYXY (x0, y0, x1, y1) "
            "with x1 > x0 and y1 > y0."
        )
    h, w = image_size
    outside = (bxs[:, 0] < 0) | (bxs[:, 1] < 0) | (bxs[:, 2] > w) | (bxs[:, 3] > h)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(
            f"Box {i} {bxs[i].tolist()} extends outside the {w}x{h} (width x height) image; clip it first."
        )
    return bxs
