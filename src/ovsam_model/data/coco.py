"""COCO/LVIS-format instance data for CLIP2SAM training and GT-prompt evaluation.

Reading and checking the JSON files, categories, records and masks: ``ovsam_model.data.coco_json`` (its
names used elsewhere are importable from here too). Crowd instances are always excluded. Pixel frames: masks
are (row, col) = (y, x); boxes are XYXY pixels with exclusive right/bottom edges; prompt points are (x, y).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovsam_model.data.background import sample_background_prompts
from ovsam_model.data.coco_json import (
    MAX_LISTED,
    ImageRecord,
    ann_to_mask,
    build_records,
    collate_instances,
    image_file,
    interior_point,
    map_categories,
    normalize_name,
    quiet_coco,
    read_coco_json,
)
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

__all__ = [
    "CocoInstanceDataset",
    "ImageRecord",
    "ann_to_mask",
    "collate_instances",
    "image_file",
    "interior_point",
    "normalize_name",
    "quiet_coco",
    "read_coco_json",
]


class CocoInstanceDataset(torch.utils.data.Dataset):
    """Instances of a COCO/LVIS JSON as model-ready tensors, with OV-SAM's augmentation and prompt sampling.

    Items (dicts):
        ``image`` float32 [3, h, w] in 0..255 (``to_model_rgb``), max(h, w) <= image_size (train: after flip,
        random resize and crop; eval: resized so the longest side == image_size);
        ``masks`` bool [M, h, w]; ``boxes`` float32 [M, 4] XYXY pixels of the masks; ``labels`` int64 [M]
        (indices into ``class_names``); ``ann_ids`` int64 [M]; ``image_id`` int; ``original_size`` (H, W);
        ``scale`` float (resized / original);
        train only: ``prompts`` (see :func:`ovsam_model.data.prompts.sample_prompts`; with
        ``background_prompts`` > 0 also the ``background_*`` prompts of
        :func:`ovsam_model.data.background.sample_background_prompts`, placed away from every object of the
        crop, those below ``min_area`` included).

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
        background_prompts: int = 0,
        background_margin: float = 8.0,
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
        self.background_options: dict[str, Any] = {
            "num_prompts": int(background_prompts),
            "box_fraction": float(box_prompt_fraction),
            "points_per_prompt": int(points_per_prompt),
            "margin": float(background_margin),
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
                if self.background_options["num_prompts"] > 0:  # drawn last: the object prompts stay the same
                    background = sample_background_prompts(out_masks, rng, **self.background_options)
                    item["prompts"].update(background)
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
