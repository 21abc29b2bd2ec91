"""Base/novel class splits of the open-vocabulary benchmarks.

OV-COCO (the 48/17 split of Bansal et al., used by OV-SAM): 48 base classes are trained on, 17 novel classes
are only evaluated, and 15 COCO classes are excluded from both. Names are the COCO 2017 category names.

LVIS v1: the categories carry a ``frequency`` field; rare (``'r'``) classes are novel, common (``'c'``) and
frequent (``'f'``) classes are base (866 base, 337 novel in LVIS v1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OVCOCO_BASE: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "truck", "boat", "bench", "bird", "horse", "sheep",
    "zebra", "giraffe", "backpack", "handbag", "skis", "kite", "surfboard", "bottle", "spoon", "bowl",
    "banana", "apple", "orange", "broccoli", "carrot", "pizza", "donut", "chair", "bed", "tv", "laptop",
    "remote", "microwave", "oven", "refrigerator", "book", "clock", "vase", "toothbrush", "train",
    "bear", "suitcase", "frisbee", "fork", "sandwich", "toilet", "mouse", "toaster",
)  # fmt: skip

OVCOCO_NOVEL: tuple[str, ...] = (
    "bus", "dog", "cow", "elephant", "umbrella", "tie", "skateboard", "cup", "knife", "cake", "couch",
    "keyboard", "sink", "scissors", "airplane", "cat", "snowboard",
)  # fmt: skip

OVCOCO_EXCLUDED: tuple[str, ...] = (
    "traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
    "cell phone", "teddy bear", "hair drier",
)  # fmt: skip

LVIS_NOVEL_FREQUENCIES = frozenset({"r"})


def lvis_split(categories: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Split LVIS categories into (base, novel) name lists by their ``frequency`` field.

    Args:
        categories: the ``categories`` list of an LVIS JSON (dicts with ``id``, ``name``, ``frequency``).

    Returns:
        (base, novel): names in category-id order; novel = rare (``'r'``), base = common + frequent.

    Raises:
        ValueError: when a category has no ``frequency`` field (not an LVIS file; give the split explicitly).
    """
    base: list[str] = []
    novel: list[str] = []
    for cat in sorted(categories, key=lambda c: c["id"]):
        if "frequency" not in cat:
            raise ValueError(
                f"Category {cat.get('name', cat.get('id'))!r} has no 'frequency' field, so the LVIS "
                "rare/base split cannot be read from this file; "
                "pass the base classes explicitly (keep_classes=...)."
            )
        (novel if cat["frequency"] in LVIS_NOVEL_FREQUENCIES else base).append(cat["name"])
    return base, novel
