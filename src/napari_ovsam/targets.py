"""The labels the session writes into (``LabelsTarget``) and its undoable steps (``CommitGroup``).

No Qt, no napari. :class:`LabelsTarget` owns one labels array (numpy, zarr, a Labels layer's ``data``), its
features table (see :mod:`napari_ovsam.features`), the undo history and the *anchors*: for each object and
slice, the (row, col) pixel where its class name is drawn. Masks are bool (H, W) in (row, col) pixels of a
slice; slices are named by ``slice_index``, the tuple of leading indices (``()`` for 2D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .examples import LabelExamples, ObjectKey, unlearn
from .features import add_feature_rows, ensure_features, max_feature_id, remove_feature_rows
from .naming import UNKNOWN_CLASS
from .painting import (
    CommitRecord,
    PaintMode,
    max_label,
    paint_cropped_masks,
    paint_masks,
    painted_ids,
    undo_commit,
)
from .results import CroppedMasks, ObjectResults, SliceIndex

DEFAULT_HISTORY_BYTES = 1 << 30  # undo history budget per labels layer (a 4096x4096 commit is ~150 MB)
AnchorKey = tuple[int, SliceIndex]  # (label id, slice index)
Anchors = dict[AnchorKey, tuple[float, float]]


@dataclass
class CommitGroup:
    """One undoable action: a commit of several objects, or a whole propagation through a stack.

    ``new_rows`` are the features rows it wrote; undo restores the pixels of ``records`` (last first), removes
    the rows of ``added_ids``, puts back ``replaced_rows`` (rows it changed, as they were) and swaps the
    anchors back, and takes back the example features and example ids it added (``example_keys``,
    ``learnt_ids``; see :mod:`napari_ovsam.examples`).
    """

    records: list[CommitRecord]
    added_ids: tuple[int, ...] = ()
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    replaced_rows: list[dict[str, Any]] = field(default_factory=list)
    anchors_added: Anchors = field(default_factory=dict)
    anchors_removed: Anchors = field(default_factory=dict)
    description: str = ""
    one_slice: bool = False  # a commit of cropped masks: every record is on the first record's slice
    example_keys: list[ObjectKey] = field(default_factory=list)
    learnt_ids: tuple[int, ...] = ()

    @property
    def label_ids(self) -> tuple[int, ...]:
        """Ids that painted pixels, in painting order."""
        return tuple(dict.fromkeys(i for r in self.records for i in r.label_ids))

    @property
    def nbytes(self) -> int:
        """Bytes its undo records hold (changed-pixel masks and old/new values)."""
        return sum(r.changed.nbytes + r.old_values.nbytes + r.new_values.nbytes for r in self.records)


class LabelsTarget:
    """A labels array with its features table, undo history and name anchors (see the module docstring).

    Args:
        labels: (..., H, W) integer array, written in place one slice's bounding box at a time.
        features: its features table, if it has one (coerced with ``features.ensure_features``).
        max_history_bytes: memory the undo history may hold; past it the oldest steps are forgotten (the last
            one is always kept, whatever its size).
    """

    def __init__(
        self, labels: Any, features: Any = None, *, max_history_bytes: int = DEFAULT_HISTORY_BYTES
    ) -> None:
        self.labels = labels
        self.features: pd.DataFrame = ensure_features(features)
        self.history: list[CommitGroup] = []
        self.max_history_bytes = max_history_bytes
        self.anchors: Anchors = {}
        self.examples = LabelExamples()  # the objects' features, which are examples (napari_ovsam.examples)
        self._max_id = 0  # the largest id seen in the labels, painted by hand, or handed out
        self._scanned = False  # whether a lazy array was read once for its largest id

    def next_ids(self, n: int) -> list[int]:
        """``n`` fresh ids, unique over the whole labels array: above every id in the features, handed out
        before, or in the labels. A numpy array is checked each time (cheap); a lazy one (zarr, dask) is read
        once, one slice at a time, and then followed through :meth:`note_painted` (napari's paint events)."""
        if isinstance(self.labels, np.ndarray):
            self._max_id = max(self._max_id, max_label(self.labels))
        elif not self._scanned:
            self._max_id = max(self._max_id, max_label(self.labels))
            self._scanned = True
        used = max(self._max_id, max_feature_id(self.features))
        self._max_id = used + n
        return list(range(used + 1, used + 1 + n))

    def note_painted(self, history_item: Any) -> None:
        """Ids painted into the labels by hand (a napari paint event's ``value``): new ids go above them."""
        self._max_id = max(self._max_id, *painted_ids(history_item), 0)

    def adopt_features(self, features: Any) -> None:
        """Take in a copy of the table shown to the user (a Labels layer's ``features``), with the columns
        they added and the values they typed, so the next write keeps them: this target's table is the one
        table, the layer's is its view."""
        self.features = ensure_features(features)

    def last_commit(self) -> tuple[list[int], SliceIndex] | None:
        """(label ids, slice) of the last undoable step's first painting, or None when there is none."""
        if not self.history or not self.history[-1].records:
            return None
        group = self.history[-1]
        record = group.records[0]
        if group.one_slice:
            return list(group.label_ids), record.slice_index
        return list(record.label_ids), record.slice_index

    def commit(self, results: ObjectResults, mode: PaintMode = "keep") -> CommitGroup | None:
        """Paint the objects (existing labels kept unless ``mode='overwrite'``), add their features rows and
        anchors, and push the group onto the history; None when nothing was painted."""
        if len(results) == 0:
            return None
        ids = self.next_ids(len(results))
        if isinstance(results.masks, CroppedMasks):
            return self._commit_cropped(results, ids, mode)
        record = paint_masks(
            self.labels, results.masks, ids, slice_index=results.slice_index, mode=mode,
            feature_rows=results.feature_rows(ids),
        )  # fmt: skip
        if not record.label_ids:
            self._max_id = ids[0] - 1  # nothing painted: the ids stay free
            return None
        group = CommitGroup(
            [record], added_ids=record.label_ids, new_rows=record.feature_rows,
            anchors_added=record_anchors(record), description=f"commit of {len(record.label_ids)} object(s)",
        )  # fmt: skip
        if mode == "overwrite":
            group.anchors_removed = self._erased_anchors(record)
        self.push(group)
        return group

    def _commit_cropped(self, results: ObjectResults, ids: list[int], mode: PaintMode) -> CommitGroup | None:
        """A commit of a tiled slice's cropped masks: one record per object, each over its own box only (no
        full-size mask, no read of the whole slice)."""
        records = paint_cropped_masks(
            self.labels, results.masks, ids, slice_index=results.slice_index, mode=mode,
            feature_rows=results.feature_rows(ids),
        )  # fmt: skip
        if not records:
            self._max_id = ids[0] - 1  # nothing painted: the ids stay free
            return None
        group = CommitGroup(records, one_slice=True, description=f"commit of {len(records)} object(s)")
        group.added_ids = group.label_ids
        for record in records:
            group.new_rows += record.feature_rows
            group.anchors_added.update(record_anchors(record))
        if mode == "overwrite":
            group.anchors_removed = self._covered_anchors(records, group.anchors_added)
        self.push(group)
        return group

    def _covered_anchors(self, records: list[CommitRecord], added: Anchors) -> Anchors:
        """Anchors of other labels whose anchor pixel an overwriting commit painted over (the local rule of
        large slices: their labels are not searched for elsewhere)."""
        gone: Anchors = {}
        for (label_id, slice_index), (row, col) in self.anchors.items():
            if (label_id, slice_index) in added:
                continue
            for record in records:
                r0, r1, c0, c1 = record.bbox
                inside = record.slice_index == slice_index and r0 <= row < r1 and c0 <= col < c1
                if inside and record.changed[int(row) - r0, int(col) - c0]:
                    gone[(label_id, slice_index)] = (row, col)
        return gone

    def push(self, group: CommitGroup) -> None:
        """Apply a group whose pixels are painted: its rows and anchors; it becomes the last undo step."""
        self.features = add_feature_rows(self.features, group.new_rows)
        self._swap_anchors(add=group.anchors_added, remove=group.anchors_removed)
        self.history.append(group)
        total = sum(g.nbytes for g in self.history)
        while len(self.history) > 1 and total > self.max_history_bytes:
            total -= self.history.pop(0).nbytes  # the oldest step can no longer be undone

    def undo(self) -> CommitGroup | None:
        """Undo the last group: pixels (later edits of them are kept), features rows, anchors."""
        if not self.history:
            return None
        group = self.history.pop()
        for record in reversed(group.records):
            undo_commit(self.labels, record)
        self.features = add_feature_rows(
            remove_feature_rows(self.features, group.added_ids), group.replaced_rows
        )
        self._swap_anchors(add=group.anchors_removed, remove=group.anchors_added)
        unlearn(self.examples, group)
        return group

    def rename(self, label_id: int, class_name: str) -> None:
        """Set an object's class by hand; it is marked reviewed."""
        table = self.features.copy()
        match = table["index"] == int(label_id)
        if not match.any():
            raise ValueError(f"No object with label id {label_id}: rename one of the table's objects.")
        table.loc[match, "class_name"] = str(class_name).strip() or UNKNOWN_CLASS
        table.loc[match, "reviewed"] = True
        self.features = table

    def mark_reviewed(self, label_id: int, reviewed: bool = True) -> None:
        """Set an object's ``reviewed`` column (the user accepted its name) without renaming it."""
        table = self.features.copy()
        match = table["index"] == int(label_id)
        if not match.any():
            raise ValueError(f"No object with label id {label_id}: mark one of the table's objects.")
        table.loc[match, "reviewed"] = bool(reviewed)
        self.features = table

    def row(self, label_id: int) -> dict[str, Any] | None:
        """The features row of an object as a dict, or None."""
        match = self.features[self.features["index"] == int(label_id)]
        return None if match.empty else match.iloc[0].to_dict()

    def slices_of(self, label_id: int) -> list[SliceIndex]:
        """The slices where an object has a name anchor (where it was committed or propagated to)."""
        return sorted(s for i, s in self.anchors if i == int(label_id))

    def _swap_anchors(self, *, add: Anchors, remove: Anchors) -> None:
        for key in remove:
            self.anchors.pop(key, None)
        self.anchors.update(add)

    def _erased_anchors(self, record: CommitRecord) -> Anchors:
        """Anchors of labels that an overwriting commit erased from its slice."""
        old_ids = {int(v) for v in np.unique(record.old_values) if v}
        if not old_ids:
            return {}
        index = (*record.slice_index, slice(None), slice(None))
        remaining = set(np.unique(np.asarray(self.labels[index])).tolist())
        gone = {(i, record.slice_index) for i in old_ids - remaining}
        return {key: self.anchors[key] for key in gone if key in self.anchors}


def record_anchors(record: CommitRecord) -> Anchors:
    """Where to draw each painted object's name: its painted pixel nearest to the painted pixels' centroid
    (on the object even for a ring or a bent rod)."""
    if not record.label_ids:
        return {}
    r0, _, c0, _ = record.bbox
    pixels = np.argwhere(record.changed) + np.array([r0, c0])
    anchors: Anchors = {}
    for label_id in record.label_ids:
        mine = pixels[record.new_values == label_id].astype(float)
        if len(mine):
            nearest = mine[np.argmin(((mine - mine.mean(axis=0)) ** 2).sum(axis=1))]
            anchors[(int(label_id), record.slice_index)] = (float(nearest[0]), float(nearest[1]))
    return anchors
