"""The review queue: which committed objects to look at first, and where the user is in it; no Qt, no napari.

**The uncertainty order** (:func:`review_order`, one owner for the objects table's sort and the review keys).
Each object's *margin* is its best class probability minus the runner-up's (``topk_scores`` of the features
table, see :mod:`napari_ovsam.features`): a small margin means the model hesitated between two names, a
large one that it did not. Objects come in this order:

1. objects not ``reviewed`` before reviewed ones (the queue walks the unreviewed ones only);
2. among them, objects named ``unknown`` first (the model named nothing: the user has to);
3. then by margin, smallest first. With one stored alternative the runner-up is not known, and the margin is
   its lowest possible value, ``max(2 * top1 - 1, 0)`` (the rest of the probability on one other class), so
   such an object is never taken for surer than it may be; without alternatives ``score`` is the top-1;
4. objects whose confidence is not known at all (no score, no alternatives: e.g. labels made by another
   tool) after every object with a margin, still before reviewed ones;
5. ties (margins equal to the 4 decimals the top-k scores are stored with): lower ``score`` first, then lower
   label id (the order is total and deterministic).

**Navigation** (:class:`ReviewQueue`): *next* goes to the first unreviewed object after the current one in
this order, wrapping around at the end; *previous* goes backwards. The position is remembered as the current
object's place in the order *without* the reviewed flag (:func:`position_key`), taken when the queue went to
it, so accepting or renaming the object (which moves it to the reviewed end, or out of the ``unknown`` group)
does not make the queue skip or repeat objects.

**Where an object is** (:func:`locate`): the slice and (row, col) pixel to show, from the name anchors a
:class:`~napari_ovsam.targets.LabelsTarget` keeps and, for in-memory labels, the object's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .features import ensure_features, topk_from_row
from .naming import UNKNOWN_CLASS
from .results import SliceIndex

ALTERNATIVE_KEYS = 5  # alternatives the review keys can take (Alt+1 .. Alt+5)
MARGIN_DECIMALS = 4  # the precision of the stored top-k scores: margins equal to it are ties
PositionKey = tuple[int, int, float, float, int]  # (unknown first, no margin, margin, score, label id)


def margin_of(row: dict[str, Any] | pd.Series) -> float:
    """Best class probability minus the runner-up's (in [0, 1]); NaN when the row holds neither a score nor
    alternatives. See the module docstring for one or no stored alternative."""
    _, scores = topk_from_row(row)
    finite = sorted((s for s in scores if math.isfinite(s)), reverse=True)
    if len(finite) >= 2:
        return max(finite[0] - finite[1], 0.0)
    top1 = finite[0] if finite else _float(row.get("score"))
    return max(2.0 * top1 - 1.0, 0.0) if math.isfinite(top1) else math.nan


def position_key(row: dict[str, Any] | pd.Series) -> PositionKey:
    """An object's place in the uncertainty order, leaving out whether it is reviewed (see the module
    docstring): smaller is more uncertain."""
    margin = margin_of(row)
    score = _float(row.get("score"))
    named_unknown = str(row.get("class_name", "")).strip() == UNKNOWN_CLASS
    return (
        0 if named_unknown else 1,
        1 if math.isnan(margin) else 0,
        0.0 if math.isnan(margin) else round(margin, MARGIN_DECIMALS),
        score if math.isfinite(score) else math.inf,
        int(row["label_id"]),
    )


def order_key(row: dict[str, Any] | pd.Series) -> tuple[bool, PositionKey]:
    """An object's place in the full uncertainty order: unreviewed objects first, then :func:`position_key`."""
    return (bool(row.get("reviewed", False)), position_key(row))


def review_order(features: pd.DataFrame | None) -> list[int]:
    """The label ids of a features table in the uncertainty order (the module docstring), reviewed last."""
    records = ensure_features(features).to_dict("records")
    return [int(r["label_id"]) for r in sorted(records, key=order_key)]


def reviewed_count(features: pd.DataFrame | None) -> tuple[int, int]:
    """(reviewed objects, all objects) of a features table."""
    table = ensure_features(features)
    return int(table["reviewed"].astype(bool).sum()), len(table)


def review_summary(features: pd.DataFrame | None) -> str:
    """The status line's count, e.g. ``"12 / 40 reviewed"``."""
    done, total = reviewed_count(features)
    return f"{done} / {total} reviewed"


def alternative(features: pd.DataFrame | None, label_id: int, k: int) -> str | None:
    """The k-th (1-based) of an object's stored alternatives (``topk_names``: 1 is the model's best guess),
    or None when it has fewer than k."""
    if k < 1:
        raise ValueError(f"Alternatives are numbered from 1, not {k}.")
    table = ensure_features(features)
    match = table[table["label_id"] == int(label_id)]
    if match.empty:
        return None
    names, _ = topk_from_row(match.iloc[0])
    return names[k - 1] if k <= len(names) else None


