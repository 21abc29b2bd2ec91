"""A predictor that remembers its single-point decodes, so that several automatic runs on one image decode each
grid point once.

The automatic protocol annotates every image several times (class-aware and class-agnostic NMS, "find all"
for each class, and the threshold search of the quality benchmark a few dozen times): all of them decode
points of the same grid on the same embedding, and only the filters after decoding differ. ``CachedDecoder``
wraps an ``OVSAMPredictor`` for one image: its ``predict_torch`` decodes only the points it has not seen and
answers the others from memory; everything else is the wrapped predictor's.

It keeps what ``AutomaticAnnotator`` reads: the best mask of each point ([1, 4g, 4g] float32 logits, 256 KiB at
g = 64), its predicted IoU and its class probabilities; results equal the uncached ones up to the float
rounding of a different batch composition. A ``set_image`` (or another vocabulary) through it forgets them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..prediction import TorchPrediction
from ..prompts import PromptSet

# Predictor methods after which the remembered decodes are another image's or vocabulary's.
CHANGES_THE_DECODES = frozenset(
    {"set_image", "set_image_embedding", "set_tile_embedding", "set_vocabulary", "set_tiles"}
)


class CachedDecoder:
    """``predictor`` with its one-positive-point decodes remembered per (point, multimask) for one image.

    Prompts that are not one positive point each (boxes, several points) are decoded every time.
    ``decoded`` counts the points actually decoded, ``answered`` those answered from memory.
    """

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor
        self._store: dict[tuple[bool, bytes], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.decoded = 0
        self.answered = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._predictor, name)
        if name in CHANGES_THE_DECODES:
            return self._forgetting(attribute)
        return attribute

    def _forgetting(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._store.clear()  # another image or vocabulary: nothing remembered holds any more
            return method(*args, **kwargs)

        return call

    def predict_torch(
        self, features: Any, prompts: PromptSet, *, multimask_output: bool = False
    ) -> TorchPrediction:
        """``OVSAMPredictor.predict_torch`` for points [N, 1, 2] in the model-input frame, labels all 1;
        the result holds only the best mask per point (low_res_logits [N, 1, 4g, 4g], iou [N, 1])."""
        points, labels = prompts.points, prompts.point_labels
        if prompts.boxes is not None or points is None or labels is None or points.shape[1] != 1:
            return self._predictor.predict_torch(features, prompts, multimask_output=multimask_output)
        if not bool((labels == 1).all()):
            return self._predictor.predict_torch(features, prompts, multimask_output=multimask_output)
        flat = points[:, 0].detach().float().cpu().numpy()
        keys = [(bool(multimask_output), row.tobytes()) for row in flat]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        if missing:
            out = self._predictor.predict_torch(
                features,
                PromptSet(points[missing], labels[missing], None),
                multimask_output=multimask_output,
            )
            for j, i in enumerate(missing):
                self._store[keys[i]] = (
                    out.low_res_logits[j, :1].clone(),
                    out.iou[j, :1].clone(),
                    out.probabilities[j].clone(),
                )
        self.decoded += len(set(keys[i] for i in missing))
        self.answered += len(keys) - len(missing)
        rows = [self._store[key] for key in keys]
        return TorchPrediction(
            torch.stack([r[0] for r in rows]),
            torch.stack([r[1] for r in rows]),
            torch.stack([r[2] for r in rows]),
        )
