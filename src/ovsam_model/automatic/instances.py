"""``Instances``: the objects of one image as a label image with a name, scores and alternatives per object.

What ``AutomaticAnnotator.annotate`` and ``name_labels`` return. The label image is the one place the masks
live (objects never overlap), so a thousand objects of a large image cost one integer image, and every
object's COCO RLE comes from one sort of its pixels (``ovsam_model.rle``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..rle import label_pixels, pixel_bbox, pixel_rle


@dataclass
class Instances:
    """N named objects of an (H, W) image.

    labels: int32 (H, W), 0 = background, object i's pixels hold ``ids[i]`` (objects do not overlap).
    ids: int64 (N,) label ids, one per row. boxes: float32 (N, 4) XYXY pixel bounds of each object's pixels in
    ``labels`` (end exclusive). class_ids: int64 (N,) indices into ``names``; class_names: N names; scores:
    float32 (N,) probability of the named class; iou: float32 (N,) the model's predicted IoU of the mask (NaN
    where no mask was decoded, e.g. ``name_labels`` without refining); stability: float32 (N,) the mask's
    stability score (NaN where none was computed); background: float32 (N,) probability of the background class;
    confidence: float32 (N,) the ranking score (what COCO's ``score`` gets: for proposals predicted IoU x class
    probability x agreement with the other proposals, see ``automatic.agreement``; for named labels the class
    probability); topk_names / topk_scores: N lists of k names and
    (N, k) their probabilities, best first; names: the vocabulary's class names.
    """

    labels: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    iou: np.ndarray
    stability: np.ndarray
    background: np.ndarray
    confidence: np.ndarray
    topk_names: list[list[str]]
    topk_scores: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.labels.shape[0]), int(self.labels.shape[1]))

    def mask(self, index: int) -> np.ndarray:
        """Full-size bool (H, W) mask of object ``index``."""
        return np.asarray(self.labels == self.ids[index])

    def areas(self) -> np.ndarray:
        """int64 (N,) pixels of each object in ``labels``."""
        counts = dict(zip(*np.unique(self.labels[self.labels > 0], return_counts=True)))
        return np.array([int(counts.get(i, 0)) for i in self.ids], np.int64)

    def select(self, keep: np.ndarray | Sequence[int]) -> Instances:
        """The objects at ``keep`` (indices or a bool (N,) array); the others' pixels become background."""
        index = np.arange(len(self))[np.asarray(keep)]
        kept = self.ids[index]
        labels = np.where(np.isin(self.labels, kept), self.labels, 0).astype(self.labels.dtype)
        return Instances(
            labels=labels,
            ids=kept,
            boxes=self.boxes[index],
            class_ids=self.class_ids[index],
            class_names=[self.class_names[i] for i in index],
            scores=self.scores[index],
            iou=self.iou[index],
            stability=self.stability[index],
            background=self.background[index],
            confidence=self.confidence[index],
            topk_names=[self.topk_names[i] for i in index],
            topk_scores=self.topk_scores[index],
            names=list(self.names),
        )

    def to_coco(
        self,
        image_id: int,
        *,
        category_ids: Mapping[str, int] | None = None,
        first_id: int = 1,
    ) -> list[dict[str, Any]]:
        """COCO annotations (results format plus names): one per object, in row order.

        Each has ``id`` (from ``first_id``), ``image_id``, ``category_id`` (``category_ids[name]``, default the
        class's position in ``names`` + 1, as ``coco_categories`` numbers them), ``segmentation`` (compressed
        RLE, counts as str), ``area``, ``bbox`` [x, y, w, h], ``score`` (the confidence), and ``class_name``,
        ``class_score``, ``iou``, ``alternatives`` ([[name, probability], ...]). An object left without pixels
        (painted over) has no annotation.
        """
        ids = category_ids if category_ids is not None else {n: i + 1 for i, n in enumerate(self.names)}
        missing = sorted(set(self.class_names) - set(ids))
        if missing:
            raise ValueError(
                f"category_ids has no id for {missing}: give every class name of the vocabulary an id."
            )
        row_of = {int(label_id): row for row, label_id in enumerate(self.ids)}
        height, width = self.image_size
        found = []
        for label_id, pixels in label_pixels(self.labels):
            row = row_of.get(label_id)
            if row is None:
                continue
            found.append((row, pixels))
        out: list[dict[str, Any]] = []
        for row, pixels in sorted(found, key=lambda item: item[0]):
            out.append(
                {
                    "id": first_id + len(out),
                    "image_id": int(image_id),
                    "category_id": int(ids[self.class_names[row]]),
                    "segmentation": pixel_rle(pixels, (height, width)),
                    "area": int(pixels.size),
                    "bbox": pixel_bbox(pixels, height),
                    "iscrowd": 0,
                    "score": _number(self.confidence[row]),
                    "class_name": self.class_names[row],
                    "class_score": _number(self.scores[row]),
                    "iou": _number(self.iou[row]),
                    "label_id": int(self.ids[row]),
                    "alternatives": [
                        [name, _number(p)] for name, p in zip(self.topk_names[row], self.topk_scores[row])
                    ],
                }
            )
        return out


def coco_categories(names: Sequence[str]) -> list[dict[str, Any]]:
    """COCO ``categories`` for class names: ids 1..K in order (what ``Instances.to_coco`` uses by default)."""
    return [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]


def empty_instances(image_size: tuple[int, int], names: Sequence[str], top_k: int = 1) -> Instances:
    """No objects on an image of ``image_size``."""
    k = max(1, min(top_k, len(names)))
    return Instances(
        labels=np.zeros(image_size, np.int32),
        ids=np.zeros(0, np.int64),
        boxes=np.zeros((0, 4), np.float32),
        class_ids=np.zeros(0, np.int64),
        class_names=[],
        scores=np.zeros(0, np.float32),
        iou=np.zeros(0, np.float32),
        stability=np.zeros(0, np.float32),
        background=np.zeros(0, np.float32),
        confidence=np.zeros(0, np.float32),
        topk_names=[],
        topk_scores=np.zeros((0, k), np.float32),
        names=list(names),
    )


def class_names_of(predictor: Any) -> list[str]:
    """The names a predictor names objects from: ``class_names`` (the vocabulary's, then classes with
    examples only) where it has them, else its vocabulary's."""
    names = getattr(predictor, "class_names", None)
    return list(predictor.vocabulary.names if names is None else names)


def label_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """float32 (n, 4) XYXY pixel bounds (end exclusive) of labels 1..n of a label image (zeros for a missing one)."""
    boxes = np.zeros((n, 4), np.float32)
    for i, where in enumerate(ndimage.find_objects(labels, max_label=n)):
        if where is not None:
            boxes[i] = (where[1].start, where[0].start, where[1].stop, where[0].stop)
    return boxes


def _number(value: Any) -> float | None:
    """A JSON number, None for NaN."""
    value = float(value)
    return None if np.isnan(value) else round(value, 6)
