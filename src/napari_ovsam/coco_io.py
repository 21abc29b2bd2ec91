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

from ovsam_model.data.coco_checks import check_id, validate_coco

from .coco_polygons import mask_polygons

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 1
UNKNOWN_CLASS = "unknown"
MAX_LABEL_ELEMENTS = 2**33  # labels read into memory (8 Gi elements); larger stacks: tile or split them


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
    polygons: bool = False,
) -> dict[str, Any]:
    """A labels array (and its features table) -> a COCO dict with RLE masks (or polygons).

    Args:
        labels: (H, W) or (..., H, W) integer array; lazy arrays (zarr, dask) are read one slice at a time.
        features: table with ``label_id`` (or napari's ``index``), ``class_name``, ``score``, ``iou`` (see
            :mod:`napari_ovsam.labels`); labels without a row get class ``unknown``.
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
    (H, W) slice.

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
    if values.min() < 0:
        raise ValueError(f"negative label {int(values.min())}: COCO ids are >= 0; relabel the layer")
    order = np.argsort(values, kind="stable")
    values, pixels = values[order], nonzero[order]
    ids, starts = np.unique(values, return_index=True)
    objects = []
    for label_id, part in zip(ids, np.split(pixels, starts[1:])):
        rows, cols = part % height, part // height
        bbox = [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)]
        if polygons:
            objects.append((int(label_id), mask_polygons(rows, cols), int(part.size), bbox))
            continue
        rle = mask_utils.frPyObjects(
            {"size": [height, width], "counts": _runs(part, height * width)}, height, width
        )
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


# ---------------------------------------------------------------------------------------------- import


def coco_to_labels(
    coco: dict[str, Any], source: str = "COCO data"
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """A COCO dict (ours or any instance-segmentation file) -> (labels, features, metadata).

    Files written by :func:`labels_to_coco` come back exactly (array, dtype, features). Other COCO files:
    one image gives (H, W) labels, several images of one size a (N, H, W) stack in image-id order; each
    annotation becomes one label (ids 1..N in annotation order, or ``instance_id`` where present); polygons
    and RLE (compressed or not) are both read; overlapping masks are painted largest first, so smaller objects
    stay visible. (Files whose images differ in size: :mod:`napari_ovsam.coco_layers`.)

    Args:
        coco: the parsed JSON.
        source: what error messages name (the file path).

    Returns:
        labels: numpy (H, W) or (..., H, W) integer array.
        features: table as in :mod:`napari_ovsam.labels` (``index`` = ``label_id``).
        metadata: ``vocabulary`` (entries), ``image_name``, ``categories``, ``images``, ``source`` ("ovsam" or
            "coco").

    Raises:
        ValueError: any malformed entry (see :func:`check_coco`), no images, or images of different sizes
            without an ``ovsam`` section.
    """
    check_coco(coco, source)
    ovsam = coco.get("ovsam") or {}
    images = sorted(coco["images"], key=lambda im: im["id"])
    shape, dtype, slice_of = _layout(images, ovsam, source)
    annotations = with_label_ids(coco["annotations"], dtype, source)
    labels = np.zeros(shape, dtype=dtype)
    paint_annotations(labels, annotations, slice_of)
    return labels, _features(ovsam, annotations, category_table(coco), source), _metadata(coco, images)


def check_coco(coco: Any, source: str) -> None:
    """Validate a COCO dict for reading (``ValueError`` naming ``source``, the entry and the fault).

    Every image, category and annotation is checked (:func:`ovsam_model.data.coco_checks.validate_coco`;
    ``categories`` and ``category_id`` are optional here); an ``ovsam`` section must be an object.
    """
    validate_coco(coco, source, require_categories=False)
    if not coco["images"]:
        raise ValueError(f"{source}: the COCO file has no images, so the labels size is unknown.")
    if not isinstance(coco.get("ovsam") or {}, dict):
        raise ValueError(f"{source}: its 'ovsam' section must be an object; re-export the file.")


def category_table(coco: dict[str, Any]) -> dict[int, str]:
    """Category id -> name (empty without a ``categories`` list)."""
    return {int(c["id"]): c["name"] for c in coco.get("categories", [])}


def _metadata(coco: dict[str, Any], images: list[dict]) -> dict[str, Any]:
    ovsam = coco.get("ovsam") or {}
    categories = category_table(coco)
    return {
        "vocabulary": list(ovsam.get("vocabulary", [categories[k] for k in sorted(categories)])),
        "image_name": ovsam.get("image_name") or (images[0].get("file_name", "") if images else ""),
        "categories": list(coco.get("categories", [])),
        "images": images,
        "source": "ovsam" if ovsam else "coco",
    }


def _layout(
    images: list[dict], ovsam: dict, source: str
) -> tuple[tuple[int, ...], np.dtype, dict[int, tuple]]:
    """The labels shape and dtype, and image id -> leading indices of its slice."""
    if ovsam.get("shape"):
        return _ovsam_layout(images, ovsam, source)
    sizes = {(int(im["height"]), int(im["width"])) for im in images}
    if len(sizes) != 1:
        raise ValueError(
            f"{source}: the COCO images have different sizes {sorted(sizes)[:5]}; they do not form one stack "
            "(open the file in napari: each image becomes its own layer)."
        )
    height, width = sizes.pop()
    _check_elements(len(images) * height * width, source)
    if len(images) == 1:
        return (height, width), np.dtype(np.int32), {images[0]["id"]: ()}
    return (len(images), height, width), np.dtype(np.int32), {im["id"]: (k,) for k, im in enumerate(images)}


def _ovsam_layout(
    images: list[dict], ovsam: dict, source: str
) -> tuple[tuple[int, ...], np.dtype, dict[int, tuple]]:
    """Shape, dtype and slices of one of our files, checked against its image entries."""
    what = f"{source}: its 'ovsam' section"
    shape_value = ovsam["shape"]
    if not (
        isinstance(shape_value, list)
        and len(shape_value) >= 2
        and all(type(s) is int and s >= 1 for s in shape_value)
    ):
        raise ValueError(f"{what} has a bad 'shape' {shape_value!r}; re-export the file.")
    shape = tuple(shape_value)
    try:
        dtype = np.dtype(ovsam.get("dtype", "<i4"))
    except TypeError:
        raise ValueError(f"{what} has an unknown 'dtype' {ovsam.get('dtype')!r}; re-export it.") from None
    if dtype.kind not in "biu":
        raise ValueError(f"{what} has a non-integer labels dtype {dtype}; re-export the file.")
    _check_elements(int(np.prod(shape, dtype=np.float64)), source)
    leading, slices = shape[:-2], int(np.prod(shape[:-2], dtype=np.int64))
    slice_of = {}
    for im in images:
        index = im.get("slice_index", 0)
        if type(index) is not int or not 0 <= index < slices:
            raise ValueError(f"{source}: image {im['id']}: 'slice_index' {index!r} is not in [0, {slices}).")
        if (im["height"], im["width"]) != shape[-2:]:
            raise ValueError(f"{source}: image {im['id']} is not {shape[-2]} x {shape[-1]} like the labels.")
        slice_of[im["id"]] = tuple(int(i) for i in np.unravel_index(index, leading))
    return shape, dtype, slice_of


def _check_elements(count: int, source: str) -> None:
    if count > MAX_LABEL_ELEMENTS:
        raise ValueError(
            f"{source}: the labels would hold {count} pixels (more than {MAX_LABEL_ELEMENTS}); split the file."
        )


def with_label_ids(annotations: list[dict], dtype: np.dtype, source: str) -> list[dict]:
    """Annotations with a ``_label`` key: their ``instance_id``, else 1..N in order; checked to fit ``dtype``."""
    if not annotations:
        return []
    use_instance = all(ann.get("instance_id") not in (None, 0) for ann in annotations)
    labelled = []
    for k, ann in enumerate(annotations):
        label = k + 1
        if use_instance:
            try:
                label = check_id(ann["instance_id"], "'instance_id'")
            except ValueError as err:
                raise ValueError(f"{source}: annotation {ann['id']}: {err}.") from None
        labelled.append({**ann, "_label": label})
    top = max(ann["_label"] for ann in labelled)
    if top > (1 if dtype.kind == "b" else np.iinfo(dtype).max):
        raise ValueError(
            f"{source}: label id {top} does not fit the labels dtype {dtype}; re-export the file."
        )
    return labelled


def paint_annotations(labels: np.ndarray, annotations: list[dict], slice_of: dict[int, tuple]) -> None:
    """Paint each (validated) annotation's mask with its ``_label``, largest first; one decoded mask in memory
    at a time. ``slice_of`` maps image ids to the leading index of their (H, W) slice of ``labels``."""
    from pycocotools import mask as mask_utils

    height, width = labels.shape[-2:]
    annotations = [a for a in annotations if a["image_id"] in slice_of]
    rles = [_to_rle(ann["segmentation"], height, width) for ann in annotations]
    areas = [0 if rle is None else int(mask_utils.area(rle)) for rle in rles]
    for k in sorted(range(len(annotations)), key=lambda i: -areas[i]):
        if rles[k] is not None:
            mask = mask_utils.decode(rles[k]).astype(bool)
            labels[slice_of[annotations[k]["image_id"]]][mask] = annotations[k]["_label"]


def _to_rle(segmentation: Any, height: int, width: int) -> dict | None:
    """A validated COCO segmentation (polygons, RLE with str/bytes counts, or uncompressed RLE) -> compressed
    RLE; None for no polygon of three points or more."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        polygons = [p for p in segmentation if len(p) >= 6]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)) if polygons else None
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def _features(ovsam: dict, annotations: list[dict], categories: dict[int, str], source: str) -> pd.DataFrame:
    """The features table: the stored rows when there are any, else one row per label from the annotations."""
    if "features" in ovsam:
        try:
            return features_from_json(ovsam)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(
                f"{source}: its stored features table is broken ({err}); re-export it."
            ) from None
    return annotation_features(annotations, categories)


