"""Former home of the features table and of painting (kept for the COCO reader and writer's imports).

New code imports :mod:`napari_ovsam.features` (the features table) and :mod:`napari_ovsam.painting` (writing
masks into labels, undo).
"""

from __future__ import annotations

from .features import (
    FEATURE_COLUMNS,
    TOPK_SEPARATOR,
    add_feature_rows,
    empty_features,
    ensure_features,
    features_row,
    remove_feature_rows,
    topk_from_row,
)

__all__ = [
    "FEATURE_COLUMNS",
    "TOPK_SEPARATOR",
    "add_feature_rows",
    "empty_features",
    "ensure_features",
    "features_row",
    "remove_feature_rows",
    "topk_from_row",
]
