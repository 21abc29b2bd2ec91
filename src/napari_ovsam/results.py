"""``ObjectResults``: the objects the model predicted on one slice (the preview, and what a commit paints).

No Qt, no napari. Masks are bool (N, H, W) in (row, col) pixels of the slice, dense, or for tiled (large)
slices :class:`CroppedMasks` (each object cropped to its bounding box); slices are named by ``slice_index``,
the tuple of leading indices (``()`` for 2D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import features_row
from .prompts import ObjectPrompt

SliceIndex = tuple[int, ...]
# The most bytes np.asarray(CroppedMasks) allocates before refusing (paint the crops instead).
MAX_DENSE_BYTES = 1 << 30


class CroppedMasks:
    """N objects' masks of one (H, W) slice, each cropped to its bounding box: the mask form of tiled slices,
    where N full-size masks would not fit in memory.

    crops: N bool (h_i, w_i) arrays ((0, 0) for an empty mask); offsets: int64 (N, 2), the (row, col) of each
    crop's top-left pixel in the slice; image_size: (H, W). ``masks[i]`` is object i's full-size (H, W) mask;
    ``np.asarray(masks)`` all of them (refused above ``MAX_DENSE_BYTES``).
    """

    dtype = np.dtype(bool)
    ndim = 3

    def __init__(self, crops: Sequence[np.ndarray], offsets: np.ndarray, image_size: tuple[int, int]) -> None:
        self.crops = [np.asarray(c, bool) for c in crops]
        self.offsets = np.asarray(offsets, np.int64).reshape(len(self.crops), 2)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.crops), *self.image_size)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            out = np.zeros(self.image_size, bool)
            crop, (r, c) = self.crops[int(index)], self.offsets[int(index)]
            out[r : r + crop.shape[0], c : c + crop.shape[1]] = crop
            return out
        return np.asarray(self)[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        n, h, w = self.shape
        if n * h * w > MAX_DENSE_BYTES:
            raise ValueError(
                f"{n} full-size masks of this {w}x{h} slice need {n * h * w / 2**30:.1f} GiB: use their crops "
                "(masks.crops, masks.offsets), or paint them (painting.paint_cropped_masks)."
            )
        out = np.stack([self[i] for i in range(n)]) if n else np.zeros(self.shape, bool)
        return out if dtype is None else out.astype(dtype)

    def boxes(self) -> list[tuple[int, int, int, int] | None]:
        """Per object (row0, row1, col0, col1) of its crop (half-open), None for an empty mask."""
        return [
            None if not c.any() else (int(r), int(r) + c.shape[0], int(k), int(k) + c.shape[1])
            for c, (r, k) in zip(self.crops, self.offsets)
        ]

    def bbox(self) -> tuple[int, int, int, int] | None:
        """(row0, row1, col0, col1) around every object, None when all are empty."""
        boxes = [b for b in self.boxes() if b is not None]
        if not boxes:
            return None
        return (
            min(b[0] for b in boxes),
            max(b[1] for b in boxes),
            min(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def label_image(self, region: tuple[slice, slice], dtype: Any = np.uint32) -> np.ndarray:
        """The (rows, cols) ``region`` of the slice with object i painted as i + 1, the first on top."""
        rows, cols = region
        r0, c0 = rows.start or 0, cols.start or 0
        r1 = self.image_size[0] if rows.stop is None else rows.stop
        c1 = self.image_size[1] if cols.stop is None else cols.stop
        image = np.zeros((r1 - r0, c1 - c0), dtype=dtype)
        for i in range(len(self.crops) - 1, -1, -1):
            crop, (r, c) = self.crops[i], self.offsets[i]
            top, left = max(r, r0), max(c, c0)
            bottom, right = min(r + crop.shape[0], r1), min(c + crop.shape[1], c1)
            if bottom <= top or right <= left:
                continue
            part = crop[top - r : bottom - r, left - c : right - c]
            image[top - r0 : bottom - r0, left - c0 : right - c0][part] = i + 1
        return image


@dataclass
class ObjectResults:
    """Predicted objects on one slice (the preview, and what a commit paints).

    Attributes:
        slice_index: the slice the prompts were on.
        masks: bool (N, H, W), (row, col) pixels of the slice; :class:`CroppedMasks` on a tiled slice.
        class_names: N names, ``unknown`` where the score is below the session's threshold.
        scores, iou: float32 (N,): probability of the best class, predicted mask IoU.
        topk_names, topk_scores: N lists of k alternatives (best first) and float32 (N, k) probabilities.
        prompts: the N object prompts (model (x, y) pixels). messages: what was ignored and why.
        latency_ms: decode time (embedding restore + prompt decoding + naming).
        background: float32 (N,) probability of the background class (not an object), None when unknown.
    """

    slice_index: SliceIndex
    masks: np.ndarray | CroppedMasks
    class_names: list[str]
    scores: np.ndarray
    iou: np.ndarray
    topk_names: list[list[str]]
    topk_scores: np.ndarray
    prompts: list[ObjectPrompt] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    background: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.class_names)

    def feature_rows(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """One features row per object, for the label ids it will be painted with."""
        return [
            features_row(i, name, float(s), float(q), names, scores)
            for i, name, s, q, names, scores in zip(
                ids, self.class_names, self.scores, self.iou, self.topk_names, self.topk_scores
            )
        ]

    def label_image(self, region: tuple[slice, slice] | None = None, dtype: Any = np.uint32) -> np.ndarray:
        """(H, W) preview (or its (rows, cols) ``region``): object i painted with i + 1, the first object on top
        of later ones."""
        if isinstance(self.masks, CroppedMasks):
            return self.masks.label_image(region or (slice(None), slice(None)), dtype)
        masks = self.masks if region is None else self.masks[(slice(None), *region)]
        image = np.zeros(masks.shape[-2:], dtype=dtype)
        for i in range(len(masks) - 1, -1, -1):
            image[masks[i]] = i + 1
        return image

    @classmethod
    def empty(cls, slice_index: SliceIndex, image_hw: tuple[int, int]) -> ObjectResults:
        zeros = np.zeros(0, np.float32)
        return cls(slice_index, np.zeros((0, *image_hw), bool), [], zeros, zeros, [], np.zeros((0, 0)))
