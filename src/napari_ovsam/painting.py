"""Writing object masks into a labels array and undoing it exactly; no Qt, no napari.

Arrays: ``labels`` is any (..., H, W) integer array supporting basic slicing reads and writes: numpy, zarr, a
napari Labels layer's ``data``. Only the bounding box of a commit on one slice is read and written, so a zarr
stack is touched chunk by chunk and never materialised. Masks are (N, H, W) bool in (row, col) pixel order,
the same frame as the labels slice (the model returns them that way). Masks of tiled (large) slices come
cropped to their objects (``results.CroppedMasks``): :func:`paint_cropped_masks` paints them object by object,
each reading and writing only its own box, with one undo record per object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PaintMode = Literal["keep", "overwrite"]
LABEL_BAND_ROWS = 1024  # rows of a large 2D labels array read at once (when it has no chunks)


@dataclass
class CommitRecord:
    """Everything needed to undo one commit exactly.

    Attributes:
        slice_index: leading indices of the slice that was painted (``()`` for a 2D labels array).
        bbox: (row0, row1, col0, col1), half-open, the painted region of the slice.
        changed: bool (row1 - row0, col1 - col0) pixels of the bbox whose value changed.
        old_values: (k,) values at the changed pixels before the commit (C order within the bbox).
        new_values: (k,) values written there.
        label_ids: ids that painted at least one pixel, in mask order.
        empty_ids: ids whose mask painted nothing (empty, or entirely under kept labels).
        feature_rows: the features rows of ``label_ids`` (for the caller to add, and to remove on undo).
    """

    slice_index: tuple[int, ...]
    bbox: tuple[int, int, int, int]
    changed: np.ndarray
    old_values: np.ndarray
    new_values: np.ndarray
    label_ids: tuple[int, ...]
    empty_ids: tuple[int, ...] = ()
    feature_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_pixels(self) -> int:
        return int(self.old_values.size)


# ---------------------------------------------------------------------------------------------- label ids


def max_label(labels: Any) -> int:
    """The largest value of a labels array, reading one leading slice at a time unless it is numpy or dask
    (a zarr array without any stored chunk is all fill value: nothing is read)."""
    if isinstance(labels, np.ndarray):
        return int(labels.max(initial=0))
    if hasattr(labels, "compute"):  # dask: let it reduce chunk by chunk
        return int(labels.max().compute()) if labels.size else 0
    if getattr(labels, "nchunks_initialized", None) == 0:
        return int(getattr(labels, "fill_value", 0) or 0)
    if labels.ndim <= 2:
        band = int((getattr(labels, "chunks", None) or (LABEL_BAND_ROWS,))[0]) if labels.ndim == 2 else 0
        if labels.ndim < 2 or labels.shape[0] <= band:
            return int(np.asarray(labels[...]).max(initial=0))
        rows = range(0, int(labels.shape[0]), max(band, 1))  # a large 2D array: one band of chunks at a time
        return max(int(np.asarray(labels[r : r + band]).max(initial=0)) for r in rows)
    return max((max_label(labels[i]) for i in range(labels.shape[0])), default=0)


def painted_ids(history_item: Any) -> list[int]:
    """The label values written by one napari paint step (``Labels.events.paint``'s ``value``: a list of
    atoms, ``(indices, old_values, new_value)`` tuples or masked atoms with a ``new_value``)."""
    ids: list[int] = []
    for atom in history_item or ():
        value = atom.new_value if hasattr(atom, "new_value") else atom[2]
        value = np.asarray(value)
        if value.size:
            ids.append(int(value.max()))
    return ids


# ---------------------------------------------------------------------------------------------- painting


def paint_masks(
    labels: Any,
    masks: np.ndarray,
    ids: Sequence[int],
    *,
    slice_index: tuple[int, ...] = (),
    mode: PaintMode = "keep",
    feature_rows: Sequence[dict[str, Any]] | None = None,
) -> CommitRecord:
    """Paint object masks into one slice of a labels array and return the record that undoes it.

    Masks are painted in order; where masks of the same commit overlap, the first one keeps the pixel (give
    them best first). ``mode="keep"`` (default) never overwrites a non-zero label already in the array;
    ``mode="overwrite"`` does.

    Args:
        labels: (..., H, W) integer array (numpy, zarr, ...), written in place within the masks' bounding box.
        masks: bool (N, H, W) or (H, W) masks in (row, col) pixels of the slice.
        ids: N label ids, one per mask (see ``LabelsTarget.next_ids``); all > 0.
        slice_index: leading indices of the slice to paint (``()`` for a 2D array).
        mode: "keep" or "overwrite".
        feature_rows: optional N features rows (see :func:`features_row`), kept in the record for the ids
            that painted something.

    Returns:
        a :class:`CommitRecord` (pass it to :func:`undo_commit`).
    """
    masks = np.asarray(masks, dtype=bool)
    masks = masks[None] if masks.ndim == 2 else masks
    ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    _check_paint_args(labels, masks, ids_arr, slice_index, mode)
    bbox = mask_bbox(masks)
    if bbox is None:
        return _empty_record(slice_index, ids_arr)
    r0, r1, c0, c1 = bbox
    key = (*slice_index, slice(r0, r1), slice(c0, c1))
    before = np.array(labels[key], copy=True)
    after = before.copy()
    claimed = before != 0 if mode == "keep" else np.zeros_like(before, dtype=bool)
    painted: list[int] = []
    empty: list[int] = []
    for mask, label_id in zip(masks[:, r0:r1, c0:c1], ids_arr):
        region = mask & ~claimed
        (painted if region.any() else empty).append(int(label_id))
        after[region] = label_id
        claimed |= region
    changed = after != before
    labels[key] = after
    rows = [dict(r) for r in (feature_rows or []) if int(r["label_id"]) in painted]
    return CommitRecord(
        slice_index=tuple(slice_index),
        bbox=bbox,
        changed=changed,
        old_values=before[changed],
        new_values=after[changed],
        label_ids=tuple(painted),
        empty_ids=tuple(empty),
        feature_rows=rows,
    )


def paint_cropped_masks(
    labels: Any,
    masks: Any,
    ids: Sequence[int],
    *,
    slice_index: tuple[int, ...] = (),
    mode: PaintMode = "keep",
    feature_rows: Sequence[dict[str, Any]] | None = None,
) -> list[CommitRecord]:
    """Paint cropped object masks (``results.CroppedMasks``: crops and their (row, col) offsets) into one
    slice, object by object, each reading and writing only its crop's box; one undo record per object that
    painted something (the last one lists the ids that painted nothing in ``empty_ids``).

    The rules of :func:`paint_masks`: masks in order, the first one keeps a pixel two of them claim, and
    ``mode="keep"`` never overwrites a label that was there before the commit.
    """
    ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    shape_only = np.broadcast_to(np.zeros((), bool), (len(masks.crops), *masks.image_size))  # no memory
    _check_paint_args(labels, shape_only, ids_arr, slice_index, mode)
    rows_by_id = {int(r["label_id"]): dict(r) for r in (feature_rows or [])}
    records: list[CommitRecord] = []
    empty: list[int] = []
    painted: list[int] = []  # ids of this commit: later objects never take their pixels
    for crop, (r, c), label_id in zip(masks.crops, masks.offsets, ids_arr):
        if not crop.any():
            empty.append(int(label_id))
            continue
        bbox = (int(r), int(r) + crop.shape[0], int(c), int(c) + crop.shape[1])
        key = (*slice_index, slice(bbox[0], bbox[1]), slice(bbox[2], bbox[3]))
        before = np.array(labels[key], copy=True)
        taken = before != 0 if mode == "keep" else np.isin(before, painted)
        region = crop & ~taken
        if not region.any():
            empty.append(int(label_id))
            continue
        after = before.copy()
        after[region] = label_id
        labels[key] = after
        painted.append(int(label_id))
        records.append(
            CommitRecord(
                slice_index=tuple(slice_index),
                bbox=bbox,
                changed=region,
                old_values=before[region],
                new_values=after[region],
                label_ids=(int(label_id),),
                feature_rows=[rows_by_id[int(label_id)]] if int(label_id) in rows_by_id else [],
            )  # fmt: skip
        )
    if records:
        records[-1].empty_ids = tuple(empty)
    return records


def _check_paint_args(
    labels: Any, masks: np.ndarray, ids: np.ndarray, slice_index: tuple[int, ...], mode: str
) -> None:
    if mode not in ("keep", "overwrite"):
        raise ValueError(f"mode must be 'keep' or 'overwrite', not {mode!r}.")
    if len(ids) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(ids)} ids.")
    if len(slice_index) != labels.ndim - 2:
        raise ValueError(f"slice_index {slice_index} does not fit labels of shape {labels.shape}.")
    if masks.shape[1:] != tuple(labels.shape[-2:]):
        raise ValueError(f"Masks of size {masks.shape[1:]} do not match labels slices {labels.shape[-2:]}.")
    if len(ids) and ids.min() <= 0:
        raise ValueError("Label ids must be positive (0 is background).")
    dtype = np.dtype(labels.dtype)
    if len(ids) and dtype.kind in "iu" and ids.max() > np.iinfo(dtype).max:
        raise ValueError(f"Label id {ids.max()} does not fit the labels dtype {dtype}.")


def mask_bbox(masks: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open (row0, row1, col0, col1) enclosing every True pixel of (N, H, W) masks, None if none."""
    rows = np.flatnonzero(masks.any(axis=(0, 2)))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(masks.any(axis=(0, 1)))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _empty_record(slice_index: tuple[int, ...], ids: np.ndarray) -> CommitRecord:
    return CommitRecord(
        slice_index=tuple(slice_index),
        bbox=(0, 0, 0, 0),
        changed=np.zeros((0, 0), dtype=bool),
        old_values=np.zeros(0, dtype=np.int64),
        new_values=np.zeros(0, dtype=np.int64),
        label_ids=(),
        empty_ids=tuple(int(i) for i in ids),
    )


def undo_commit(labels: Any, record: CommitRecord) -> int:
    """Restore the pixels a commit changed; reads and writes only the commit's bounding box.

    Pixels edited after the commit (they no longer hold the committed value) are left as they are, so undoing
    an old commit never erases later work. Remove the features rows with
    ``remove_feature_rows(features, record.label_ids)``.

    Returns:
        the number of pixels restored.
    """
    if record.num_pixels == 0:
        return 0
    r0, r1, c0, c1 = record.bbox
    key = (*record.slice_index, slice(r0, r1), slice(c0, c1))
    patch = np.array(labels[key], copy=True)
    current = patch[record.changed]
    untouched = current == record.new_values
    current[untouched] = record.old_values[untouched]
    patch[record.changed] = current
    labels[key] = patch
    return int(untouched.sum())
