"""Segment and name everything: point-grid proposals, filters, class-aware NMS, one non-overlapping label image.

``AutomaticAnnotator(predictor).annotate(image)`` decodes a grid of single-point prompts on the image's cached
embedding in large batches, keeps the proposals whose predicted IoU, stability score (on the low-resolution
logits, before any upsampling) and class probabilities pass (the background class is OV-SAM's own
objectness), suppresses duplicates per class (``torchvision.ops.batched_nms``), and paints the survivors, best
first, into one label image where a later object takes only the pixels still free.

Fewer points are decoded than the grid holds: the grid is visited coarse to fine (every other row and column
first) and a point that falls inside an object already accepted is skipped, as its proposal would be that
object again. A tiled (large) image gets the same grid per tile side, and each point is decoded on its tile
(``OVSAMPredictor.predict``); duplicates across tile borders are suppressed in the image frame.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from ..prediction import crop_to_pixels
from .agreement import agreement
from .instances import Instances, class_names_of, empty_instances, label_boxes
from .painting import paint_instances
from .views import Decoded, TiledView, WholeView

Progress = Callable[[int, int], None]

# A coarse grid point whose proposal has at least this background probability marks its cell empty: fine
# points whose coarse neighbours are all empty are not decoded (``skip_empty``).
EMPTY_BACKGROUND = 0.9
# Kept proposals decoded again from their boxes per step (``refine``).
REFINE_CHUNK = 64
# Each side of a proposal's box is moved out by this fraction of its size before it is decoded again: a click's
# mask often misses the object's rim, and SAM-style box prompts tolerate a loose box better than a tight one.
REFINE_MARGIN = 0.1


@dataclass
class _Candidates:
    """Proposals that passed the filters, in the image frame; ``masks`` holds each one's mask in the form the
    painter takes: low-resolution logits (whole image) or a bool crop with its (row, col) offset (tiles)."""

    boxes: list[np.ndarray] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)
    stability: list[np.ndarray] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    masks: list[Any] = field(default_factory=list)

    def add(self, decoded: Decoded, rows: np.ndarray) -> None:
        """Keep the decoded points at ``rows``."""
        if len(rows) == 0:
            return
        self.boxes.append(decoded.boxes[rows])
        self.iou.append(decoded.iou[rows])
        self.stability.append(decoded.stability[rows])
        self.probabilities.append(decoded.probabilities[rows])
        self.masks.extend(decoded.masks[i] for i in rows)


class AutomaticAnnotator:
    """Propose, filter, name and resolve every object of an image with an ``OVSAMPredictor``.

    points_per_side: grid points along each side of the image (of each tile for a tiled image), visited coarse
    to fine. points_per_batch: prompts decoded at once. min_iou: lowest predicted IoU kept (0 by default: the
    demo model's IoU head hardly tells good masks from bad ones; SAM's own generator uses 0.88 with its SA-1B
    decoder). min_stability: lowest stability score (IoU of the mask thresholded at -1 and +1 logits).
    min_score: lowest probability of the named class. max_background: highest probability of the background
    class (objectness). nms_iou: box IoU above which the less confident of two proposals of the same class is
    dropped (of any classes with ``class_agnostic=True``). min_area: smallest object in pixels (objects left
    with less after overlaps are resolved, or with less than half their mask, are dropped). skip_covered: do not
    decode grid points inside objects already accepted (faster, but off by default: an object's agreement is
    measured on the proposals of its other points). skip_empty: do not decode fine grid points whose coarse
    neighbours all came out as confident background (probability >= ``EMPTY_BACKGROUND``). agreement: rank
    proposals by predicted IoU x class probability x the share of overlapping proposals that agree with their
    mask (``automatic.agreement``; False: without that share). refine: decode and name each proposal kept by
    NMS again from its box (a box prompt gives a better mask and name than a click; False keeps the click's).
    contain: when painting, an object found first that lies mostly inside a later, confident enough mask is
    taken as a fragment of it and gives its place to the whole (``automatic.painting``; False: first come,
    first served).
    multimask: decode 3 candidate masks per point and keep the one with the highest predicted IoU. top_k:
    alternatives kept per object.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        min_iou: float = 0.0,
        min_stability: float = 0.8,
        min_score: float = 0.1,
        max_background: float = 0.5,
        nms_iou: float = 0.5,
        min_area: int = 16,
        class_agnostic: bool = False,
        skip_covered: bool = False,
        skip_empty: bool = True,
        agreement: bool = True,
        refine: bool = True,
        contain: bool = True,
        multimask: bool = True,
        top_k: int = 3,
    ) -> None:
        for name, value, low in (
            ("points_per_side", points_per_side, 1),
            ("points_per_batch", points_per_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}.")
        for name, fraction in (
            ("min_iou", min_iou),
            ("min_stability", min_stability),
            ("min_score", min_score),
            ("max_background", max_background),
            ("nms_iou", nms_iou),
        ):
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, got {fraction!r}.")
        if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
            raise ValueError(f"min_area must be a whole number of pixels >= 0, got {min_area!r}.")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1 (alternatives per object), got {top_k!r}.")
        self.predictor = predictor
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.min_iou, self.min_stability, self.min_score = (
            float(min_iou),
            float(min_stability),
            float(min_score),
        )
        self.max_background, self.nms_iou = float(max_background), float(nms_iou)
        self.min_area = int(min_area)
        self.class_agnostic, self.skip_covered, self.multimask = class_agnostic, skip_covered, multimask
        self.skip_empty, self.agreement, self.refine = skip_empty, agreement, refine
        self.contain = contain
        self.top_k = int(top_k)
        self.decoded_points = 0  # grid points decoded by the last ``annotate`` (the others were skipped)

    def settings(self) -> dict[str, Any]:
        """The keyword arguments this annotator was made with (what a server is asked to annotate with)."""
        return {name: getattr(self, name) for name in annotator_defaults()}

    @torch.no_grad()
    def annotate(
        self,
        image: Any = None,
        classes: Sequence[str] | str | None = None,
        *,
        contrast_limits: Sequence[float] | None = None,
        progress: Progress | None = None,
    ) -> Instances:
        """Every object of ``image`` (default: the image the predictor holds), named from its vocabulary.

        classes: keep only objects whose best class (all the vocabulary's classes competing) is one of these
        ("find all nucleus"); None keeps every class. progress(done, total) is called after each batch of
        grid points (raise in it to cancel). Returns ``Instances`` in the original-image frame.
        """
        predictor = self.predictor
        if image is not None:
            _check_not_empty(image)
            predictor.set_image(image, contrast_limits)
        if predictor.original_size is None:
            raise ValueError("No image: give annotate(image) or call predictor.set_image(image) first.")
        if getattr(predictor, "remote", False):  # a served model: the server annotates, with these settings
            return predictor.annotate(self.settings(), classes)
        vocabulary = predictor.vocabulary
        if vocabulary is None:
            raise ValueError(
                "No vocabulary: call predictor.set_vocabulary([...]) with the class names first."
            )
        names = class_names_of(predictor)
        allowed = class_indices(names, classes)
        size = predictor.original_size
        view = TiledView(predictor) if predictor.tiles is not None else WholeView(predictor)
        found = self._propose(view, progress)
        if not found.boxes:
            return empty_instances(size, names, self.top_k)
        boxes = torch.from_numpy(np.concatenate(found.boxes)).float()
        iou = np.concatenate(found.iou)
        probabilities = _widen(np.concatenate(found.probabilities), len(names))
        class_ids = probabilities[:, :-1].argmax(axis=1)
        scores = probabilities[np.arange(len(class_ids)), class_ids]
        agree = agreement(view.kind, found.masks, boxes.numpy()) if self.agreement else np.ones(len(iou))
        confidence = (iou * scores * agree).astype(np.float32)
        groups = torch.zeros(len(class_ids), dtype=torch.int64)
        if not self.class_agnostic:
            groups = torch.from_numpy(class_ids.astype(np.int64))
        keep = batched_nms(boxes, torch.from_numpy(confidence), groups, self.nms_iou).numpy()  # best first
        kind, masks = view.kind, [found.masks[i] for i in keep]
        if self.refine:
            masks, probabilities[keep] = self._refine(boxes[keep].numpy(), len(names))
            kind = "crops"
            confidence[keep] = iou[keep] * probabilities[keep, :-1].max(axis=1) * agree[keep]
        named = probabilities[keep, :-1].argmax(axis=1)  # all classes compete; then only the asked-for stay
        wanted = np.flatnonzero(np.ones(len(keep), bool) if allowed is None else np.isin(named, allowed))
        order = wanted[np.argsort(-confidence[keep[wanted]], kind="stable")]
        masks, keep = [masks[i] for i in order], keep[order]
        labels, kept = paint_instances(
            predictor, masks, kind, size, self.min_area, confidence[keep] if self.contain else None
        )
        rows = keep[kept]
        return _instances(
            labels,
            rows,
            names,
            probabilities,
            iou,
            np.concatenate(found.stability),
            confidence,
            self.top_k,
        )

    def _refine(
        self, boxes: np.ndarray, k: int
    ) -> tuple[list[tuple[np.ndarray, tuple[int, int]]], np.ndarray]:
        """Decode and name the boxes (image frame) of the kept proposals as box prompts: a box gives a better mask
        and name than a click. Returns (bool crops with their (row, col) offsets, (n, K + 1) probabilities)."""
        crops: list[tuple[np.ndarray, tuple[int, int]]] = []
        probabilities = np.zeros((len(boxes), k + 1), np.float32)
        h, w = self.predictor.original_size
        margin = REFINE_MARGIN * np.maximum(boxes[:, 2:] - boxes[:, :2], 1)
        boxes = np.concatenate([boxes[:, :2] - margin, boxes[:, 2:] + margin], axis=1)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        for start in range(0, len(boxes), REFINE_CHUNK):
            out = self.predictor.predict(boxes=boxes[start : start + REFINE_CHUNK], top_k=k)
            probabilities[start : start + len(out)] = out.probabilities(k)
            if isinstance(out.masks, np.ndarray):
                crops.extend(_crop(mask[0]) for mask in out.masks)
            else:
                crops.extend(
                    (c[0], (int(r), int(col))) for c, (r, col) in zip(out.masks.crops, out.masks.offsets)
                )
        return crops, probabilities

    # ------------------------------------------------------------------ proposals
    def _propose(self, view: WholeView | TiledView, progress: Progress | None) -> _Candidates:
        """Decode the grid coarse to fine: every other row and column first, then the remaining points, less
        those inside accepted objects (``skip_covered``) and those whose coarse neighbours all decoded as
        confident background (``skip_empty``)."""
        points, cells, shape = view.grid(self.points_per_side)
        coarse = (cells % 2 == 0).all(axis=1)
        empty = np.zeros(shape, bool)  # coarse cells that came out confident background
        found = _Candidates()
        self.decoded_points, done, total = 0, 0, len(points)
        for phase in (np.flatnonzero(coarse), np.flatnonzero(~coarse)):
            for start in range(0, len(phase), self.points_per_batch):
                batch = phase[start : start + self.points_per_batch]
                if not coarse[batch[0]]:
                    batch = batch[self._worth_decoding(view, points[batch], cells[batch], empty)]
                if len(batch):
                    decoded = view.decode(points[batch], self.multimask)
                    self.decoded_points += len(batch)
                    passed = self._passes(decoded)
                    rows = np.flatnonzero(passed)
                    found.add(decoded, rows)
                    view.cover(decoded, rows)
                    if coarse[batch[0]]:
                        quiet = (decoded.probabilities[:, -1] >= EMPTY_BACKGROUND) & ~passed
                        empty[cells[batch, 0], cells[batch, 1]] = quiet
                done += len(phase[start : start + self.points_per_batch])
                if progress is not None:
                    progress(done, total)
        return found

    def _worth_decoding(
        self,
        view: WholeView | TiledView,
        points: np.ndarray,
        cells: np.ndarray,
        empty: np.ndarray,
    ) -> np.ndarray:
        """Bool (n,): fine grid points not inside an accepted object and not surrounded by empty coarse cells."""
        keep = np.ones(len(points), bool)
        if self.skip_covered:
            keep &= ~view.is_covered(points)
        if self.skip_empty:
            rows, cols = empty.shape
            quiet = np.ones((rows + 2, cols + 2), bool)  # True where a neighbour does not object
            is_coarse = np.zeros(empty.shape, bool)
            is_coarse[::2, ::2] = True
            quiet[1:-1, 1:-1] = empty | ~is_coarse
            around = np.ones(len(points), bool)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    around &= quiet[cells[:, 0] + 1 + dr, cells[:, 1] + 1 + dc]
            keep &= ~around
        return keep

    # ------------------------------------------------------------------ filters
    def _passes(self, decoded: Decoded) -> np.ndarray:
        """Bool (n,): a mask of at least ``min_area`` pixels whose predicted IoU, stability, class probability and
        background probability all pass."""
        foreground = decoded.probabilities[:, :-1]
        best = foreground.argmax(axis=1)
        score = foreground[np.arange(len(best)), best]
        passed = (decoded.areas >= max(self.min_area, 1)) & (decoded.iou >= self.min_iou)
        passed &= decoded.stability >= self.min_stability
        passed &= (score >= self.min_score) & (decoded.probabilities[:, -1] <= self.max_background)
        return passed


def annotator_defaults() -> dict[str, Any]:
    """``AutomaticAnnotator``'s keyword defaults by name: the one place command lines, the evaluation and the
    widget take theirs from."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(AutomaticAnnotator).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _widen(probabilities: np.ndarray, k: int) -> np.ndarray:
    """(n, K' + 1) text probabilities (background last) as (n, k + 1): classes with examples only get 0
    until the refinement names the proposals from text and examples."""
    if probabilities.shape[1] == k + 1:
        return probabilities
    out = np.zeros((len(probabilities), k + 1), np.float32)
    out[:, : probabilities.shape[1] - 1] = probabilities[:, :-1]
    out[:, -1] = probabilities[:, -1]
    return out


def class_indices(names: Sequence[str], classes: Sequence[str] | str | None) -> np.ndarray | None:
    """Indices of ``classes`` in the vocabulary's ``names`` (None: all); a ValueError names any unknown one."""
    if classes is None:
        return None
    wanted = [classes] if isinstance(classes, str) else list(classes)
    if not wanted:
        raise ValueError("classes is empty: give at least one class name, or None for every class.")
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ValueError(
            f"The vocabulary has no class {', '.join(repr(c) for c in unknown)}; its classes are "
            f"{', '.join(names)}. Add it to the vocabulary (predictor.set_vocabulary) or pick one of these."
        )
    return np.array([names.index(c) for c in wanted], np.int64)


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """A full-size bool mask as (a copy of its crop to its pixels, (row, col) offset); an empty one as 0 x 0."""
    crop, offset = crop_to_pixels(mask)
    return crop.copy(), offset


def _check_not_empty(image: Any) -> None:
    shape = getattr(image, "shape", None)
    if shape is None:
        shape = np.asarray(image).shape
    if len(shape) < 2 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(
            f"The image is empty (shape {tuple(shape)}): give an (H, W) or (H, W, C) array with pixels."
        )


def _instances(
    labels: np.ndarray,
    rows: np.ndarray,
    names: list[str],
    probabilities: np.ndarray,
    iou: np.ndarray,
    stability: np.ndarray,
    confidence: np.ndarray,
    top_k: int,
) -> Instances:
    """``Instances`` of the painted proposals ``rows`` (label ids 1..n in that order)."""
    n = len(rows)
    foreground = probabilities[rows, :-1]
    k = min(top_k, foreground.shape[1])
    order = np.argsort(-foreground, axis=1, kind="stable")[:, :k]
    topk_scores = np.take_along_axis(foreground, order, axis=1).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    return Instances(
        labels=labels,
        ids=ids,
        boxes=label_boxes(labels, n),
        class_ids=order[:, 0].astype(np.int64),
        class_names=[names[i] for i in order[:, 0]],
        scores=topk_scores[:, 0].copy(),
        iou=iou[rows].astype(np.float32),
        stability=stability[rows].astype(np.float32),
        background=probabilities[rows, -1].astype(np.float32),
        confidence=confidence[rows],
        topk_names=[[names[i] for i in row] for row in order],
        topk_scores=topk_scores,
        names=list(names),
    )
