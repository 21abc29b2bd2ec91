"""The plugin's prompts: napari prompt layers on a slice -> model prompts, the one place where (row, col)
becomes (x, y).

Coordinate frames:
- napari layer data (Points, Shapes, Labels) is in *data coordinates* ordered ``(..., row, col)``: leading
  non-spatial axes (z, t, ...) first, then the two displayed spatial axes. Pixel centres sit at integer
  coordinates, so pixel ``(r, c)`` covers ``[r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]``.
- The model (``OVSAMPredictor.predict``) takes pixel coordinates ordered ``(x, y)`` = ``(col, row)`` and boxes
  ``XYXY`` = ``(x0, y0, x1, y1)`` in the same frame, with the same integer-centre convention. Nothing but the
  axis order changes at this boundary.

Assumptions: the prompt layers share the image layer's data coordinates (same scale and translate, created by
the plugin with the image's dimensionality) and the two last axes of the layer are the displayed ones.

Every function here takes and returns numpy arrays; none imports napari. The frames themselves (axis order,
the slice in view) are in :mod:`napari_ovsam.frames`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from .frames import as_rows, on_slice, rowcol_to_xy

GroupRule = Literal["refine", "per_positive"]
MIN_BOX_SIZE = 1.0  # pixels: thinner boxes are accidental clicks with the rectangle tool


@dataclass
class ObjectPrompt:
    """The prompts for one object, in model pixel coordinates.

    Attributes:
        points_xy: float32 (P, 2) points as (x, y); P may be 0.
        point_labels: int32 (P,) with 1 for positive and 0 for negative points.
        box_xyxy: float32 (4,) box as (x0, y0, x1, y1) with x0 < x1 and y0 < y1, or None.
    """

    points_xy: np.ndarray
    point_labels: np.ndarray
    box_xyxy: np.ndarray | None = None


class BoxConversion(NamedTuple):
    """Result of :func:`shapes_to_boxes`.

    Attributes:
        boxes_xyxy: float32 (m, 4) boxes (x0, y0, x1, y1).
        shape_indices: int64 (m,) index of the source shape of each box.
        skipped: shape index -> human-readable reason, for the shapes that gave no box.
    """

    boxes_xyxy: np.ndarray
    shape_indices: np.ndarray
    skipped: dict[int, str]


class SlicePrompts(NamedTuple):
    """All the objects to segment on one slice, and what was left out and why (for the status bar)."""

    objects: list[ObjectPrompt]
    messages: list[str]


# ------------------------------------------------------------------------------------------ shapes -> boxes


def shapes_to_boxes(
    shapes_data: Sequence[np.ndarray],
    shape_types: Sequence[str],
    *,
    slice_index: tuple[int, ...] | None,
    min_size: float = MIN_BOX_SIZE,
) -> BoxConversion:
    """Rectangles of a Shapes layer on the current slice -> XYXY boxes in model (x, y) pixels.

    Rule: only ``rectangle`` shapes are box prompts. Other types (ellipse, polygon, path, line) are skipped
    and reported, because the box of a polygon is a different prompt from the one the user drew. A rotated
    rectangle gives its axis-aligned bounding box. Corners are sorted, so a box drawn in any direction gives
    the same XYXY. Boxes narrower or shorter than ``min_size`` pixels (a click without a drag) are dropped
    with a reason, and so are shapes whose vertices are not all on ``slice_index`` (those on other slices are
    dropped silently).

    Args:
        shapes_data: ``layer.data``: one (V, ndim) array of vertices (..., row, col) per shape.
        shape_types: ``layer.shape_type``, one string per shape.
        slice_index: leading indices of the current slice (see :func:`current_slice`); None for 2D.
        min_size: minimum box width and height in pixels.

    Returns:
        a :class:`BoxConversion` (float32 (m, 4) boxes, their shape indices, skipped shapes with reasons).
    """
    boxes: list[np.ndarray] = []
    indices: list[int] = []
    skipped: dict[int, str] = {}
    for i, (vertices, shape_type) in enumerate(zip(shapes_data, shape_types, strict=True)):
        vertices = np.asarray(vertices, dtype=float)
        on = on_slice(vertices, slice_index)
        if not on.any():
            continue  # another slice: not a prompt here, nothing to report
        if not on.all():
            skipped[i] = "its corners are on different slices"
        elif shape_type != "rectangle":
            skipped[i] = f"it is a {shape_type}; only rectangles are box prompts"
        else:
            box = _bounding_box_xyxy(vertices[:, -2:])
            width, height = box[2] - box[0], box[3] - box[1]
            if width < min_size or height < min_size:
                skipped[i] = f"it is smaller than {min_size:g} pixel ({width:.2g} x {height:.2g})"
            else:
                boxes.append(box)
                indices.append(i)
    array = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    return BoxConversion(array, np.asarray(indices, dtype=np.int64), skipped)


def _bounding_box_xyxy(rowcol: np.ndarray) -> np.ndarray:
    """(V, 2) vertices (row, col) -> (4,) box (x0, y0, x1, y1) enclosing them."""
    xy = rowcol_to_xy(rowcol)
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- image bounds


def clip_prompts_to_image(
    points_xy: np.ndarray,
    point_labels: np.ndarray,
    boxes_xyxy: np.ndarray,
    image_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Drop points outside the image, clip boxes to it, and say what happened.

    The image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` in (x, y) (pixel centres at integers). Points
    outside that extent are dropped; points on the border half-pixel are moved onto the edge pixel. Boxes are
    clipped to the pixel centres ``[0, W - 1] x [0, H - 1]`` and dropped when nothing is left (zero width or
    height).

    Args:
        points_xy: (P, 2) points (x, y). point_labels: (P,) labels.
        boxes_xyxy: (m, 4) boxes (x0, y0, x1, y1).
        image_hw: (H, W) of the image slice.

    Returns:
        (points_xy (P', 2), point_labels (P',), boxes_xyxy (m', 4), messages).
    """
    height, width = image_hw
    points_xy = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
    point_labels = np.asarray(point_labels).reshape(-1)
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    messages: list[str] = []
    upper = np.array([width - 0.5, height - 0.5], dtype=np.float32)
    inside = np.all((points_xy >= -0.5) & (points_xy <= upper), axis=1)
    if not inside.all():
        messages.append(f"{int((~inside).sum())} point(s) outside the {height}x{width} image ignored.")
    limits = np.array([width - 1, height - 1], dtype=np.float32)
    points_xy = np.clip(points_xy[inside], 0, limits)
    clipped = np.clip(boxes_xyxy, 0, np.tile(limits, 2))
    kept = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if not kept.all():
        messages.append(f"{int((~kept).sum())} box(es) outside the {height}x{width} image ignored.")
    if (clipped[kept] != boxes_xyxy[kept]).any():
        messages.append("Boxes reaching past the image border were clipped to it.")
    return points_xy, point_labels[inside], clipped[kept], messages


