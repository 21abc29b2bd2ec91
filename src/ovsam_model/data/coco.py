"""COCO/LVIS-format instance data for CLIP2SAM training and GT-prompt evaluation.

Reading goes through pycocotools (polygons, compressed and uncompressed RLE). Image entries name either a
plain 2D image (``file_name``) or one slice of a stack (``file_name`` = the stack, plus an integer
``slice_index`` or ``frame_index``); LVIS entries without ``file_name`` use the path in their ``coco_url``
(``train2017/x.jpg``). Crowd instances are always excluded. Pixel frames: masks are (row, col) = (y, x); boxes
are XYXY pixels with exclusive right/bottom edges; prompt points are (x, y).
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
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage

from ovsam_model.data.coco_checks import check_segmentation, validate_coco
from ovsam_model.data.prompts import sample_prompts
from ovsam_model.data.stacks import PathLike, load_image
from ovsam_model.data.transforms import (
    hflip,
    mask_areas,
    masks_to_boxes,
    random_crop_window,
    random_resize_scale,
    resize_crop,
    resize_longest_side,
    resized_shape,
)
from ovsam_model.image import to_model_rgb

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


class CocoInstanceDataset(torch.utils.data.Dataset):
    """Instances of a COCO/LVIS JSON as model-ready tensors, with OV-SAM's augmentation and prompt sampling.

    Items (dicts):
        ``image`` float32 [3, h, w] in 0..255 (``to_model_rgb``), max(h, w) <= image_size (train: after flip,
        random resize and crop; eval: resized so the longest side == image_size);
        ``masks`` bool [M, h, w]; ``boxes`` float32 [M, 4] XYXY pixels of the masks; ``labels`` int64 [M]
        (indices into ``class_names``); ``ann_ids`` int64 [M]; ``image_id`` int; ``original_size`` (H, W);
        ``scale`` float (resized / original);
        train only: ``prompts`` (see :func:`ovsam_model.data.prompts.sample_prompts`).

    Training resamples (new flip/resize/crop, then another image) until an item keeps an instance of at least
    ``min_area`` pixels, so it never returns an item without instances. Evaluation keeps every non-crowd
    instance (OV-SAM's protocol), except those whose mask is empty at the resized size. In both modes, images
    without a usable instance are left out. Augmentation draws are seeded by (seed, epoch, index): call
    :meth:`set_epoch` each epoch for fresh augmentations (in the main process; persistent DataLoader workers
    keep the epoch they were started with).

    Attributes: ``class_names``, ``records`` (one :class:`ImageRecord` per kept image), ``image_ids``,
    ``category_to_label`` (category id -> label), ``coco`` (the file's pycocotools index, for evaluators).
    """

    max_crop_tries = 10
    max_image_tries = 10

    def __init__(
        self,
        ann_file: PathLike,
        image_root: PathLike | None = None,
        *,
        class_names: Sequence[str] | None = None,
        keep_classes: Iterable[str] | None = None,
        ignore_unknown_categories: bool = False,
        image_size: int = 1024,
        train: bool = True,
        flip_prob: float = 0.5,
        resize_ratio: tuple[float, float] = (0.9, 2.0),
        min_area: int = 32,
        num_prompts: int = 40,
        box_prompt_fraction: float = 21 / 40,
        box_jitter: float = 0.0,
        points_per_prompt: int = 1,
        seed: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root) if image_root is not None else self.ann_file.parent
        data = read_coco_json(self.ann_file)
        self.coco = quiet_coco(data)
        self.categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.class_names = (
            list(class_names) if class_names is not None else [c["name"] for c in self.categories]
        )
        mapping = map_categories(
            self.categories,
            self.class_names,
            ignore_unknown=ignore_unknown_categories,
            source=str(self.ann_file),
        )
        self.category_to_label = self._keep(mapping, keep_classes)
        self.image_size, self.train, self.flip_prob = int(image_size), bool(train), float(flip_prob)
        self.resize_ratio, self.min_area = (float(resize_ratio[0]), float(resize_ratio[1])), int(min_area)
        self.prompt_options: dict[str, Any] = {
            "num_prompts": int(num_prompts),
            "box_fraction": float(box_prompt_fraction),
            "box_jitter": float(box_jitter),
            "points_per_prompt": int(points_per_prompt),
        }
        self.seed, self.epoch = int(seed), 0
        self.records = build_records(
            data,
            self.image_root,
            self.category_to_label,
            min_area=self.min_area if train else 0,
            source=str(self.ann_file),
        )
        self._check_not_empty(data)

    def _keep(self, mapping: dict[int, int], keep_classes: Iterable[str] | None) -> dict[int, int]:
        if keep_classes is None:
            return mapping
        wanted = {normalize_name(n) for n in keep_classes}
        names = {int(c["id"]): normalize_name(str(c["name"])) for c in self.categories}
        missing = sorted(wanted - set(names.values()))
        if missing:
            raise ValueError(
                f"{self.ann_file}: keep_classes names not among its categories: {missing[:MAX_LISTED]}."
            )
        return {cid: label for cid, label in mapping.items() if names[cid] in wanted}

    def _check_not_empty(self, data: Mapping[str, Any]) -> None:
        if self.records:
            path = self.records[0].path
            if not path.exists():
                raise FileNotFoundError(
                    f"Image {path} (first image of {self.ann_file}) not found; is image_root "
                    f"({self.image_root}) right?"
                )
            return
        if not data["images"] or not data["annotations"]:
            what = "images" if not data["images"] else "annotations"
            raise ValueError(f"{self.ann_file} has no {what}; annotate some objects (and export them) first.")
        raise ValueError(
            f"{self.ann_file}: no image has a usable instance (non-crowd, of a kept class"
            + (f", area >= {self.min_area} px" if self.train else "")
            + "); check keep_classes / class_names or annotate more objects."
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (like ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    def load_original(self, index: int) -> dict[str, Any]:
        """The image and its instances at original resolution, before any transform.

        Returns:
            ``image`` float32 (H, W, 3) numpy in 0..255, ``masks`` bool (M, H, W) numpy, ``labels`` int64
            (M,), ``ann_ids`` int64 (M,), ``image_id``. Instances with empty masks are left out.
        """
        record = self.records[index]
        try:
            raw = load_image(record.path, record.slice_index)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Image {record.path} (image_id {record.image_id} of {self.ann_file}) not found; check "
                f"image_root ({self.image_root}) or the file_name in the JSON."
            ) from None
        if raw.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"{record.path}: image is {raw.shape[:2]} but {self.ann_file} says (height, width) = "
                f"({record.height}, {record.width}) for image_id {record.image_id}; wrong file or slice?"
            )
        masks = np.zeros((len(record.annotations), record.height, record.width), dtype=bool)
        for i, ann in enumerate(record.annotations):
            masks[i] = ann_to_mask(ann["segmentation"], record.height, record.width)
        keep = mask_areas(masks) >= (max(1, self.min_area) if self.train else 1)
        anns = [a for a, k in zip(record.annotations, keep) if k]
        return {
            "image": to_model_rgb(raw),
            "masks": masks[keep],
            "labels": np.array([self.category_to_label[int(a["category_id"])] for a in anns], dtype=np.int64),
            "ann_ids": np.array([int(a["id"]) for a in anns], dtype=np.int64),
            "image_id": record.image_id,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.train:
            return self._eval_item(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        for _ in range(self.max_image_tries):
            item = self._train_item(index, rng)
            if item is not None:
                return item
            index = int(rng.integers(len(self)))
        raise RuntimeError(
            f"{self.ann_file}: {self.max_image_tries} images in a row lost all instances to the random crop; "
            f"lower min_area ({self.min_area}) or widen resize_ratio ({self.resize_ratio})."
        )

    def _eval_item(self, index: int) -> dict[str, Any]:
        original = self.load_original(index)
        height, width = original["image"].shape[:2]
        image, masks, scale = resize_longest_side(original["image"], original["masks"], self.image_size)
        keep = mask_areas(masks) > 0
        return self._item(image, masks[keep], original, keep, (height, width), scale)

    def _train_item(self, index: int, rng: np.random.Generator) -> dict[str, Any] | None:
        original = self.load_original(index)
        if len(original["masks"]) == 0:
            return None
        height, width = original["image"].shape[:2]
        for _ in range(self.max_crop_tries):
            image, masks = original["image"], original["masks"]
            if rng.random() < self.flip_prob:
                image, masks = hflip(image, masks)
            scale = random_resize_scale(rng, height, width, self.image_size, self.resize_ratio)
            window = random_crop_window(rng, *resized_shape(height, width, scale), self.image_size)
            out_image, out_masks = resize_crop(image, masks, scale, window)
            keep = mask_areas(out_masks) >= max(1, self.min_area)
            if keep.any():
                item = self._item(out_image, out_masks[keep], original, keep, (height, width), scale)
                item["prompts"] = sample_prompts(item["masks"], item["boxes"], rng, **self.prompt_options)
                return item
        return None

    @staticmethod
    def _item(
        image: torch.Tensor,
        masks: np.ndarray,
        original: Mapping[str, Any],
        keep: np.ndarray,
        original_size: tuple[int, int],
        scale: float,
    ) -> dict[str, Any]:
        return {
            "image": image,
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "boxes": masks_to_boxes(masks),
            "labels": torch.from_numpy(original["labels"][keep]),
            "ann_ids": torch.from_numpy(original["ann_ids"][keep]),
            "image_id": int(original["image_id"]),
            "original_size": original_size,
            "scale": float(scale),
        }
