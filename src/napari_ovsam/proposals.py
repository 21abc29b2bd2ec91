"""Proposals: objects found on many slices, waiting in the preview, and how they meet the labels; no Qt.

:class:`Proposals` holds what Segment everything or Name labels found (``napari_ovsam.automatic``), one
:class:`~napari_ovsam.results.ObjectResults` per slice with cropped masks. :func:`fit_to_labels` makes them
respect the labels already there (keep mode: an object lying mostly on labels is dropped, the others lose the
labelled pixels) and :func:`commit_slices` paints all slices as one undoable step. :func:`without_background`
drops the prompts' objects the model calls background (a click on empty background gives no object).

Frames: masks are (row, col) pixels of a slice; slices are named by their leading indices (``()`` for 2D).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .painting import PaintMode
from .results import CroppedMasks, ObjectResults, SliceIndex
from .targets import CommitGroup, LabelsTarget

# A prompt's object whose background-class probability is above this is no object (a click on background).
BACKGROUND_PROBABILITY = 0.5
# Keep mode: a proposal with more than this fraction of its pixels on existing labels is dropped.
MAX_LABELLED_FRACTION = 0.5
SOURCE_COLUMN = "source_label"  # features column: the id an object had in the labels layer it was named from


@dataclass
class NamedResults(ObjectResults):
    """Objects named from another labels array: ``source_ids`` int64 (N,), each one's id there (kept in the
    features column :data:`SOURCE_COLUMN`)."""

    source_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def feature_rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        rows = super().feature_rows(ids)
        for row, source in zip(rows, self.source_ids):
            row[SOURCE_COLUMN] = int(source)
        return rows


@dataclass
class Proposals:
    """What a Segment everything or Name labels job found, per slice, waiting in the preview for a commit.

    results: slice index -> its objects (cropped masks, best first). what: the job's name for messages.
    slices: the slices the job covered (done ones are in ``results`` only if they had objects).
    """

    results: dict[SliceIndex, ObjectResults]
    what: str
    slices: int = 0

    def __len__(self) -> int:
        return sum(len(r) for r in self.results.values())

    def on(self, slice_index: SliceIndex) -> ObjectResults | None:
        return self.results.get(tuple(slice_index))

    def summary(self) -> str:
        """ "12 object(s) on 3 slice(s): 7 nucleus, 5 rod"."""
        counts: dict[str, int] = {}
        for results in self.results.values():
            for name in results.class_names:
                counts[name] = counts.get(name, 0) + 1
        names = ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda item: -item[1]))
        where = f" on {len(self.results)} slice(s)" if self.slices > 1 else ""
        return f"{len(self)} object(s){where}" + (f": {names}" if names else "")


# ---------------------------------------------------------------------------------------------- results


def empty_results(slice_index: SliceIndex, image_hw: tuple[int, int]) -> ObjectResults:
    """No objects on a slice, with cropped masks (a preview of it costs nothing, even on a large slice)."""
    zeros = np.zeros(0, np.float32)
    masks = CroppedMasks([], np.zeros((0, 2), np.int64), image_hw)
    return ObjectResults(tuple(slice_index), masks, [], zeros, zeros, [], np.zeros((0, 0), np.float32))


def select(results: ObjectResults, keep: Sequence[int], crops: Sequence[np.ndarray] | None = None) -> Any:
    """The objects at ``keep`` (row indices), of the same kind (``crops``: new crops for them, for cropped
    masks); everything per object follows."""
    index = np.asarray(keep, np.int64)
    masks: Any = results.masks
    if isinstance(masks, CroppedMasks):
        chosen = list(crops) if crops is not None else [masks.crops[i] for i in index]
        masks = CroppedMasks(chosen, masks.offsets[index], masks.image_size)
    else:
        masks = np.asarray(masks)[index]
    changes: dict[str, Any] = {
        "masks": masks,
        "class_names": [results.class_names[i] for i in index],
        "scores": results.scores[index],
        "iou": results.iou[index],
        "topk_names": [results.topk_names[i] for i in index],
        "topk_scores": results.topk_scores[index] if len(results.topk_scores) else results.topk_scores,
        "prompts": [results.prompts[i] for i in index if i < len(results.prompts)],
        "background": None if results.background is None else results.background[index],
    }
    if isinstance(results, NamedResults):
        changes["source_ids"] = results.source_ids[index]
    return dataclasses.replace(results, **changes)


def without_background(results: ObjectResults, threshold: float = BACKGROUND_PROBABILITY) -> ObjectResults:
    """The objects the model does not call background (the background class's probability above
    ``threshold``, or above the best class's); when some are dropped a message says so ("No object here
    (background)." for a single prompt)."""
    if results.background is None or not len(results):
        return results
    keep = [
        i
        for i, (p, best) in enumerate(zip(results.background, results.scores))
        if float(p) <= threshold and float(p) <= float(best)
    ]
    if len(keep) == len(results):
        return results
    dropped = len(results) - len(keep)
    out = select(results, keep)
    message = (
        "No object here (background)."
        if len(results) == 1
        else f"{dropped} prompt(s) on background: no object there."
    )
    out.messages = [*results.messages, message]
    return out


def background_of(prediction: Any, row: int) -> float:
    """A prediction's background-class probability for one object (0 when the predictor gives none)."""
    background = getattr(prediction, "background", None)
    return 0.0 if background is None else float(background[row])


def fit_to_labels(results: ObjectResults, target: LabelsTarget | None, mode: PaintMode) -> ObjectResults:
    """Keep mode: cropped proposals lying mostly (> ``MAX_LABELLED_FRACTION``) on labels already in the
    target are dropped, the others lose their labelled pixels; overwrite mode (or no target): unchanged.
    Reads only each object's box of the labels."""
    if mode != "keep" or target is None or not isinstance(results.masks, CroppedMasks) or not len(results):
        return results
    masks = results.masks
    keep, crops = [], []
    for i, (crop, (r, c)) in enumerate(zip(masks.crops, masks.offsets)):
        box = (
            *results.slice_index,
            slice(int(r), int(r) + crop.shape[0]),
            slice(int(c), int(c) + crop.shape[1]),
        )
        free = crop & (np.asarray(target.labels[box]) == 0)
        area, left = int(crop.sum()), int(free.sum())
        if left and left >= (1 - MAX_LABELLED_FRACTION) * area:
            keep.append(i)
            crops.append(free)
    if len(keep) == len(results):
        return dataclasses.replace(results, masks=CroppedMasks(crops, masks.offsets, masks.image_size))
    return select(results, keep, crops)


# ---------------------------------------------------------------------------------------------- commit


def commit_slices(
    target: LabelsTarget, results: Sequence[ObjectResults], mode: PaintMode = "keep"
) -> CommitGroup | None:
    """Paint the objects of several slices (each commit's rules, see ``LabelsTarget.commit``) and record
    them as one undoable step; None when nothing was painted. Keep mode first drops or clips the objects
    that lie on labels (:func:`fit_to_labels`)."""
    before = len(target.history)
    budget, target.max_history_bytes = target.max_history_bytes, 1 << 62  # keep every slice's step
    try:
        for item in results:
            target.commit(fit_to_labels(item, target, mode), mode)
    finally:
        target.max_history_bytes = budget
        steps = target.history[before:]
        del target.history[before:]
    if not steps:
        return None
    records = [r for g in steps for r in g.records]
    group = CommitGroup(
        records,
        added_ids=tuple(i for g in steps for i in g.added_ids),
        new_rows=[row for g in steps for row in g.new_rows],
        anchors_added={k: v for g in steps for k, v in g.anchors_added.items()},
        anchors_removed={k: v for g in steps for k, v in g.anchors_removed.items()},
        one_slice=len({r.slice_index for r in records}) == 1,
    )
    group.description = f"commit of {len(group.label_ids)} object(s)"
    target.push(group)  # rows and anchors are in already: this records the step (and trims the history)
    return group