# ---------------------------------------------------------------------------------------------- grouping


def group_points(
    points_xy: np.ndarray,
    point_labels: np.ndarray,
    boxes_xyxy: np.ndarray,
    *,
    group: GroupRule = "refine",
) -> tuple[list[ObjectPrompt], np.ndarray]:
    """Group points (x, y) and XYXY boxes (model pixels) into one prompt per object.

    Rule (what a napari user expects from SAM-style clicking):
    1. Each box is one object.
    2. A point inside a box (borders included) refines that box; inside several boxes, the smallest box.
    3. ``group="refine"`` (default): all remaining points, positive and negative, form ONE extra object, like
       SAM's multi-click refinement of a single object.
       ``group="per_positive"``: each remaining positive point is its own object; each remaining negative
       joins the object of the nearest remaining positive.
    4. Remaining negatives with no remaining positive define no object (:func:`collect_prompts` reports them).
    Objects come boxes first (in box order), then point objects in point order.

    Returns:
        (objects, unused) where ``unused`` is an int64 array of the indices of points that joined no object.
    """
    if group not in ("refine", "per_positive"):
        raise ValueError(f"group must be 'refine' or 'per_positive', not {group!r}.")
    points_xy = np.asarray(points_xy, np.float32).reshape(-1, 2)
    point_labels = np.asarray(point_labels, np.int32).reshape(-1)
    owner = _owning_box(points_xy, boxes_xyxy)
    objects = [
        _object(points_xy[owner == b], point_labels[owner == b], boxes_xyxy[b])
        for b in range(len(boxes_xyxy))
    ]
    free = np.flatnonzero(owner < 0)
    positives = free[point_labels[free] == 1]
    if len(positives) == 0:
        return objects, free
    if group == "refine":
        objects.append(_object(points_xy[free], point_labels[free], None))
        return objects, np.zeros(0, np.int64)
    negatives = free[point_labels[free] == 0]
    nearest = _nearest(points_xy[negatives], points_xy[positives])
    for k, p in enumerate(positives):
        members = np.sort(np.concatenate([[p], negatives[nearest == k]]))
        objects.append(_object(points_xy[members], point_labels[members], None))
    return objects, np.zeros(0, np.int64)