def annotation_features(annotations: list[dict], categories: dict[int, str]) -> pd.DataFrame:
    """One features row per ``_label`` of ``annotations``: class name (``class_name``, else the category's),
    ``score`` and ``iou`` when the annotation has numbers there."""
    import pandas as pd

    from .features import ensure_features, features_row

    rows: dict[int, dict] = {}
    for ann in annotations:
        name = ann.get("class_name")
        if not isinstance(name, str) or not name:
            name = categories.get(ann.get("category_id"), UNKNOWN_CLASS)  # type: ignore[arg-type]
        score, iou = _number_or_nan(ann.get("score")), _number_or_nan(ann.get("iou"))
        rows.setdefault(
            ann["_label"],
            features_row(ann["_label"], name, score, iou),
        )
    return ensure_features(pd.DataFrame(list(rows.values())) if rows else None)


def _number_or_nan(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def looks_like_coco(obj: Any) -> bool:
    """True for a dict that claims to be COCO instance segmentation (never raises; checks no entry).

    It needs a non-empty ``images`` list and an ``annotations`` list in which some entry has a
    ``segmentation`` (detection-only files have none); an empty ``annotations`` list counts in our own files
    (an ``ovsam`` section) and in files with a ``categories`` list. Whether the entries are valid is for the
    reader to say (:func:`check_coco`), with a message, not for a sniffer that answers "not mine".
    """
    if not isinstance(obj, dict):
        return False
    images, annotations = obj.get("images"), obj.get("annotations")
    if not isinstance(images, list) or not images or not isinstance(annotations, list):
        return False
    if not annotations:
        return isinstance(obj.get("ovsam"), dict) or isinstance(obj.get("categories"), list)
    return any(isinstance(a, dict) and "segmentation" in a for a in annotations)
