"""The per-label features table of a labels layer (class name, scores, top-k alternatives); no Qt, no napari.

napari's Labels layer maps a label value to a row of ``layer.features`` through a column named ``index``
(``Labels._make_label_index``: without it, row i belongs to label i). Our tables carry that ``index`` column
(napari's key, hidden in the status bar) plus an identical, visible ``label_id`` column, then ``class_name``,
``score``, ``iou``, ``topk_names``, ``topk_scores`` and ``reviewed``; a user's own columns are kept after
them. Top-k alternatives are stored as ``" | "``-joined strings so the table shows in napari's status bar and
features widget and survives CSV, TIFF and JSON; :func:`topk_from_row` parses them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

TOPK_SEPARATOR = " | "
FEATURE_COLUMNS: dict[str, str] = {
    "index": "int64",
    "label_id": "int64",
    "class_name": "object",
    "score": "float64",
    "iou": "float64",
    "topk_names": "object",
    "topk_scores": "object",
    "reviewed": "bool",
}


def features_row(
    label_id: int,
    class_name: str,
    score: float,
    iou: float,
    topk_names: Sequence[str] = (),
    topk_scores: Sequence[float] = (),
    reviewed: bool = False,
) -> dict[str, Any]:
    """One features row for a committed object (see the module docstring for the columns)."""
    for name in topk_names:
        if TOPK_SEPARATOR.strip() in name:
            raise ValueError(f"Class name {name!r} contains {TOPK_SEPARATOR.strip()!r}, the top-k separator.")
    return {
        "index": int(label_id),
        "label_id": int(label_id),
        "class_name": str(class_name),
        "score": float(score),
        "iou": float(iou),
        "topk_names": TOPK_SEPARATOR.join(str(n) for n in topk_names),
        "topk_scores": TOPK_SEPARATOR.join(f"{float(s):.4f}" for s in topk_scores),
        "reviewed": bool(reviewed),
    }


def topk_from_row(row: dict[str, Any] | pd.Series) -> tuple[list[str], list[float]]:
    """Parse a row's ``topk_names`` / ``topk_scores`` strings back into lists."""
    names = str(row.get("topk_names", "") or "")
    scores = str(row.get("topk_scores", "") or "")
    return (
        names.split(TOPK_SEPARATOR) if names else [],
        [float(s) for s in scores.split(TOPK_SEPARATOR)] if scores else [],
    )


def empty_features() -> pd.DataFrame:
    """A features table with the module's columns and no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in FEATURE_COLUMNS.items()})


def ensure_features(features: pd.DataFrame | dict | None) -> pd.DataFrame:
    """Coerce a layer's features (maybe empty, maybe foreign) into a table keyed by ``index`` = ``label_id``.

    Missing columns are added with defaults; a table with ``label_id`` but no ``index`` gets ``index`` from
    it; a table with neither follows napari's implicit rule (row i is label i).
    """
    if features is None:
        return empty_features()
    table = pd.DataFrame(features).reset_index(drop=True)
    if len(table.columns) == 0:
        return empty_features()
    if "index" not in table.columns:
        table["index"] = table["label_id"] if "label_id" in table.columns else np.arange(len(table))
    if "label_id" not in table.columns:
        table["label_id"] = table["index"]
    defaults = {"class_name": "", "score": np.nan, "iou": np.nan, "topk_names": "", "topk_scores": ""}
    for name, value in {**defaults, "reviewed": False}.items():
        if name not in table.columns:
            table[name] = value
    table = table.astype({"index": "int64", "label_id": "int64"})
    ordered = list(FEATURE_COLUMNS) + [c for c in table.columns if c not in FEATURE_COLUMNS]
    return table[ordered]


def add_feature_rows(features: pd.DataFrame | None, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A new table with ``rows`` added; a row whose label id is already present replaces the old row."""
    table = ensure_features(features)
    if not rows:
        return table
    new = ensure_features(pd.DataFrame(list(rows)))
    kept = table[~table["index"].isin(new["index"])]
    parts = [part for part in (kept, new) if len(part)]
    merged = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return ensure_features(merged.astype({k: v for k, v in FEATURE_COLUMNS.items() if k in merged}))


def remove_feature_rows(features: pd.DataFrame | None, label_ids: Sequence[int]) -> pd.DataFrame:
    """A new table without the rows of ``label_ids``."""
    table = ensure_features(features)
    return table[~table["index"].isin([int(i) for i in label_ids])].reset_index(drop=True)


def max_feature_id(features: pd.DataFrame) -> int:
    """The largest label id in a features table's ``index`` / ``label_id`` columns (0 when empty)."""
    best = 0
    for column in ("index", "label_id"):
        if column in features.columns and len(features):
            best = max(best, int(np.nanmax(features[column].to_numpy(dtype=float))))
    return best
