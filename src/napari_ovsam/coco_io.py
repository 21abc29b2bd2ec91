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

Masks are (H, W) in (row, col) order; RLE is column-major, as pycocotools wants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
UNKNOWN_CLASS = "unknown"


def category_names(vocabulary: Sequence[str]) -> list[str]:
    """Vocabulary entries ("name, synonym, ...") -> their class names (the first synonym)."""
    return [entry.split(",")[0].strip() for entry in vocabulary]


# ---------------------------------------------------------------------------------------------- export


def labels_to_coco(
    labels: Any,
    features: pd.DataFrame | None = None,
    *,
    vocabulary_names: Sequence[str] = (),
    image_name: str = "image",
    vocabulary: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A labels array (and its features table) -> a COCO dict with RLE masks.

    Args:
        labels: (H, W) or (..., H, W) integer array; lazy arrays (zarr, dask) are read one slice at a time.
        features: table with ``label_id`` (or napari's ``index``), ``class_name``, ``score``, ``iou`` (see
            :mod:`napari_ovsam.labels`); labels without a row get class ``unknown``.
        vocabulary_names: class names, category ids 1..K in this order.
        image_name: ``file_name`` of the image entries.
        vocabulary: the full vocabulary entries (with synonyms) to keep in the ``ovsam`` section; defaults to
            ``vocabulary_names``.

    Returns:
        a JSON-serialisable dict (see the module docstring).
    """
    from .labels import ensure_features

    table = ensure_features(features)
    rows = {int(r["index"]): r for r in table.to_dict("records")}
    categories = _categories(vocabulary_names, table)
    category_ids = {c["name"]: c["id"] for c in categories}
    leading = tuple(int(s) for s in labels.shape[:-2])
    height, width = (int(s) for s in labels.shape[-2:])
    images, annotations = [], []
    for flat, position in enumerate(np.ndindex(*leading)):
        image_id = flat + 1
        images.append(_image_entry(image_id, image_name, height, width, flat, position, bool(leading)))
        for label_id, rle, area, bbox in _slice_objects(np.asarray(labels[position])):
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
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                    "score": _json_number(row.get("score")),
                    "iou": _json_number(row.get("iou")),
                    "class_name": name,
                    "instance_id": label_id,
                }
            )
    return {
        "info": {"description": "napari-ovsam annotations", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
        "ovsam": _ovsam_section(labels, table, image_name, vocabulary_names, vocabulary),
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


def _slice_objects(slice_labels: np.ndarray) -> list[tuple[int, dict, int, list[float]]]:
    """(label_id, RLE with str counts, area, [x, y, w, h]) for every non-zero label of an (H, W) slice.

    One stable sort of the column-major pixels gives each label's pixel indices in column-major order, from
    which the uncompressed RLE runs follow directly; pycocotools compresses them. This costs one sort per
    slice instead of one full-image mask per object.
    """
    from pycocotools import mask as mask_utils

    height, width = slice_labels.shape
    flat = slice_labels.T.ravel()  # column-major (Fortran) order, as COCO RLE counts pixels
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return []
    values = flat[nonzero]
    order = np.argsort(values, kind="stable")
    values, pixels = values[order], nonzero[order]
    ids, starts = np.unique(values, return_index=True)
    objects = []
    for label_id, part in zip(ids, np.split(pixels, starts[1:])):
        rle = mask_utils.frPyObjects(
            {"size": [height, width], "counts": _runs(part, height * width)}, height, width
        )
        rows, cols = part % height, part // height
        bbox = [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)]
        rle["counts"] = rle["counts"].decode("ascii")
        objects.append((int(label_id), rle, int(part.size), bbox))
    return objects


def _runs(pixels: np.ndarray, total: int) -> list[int]:
    """Uncompressed COCO RLE counts (zeros, ones, zeros, ...) of sorted column-major pixel indices."""
    breaks = np.flatnonzero(np.diff(pixels) != 1)
    run_starts = np.concatenate([[pixels[0]], pixels[breaks + 1]])
    run_ends = np.concatenate([pixels[breaks], [pixels[-1]]]) + 1
    gaps = run_starts - np.concatenate([[0], run_ends[:-1]])
    counts = np.stack([gaps, run_ends - run_starts], axis=1).ravel()
    tail = total - int(run_ends[-1])
    return [int(c) for c in counts] + ([tail] if tail else [])


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

    from .labels import empty_features

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


# ---------------------------------------------------------------------------------------------- import


def coco_to_labels(coco: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """A COCO dict (ours or any instance-segmentation file) -> (labels, features, metadata).

    Files written by :func:`labels_to_coco` come back exactly (array, dtype, features). Other COCO files:
    one image gives (H, W) labels, several images of one size a (N, H, W) stack in image-id order; each
    annotation becomes one label (ids 1..N in annotation order, or ``instance_id`` where present); polygons
    and RLE (compressed or not) are both read; overlapping masks are painted largest first, so smaller objects
    stay visible.

    Returns:
        labels: numpy (H, W) or (..., H, W) integer array.
        features: table as in :mod:`napari_ovsam.labels` (``index`` = ``label_id``).
        metadata: ``vocabulary`` (entries), ``image_name``, ``categories``, ``images``, ``source`` ("ovsam" or
            "coco").

    Raises:
        ValueError: no images, or images of different sizes without an ``ovsam`` section.
    """
    ovsam = coco.get("ovsam") or {}
    images = sorted(coco.get("images", []), key=lambda im: im["id"])
    shape, dtype, slice_of = _layout(images, ovsam)
    labels = np.zeros(shape, dtype=dtype)
    categories = {c["id"]: c["name"] for c in coco.get("categories", [])}
    annotations = _with_label_ids(coco.get("annotations", []))
    _paint_annotations(labels, annotations, slice_of)
    features = _features(ovsam, annotations, categories)
    metadata = {
        "vocabulary": list(ovsam.get("vocabulary", [categories[k] for k in sorted(categories)])),
        "image_name": ovsam.get("image_name") or (images[0].get("file_name", "") if images else ""),
        "categories": list(coco.get("categories", [])),
        "images": images,
        "source": "ovsam" if ovsam else "coco",
    }
    return labels, features, metadata


def _layout(images: list[dict], ovsam: dict) -> tuple[tuple[int, ...], np.dtype, dict[int, tuple]]:
    """The labels shape and dtype, and image id -> leading indices of its slice."""
    if not images:
        raise ValueError("The COCO file has no images, so the labels size is unknown.")
    if ovsam.get("shape"):
        shape = tuple(int(s) for s in ovsam["shape"])
        dtype = np.dtype(ovsam.get("dtype", "<i4"))
        leading = shape[:-2]
        slice_of = {
            im["id"]: tuple(int(i) for i in np.unravel_index(int(im.get("slice_index", 0)), leading))
            for im in images
        }
        return shape, dtype, slice_of
    sizes = {(int(im["height"]), int(im["width"])) for im in images}
    if len(sizes) != 1:
        raise ValueError(f"The COCO images have different sizes {sorted(sizes)}; they do not form one stack.")
    height, width = sizes.pop()
    if len(images) == 1:
        return (height, width), np.dtype(np.int32), {images[0]["id"]: ()}
    return (len(images), height, width), np.dtype(np.int32), {im["id"]: (k,) for k, im in enumerate(images)}


def _with_label_ids(annotations: list[dict]) -> list[dict]:
    """Annotations with a ``_label`` key: their ``instance_id``, else 1..N in order."""
    use_instance = all(int(a.get("instance_id", 0) or 0) > 0 for a in annotations)
    return [
        {**ann, "_label": int(ann["instance_id"]) if use_instance else k + 1}
        for k, ann in enumerate(annotations)
    ]


def _paint_annotations(labels: np.ndarray, annotations: list[dict], slice_of: dict[int, tuple]) -> None:
    """Paint each annotation's mask with its ``_label``, largest first; one decoded mask in memory at a
    time."""
    from pycocotools import mask as mask_utils

    height, width = labels.shape[-2:]
    rles = [_to_rle(ann["segmentation"], height, width) for ann in annotations]
    areas = [int(mask_utils.area(rle)) for rle in rles]
    for k in sorted(range(len(annotations)), key=lambda i: -areas[i]):
        mask = mask_utils.decode(rles[k]).astype(bool)
        labels[slice_of[annotations[k]["image_id"]]][mask] = annotations[k]["_label"]


def _to_rle(segmentation: Any, height: int, width: int) -> dict:
    """A COCO segmentation (polygons, RLE with str/bytes counts, or uncompressed RLE) -> compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def _features(ovsam: dict, annotations: list[dict], categories: dict[int, str]) -> pd.DataFrame:
    """The features table: the stored rows when there are any, else one row per label from the annotations."""
    import pandas as pd

    from .labels import ensure_features, features_row

    if "features" in ovsam:
        return features_from_json(ovsam)
    rows: dict[int, dict] = {}
    for ann in annotations:
        name = ann.get("class_name") or categories.get(ann.get("category_id"), UNKNOWN_CLASS)
        score, iou = ann.get("score"), ann.get("iou")
        rows.setdefault(
            ann["_label"],
            features_row(
                ann["_label"], name, np.nan if score is None else score, np.nan if iou is None else iou
            ),
        )
    return ensure_features(pd.DataFrame(list(rows.values())) if rows else None)


def looks_like_coco(obj: Any) -> bool:
    """True for a COCO instance-segmentation dict this module can read (never raises).

    It needs an ``images`` list of entries with ``id``, ``height`` and ``width``, and an ``annotations`` list
    whose entries have ``image_id`` and a polygon or RLE ``segmentation``. An empty ``annotations`` list is
    accepted only in our own files (with an ``ovsam`` section). Foreign files must have one image size.
    """
    try:
        if not isinstance(obj, dict):
            return False
        images, annotations = obj.get("images"), obj.get("annotations")
        if not isinstance(images, list) or not images or not isinstance(annotations, list):
            return False
        if not all(isinstance(im, dict) and {"id", "height", "width"} <= im.keys() for im in images):
            return False
        if not annotations:
            return isinstance(obj.get("ovsam"), dict)
        if not all(
            isinstance(a, dict) and "image_id" in a and _is_segmentation(a.get("segmentation"))
            for a in annotations
        ):
            return False
        return isinstance(obj.get("ovsam"), dict) or len({(im["height"], im["width"]) for im in images}) == 1
    except Exception:  # a reader sniffing foreign files must answer, not raise
        return False


def _is_segmentation(segmentation: Any) -> bool:
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    return (
        isinstance(segmentation, list)
        and bool(segmentation)
        and all(isinstance(p, list) and len(p) >= 6 for p in segmentation)
    )
