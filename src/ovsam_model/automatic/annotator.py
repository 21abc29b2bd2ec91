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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from segment_anything.utils.amg import build_point_grid, calculate_stability_score
from torchvision.ops import batched_nms, masks_to_boxes

from ..prompts import PromptSet
from .instances import Instances, empty_instances
from .painting import paint_instances

Progress = Callable[[int, int], None]

# Mask logits offset of the stability score (SAM's default): the IoU of the masks thresholded at -1 and +1.
STABILITY_OFFSET = 1.0
# Resolution of the coverage map of a tiled image (the image is large: one cell per COVER_STRIDE pixels).
COVER_STRIDE = 4


@dataclass
class _Candidates:
    """Proposals that passed the filters, in the image frame; ``masks`` holds each one's mask in the form the
    painter takes: low-resolution logits (whole image) or a bool crop with its (row, col) offset (tiles)."""

    boxes: list[np.ndarray] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)
    stability: list[np.ndarray] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    masks: list[Any] = field(default_factory=list)


class AutomaticAnnotator:
    """Propose, filter, name and resolve every object of an image with an ``OVSAMPredictor``.

    points_per_side: grid points along each side of the image (of each tile for a tiled image); the grid is
    visited coarse to fine. points_per_batch: prompts decoded at once. min_iou: lowest predicted IoU kept;
    min_stability: lowest stability score (IoU of the mask thresholded at -1 and +1 logits); min_score: lowest
    probability of the named class; max_background: highest probability of the background class (objectness);
    nms_iou: box IoU above which the less confident of two proposals of the same class is dropped (all classes
    together with ``class_agnostic=True``); min_area: smallest object in pixels after overlaps are resolved
    (objects left with less, or with less than half their mask, are dropped); skip_covered: do not decode grid
    points inside objects already accepted; multimask: decode 3 candidate masks per point and keep the one
    with the highest predicted IoU; top_k: alternatives kept per object.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        min_iou: float = 0.6,
        min_stability: float = 0.8,
        min_score: float = 0.3,
        max_background: float = 0.5,
        nms_iou: float = 0.5,
        min_area: int = 16,
        class_agnostic: bool = False,
        skip_covered: bool = True,
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
        self.top_k = int(top_k)
        self.decoded_points = 0  # grid points decoded by the last ``annotate`` (the others were skipped)

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
        vocabulary = predictor.vocabulary
        if vocabulary is None:
            raise ValueError(
                "No vocabulary: call predictor.set_vocabulary([...]) with the class names first."
            )
        names = list(vocabulary.names)
        allowed = class_indices(names, classes)
        size = predictor.original_size
        if predictor.tiles is not None:
            found, masks_kind = self._propose_tiled(allowed, progress), "crops"
        else:
            found, masks_kind = self._propose_whole(allowed, progress), "logits"
        if not found.boxes:
            return empty_instances(size, names, self.top_k)
        boxes = torch.from_numpy(np.concatenate(found.boxes)).float()
        iou = np.concatenate(found.iou)
        probabilities = np.concatenate(found.probabilities)
        class_ids = probabilities[:, :-1].argmax(axis=1)
        scores = probabilities[np.arange(len(class_ids)), class_ids]
        confidence = (iou * scores).astype(np.float32)
        groups = torch.zeros(len(class_ids), dtype=torch.int64)
        if not self.class_agnostic:
            groups = torch.from_numpy(class_ids.astype(np.int64))
        keep = batched_nms(boxes, torch.from_numpy(confidence), groups, self.nms_iou).numpy()  # best first
        masks = [found.masks[i] for i in keep]
        labels, kept = paint_instances(predictor, masks, masks_kind, size, self.min_area)
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

    # ------------------------------------------------------------------ whole image
    def _propose_whole(self, allowed: np.ndarray | None, progress: Progress | None) -> _Candidates:
        """Grid points on an image encoded whole, decoded with ``predict_torch`` on its features."""
        predictor = self.predictor
        features = predictor.features
        (h, w), (hi, wi) = predictor.original_size, predictor.input_size
        image_side = predictor.model.config.image_size
        points = coarse_to_fine(build_point_grid(self.points_per_side), self.points_per_side)
        points_input = points * np.array([wi, hi], np.float32)  # (x, y) in the model-input frame
        covered: torch.Tensor | None = None
        found = _Candidates()
        self.decoded_points = 0
        for start in range(0, len(points), self.points_per_batch):
            batch = points_input[start : start + self.points_per_batch]
            if covered is not None and self.skip_covered:
                cells = np.clip(
                    (batch * covered.shape[-1] / image_side).astype(np.int64), 0, covered.shape[-1] - 1
                )
                batch = batch[~covered[cells[:, 1], cells[:, 0]].numpy()]
            if len(batch):
                self.decoded_points += len(batch)
                prompt = torch.from_numpy(batch).to(predictor.device)[:, None, :]
                labels = torch.ones(len(batch), 1, device=predictor.device)
                out = predictor.predict_torch(
                    features, PromptSet(prompt, labels, None), multimask_output=self.multimask
                )
                logits = out.low_res_logits[:, 0].float().cpu()
                probabilities = out.probabilities.float().cpu()
                stability = calculate_stability_score(logits, 0.0, STABILITY_OFFSET)
                passed = self._passes(out.iou[:, 0].float().cpu(), stability, probabilities, allowed)
                passed &= (logits > 0).flatten(1).any(dim=1)
                if passed.any():
                    chosen = logits[passed]
                    scale = image_side / chosen.shape[-1]
                    in_input = masks_to_boxes(chosen > 0) * scale
                    ratio = torch.tensor([w / wi, h / hi, w / wi, h / hi])
                    found.boxes.append((in_input * ratio).clamp_(min=0).numpy())
                    found.iou.append(out.iou[:, 0].float().cpu()[passed].numpy())
                    found.stability.append(stability[passed].numpy())
                    found.probabilities.append(probabilities[passed].numpy())
                    found.masks.extend(chosen.to(torch.float16))
                    covered = (
                        (chosen > 0).any(dim=0) if covered is None else covered | (chosen > 0).any(dim=0)
                    )
            if progress is not None:
                progress(min(start + self.points_per_batch, len(points)), len(points))
        return found

    # ------------------------------------------------------------------ tiled image
    def _propose_tiled(self, allowed: np.ndarray | None, progress: Progress | None) -> _Candidates:
        """Grid points at the spacing of ``points_per_side`` per tile side over a tiled image, each decoded on
        its tile by ``predictor.predict``; masks come back cropped to their boxes."""
        predictor = self.predictor
        h, w = predictor.original_size
        grid = predictor.tile_grid
        side = max(max(t.size) for t in grid) if grid else max(h, w)
        spacing = side / self.points_per_side
        xs = np.arange(spacing / 2, w, spacing, dtype=np.float32)
        ys = np.arange(spacing / 2, h, spacing, dtype=np.float32)
        columns, rows = len(xs), len(ys)
        order = coarse_to_fine_2d(rows, columns)
        points = np.stack([xs[order[:, 1]], ys[order[:, 0]]], axis=1)  # (x, y) image pixels
        covered = np.zeros((-(-h // COVER_STRIDE), -(-w // COVER_STRIDE)), bool)
        found = _Candidates()
        k = len(predictor.vocabulary.names)
        self.decoded_points = 0
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            if self.skip_covered:
                cells = (batch // COVER_STRIDE).astype(np.int64)
                batch = batch[~covered[cells[:, 1], cells[:, 0]]]
            if len(batch):
                self.decoded_points += len(batch)
                out = predictor.predict(
                    points=batch[:, None, :],
                    point_labels=np.ones((len(batch), 1), np.float32),
                    multimask_output=self.multimask,
                    top_k=k,
                )
                probabilities = np.zeros((len(batch), k + 1), np.float32)
                np.put_along_axis(probabilities, out.topk_ids, out.topk_scores, axis=1)
                probabilities[:, -1] = out.background
                logits = torch.from_numpy(out.low_res_logits[:, 0].astype(np.float32))
                stability = calculate_stability_score(logits, 0.0, STABILITY_OFFSET)
                iou = torch.from_numpy(out.iou[:, 0])
                passed = self._passes(iou, stability, torch.from_numpy(probabilities), allowed).numpy()
                for i in np.flatnonzero(passed):
                    crop, (r, c) = out.masks.crops[i][0], out.masks.offsets[i]
                    if not crop.any():
                        continue
                    found.masks.append((crop, (int(r), int(c))))
                    found.boxes.append(_crop_box(crop, int(r), int(c)))
                    found.iou.append(out.iou[i : i + 1, 0])
                    found.stability.append(stability[i : i + 1].numpy())
                    found.probabilities.append(probabilities[i : i + 1])
                    _cover(covered, crop, r, c)
            if progress is not None:
                progress(min(start + self.points_per_batch, len(points)), len(points))
        return found

    # ------------------------------------------------------------------ filters
    def _passes(
        self,
        iou: torch.Tensor,
        stability: torch.Tensor,
        probabilities: torch.Tensor,
        allowed: np.ndarray | None,
    ) -> torch.Tensor:
        """Bool (n,): predicted IoU, stability, class probability and background probability all pass, and
        the best class (over the whole vocabulary) is an allowed one."""
        foreground = probabilities[:, :-1]
        score, best = foreground.max(dim=1)
        passed = (iou >= self.min_iou) & (stability >= self.min_stability) & (score >= self.min_score)
        passed &= probabilities[:, -1] <= self.max_background
        if allowed is not None:
            passed &= torch.from_numpy(np.isin(best.numpy(), allowed))
        return passed


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


def coarse_to_fine(grid: np.ndarray, per_side: int) -> np.ndarray:
    """The (per_side^2, 2) grid of ``build_point_grid`` reordered: every other row and column first."""
    order = coarse_to_fine_2d(per_side, per_side)
    return grid[order[:, 0] * per_side + order[:, 1]].astype(np.float32)


def coarse_to_fine_2d(rows: int, columns: int) -> np.ndarray:
    """(rows x columns, 2) (row, col) cells: even rows and columns first, then the rest, row by row."""
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    cells = np.stack([r.ravel(), c.ravel()], axis=1)
    coarse = (cells[:, 0] % 2 == 0) & (cells[:, 1] % 2 == 0)
    return np.concatenate([cells[coarse], cells[~coarse]])


def _crop_box(crop: np.ndarray, r: int, c: int) -> np.ndarray:
    """float32 (1, 4) XYXY image-frame bounds (end exclusive) of a non-empty bool crop at (r, c)."""
    ys, xs = np.nonzero(crop)
    return np.array([[c + xs.min(), r + ys.min(), c + xs.max() + 1, r + ys.max() + 1]], np.float32)


def _cover(covered: np.ndarray, crop: np.ndarray, r: int, c: int) -> None:
    """Mark the coverage cells (``COVER_STRIDE`` pixels each) of a bool crop at (r, c)."""
    ys, xs = np.nonzero(crop)
    covered[(ys + r) // COVER_STRIDE, (xs + c) // COVER_STRIDE] = True


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
        boxes=_label_boxes(labels, n),
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


def _label_boxes(labels: np.ndarray, n: int) -> np.ndarray:
    """float32 (n, 4) XYXY bounds (end exclusive) of labels 1..n."""
    boxes = np.zeros((n, 4), np.float32)
    for i, where in enumerate(ndimage.find_objects(labels, max_label=n)):
        if where is not None:
            boxes[i] = (where[1].start, where[0].start, where[1].stop, where[0].stop)
    return boxes
