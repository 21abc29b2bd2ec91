"""Validation of COCO instance data before anything is rasterised.

pycocotools trusts its input: a polygon with a NaN, infinite or 1e9 coordinate makes it allocate gigabytes or
crash, and an RLE whose counts do not add up to height x width decodes uninitialised (or past the end of its)
memory. :func:`validate_coco` checks every entry first and raises one ``ValueError`` naming the file, the
entry and what is wrong. Used by ``ovsam_model.data.coco`` (training, evaluation) and the napari reader.

Frames: polygons are flat ``[x0, y0, x1, y1, ...]`` lists in pixels (x = column); RLE ``size`` is
``[height, width]``; ``bbox`` is ``[x, y, width, height]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_ID = 2**63 - 1  # ids must fit int64 (numpy, pandas, pycocotools' index)
MAX_SIDE = 2**17  # pixels per image side
MAX_PIXELS = 2**31 - 1  # per image: RLE counts are 32-bit in pycocotools
EDGE_TOLERANCE = 2.0  # pixels a polygon vertex or box may lie outside the image (exporters round outward)


def validate_coco(data: Any, source: str, *, require_categories: bool = True) -> None:
    """Check a COCO instance dict; raise ``ValueError("<source>: <entry>: <problem>")`` at the first fault.

    Checks: the top-level lists; image ``id`` (unique integer in [0, 2**63)), ``height`` and ``width``
    (integers in [1, 2**17], height x width < 2**31); category ``id`` (unique) and ``name`` (a string);
    annotation ``id`` (unique), ``image_id`` and ``category_id`` (known), ``iscrowd``, ``area``, ``bbox``
    (finite, inside the image) and ``segmentation``: polygons of finite coordinates inside the image (up to
    :data:`EDGE_TOLERANCE` pixels outside), RLE whose ``size`` is the image's and whose counts cover exactly
    height x width pixels.

    Args:
        data: the parsed JSON.
        source: what to name in messages (the file path).
        require_categories: whether a ``categories`` list and each annotation's ``category_id`` must be there
            (training and evaluation need them; the napari reader names objects ``unknown`` without them).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a COCO file holds a JSON object, not a {type(data).__name__}.")
    images = _list(data, "images", source)
    annotations = _list(data, "annotations", source)
    sizes: dict[int, tuple[int, int]] = {}
    for image in images:
        image_id, size = _check_image(image, source)
        if image_id in sizes:
            raise ValueError(f"{source}: image id {image_id} appears twice; image ids must be unique.")
        sizes[image_id] = size
    categories = None
    if require_categories or "categories" in data:
        categories = set()
        for category in _list(data, "categories", source):
            category_id = _check_category(category, source)
            if category_id in categories:
                raise ValueError(f"{source}: category id {category_id} appears twice; ids must be unique.")
            categories.add(category_id)
    seen: set[int] = set()
    for annotation in annotations:
        ann_id = _check_annotation(annotation, source, sizes, categories, require_categories)
        if ann_id in seen:
            raise ValueError(
                f"{source}: annotation id {ann_id} appears twice; annotation ids must be unique."
            )
        seen.add(ann_id)


