"""A synthetic fluorescence-microscopy instance dataset in COCO format (the ``demo`` model's training data).

The images, their classes and how they are made: ``ovsam_model.data.synthetic_images``. This module writes
them as a dataset and is its command line.

Layout written by ``python -m ovsam_model.data.synthetic --out DIR``::

    DIR/train/img_00000.tif ...   16-bit (size, size) TIFF images
    DIR/val/img_00000.tif ...
    DIR/train.json, DIR/val.json  COCO instance JSON (RLE masks), file_name relative to DIR
    DIR/val_stack.tif             the val images as one (N, size, size) multi-page TIFF stack
    DIR/val_stack.json            the val annotations with per-slice entries (file_name + slice_index)

``--extra-classes`` adds the three classes the ``demo`` model never saw (``EXTRA_CLASS_NAMES``): the JSON then
has 7 categories, ids 1..4 the known classes and 5..7 the extra ones. Without it the files are exactly those of
earlier versions.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..cli_parser import OneLineErrorParser
from .synthetic_images import (
    ALL_CLASS_NAMES,
    CLASS_NAMES,
    EXTRA_CLASS_NAMES,
    Shape,
    SyntheticImage,
    generate_image,
    image_rng,
    place_objects,
    render,
)

__all__ = [
    "ALL_CLASS_NAMES",
    "CLASS_NAMES",
    "EXTRA_CLASS_NAMES",
    "OUTPUTS",
    "Shape",
    "SyntheticImage",
    "generate_image",
    "image_rng",
    "main",
    "place_objects",
    "render",
    "write_dataset",
]

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 4096
OUTPUTS = ("train", "val", "train.json", "val.json", "val_stack.tif", "val_stack.json")


def coco_annotations(
    masks: np.ndarray, labels: np.ndarray, image_id: int, first_id: int
) -> list[dict[str, Any]]:
    """COCO annotations (RLE with str counts, area, bbox [x, y, w, h]) of bool (M, H, W) masks."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    anns = []
    for i, (rle, area, box, label) in enumerate(zip(rles, areas, boxes, labels)):
        anns.append(
            {
                "id": first_id + i,
                "image_id": image_id,
                "category_id": int(label) + 1,
                "segmentation": {
                    "size": [int(s) for s in rle["size"]],
                    "counts": rle["counts"].decode("ascii"),
                },
                "area": int(area),
                "bbox": [float(v) for v in box],
                "iscrowd": 0,
            }
        )
    return anns


def coco_skeleton(split: str, seed: int, size: int, extra_classes: bool = False) -> dict[str, Any]:
    names = ALL_CLASS_NAMES if extra_classes else CLASS_NAMES
    return {
        "info": {
            "description": "napari-ovsam synthetic fluorescence instances",
            "split": split,
            "seed": seed,
            "size": size,
            "version": "1",
        },
        "licenses": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)],
        "images": [],
        "annotations": [],
    }


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; choose another --out or pass --overwrite.")
        for name in OUTPUTS:  # only what this generator writes; anything else in the folder stays
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_split(
    out: Path,
    split: str,
    num: int,
    *,
    seed: int,
    size: int,
    objects_per_image: tuple[int, int],
    progress: bool,
    extra_classes: bool = False,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Generate and write one split; returns its COCO dict and the images (uint16 (size, size))."""
    (out / split).mkdir(parents=True, exist_ok=True)
    coco = coco_skeleton(split, seed, size, extra_classes)
    images = []
    for i in tqdm(range(num), desc=f"synthetic {split}", disable=not progress):
        sample = generate_image(
            image_rng(seed, split, i), size, objects_per_image, extra_classes=extra_classes
        )
        name = f"{split}/img_{i:05d}.tif"
        tifffile.imwrite(out / name, sample.image, photometric="minisblack")
        coco["images"].append({"id": i + 1, "file_name": name, "height": size, "width": size})
        coco["annotations"] += coco_annotations(
            sample.masks, sample.labels, i + 1, len(coco["annotations"]) + 1
        )
        images.append(sample.image)
    return coco, images


def _dump(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def write_dataset(
    out: str | Path,
    *,
    num_train: int = 200,
    num_val: int = 50,
    size: int = 256,
    objects_per_image: tuple[int, int] = (5, 15),
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    extra_classes: bool = False,
) -> dict[str, Path]:
    """Write the dataset (layout in the module docstring) and return the paths of its parts by name.

    ``extra_classes`` mixes the ``EXTRA_CLASS_NAMES`` in (7 categories instead of 4).
    """
    out = Path(out)
    if not 1 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image must be 1 <= min <= max, got {objects_per_image}.")
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels (objects are 12-60 px), got {size}."
        )
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f"num_train and num_val must be >= 0 and not both 0, got {num_train} and {num_val}.")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}.")
    _prepare_output(out, overwrite)
    options = {
        "seed": seed,
        "size": size,
        "objects_per_image": objects_per_image,
        "progress": progress,
        "extra_classes": extra_classes,
    }
    paths = {"root": out}
    train, _ = write_split(out, "train", num_train, **options)  # type: ignore[arg-type]
    val, val_images = write_split(out, "val", num_val, **options)  # type: ignore[arg-type]
    for name, data in (("train", train), ("val", val)):
        paths[name] = out / f"{name}.json"
        _dump(data, paths[name])
    if val_images:
        paths["val_stack_image"] = out / "val_stack.tif"
        tifffile.imwrite(paths["val_stack_image"], np.stack(val_images), photometric="minisblack")
        stack = dict(
            val,
            images=[dict(im, file_name="val_stack.tif", slice_index=i) for i, im in enumerate(val["images"])],
        )
        paths["val_stack"] = out / "val_stack.json"
        _dump(stack, paths["val_stack"])
    return paths


def _objects_range(values: Sequence[int]) -> tuple[int, int]:
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m ovsam_model.data.synthetic",
        description="Write a synthetic 16-bit fluorescence instance dataset (COCO JSON + TIFF) with the "
        f"classes {', '.join(CLASS_NAMES)}.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    parser.add_argument("--num-train", type=int, default=200, help="number of training images (default 200)")
    parser.add_argument("--num-val", type=int, default=50, help="number of validation images (default 50)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument(
        "--objects-per-image",
        type=int,
        nargs="+",
        default=[5, 15],
        metavar="N",
        help="objects per image: MIN MAX, or one exact number (default 5 15); crowded images may get fewer",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same dataset"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier run in --out"
    )
    parser.add_argument(
        "--extra-classes",
        action="store_true",
        help=f"also draw the classes the demo model never saw ({', '.join(EXTRA_CLASS_NAMES)}; "
        "category ids 5-7), to measure naming from examples",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.objects_per_image) > 2:
        parser.error("--objects-per-image takes one or two numbers (MIN MAX).")
    try:
        paths = write_dataset(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            size=args.size,
            objects_per_image=_objects_range(args.objects_per_image),
            seed=args.seed,
            overwrite=args.overwrite,
            progress=not args.quiet,
            extra_classes=args.extra_classes,
        )
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    if not args.quiet:
        print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
