"""COCO instance annotations (RLE masks, class names, scores) from and to a labels array.

Layout written by :func:`labels_to_coco`:
- ``images``: one entry per 2D slice: ``id`` (1-based), ``file_name`` (the source image, the same for every
  slice of a stack), ``height``, ``width``; stacks add ``slice_index``, the flat C-order index over the
  leading axes (what ``ovsam_model.data.stacks.load_image(file_name, slice_index)`` reads), and
  ``slice_position``, the per-axis indices.
- ``categories``: the vocabulary, ids 1..K in vocabulary order; class names outside it (``unknown``, a user's
  rename) are appended after it.
- ``annotations``: one per label per slice: ``segmentation`` is COCO RLE with ``counts`` as a str, ``bbox``
  is [x, y, width, height] in pixels, ``area``, ``iscrowd`` 0, ``score`` and ``iou`` from the features table,
  ``class_name``, and ``instance_id``, the label id (shared by the per-slice parts of one 3D object).
- ``ovsam``: what a plain COCO file cannot hold, so a round trip is exact: the labels ``shape`` and ``dtype``,
  the full ``vocabulary`` entries (with synonyms), the ``features`` rows and their column dtypes.

Masks are (H, W) in (row, col) order; RLE is column-major, as pycocotools wants. Reading COCO files back:
:mod:`napari_ovsam.coco_read` (and :mod:`napari_ovsam.coco_layers` for napari's layers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ovsam_model.rle import label_pixels, label_rles, pixel_bbox

from .coco_polygons import mask_polygons
from .naming import UNKNOWN_CLASS

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1


def category_names(vocabulary: Sequence[str]) -> list[str]:
    """Vocabulary entries ("name, synonym, ...") -> their class names (the first synonym)."""
    return [entry.split(",")[0].strip() for entry in vocabulary]


def labels_to_coco(
    labels: Any,
    features: pd.DataFrame | None = None,
    *,
    vocabulary_names: Sequence[str] = (),
    image_name: str = "image",
    vocabulary: Sequence[str] | None = None,
    polygons: bool = False,
) -> dict[str, Any]:
    """A labels array (and its features table) -> a COCO dict with RLE masks (or polygons).

    Args:
        labels: (H, W) or (..., H, W) integer array; lazy arrays (zarr, dask) are read one slice at a time.
        features: table with ``label_id`` (or napari's ``index``), ``class_name``, ``score``, ``iou`` (see
            :mod:`napari_ovsam.features`); labels without a row get class ``unknown``.
        vocabulary_names: class names, category ids 1..K in this order.
        image_name: ``file_name`` of the image entries.
        vocabulary: the full vocabulary entries (with synonyms) to keep in the ``ovsam`` section; defaults to
            ``vocabulary_names``.
        polygons: segmentations as polygons (:mod:`napari_ovsam.coco_polygons`; holes filled, corners cut by
            half a pixel) instead of exact RLE, for tools that import only polygons (Label Studio); unknown
            ``score``/``iou`` are left out instead of null.

    Returns:
        a JSON-serialisable dict (see the module docstring).
    """
    from .features import ensure_features

    table = ensure_features(features)
    rows = {int(r["index"]): r for r in table.to_dict("records")}
    categories = _categories(vocabulary_names, table)
    category_ids = {c["name"]: c["id"] for c in categories}
    leading = tuple(int(s) for s in labels.shape[:-2])
    height, width = (int(s) for s in labels.shape[-2:])
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for flat, position in enumerate(np.ndindex(*leading)):
        image_id = flat + 1
        images.append(_image_entry(image_id, image_name, height, width, flat, position, bool(leading)))
        for label_id, segmentation, area, bbox in _slice_objects(np.asarray(labels[position]), polygons):
            row = rows.get(label_id, {})
            name = str(row.get("class_name") or UNKNOWN_CLASS)
            if name not in category_ids:  # a label without a features row
                category_ids[name] = len(categories) + 1
                categories.append({"id": category_ids[name], "name": name, "supercategory": "object"})
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[name],
                    "segmentation": segmentation,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                    "score": _json_number(row.get("score")),
                    "iou": _json_number(row.get("iou")),
                    "class_name": name,
                    "instance_id": label_id,
                }
            )
            if polygons:  # importers such as Label Studio's refuse null numbers
                annotations[-1] = {k: v for k, v in annotations[-1].items() if v is not None}
    return {
        "info": {"description": "napari-ovsam annotations", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
        "ovsam": {
            **_ovsam_section(labels, table, image_name, vocabulary_names, vocabulary),
            "segmentation": "polygons" if polygons else "rle",
        },
    }


def _categories(vocabulary_names: Sequence[str], table: pd.DataFrame) -> list[dict[str, Any]]:
    names = [str(n) for n in vocabulary_names]
    for name in table["class_name"]:
        if name and str(name) not in names:
            names.append(str(name))
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


def _image_entry(
    image_id: int, image_name: str, height: int, width: int, flat: int, position: tuple, stack: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": image_id, "file_name": image_name, "height": height, "width": width}
    if stack:
        entry["slice_index"] = flat
        entry["slice_position"] = [int(p) for p in position]
    return entry


def _slice_objects(
    slice_labels: np.ndarray, polygons: bool = False
) -> list[tuple[int, Any, int, list[float]]]:
    """(label_id, RLE with str counts (or polygons), area, [x, y, w, h]) for every non-zero label of an
    (H, W) slice, from one sort of its pixels (``ovsam_model.rle``)."""
    if not polygons:
        return label_rles(slice_labels)
    height = slice_labels.shape[0]
    objects = []
    for label_id, part in label_pixels(slice_labels):
        rows, cols = part % height, part // height
        objects.append((label_id, mask_polygons(rows, cols), int(part.size), pixel_bbox(part, height)))
    return objects


def _json_number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _ovsam_section(
    labels: Any,
    table: pd.DataFrame,
    image_name: str,
    vocabulary_names: Sequence[str],
    vocabulary: Sequence[str] | None,
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "image_name": image_name,
        "shape": [int(s) for s in labels.shape],
        "dtype": np.dtype(labels.dtype).str,
        "vocabulary": [str(v) for v in (vocabulary if vocabulary is not None else vocabulary_names)],
        **features_to_json(table),
    }


def features_to_json(table: pd.DataFrame) -> dict[str, Any]:
    """A features table as JSON: ``{"features": [row dicts], "feature_dtypes": {column: dtype}}``.

    :func:`features_from_json` restores the identical table (NaN is stored as null).
    """
    return {
        "feature_dtypes": {str(c): str(t) for c, t in table.dtypes.items()},
        "features": [{str(k): _json_value(v) for k, v in row.items()} for row in table.to_dict("records")],
    }


def features_from_json(section: dict[str, Any]) -> pd.DataFrame:
    """Inverse of :func:`features_to_json` (``section`` holds ``features`` and ``feature_dtypes``)."""
    import pandas as pd

    from .features import empty_features

    records = section.get("features") or []
    table = pd.DataFrame(records) if records else empty_features()
    dtypes = section.get("feature_dtypes", {})
    return table.astype({c: t for c, t in dtypes.items() if c in table.columns})


def _json_value(value: Any) -> Any:
    """A features cell as plain JSON (numpy scalars unwrapped, NaN as null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
