"""Segment through a stack: carry committed objects from their slice to the neighbouring ones.

For each object and each direction (z + 1, z + 2, ... then z - 1, ...): the box around its mask on the
previous slice (enlarged by a margin) is the prompt on the next slice; the predicted mask is painted with the
same label id (existing labels are kept), and the walk stops at the first slice where

- the mask vanishes,
- the predicted mask IoU drops below ``min_iou``,
- the mask overlaps the previous slice's mask by less than ``min_overlap`` (intersection over union), or
- nothing could be painted (the place is already labelled),

or after ``max_slices`` slices. The object's name is re-decided from all its slices: the class with the highest
mean top-k probability (objects reviewed by hand keep their name). The whole propagation is one undoable
:class:`~napari_ovsam.targets.CommitGroup`, also when it is cancelled part way.

Runs in a worker thread (it may run the image encoder for every slice it visits), through
``AnnotationSession.iter_propagate``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .features import features_row, topk_from_row
from .naming import UNKNOWN_CLASS
from .painting import paint_masks
from .prompts import ObjectPrompt
from .results import ObjectResults, SliceIndex
from .targets import CommitGroup, LabelsTarget, record_anchors


class SliceSegmenter(Protocol):
    """What a propagation needs from the session: embed a slice, decode prompts on it, name objects."""

    top_k: int

    @property
    def leading_shape(self) -> tuple[int, ...]: ...

    def job_predictor(self) -> Any: ...

    def ensure_embedding(self, slice_index: SliceIndex, predictor: Any = None) -> Any: ...

    def predict(
        self, objects: Sequence[ObjectPrompt], slice_index: SliceIndex, predictor: Any = None
    ) -> ObjectResults: ...

    def name_for(self, class_name: str, score: float) -> str: ...


@dataclass
class PropagationSettings:
    """When to stop carrying an object to the next slice (see the module docstring)."""

    min_iou: float = 0.5  # predicted mask IoU of the new slice's mask
    min_overlap: float = 0.3  # IoU between the new mask and the previous slice's mask
    max_slices: int | None = None  # per direction; None: to the end of the stack
    directions: tuple[int, ...] = (1, -1)  # +1 towards higher z, -1 towards lower z
    box_margin: float = 0.1  # the box is enlarged by this fraction of its size (+ 2 pixels) per side


@dataclass
class PropagationStep:
    """One visited slice, as reported to the caller (for progress and the status line)."""

    label_id: int
    slice_index: tuple[int, ...]
    painted: bool
    reason: str  # why the walk stopped here ("" when it goes on)
    iou: float
    overlap: float
    class_name: str
    done: int  # slices visited so far
    total: int  # upper bound of the slices to visit


def propagate_objects(
    session: SliceSegmenter,
    target: LabelsTarget,
    label_ids: Sequence[int],
    slice_index: SliceIndex,
    settings: PropagationSettings,
) -> Iterator[PropagationStep]:
    """Carry ``label_ids`` of ``target`` from ``slice_index`` through the stack; yields one step per slice.

    The caller holds the session's labels lock. Closing the generator early keeps (and records) what is
    painted; the object being walked then keeps its name.
    """
    if not slice_index:
        raise ValueError("Propagation needs a stack: the image is 2D.")
    yield from _Propagation(session, target, settings).run([int(i) for i in label_ids], tuple(slice_index))


class _Propagation:
    """The state of one propagation: where to paint, the predictor copy, the group being built, progress."""

    def __init__(self, session: SliceSegmenter, target: LabelsTarget, settings: PropagationSettings) -> None:
        self.session, self.target, self.settings = session, target, settings
        self.predictor = session.job_predictor()
        self.depth = session.leading_shape[-1]
        self.group = CommitGroup([])
        self.done = 0

    def run(self, label_ids: list[int], slice_index: SliceIndex) -> Iterator[PropagationStep]:
        reach = self.depth if self.settings.max_slices is None else self.settings.max_slices
        total = len(label_ids) * min(self.depth - 1, reach * len(self.settings.directions))
        self.group.description = f"propagation of {len(label_ids)} object(s)"
        try:
            for label_id in label_ids:
                votes = _Votes.from_row(self.target.row(label_id))
                start = np.asarray(self.target.labels[slice_index]) == label_id
                if not start.any():
                    raise ValueError(f"Object {label_id} is not on slice {slice_index}.")
                for direction in self.settings.directions:
                    for step in self._walk(label_id, start, slice_index, direction, votes):
                        self.done += 1
                        yield PropagationStep(**step, done=self.done, total=max(total, self.done))
                _rename(self.session, self.group, label_id, votes)
        finally:
            if self.group.records:
                self.target.push(self.group)

    def _walk(
        self, label_id: int, start: np.ndarray, slice_index: SliceIndex, direction: int, votes: _Votes
    ) -> Iterator[dict[str, Any]]:
        """Visit slices from ``slice_index`` in one direction, painting until a stop rule fires."""
        prefix, z = tuple(slice_index[:-1]), int(slice_index[-1])
        previous, settings = start, self.settings
        for _ in range(self.depth if settings.max_slices is None else settings.max_slices):
            z += direction
            if not 0 <= z < self.depth:
                return
            index = (*prefix, z)
            self.session.ensure_embedding(index, self.predictor)
            prompt = ObjectPrompt(np.zeros((0, 2)), np.zeros(0), mask_box(previous, settings.box_margin))
            result = self.session.predict([prompt], index, self.predictor)
            mask, iou = result.masks[0], float(result.iou[0])
            overlap = mask_iou(mask, previous)
            reason = stop_reason(mask, iou, overlap, settings)
            if not reason:
                record = paint_masks(self.target.labels, mask, [label_id], slice_index=index)
                if record.label_ids:
                    self.group.records.append(record)
                    self.group.anchors_added.update(record_anchors(record))
                    votes.add(result.topk_names[0], result.topk_scores[0], iou)
                else:
                    reason = "the place is already labelled"
            yield {
                "label_id": label_id, "slice_index": index, "painted": not reason, "reason": reason,
                "iou": iou, "overlap": overlap, "class_name": result.class_names[0],
            }  # fmt: skip
            if reason:
                return
            previous = mask


def stop_reason(mask: np.ndarray, iou: float, overlap: float, settings: PropagationSettings) -> str:
    """Why a propagated mask is rejected ("" if it is accepted)."""
    if not mask.any():
        return "the mask vanished"
    if iou < settings.min_iou:
        return f"predicted IoU {iou:.2f} < {settings.min_iou:.2f}"
    if overlap < settings.min_overlap:
        return f"overlap with the previous slice {overlap:.2f} < {settings.min_overlap:.2f}"
    return ""


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """XYXY box (x = col, y = row) around a bool (H, W) mask, enlarged by ``margin`` * size + 2 px per side
    (margin > 0) and clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)
    if margin > 0:
        pad = margin * (box[2:] - box[:2]) + 2.0
        box = np.concatenate([box[:2] - pad, box[2:] + pad])
    height, width = mask.shape
    return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1]).astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ---------------------------------------------------------------------------------------------- naming


