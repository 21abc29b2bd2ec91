"""How objects are named: the class a prediction gives them, or ``unknown`` when the model is not sure.

One owner for the name of the unknown class (the COCO writer and reader use it too).
"""

from __future__ import annotations

UNKNOWN_CLASS = "unknown"


def name_for(class_name: str, score: float, unknown_threshold: float) -> str:
    """The name an object gets: its best class, or :data:`UNKNOWN_CLASS` when ``score`` is below the
    threshold (a probability in [0, 1])."""
    return UNKNOWN_CLASS if float(score) < float(unknown_threshold) else class_name