def _list(data: Mapping[str, Any], key: str, source: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        found = "missing" if key not in data else f"a {type(value).__name__}"
        raise ValueError(f"{source}: '{key}' must be a list of entries, it is {found}.")
    return value


def check_id(value: Any, what: str) -> int:
    """An id as an int: integers (or integral floats) in [0, 2**63); else ``ValueError`` naming ``what``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be in [0, 2**63), got {value}")
    return value


def _check_image(image: Any, source: str) -> tuple[int, tuple[int, int]]:
    if not isinstance(image, Mapping):
        raise ValueError(f"{source}: an image entry is a {type(image).__name__}, not an object.")
    label = f"image {image.get('id', '?')!r}"
    try:
        image_id = check_id(image.get("id"), "its 'id'")
        height, width = (_side(image.get(k), k) for k in ("height", "width"))
    except ValueError as err:
        raise ValueError(f"{source}: {label}: {err}; fix the entry or re-export the file.") from None
    if height * width > MAX_PIXELS:
        raise ValueError(
            f"{source}: {label}: {height} x {width} pixels is more than one image may have "
            f"({MAX_PIXELS}); tile the image."
        )
    return image_id, (height, width)


def _side(value: Any, key: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'{key}' must be an integer number of pixels, got {value!r}")
    if not 1 <= value <= MAX_SIDE:
        raise ValueError(f"'{key}' must be in [1, {MAX_SIDE}] pixels, got {value}")
    return value


def _check_category(category: Any, source: str) -> int:
    if not isinstance(category, Mapping):
        raise ValueError(f"{source}: a category entry is a {type(category).__name__}, not an object.")
    try:
        category_id = check_id(category.get("id"), "its 'id'")
        if not isinstance(category.get("name"), str):
            raise ValueError(f"its 'name' must be a string, got {category.get('name')!r}")
    except ValueError as err:
        raise ValueError(f"{source}: category {category.get('id', '?')!r}: {err}.") from None
    return category_id


def _check_annotation(
    ann: Any,
    source: str,
    sizes: Mapping[int, tuple[int, int]],
    categories: set[int] | None,
    require_categories: bool,
) -> int:
    if not isinstance(ann, Mapping):
        raise ValueError(f"{source}: an annotation entry is a {type(ann).__name__}, not an object.")
    try:
        ann_id = check_id(ann.get("id"), "its 'id'")
    except ValueError as err:
        raise ValueError(f"{source}: annotation {ann.get('id', '?')!r}: {err}.") from None
    try:
        _check_annotation_fields(ann, sizes, categories, require_categories)
    except ValueError as err:
        raise ValueError(
            f"{source}: annotation {ann_id}: {err}; fix or remove this annotation (or re-export the file)."
        ) from None
    return ann_id


def _check_annotation_fields(
    ann: Mapping[str, Any],
    sizes: Mapping[int, tuple[int, int]],
    categories: set[int] | None,
    require_categories: bool,
) -> None:
    image_id = check_id(ann.get("image_id"), "'image_id'")
    if image_id not in sizes:
        raise ValueError(f"'image_id' {image_id} is not in 'images'")
    height, width = sizes[image_id]
    if "category_id" in ann or require_categories:
        category_id = check_id(ann.get("category_id"), "'category_id'")
        if categories is not None and category_id not in categories:
            raise ValueError(f"'category_id' {category_id} is not in 'categories'")
    if ann.get("iscrowd", 0) not in (0, 1):  # True/False compare equal to 1/0
        raise ValueError(f"'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}")
    area = ann.get("area", 0)
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not 0 <= area < math.inf:
        raise ValueError(f"'area' must be a finite number >= 0, got {area!r}")
    if "bbox" in ann:
        _check_bbox(ann["bbox"], height, width)
    if "segmentation" not in ann:
        raise ValueError("it has no 'segmentation' (polygons or RLE)")
    check_segmentation(ann["segmentation"], height, width)


def _check_bbox(bbox: Any, height: int, width: int) -> None:
    values = _numbers(bbox, "'bbox'") if isinstance(bbox, list) and len(bbox) == 4 else None
    if values is None:
        raise ValueError(f"'bbox' must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = values.tolist()
    tol = EDGE_TOLERANCE
    if w < 0 or h < 0 or x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise ValueError(f"'bbox' {bbox} is not inside the {width} x {height} image")


def _numbers(values: list, what: str) -> np.ndarray:
    """A list of JSON numbers as float64; strings, booleans, nulls, nested lists and non-finite values fail."""
    array = np.asarray(values) if values else np.zeros(0)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be a flat list of numbers")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} has a non-finite value (NaN or Infinity)")
    return array


def check_segmentation(segmentation: Any, height: int, width: int) -> None:
    """Check polygons or RLE against an image of ``height`` x ``width`` pixels (``ValueError`` if bad).

    Polygons shorter than three points are allowed (readers skip them); an empty list is an empty mask.
    """
    if isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            what = f"polygon {k}"
            if not isinstance(polygon, list):
                raise ValueError(f"{what} must be a list [x0, y0, x1, y1, ...], got {type(polygon).__name__}")
            points = _numbers(polygon, what)
            if points.size % 2:
                raise ValueError(f"{what} has an odd number of coordinates ({points.size})")
            xs, ys, tol = points[0::2], points[1::2], EDGE_TOLERANCE
            if points.size and (
                xs.min() < -tol or ys.min() < -tol or xs.max() > width + tol or ys.max() > height + tol
            ):
                raise ValueError(
                    f"{what} has points outside the {width} x {height} image (x in [{xs.min():g}, "
                    f"{xs.max():g}], y in [{ys.min():g}, {ys.max():g}])"
                )
        return
    if not isinstance(segmentation, Mapping) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError(
            "'segmentation' must be a list of polygons or an RLE object with 'size' and 'counts'"
        )
    size = segmentation["size"]
    if not (isinstance(size, list) and len(size) == 2 and [type(s) for s in size] == [int, int]):
        raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
    if size != [height, width]:
        raise ValueError(f"RLE 'size' {size} is not the image's [height, width] = [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        runs = _numbers(counts, "uncompressed RLE 'counts'")
        if (runs < 0).any() or (runs != np.round(runs)).any():
            raise ValueError("uncompressed RLE 'counts' must be integers >= 0")
    elif isinstance(counts, (str, bytes)):
        runs = compressed_counts(counts)
    else:
        raise ValueError(f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(
            f"RLE counts cover {total} pixels, but the image has {height} x {width} = {height * width}"
        )


def compressed_counts(counts: str | bytes) -> np.ndarray:
    """The run lengths (int64) of a compressed COCO RLE string, decoded as pycocotools' ``rleFrString``.

    Each run is a little-endian sequence of 5-bit groups stored as ``chr(48 + group)``, bit 0x20 of a group
    meaning "more groups follow" and bit 0x10 of the last group the sign; from the fourth run on, each value
    is the difference to the run two before. Raises ``ValueError`` for characters outside that alphabet, a
    truncated last run, or a negative or over-long run.
    """
    try:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError:
        raise ValueError("compressed RLE 'counts' has non-ASCII characters") from None
    groups = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if groups.size == 0:
        return np.zeros(0, np.int64)
    if groups.min() < 0 or groups.max() > 63:
        raise ValueError("compressed RLE 'counts' has characters outside the RLE alphabet")
    more = (groups & 0x20) != 0
    if more[-1]:
        raise ValueError("compressed RLE 'counts' ends in the middle of a run (truncated)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits: far more than any 32-bit run
        raise ValueError("compressed RLE 'counts' has a run longer than 32 bits")
    position = np.arange(groups.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((groups & 0x1F) << (5 * position), starts)
    negative = (groups[ends] & 0x10) != 0
    values = np.where(negative, values - (1 << (5 * lengths)), values)
    runs = values.copy()
    runs[2::2] = np.cumsum(values[2::2])  # rleFrString: x += cnts[m - 2] for m > 2
    runs[1::2] = np.cumsum(values[1::2])
    if (runs < 0).any() or (runs >= 2**32).any():
        raise ValueError("compressed RLE 'counts' has a negative or over-long run")
    return runs