class _Votes:
    """Top-k probabilities summed over an object's slices, to name it from all of them."""

    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row
        self.sums: dict[str, float] = defaultdict(float)
        self.ious: list[float] = []
        self.slices = 0

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> _Votes:
        votes = cls(row)
        if row is not None:
            names, scores = topk_from_row(row)
            votes.add(names or [str(row["class_name"])], scores or [float(row["score"])], float(row["iou"]))
        return votes

    def add(self, names: Sequence[str], scores: Sequence[float], iou: float) -> None:
        for name, score in zip(names, scores):
            self.sums[name] += float(score)
        self.ious.append(float(iou))
        self.slices += 1

    def ranked(self) -> list[tuple[str, float]]:
        mean = {name: total / max(self.slices, 1) for name, total in self.sums.items()}
        return sorted(mean.items(), key=lambda item: -item[1])


def _rename(session: SliceSegmenter, group: CommitGroup, label_id: int, votes: _Votes) -> None:
    """Queue the object's new features row (named from all its slices) into the group."""
    if votes.slices <= 1 and votes.row is not None:
        return  # nothing propagated: the row stays
    ranked = votes.ranked()
    best, score = ranked[0] if ranked else (UNKNOWN_CLASS, 0.0)
    row = votes.row
    reviewed = bool(row is not None and row.get("reviewed", False))
    name = str(row["class_name"]) if reviewed and row is not None else session.name_for(best, score)
    score = dict(ranked).get(name, score)
    iou = float(np.nanmean(votes.ious)) if votes.ious else float("nan")
    new = features_row(
        label_id, name, score, iou, [n for n, _ in ranked[: session.top_k]],
        [s for _, s in ranked[: session.top_k]], reviewed=reviewed,
    )  # fmt: skip
    group.new_rows.append(new)
    if row is None:
        group.added_ids = (*group.added_ids, label_id)
    else:
        group.replaced_rows.append({k: row[k] for k in new})