def _owning_box(points_xy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """(P,) index of the smallest box containing each point, -1 where none does."""
    if len(boxes_xyxy) == 0 or len(points_xy) == 0:
        return np.full(len(points_xy), -1, dtype=np.int64)
    x, y = points_xy[:, 0:1], points_xy[:, 1:2]
    inside = (
        (x >= boxes_xyxy[:, 0]) & (x <= boxes_xyxy[:, 2]) & (y >= boxes_xyxy[:, 1]) & (y <= boxes_xyxy[:, 3])
    )
    areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    ranked = np.where(inside, areas[None, :], np.inf)
    owner = np.argmin(ranked, axis=1)  # argmin keeps the first of equal areas
    return np.where(inside.any(axis=1), owner, -1)


def _nearest(queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(Q,) index of the nearest target (Euclidean, first on ties) for each query point."""
    if len(queries) == 0:
        return np.zeros(0, dtype=np.int64)
    distances = np.linalg.norm(queries[:, None, :] - targets[None, :, :], axis=2)
    return np.argmin(distances, axis=1)


def _object(points_xy: np.ndarray, point_labels: np.ndarray, box: np.ndarray | None) -> ObjectPrompt:
    return ObjectPrompt(
        points_xy=np.asarray(points_xy, np.float32).reshape(-1, 2),
        point_labels=np.asarray(point_labels, np.int32).reshape(-1),
        box_xyxy=None if box is None else np.asarray(box, np.float32).copy(),
    )


def collect_prompts(
    points_data: np.ndarray,
    point_labels: np.ndarray,
    shapes_data: Sequence[np.ndarray],
    shape_types: Sequence[str],
    *,
    slice_index: tuple[int, ...] | None,
    image_hw: tuple[int, int],
    group: GroupRule = "refine",
) -> SlicePrompts:
    """The whole boundary in one call: napari prompt layers on a slice -> model-pixel objects + messages.

    Steps: rectangles -> boxes (:func:`shapes_to_boxes`), points on the slice -> (x, y), points outside the
    image dropped and boxes clipped (:func:`clip_prompts_to_image`), grouping by the
    rule of :func:`group_points`.

    Args:
        points_data: (n, ndim) Points layer data (..., row, col). point_labels: (n,) True/1 positive.
        shapes_data, shape_types: Shapes layer ``data`` and ``shape_type``.
        slice_index: leading indices of the current slice (None for 2D).
        image_hw: (H, W) of the image slice.
        group: "refine" or "per_positive".
    """
    converted = shapes_to_boxes(shapes_data, shape_types, slice_index=slice_index)
    messages = [f"Shape {i} ignored: {reason}." for i, reason in converted.skipped.items()]
    data = as_rows(points_data)
    signs = np.asarray(point_labels).reshape(-1)
    if len(signs) != len(data):
        raise ValueError(f"{len(data)} points but {len(signs)} point labels: give one label per point.")
    if len(data) and data.shape[1] < 2:
        raise ValueError(f"Points need (..., row, col) coordinates; got {data.shape[1]} per point.")
    keep = on_slice(data, slice_index)
    labels = (signs[keep] > 0).astype(np.int32)
    points_xy, labels, boxes, clip_messages = clip_prompts_to_image(
        rowcol_to_xy(data[keep][:, -2:]), labels, converted.boxes_xyxy, image_hw
    )
    messages += clip_messages
    objects, unused = group_points(points_xy, labels, boxes, group=group)
    if len(unused):
        messages.append(
            f"{len(unused)} negative point(s) outside any box and with no positive point ignored."
        )
    return SlicePrompts(objects, messages)


def batch_prompts(objects: Sequence[ObjectPrompt]) -> list[tuple[np.ndarray, dict[str, np.ndarray | None]]]:
    """Pack objects into ``OVSAMPredictor.predict`` calls: one batch with boxes, one of point-only objects.

    Points are padded to the largest count with label -1 (the predictor's padding label).

    Returns:
        list of ``(object_indices (N,), kwargs)`` where kwargs holds ``points`` float32 (N, P, 2) (x, y) or
        None, ``point_labels`` int32 (N, P) or None and ``boxes`` float32 (N, 4) XYXY or None.
    """
    batches = []
    for with_box in (True, False):
        members = [i for i, o in enumerate(objects) if (o.box_xyxy is not None) == with_box]
        if not members:
            continue
        n_points = max(len(objects[i].points_xy) for i in members)
        points = np.zeros((len(members), n_points, 2), np.float32)
        labels = np.full((len(members), n_points), -1, np.int32)
        for row, i in enumerate(members):
            count = len(objects[i].points_xy)
            points[row, :count] = objects[i].points_xy
            labels[row, :count] = objects[i].point_labels
        boxes = (
            np.stack([np.asarray(objects[i].box_xyxy) for i in members]).astype(np.float32)
            if with_box
            else None
        )
        has_points = n_points > 0
        kwargs = {
            "points": points if has_points else None,
            "point_labels": labels if has_points else None,
            "boxes": boxes,
        }
        batches.append((np.asarray(members, dtype=np.int64), kwargs))
    return batches


# ---------------------------------------------------------------------------------------------- layer data


def box_to_shape_vertices(
    box_xyxy: Sequence[float], slice_index: tuple[int, ...] | None = None
) -> np.ndarray:
    """A model box (x0, y0, x1, y1) -> (4, ndim) rectangle vertices (..., row, col) for a napari Shapes layer.

    The vertices carry ``slice_index`` in their leading coordinates, so the rectangle lives on that slice of a
    stack (ndim = len(slice_index) + 2). Order: (y0, x0), (y0, x1), (y1, x1), (y1, x0).
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    rowcol = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
    leading = np.tile(np.asarray(slice_index or (), dtype=float), (4, 1))
    return np.concatenate([leading, rowcol], axis=1)
