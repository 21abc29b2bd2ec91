"""Naming existing labels (from Cellpose, StarDist, a threshold, a previous run): each label's box is the prompt.

``name_labels(predictor, label_image)`` names every label from the predictor's vocabulary, with its score and
alternatives, keeping the user's label ids and masks as they are; ``refine=True`` replaces each mask by the
model's mask for its box (only over background or the label's own pixels, never over a neighbour). Labels are
named ``chunk_size`` at a time from their bounding boxes, so thousands of labels stay in bounded memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..prediction import CompactMasks
from .annotator import Progress, _check_not_empty
from .instances import Instances, class_names_of, empty_instances, label_boxes

# Labels named per step.
CHUNK_SIZE = 256


@torch.no_grad()
def name_labels(
    predictor: Any,
    label_image: Any,
    *,
    image: Any = None,
    refine: bool = False,
    top_k: int = 3,
    contrast_limits: Sequence[float] | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> Instances:
    """Name every label of an (H, W) integer ``label_image`` (0 = background) on the predictor's image.

    image: encode this image first (default: the image the predictor holds, which must have the labels'
    shape). refine: replace each mask by the model's mask for the label's box. Returns ``Instances`` whose
    ``labels`` is a copy of the label image (refined where asked) with the user's ids; the input is never
    changed. progress(done, total) after each chunk of labels.
    """
    labels = _check_labels(label_image)
    if image is not None:
        _check_not_empty(image)
        predictor.set_image(image, contrast_limits)
    if predictor.original_size is None:
        raise ValueError(
            "No image: give name_labels(..., image=image) or call predictor.set_image(image) first."
        )
    if tuple(predictor.original_size) != labels.shape:
        raise ValueError(
            f"The labels are {labels.shape[1]}x{labels.shape[0]} pixels but the image is "
            f"{predictor.original_size[1]}x{predictor.original_size[0]}: choose the labels made for this image."
        )
    if predictor.vocabulary is None:
        raise ValueError("No vocabulary: call predictor.set_vocabulary([...]) with the class names first.")
    if getattr(predictor, "remote", False):  # a served model: the server names them
        return predictor.name_labels(labels, refine=refine, top_k=top_k)
    names = class_names_of(predictor)
    ids, compact = _compact(labels)
    if len(ids) == 0:
        return empty_instances(labels.shape, names, top_k)
    boxes = label_boxes(compact, len(ids))
    k = len(names)
    probabilities = np.zeros((len(ids), k + 1), np.float32)
    iou = np.full(len(ids), np.nan, np.float32)
    out_labels = labels.copy()
    for start in range(0, len(ids), chunk_size):
        rows = slice(start, start + chunk_size)
        if refine or predictor.tiles is not None:
            result = predictor.predict(boxes=boxes[rows], top_k=k)
            probabilities[rows] = result.probabilities(k)
            if refine:
                iou[rows] = result.iou[:, 0]
                _refine(
                    out_labels, compact, ids[rows], np.arange(start, start + len(result)) + 1, result.masks
                )
        else:
            text = _box_probabilities(predictor, boxes[rows])
            if len(names) + 1 == text.shape[1] and not len(getattr(predictor, "examples", ())):
                probabilities[rows] = text
            else:  # named from text and examples, the examples measured on the labels' own masks
                masks = _label_masks(compact, boxes[rows], np.arange(start, start + len(text)) + 1)
                probabilities[rows] = predictor.fuse_examples(text, masks)[0]
        if progress is not None:
            progress(min(start + chunk_size, len(ids)), len(ids))
    foreground = probabilities[:, :-1]
    order = np.argsort(-foreground, axis=1, kind="stable")[:, : min(top_k, k)]
    topk_scores = np.take_along_axis(foreground, order, axis=1)
    final_boxes = boxes if not refine else label_boxes(*_compact_known(out_labels, ids))
    return Instances(
        labels=out_labels,
        ids=ids.astype(np.int64),
        boxes=final_boxes,
        class_ids=order[:, 0].astype(np.int64),
        class_names=[names[i] for i in order[:, 0]],
        scores=topk_scores[:, 0].copy(),
        iou=iou,
        stability=np.full(len(ids), np.nan, np.float32),
        background=probabilities[:, -1].copy(),
        confidence=topk_scores[:, 0].copy(),
        topk_names=[[names[i] for i in row] for row in order],
        topk_scores=topk_scores.astype(np.float32),
        names=names,
    )


def _check_labels(label_image: Any) -> np.ndarray:
    """An (H, W) integer or bool array of labels >= 0, else a ValueError that says what to give."""
    labels = np.asarray(label_image)
    if labels.ndim != 2:
        raise ValueError(
            f"The labels have shape {labels.shape}: give one (H, W) label image (for a stack, one slice)."
        )
    if labels.dtype == bool:
        labels = labels.astype(np.int32)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"The labels are {labels.dtype}: give an integer label image (0 = background, one id per object); "
            "a probability map must be thresholded and labelled first (e.g. skimage.measure.label)."
        )
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"The labels hold a negative id ({int(labels.min())}): ids are 0 (background) or more."
        )
    return labels


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the N ids present, sorted; an int32 image of 0 and 1..N), whatever the ids' size (huge ids are fine)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int32)
    if ids.size and ids[0] == 0:
        return ids[1:], inverse
    return ids, inverse + 1


def _compact_known(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """An int32 image of 1..N for the N ``ids`` (other values 0), and N."""
    position = np.searchsorted(ids, labels)
    position = np.clip(position, 0, len(ids) - 1)
    known = ids[position] == labels
    return np.where(known, position + 1, 0).astype(np.int32), len(ids)


def _box_probabilities(predictor: Any, boxes: np.ndarray) -> np.ndarray:
    """float32 (n, K + 1) class probabilities (background last) of regions named from their boxes on an image
    encoded whole: the region head alone, no mask decoding."""
    model = predictor.model
    (h, w), (hi, wi) = predictor.original_size, predictor.input_size
    scale = np.array([wi / w, hi / h, wi / w, hi / h], np.float32)
    rois = torch.from_numpy(boxes * scale).to(predictor.device)
    head, clip = model.region_embeddings(predictor.features, rois)
    probabilities = model.classify(head, clip, predictor.text_embeddings, predictor.seen)
    return probabilities.float().cpu().numpy()


def _label_masks(compact: np.ndarray, boxes: np.ndarray, positions: np.ndarray) -> CompactMasks:
    """The masks of labels ``positions`` of the compact label image, cropped to their XYXY boxes."""
    crops, offsets = [], []
    for (x0, y0, x1, y1), position in zip(boxes.astype(np.int64), positions):
        crops.append((compact[y0:y1, x0:x1] == position)[None])
        offsets.append((y0, x0))
    return CompactMasks(crops, np.array(offsets, np.int64).reshape(-1, 2), compact.shape, 1)


def _refine(
    labels: np.ndarray, compact: np.ndarray, ids: np.ndarray, positions: np.ndarray, masks: Any
) -> None:
    """Replace each label's pixels by its predicted mask where the mask covers background or the label itself;
    a label whose mask comes out empty keeps its pixels. Pixels of other labels are never taken."""
    for i, (label_id, position) in enumerate(zip(ids, positions)):
        mask = np.asarray(masks[i][0])
        if not mask.any():
            continue
        labels[compact == position] = 0
        labels[mask & (labels == 0)] = label_id
