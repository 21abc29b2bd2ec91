"""What a predictor answers: ``Prediction`` (numpy, original-image frame) and the step that builds it.

One owner for the result type and its assembly, shared by ``OVSAMPredictor`` and the SAM + CLIP baselines, so
that every predictor names, ranks and returns objects the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

NO_IMAGE = "No image is set: call predictor.set_image(image) before predict()."
NO_VOCABULARY = "No vocabulary is set: call predictor.set_vocabulary(['class a', 'class b, synonym', ...])."


@dataclass
class Prediction:
    """Result of ``OVSAMPredictor.predict`` for N prompts (objects).

    masks: bool (N, M, H, W) at the original image size; M = 3 with multimask output, else 1; sorted by
        predicted IoU, best first. iou: float32 (N, M). class_ids: int64 (N,) indices into the vocabulary;
        class_names: N names; scores: float32 (N,) probability of the named class; topk_ids / topk_scores:
        (N, k) best classes and their probabilities; topk_names: N lists of k names; low_res_logits: float16
        (N, M, 4g, 4g) mask logits in the padded model-input frame (g = embedding grid; float16 halves what
        thousands of prompts hold, and the masks are thresholded from the float32 logits before rounding).
    """

    masks: np.ndarray
    iou: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    topk_ids: np.ndarray
    topk_scores: np.ndarray
    topk_names: list[list[str]]
    low_res_logits: np.ndarray

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass
class TorchPrediction:
    """The torch form of ``Prediction`` (no masks at original size): see ``OVSAMPredictor.predict_torch``.

    low_res_logits: [N, M, 4g, 4g]; iou: [N, M]; probabilities: [N, K + 1], background last.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    probabilities: torch.Tensor


def check_top_k(top_k: object) -> int:
    """``top_k`` (alternatives per object) as a whole number >= 1, else a ValueError; it is capped at K later."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1 (alternatives per object), got {top_k!r}.")
    return int(top_k)


def to_prediction(
    masks: np.ndarray,
    iou: torch.Tensor,
    low_res_logits: torch.Tensor,
    class_probabilities: torch.Tensor,
    names: Sequence[str],
    top_k: int,
) -> Prediction:
    """Rank the classes of N objects and return them as a ``Prediction``.

    masks: bool (N, M, H, W); iou: [N, M]; low_res_logits: [N, M, 4g, 4g] (stored as float16);
    class_probabilities: [N, K] over the vocabulary's classes only (no background column); names: K class
    names; top_k: alternatives kept per object (at most K).
    """
    k = min(top_k, class_probabilities.shape[1])
    topk_scores, topk_ids = class_probabilities.topk(k, dim=1)
    ids = topk_ids.cpu().numpy().astype(np.int64)
    return Prediction(
        masks=masks,
        iou=iou.float().cpu().numpy(),
        class_ids=ids[:, 0].copy(),
        class_names=[names[i] for i in ids[:, 0]],
        scores=topk_scores[:, 0].float().cpu().numpy(),
        topk_ids=ids,
        topk_scores=topk_scores.float().cpu().numpy(),
        topk_names=[[names[i] for i in row] for row in ids],
        low_res_logits=low_res_logits.to(torch.float16).cpu().numpy(),
    )
