"""The GT-prompt protocol: every ground-truth instance is one prompt (its box, or one interior point).

Per-instance IoU at the original resolution and top-1 accuracy, averaged over all instances (not per class or
image), split into base (seen) and novel classes, as in the paper's Table 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data.coco import interior_point
from ..data.transforms import masks_to_boxes

PROMPT_KINDS = ("box", "point")


def mask_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of paired masks: pred, gt bool (N, H, W) -> (N,) float64 (empty union counts as IoU 0)."""
    inter = np.logical_and(pred, gt).reshape(len(gt), -1).sum(1)
    union = np.logical_or(pred, gt).reshape(len(gt), -1).sum(1)
    return inter / np.maximum(union, 1)


class GTPromptEvaluator:
    """Accumulates per-instance IoU and correctness; ``reset()`` / ``process()`` / ``evaluate()``."""

    def __init__(self, class_names: list[str], novel_classes: Iterable[str] = ()) -> None:
        self.class_names = list(class_names)
        novel = set(novel_classes)
        self.is_novel = np.array([n in novel for n in self.class_names], dtype=bool)
        self.reset()

    def reset(self) -> None:
        self._ious: list[np.ndarray] = []
        self._correct: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def process(
        self, gt_masks: np.ndarray, gt_labels: np.ndarray, pred_masks: np.ndarray, pred_labels: np.ndarray
    ) -> None:
        """gt_masks / pred_masks bool (N, H, W); gt_labels / pred_labels int (N,), paired by prompt."""
        self._ious.append(mask_ious(pred_masks, gt_masks))
        self._correct.append(np.asarray(pred_labels) == np.asarray(gt_labels))
        self._labels.append(np.asarray(gt_labels))

    def evaluate(self) -> dict[str, float]:
        """miou and acc (in %) over all instances, plus base_/novel_ variants where instances exist."""
        if not self._ious:
            return {"count": 0}
        ious, correct = np.concatenate(self._ious), np.concatenate(self._correct)
        novel = self.is_novel[np.concatenate(self._labels)]
        out: dict[str, float] = {
            "count": int(len(ious)),
            "miou": float(ious.mean()),
            "acc": float(100 * correct.mean()),
        }
        for name, select in (("base", ~novel), ("novel", novel)):
            if select.any() and self.is_novel.any():
                out[f"{name}_iou"] = float(ious[select].mean())
                out[f"{name}_acc"] = float(100 * correct[select].mean())
        return out


def gt_prompts(masks: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """Prompts for GT masks (M, H, W): boxes (M, 4) XYXY, or one interior point each (M, 1, 2) (x, y)."""
    if kind == "box":
        return {"boxes": masks_to_boxes(masks).numpy()}
    if kind == "point":
        points = np.array([interior_point(m) for m in masks], dtype=np.float32)[:, None]
        return {"points": points, "point_labels": np.ones(points.shape[:2], np.float32)}
    raise ValueError(f"Unknown prompt kind '{kind}'; use one of {PROMPT_KINDS}.")


def evaluate_gt_prompts(
    predictor,
    dataset,
    *,
    prompt: str = "box",
    novel_classes: Iterable[str] = (),
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the GT-prompt protocol with any predictor of the ``OVSAMPredictor`` interface.

    dataset: a ``CocoInstanceDataset`` (its ``load_original``), whose class names index the predictor's
    vocabulary. Returns ``GTPromptEvaluator.evaluate()``.
    """
    evaluator = GTPromptEvaluator(dataset.class_names, novel_classes)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in tqdm(range(count), disable=not progress, desc=f"GT {prompt}s"):
        item = dataset.load_original(index)
        if len(item["masks"]) == 0:
            continue
        predictor.set_image(item["image"], contrast_limits=(0.0, 255.0))  # already 0..255 model input
        result = predictor.predict(**gt_prompts(item["masks"], prompt), multimask_output=False)
        evaluator.process(item["masks"], item["labels"], result.masks[:, 0], result.class_ids)
    return evaluator.evaluate()
