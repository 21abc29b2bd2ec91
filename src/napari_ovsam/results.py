"""``ObjectResults``: the objects the model predicted on one slice (the preview, and what a commit paints).

No Qt, no napari. Masks are bool (N, H, W) in (row, col) pixels of the slice; slices are named by
``slice_index``, the tuple of leading indices (``()`` for 2D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import features_row
from .prompts import ObjectPrompt

SliceIndex = tuple[int, ...]


@dataclass
class ObjectResults:
    """Predicted objects on one slice (the preview, and what a commit paints).

    Attributes:
        slice_index: the slice the prompts were on.
        masks: bool (N, H, W), (row, col) pixels of the slice.
        class_names: N names, ``unknown`` where the score is below the session's threshold.
        scores, iou: float32 (N,): probability of the best class, predicted mask IoU.
        topk_names, topk_scores: N lists of k alternatives (best first) and float32 (N, k) probabilities.
        prompts: the N object prompts (model (x, y) pixels). messages: what was ignored and why.
        latency_ms: decode time (embedding restore + prompt decoding + naming).
    """

    slice_index: SliceIndex
    masks: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    iou: np.ndarray
    topk_names: list[list[str]]
    topk_scores: np.ndarray
    prompts: list[ObjectPrompt] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    latency_ms: float = 0.0

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
        masks = self.masks if region is None else self.masks[(slice(None), *region)]
        image = np.zeros(masks.shape[-2:], dtype=dtype)
        for i in range(len(masks) - 1, -1, -1):
            image[masks[i]] = i + 1
        return image

    @classmethod
    def empty(cls, slice_index: SliceIndex, image_hw: tuple[int, int]) -> ObjectResults:
        zeros = np.zeros(0, np.float32)
        return cls(slice_index, np.zeros((0, *image_hw), bool), [], zeros, zeros, [], np.zeros((0, 0)))
