"""Scoring a model on the held-out objects of a fine-tuning set: each object's box is the prompt (the GT-prompt
protocol of ``ovsam_model.evaluation.gt_prompts``), its mask is compared with the true one (IoU at the
image's own size) and its name with the true class.

A predicted name outside the set's classes (background, or an exemplar-only class) counts as wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..evaluation.gt_prompts import GTPromptEvaluator, gt_prompts
from .dataset import FinetuneSet, ObjectRef, model_input, object_masks


@dataclass(frozen=True)
class Scores:
    """Held-out scores: ``count`` objects; ``miou`` in 0..1 and ``accuracy`` in % over all of them; the same
    over the objects of new classes (``new_*``; None when none is held out)."""

    count: int
    miou: float
    accuracy: float
    new_count: int = 0
    new_miou: float | None = None
    new_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """'mIoU 0.71, 84.0 % named right (new classes: 0.65, 70.0 %) on 25 objects'."""
        new = (
            f" (new classes: {self.new_miou:.2f}, {self.new_accuracy:.1f} %)"
            if self.new_miou is not None and self.new_accuracy is not None
            else ""
        )
        return f"mIoU {self.miou:.2f}, {self.accuracy:.1f} % named right{new} on {self.count} objects"


def teach(predictor: Any, data: FinetuneSet, objects: list[ObjectRef] | None = None) -> int:
    """Let ``predictor`` learn ``objects`` (default: the training ones) as examples of their classes, their
    features computed on its own model (``learn_examples``); returns how many."""
    objects = data.train if objects is None else objects
    added = 0
    for index in sorted({o.image for o in objects}):
        masks, labels = object_masks(data, objects, index)
        names = [data.classes.names[k] for k in labels]
        added += predictor.learn_examples(model_input(data.images[index]), masks, names)
    return added


def score_objects(predictor: Any, data: FinetuneSet, objects: list[ObjectRef] | None = None) -> Scores:
    """Score ``predictor`` (an ``OVSAMPredictor`` whose vocabulary holds ``data.classes``) on ``objects``
    (default: the held-out ones), one box prompt per object, masks as the predictor gives them."""
    objects = data.heldout if objects is None else objects
    names = [n.lower() for n in data.classes.names]
    evaluator = GTPromptEvaluator(data.classes.names, novel_classes=data.new_classes)
    for index in sorted({o.image for o in objects}):
        masks, labels = object_masks(data, objects, index)
        predictor.set_image(model_input(data.images[index]))  # uint8: used as it is
        result = predictor.predict(**gt_prompts(masks, "box"), multimask_output=False)
        predicted = np.array(
            [names.index(n.lower()) if n.lower() in names else -1 for n in result.class_names]
        )
        dense = (
            result.masks.dense() if hasattr(result.masks, "dense") else result.masks
        )  # CompactMasks: tiled
        evaluator.process(masks, labels, np.asarray(dense)[:, 0], predicted)
    metrics = evaluator.evaluate()
    new = [o for o in objects if data.classes.names[o.label] in data.new_classes]
    return Scores(
        count=int(metrics.get("count", 0)),
        miou=float(metrics.get("miou", 0.0)),
        accuracy=float(metrics.get("acc", 0.0)),
        new_count=len(new),
        new_miou=metrics.get("novel_iou"),
        new_accuracy=metrics.get("novel_acc"),
    )
