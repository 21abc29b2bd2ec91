"""COCO/LVIS instance JSON files: reading and checking them, their categories, per-image records and masks.

Reading goes through pycocotools (polygons, compressed and uncompressed RLE); every file is validated first
(``coco_checks``). Image entries name either a plain 2D image (``file_name``) or one slice of a stack
(``file_name`` = the stack, plus an integer ``slice_index`` or ``frame_index``); LVIS entries without
``file_name`` use the path in their ``coco_url`` (``train2017/x.jpg``). Pixel frames: masks are (row, col) =
(y, x); points are (x, y).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage

from ovsam_model.data.coco_checks import check_segmentation, validate_coco
from ovsam_model.data.stacks import PathLike

REQUIRED_KEYS = ("images", "annotations", "categories")
IMAGE_KEYS = ("id", "height", "width")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "segmentation")
MAX_LISTED = 20


@dataclass
class ImageRecord:
    """One image entry with the annotations kept for it (crowd, unknown and filtered classes removed)."""

    image_id: int
    path: Path
    slice_index: int | None
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


def normalize_name(name: str) -> str:
    """Class-name key for matching: lower case, underscores as spaces ("Aerosol_can" -> "aerosol can")."""
    return " ".join(name.replace("_", " ").lower().split())


def read_coco_json(ann_file: PathLike) -> dict[str, Any]:
    """Read and validate a COCO/LVIS instance JSON; errors name the file and the faulty entry.

    Every entry is checked before anything is decoded (:func:`ovsam_model.data.coco_checks.validate_coco`):
    ids, sizes, polygons inside the image with finite coordinates, RLE counts covering the image.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-export the annotations.") from None
    if not isinstance(data, dict) or any(key not in data for key in REQUIRED_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a COCO instance file: it needs the top-level keys {list(REQUIRED_KEYS)}, "
            f"found {found}."
        )
    _check_entries(path, data["images"], IMAGE_KEYS, "image")
    _check_entries(path, data["annotations"], ANNOTATION_KEYS, "annotation")
    _check_entries(path, data["categories"], ("id", "name"), "category")
    for image in data["images"]:
        if "file_name" not in image and "coco_url" not in image:
            raise ValueError(f"{path}: image entry {image['id']} has neither 'file_name' nor 'coco_url'.")
    validate_coco(data, str(path))
    return data


def _check_entries(path: Path, entries: Any, keys: Sequence[str], kind: str) -> None:
    if not isinstance(entries, list):
        raise ValueError(f"{path}: '{kind}s' must be a list, got {type(entries).__name__}.")
    for entry in entries:
        missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
        if missing:
            ident = entry.get("id", "?") if isinstance(entry, dict) else entry
            raise ValueError(
                f"{path}: {kind} entry {ident} lacks the key(s) {missing}; every {kind} needs {list(keys)}."
            )


def quiet_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` index of an already-loaded dataset dict, without its progress prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def map_categories(
    categories: Iterable[Mapping[str, Any]], class_names: Sequence[str], *, ignore_unknown: bool, source: str
) -> dict[int, int]:
    """Map category ids to indices into ``class_names`` by (normalised) name.

    A ``class_names`` entry may list synonyms ("nucleus, nuclei"); the first name wins over synonyms of other
    entries. Unknown categories raise a ``ValueError`` naming them, or are left out when ``ignore_unknown``.
    """
    lookup: dict[str, int] = {}
    split = [[s for s in entry.split(",") if s.strip()] or [entry] for entry in class_names]
    for index, names in enumerate(split):
        lookup.setdefault(normalize_name(names[0]), index)
    for index, names in enumerate(split):
        for synonym in names[1:]:
            lookup.setdefault(normalize_name(synonym), index)
    mapping: dict[int, int] = {}
    unknown: list[str] = []
    for cat in categories:
        key = normalize_name(str(cat["name"]))
        if key in lookup:
            mapping[int(cat["id"])] = lookup[key]
        else:
            unknown.append(str(cat["name"]))
    if unknown and not ignore_unknown:
        listed = ", ".join(unknown[:MAX_LISTED]) + (
            f" (+{len(unknown) - MAX_LISTED} more)" if len(unknown) > MAX_LISTED else ""
        )
        raise ValueError(
            f"{source}: {len(unknown)} categories are not in class_names: {listed}. Add them to the "
            "vocabulary, or pass ignore_unknown_categories=True to drop their instances."
        )
    return mapping


def image_file(image: Mapping[str, Any], image_root: Path) -> tuple[Path, int | None]:
    """(path, slice_index) of an image entry; relative ``file_name``s are under ``image_root``."""
    name = image.get("file_name")
    if name is None:  # LVIS: "http://images.cocodataset.org/train2017/x.jpg" -> "train2017/x.jpg"
        name = "/".join(str(image["coco_url"]).split("/")[-2:])
    index = image.get("slice_index", image.get("frame_index"))
    path = Path(name)
    return (path if path.is_absolute() else image_root / path), (None if index is None else int(index))


def ann_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode polygons or (un)compressed RLE to a bool (height, width) mask, skipping degenerate polygons.

    The segmentation is checked first (finite coordinates inside the image, RLE counts covering it): a bad one
    raises ``ValueError`` instead of reaching pycocotools.
    """
    check_segmentation(segmentation, height, width)
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The point farthest from the boundary of a bool (H, W) mask, as (x, y) = (col, row) pixel indices.

    The argmax of the Euclidean distance transform of the mask padded by one background pixel (so the image
    border counts as boundary); the GT point prompt of OV-SAM's evaluation. Ties go to the first in row order.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("interior_point needs a non-empty mask.")
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col) - 1, int(row) - 1


def collate_instances(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DataLoader ``collate_fn`` keeping the items as a list (images differ in size: nothing is stacked)."""
    return list(batch)


def build_records(
    data: Mapping[str, Any],
    image_root: Path,
    category_to_label: Mapping[int, int],
    *,
    min_area: float,
    source: str,
) -> list[ImageRecord]:
    """Per-image records holding the usable annotations; images left without any are dropped.

    An annotation is usable when it is not crowd, its category maps to a label (i.e. is known and kept) and
    its ``area`` field, where present, is at least ``min_area`` (masks are measured again after decoding).
    """
    records: dict[int, ImageRecord] = {}
    for image in data["images"]:
        path, slice_index = image_file(image, image_root)
        records[int(image["id"])] = ImageRecord(
            int(image["id"]), path, slice_index, int(image["height"]), int(image["width"])
        )
    known_categories = {int(c["id"]) for c in data["categories"]}
    for ann in data["annotations"]:
        image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in records:
            raise ValueError(
                f"{source}: annotation {ann['id']} refers to image_id {image_id}, not in 'images'."
            )
        if category_id not in known_categories:
            raise ValueError(
                f"{source}: annotation {ann['id']} has category_id {category_id}, not in 'categories'."
            )
        if ann.get("iscrowd", 0) or category_id not in category_to_label:
            continue
        if float(ann.get("area", np.inf)) < min_area:
            continue
        records[image_id].annotations.append(ann)
    return [r for r in records.values() if r.annotations]
