"""Reading COCO instance annotations into labels: validated first, then rasterised with pycocotools.

:func:`coco_to_labels` gives one labels array (ours exactly as written by
:func:`napari_ovsam.coco_io.labels_to_coco`; foreign files of one image size as a stack); the helpers below
(:func:`check_coco`, :func:`with_label_ids`, :func:`paint_annotations`, :func:`annotation_features`) are shared
with :mod:`napari_ovsam.coco_layers`, which opens multi-image files of any sizes. Masks are (H, W) in
(row, col) order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ovsam_model.data.coco_checks import check_id, validate_coco

from .coco_io import features_from_json
from .naming import UNKNOWN_CLASS

if TYPE_CHECKING:
    import pandas as pd

MAX_LABEL_ELEMENTS = 2**33  # labels read into memory (8 Gi elements); larger stacks: tile or split them


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
        features: table as in :mod:`napari_ovsam.features` (``index`` = ``label_id``).
        metadata: ``vocabulary`` (entries), ``image_name``, ``categories``, ``images``, ``source`` ("ovsam" or
            "coco"), and ``examples`` where the file names its examples file (``<name>.examples.safetensors``
            beside it; :func:`napari_ovsam.examples.layer_examples` reads it).

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
        **({"examples": ovsam["examples"]} if "examples" in ovsam else {}),  # read by napari_ovsam.examples
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