class ReviewQueue:
    """Where the user is in the review queue (see the module docstring); the features table is passed to
    each step, so the queue always walks the table as it is now (after commits, renames and undo)."""

    def __init__(self) -> None:
        self.current: int | None = None  # the label id the queue went to last
        self._position: PositionKey | None = None  # its place, taken when the queue went there

    def next(self, features: pd.DataFrame | None, selected: int | None = None) -> int | None:
        """The next unreviewed object after ``selected`` (default: the current one), wrapping around; None
        when every object is reviewed. It becomes the current one."""
        return self._step(features, selected, forward=True)

    def previous(self, features: pd.DataFrame | None, selected: int | None = None) -> int | None:
        """The unreviewed object before ``selected`` (default: the current one), wrapping around."""
        return self._step(features, selected, forward=False)

    def _step(self, features: pd.DataFrame | None, selected: int | None, *, forward: bool) -> int | None:
        records = ensure_features(features).to_dict("records")
        waiting = sorted((position_key(r), int(r["label_id"])) for r in records if not r.get("reviewed"))
        if not waiting:
            return None
        here = self._here(records, selected)
        if here is None:
            chosen = waiting[0] if forward else waiting[-1]
        elif forward:
            chosen = next((w for w in waiting if w[0] > here), waiting[0])
        else:
            chosen = next((w for w in reversed(waiting) if w[0] < here), waiting[-1])
        self._position, self.current = chosen
        return self.current

    def _here(self, records: Sequence[dict[str, Any]], selected: int | None) -> PositionKey | None:
        """The position to step from: the remembered one while ``selected`` is the current object (or none
        is selected), else the selected object's place now."""
        if selected is None or selected == self.current:
            return self._position
        row = next((r for r in records if int(r["label_id"]) == int(selected)), None)
        return position_key(row) if row is not None else self._position

    def forget(self) -> None:
        """Start again from the most uncertain object (another labels layer, say)."""
        self.current, self._position = None, None


@dataclass(frozen=True)
class Place:
    """Where to show an object: its slice (``()`` in 2D) and a (row, col) pixel of the labels array (the
    centroid of its pixels on that slice, or the anchor of its name when the pixels are not read); ``box``:
    its (row0, row1, col0, col1) pixels on that slice (half-open), None when they were not read."""

    slice_index: SliceIndex
    row: float
    col: float
    box: tuple[int, int, int, int] | None = None


def locate(target: Any, label_id: int, slice_in_view: SliceIndex | None = None) -> Place | None:
    """Where a :class:`~napari_ovsam.targets.LabelsTarget`'s object is: on the slice in view if it is there,
    else on its first slice. Slices come from the name anchors (objects committed or propagated in this
    session); without any, from the pixels of the slice in view, then (in-memory labels only, never a lazy
    array) of the whole stack. The pixel is the centroid of the object on that slice for in-memory labels,
    else its name's anchor (a pixel of the object near its centroid). None when it is nowhere."""
    label_id = int(label_id)
    labels = target.labels
    in_memory = isinstance(labels, np.ndarray)
    view = tuple(int(i) for i in slice_in_view) if slice_in_view is not None else None
    anchored: list[SliceIndex] = target.slices_of(label_id)
    if anchored:
        chosen: SliceIndex = view if view is not None and view in anchored else anchored[0]
        if not in_memory:
            row, col = target.anchors[(label_id, chosen)]
            return Place(chosen, float(row), float(col))
        return _centroid(labels, label_id, chosen) or Place(chosen, *target.anchors[(label_id, chosen)])
    if view is not None:
        found = _centroid(labels, label_id, view)
        if found is not None:
            return found
    if in_memory and labels.ndim > 2:
        hits = np.argwhere(np.any(labels == label_id, axis=(-2, -1)))
        if len(hits):
            return _centroid(labels, label_id, tuple(int(i) for i in hits[0]))
    return None


def _centroid(labels: Any, label_id: int, slice_index: SliceIndex) -> Place | None:
    """The centroid (row, col) of an object's pixels on one slice (reads that slice), or None."""
    pixels = np.argwhere(np.asarray(labels[slice_index] if slice_index else labels) == label_id)
    if not len(pixels):
        return None
    row, col = pixels.mean(axis=0)
    (r0, c0), (r1, c1) = pixels.min(axis=0), pixels.max(axis=0) + 1
    return Place(tuple(slice_index), float(row), float(col), (int(r0), int(r1), int(c0), int(c1)))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
