"""Fine-tuning a model on a user's own annotations: images, label images and a class name per label.

- ``dataset``: the annotations as a ``FinetuneSet`` (checked: enough objects per class and in all), split
  into training and held-out objects; written as a COCO file for the training stack.
- ``scoring``: box-prompted mIoU and naming accuracy on the held-out objects (``Scores``).
- ``options``: ``FinetuneOptions`` (run length, batch, what trains) and the ``ovsam_model.train`` config.
- ``run``: ``finetune()``, one run in this process: score, train, score, save a new checkpoint.
- ``process``: ``run_in_process()``, the same in a background process with events and cancel.

The result is always a new checkpoint file next to the user's data; the model it started from is only read.
"""

from .dataset import (
    MIN_OBJECTS,
    MIN_PER_CLASS,
    AnnotatedImage,
    FinetuneSet,
    ObjectRef,
    build_finetune_set,
    write_coco,
)
from .options import DEFAULT_STEPS, FinetuneOptions
from .process import run_in_process
from .run import Cancelled, FinetuneResult, finetune
from .scoring import Scores, score_objects

__all__ = [
    "DEFAULT_STEPS",
    "MIN_OBJECTS",
    "MIN_PER_CLASS",
    "AnnotatedImage",
    "Cancelled",
    "FinetuneOptions",
    "FinetuneResult",
    "FinetuneSet",
    "ObjectRef",
    "Scores",
    "build_finetune_set",
    "finetune",
    "run_in_process",
    "score_objects",
    "write_coco",
]
