"""A synthetic fluorescence-microscopy instance dataset in COCO format (the ``demo`` model's training data).

Four classes that differ in shape and texture (category ids 1..4, in this order, see ``CLASS_NAMES``):

- ``nucleus``: round or elliptic blobs with a slightly wavy outline and smooth internal texture, dimmer rim;
- ``rod``: elongated capsules, possibly slightly bent, brightest along their axis;
- ``ring``: hollow vesicles, a bright annulus around a dim lumen (the mask is the whole vesicle, lumen
  included);
- ``cluster``: a clump of 3-7 small touching blobs, each with its own brightness, annotated as one instance.

Objects touch and overlap; overlaps are resolved by depth order (later objects lie on top), so masks are the
visible, non-overlapping pixels, as in COCO. Every object keeps at least ``MIN_VISIBLE_FRACTION`` of its
area and ``MIN_AREA`` pixels visible. Images are 16-bit: blurred by a Gaussian PSF, uneven illumination,
per-image brightness, Poisson shot noise, camera offset and Gaussian read noise. Generation is deterministic:
image ``i`` of a split depends only on (seed, split, i).

Layout written by ``python -m ovsam_model.data.synthetic --out DIR``::

    DIR/train/img_00000.tif ...   16-bit (size, size) TIFF images
    DIR/val/img_00000.tif ...
    DIR/train.json, DIR/val.json  COCO instance JSON (RLE masks), file_name relative to DIR
    DIR/val_stack.tif             the val images as one (N, size, size) multi-page TIFF stack
    DIR/val_stack.json            the val annotations with per-slice entries (file_name + slice_index)
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from pycocotools import mask as mask_utils
from scipy import ndimage
from tqdm import tqdm

from ..cli_parser import OneLineErrorParser
from ..vocabulary import DEMO_CLASSES

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 4096
CLASS_NAMES = DEMO_CLASSES  # the demo model's vocabulary is this dataset's classes
MIN_AREA = 40  # above the datasets' 32 px filter, with a margin
MIN_VISIBLE_FRACTION = 0.4
MAX_OVERLAP_FRACTION = 0.3
TOUCH_PROBABILITY = 0.35
SPLIT_CODES = {"train": 0, "val": 1}
OUTPUTS = ("train", "val", "train.json", "val.json", "val_stack.tif", "val_stack.json")


@dataclass
class Shape:
    """One object before placement: a local (h, w) patch with its centre at the patch centre."""

    label: int  # class index into CLASS_NAMES
    mask: np.ndarray  # bool (h, w)
    profile: np.ndarray  # float32 (h, w), relative brightness (about 0..1) inside the mask
    texture: tuple[float, float]  # weights of the coarse and fine noise fields


@dataclass
class SyntheticImage:
    """A generated image and its instances. Masks are (row, col) indexed, disjoint and visible-only."""

    image: np.ndarray  # uint16 (size, size)
    masks: np.ndarray  # bool (M, size, size)
    labels: np.ndarray  # int64 (M,) class indices into CLASS_NAMES (category id = label + 1)


def _grid(radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) offsets from a sub-pixel centre over a square patch that holds a disk of ``radius``."""
    half = int(np.ceil(radius)) + 2
    centre = half + rng.uniform(-0.5, 0.5, size=2)
    yy, xx = np.mgrid[0 : 2 * half + 1, 0 : 2 * half + 1].astype(np.float32)
    return xx - centre[0], yy - centre[1]


def _rotate(x: np.ndarray, y: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return x * c + y * s, -x * s + y * c


def make_nucleus(rng: np.random.Generator) -> Shape:
    a = rng.uniform(7.0, 22.0)
    b = a * rng.uniform(0.65, 1.0)
    x, y = _grid(a * 1.15, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    r = np.hypot(u / a, v / b)
    phi = np.arctan2(v / b, u / a)
    edge = np.ones_like(r)
    for k in (2, 3, 4):  # a slightly wavy outline
        edge += rng.uniform(0, 0.05) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    rel = r / edge
    profile = np.clip(1.0 - 0.4 * rel**2, 0.0, 1.0)
    return Shape(0, rel <= 1.0, profile.astype(np.float32), (0.3, 0.05))


def make_rod(rng: np.random.Generator) -> Shape:
    length = rng.uniform(10.0, 44.0)
    radius = rng.uniform(3.0, 6.5)
    x, y = _grid(length / 2 + radius + 6, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    v = v - rng.uniform(-0.012, 0.012) * u**2  # parabolic bend
    beyond = np.maximum(np.abs(u) - length / 2, 0.0)
    d = np.hypot(beyond, v) / radius
    profile = np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)) * 0.8 + 0.2
    return Shape(1, d <= 1.0, profile.astype(np.float32), (0.05, 0.1))


def make_ring(rng: np.random.Generator) -> Shape:
    outer = rng.uniform(8.0, 24.0)
    squash = rng.uniform(0.8, 1.0)
    thickness = rng.uniform(2.5, max(3.0, 0.4 * outer))
    x, y = _grid(outer, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    rho = np.hypot(u, v / squash)
    rim = np.exp(-(((rho - (outer - thickness / 2)) / (thickness / 2)) ** 2))
    profile = np.maximum(rim, 0.12)
    return Shape(2, rho <= outer, profile.astype(np.float32), (0.1, 0.1))


def make_cluster(rng: np.random.Generator) -> Shape:
    count = int(rng.integers(3, 8))
    radii = rng.uniform(3.0, 6.0, size=count)
    centres = np.zeros((count, 2))
    for i in range(1, count):  # each blob touches (slightly overlaps) an earlier one
        j = int(rng.integers(0, i))
        angle = rng.uniform(0, 2 * np.pi)
        dist = (radii[i] + radii[j]) * rng.uniform(0.7, 0.95)
        centres[i] = centres[j] + dist * np.array([np.cos(angle), np.sin(angle)])
    centres -= centres.mean(axis=0)
    x, y = _grid(float(np.max(np.linalg.norm(centres, axis=1) + radii)), rng)
    profile = np.zeros_like(x)
    for (cx, cy), r, bright in zip(centres, radii, rng.uniform(0.55, 1.0, size=count)):
        d = np.hypot(x - cx, y - cy) / r
        profile = np.maximum(profile, bright * np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)))
    return Shape(3, profile > 0, (profile * 0.85 + 0.15).astype(np.float32), (0.05, 0.15))


SHAPE_MAKERS: tuple[Callable[[np.random.Generator], Shape], ...] = (
    make_nucleus,
    make_rod,
    make_ring,
    make_cluster,
)


def _clip_patch(mask: np.ndarray, top: int, left: int, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The image window (rows, cols) a patch placed at (top, left) covers, and the patch part inside it."""
    h, w = mask.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, size), min(left + w, size)
    if r1 <= r0 or c1 <= c0:
        return (slice(0, 0), slice(0, 0)), mask[:0, :0]
    return (slice(r0, r1), slice(c0, c1)), mask[r0 - top : r1 - top, c0 - left : c1 - left]


def _propose_position(
    rng: np.random.Generator, shape: Shape, placed: list[tuple[int, int, Shape]], size: int
) -> tuple[int, int]:
    """Top-left of the patch: uniform, or next to a placed object so that objects touch or overlap."""
    h, w = shape.mask.shape
    if placed and rng.random() < TOUCH_PROBABILITY:
        top, left, other = placed[int(rng.integers(len(placed)))]
        oh, ow = other.mask.shape
        reach = (np.sqrt(shape.mask.sum() / np.pi) + np.sqrt(other.mask.sum() / np.pi)) * rng.uniform(
            0.85, 1.05
        )
        angle = rng.uniform(0, 2 * np.pi)
        cy, cx = top + oh / 2 + reach * np.sin(angle), left + ow / 2 + reach * np.cos(angle)
        return int(round(cy - h / 2)), int(round(cx - w / 2))
    top = int(rng.integers(-h // 3, max(size - 2 * h // 3, 1 - h // 3)))
    left = int(rng.integers(-w // 3, max(size - 2 * w // 3, 1 - w // 3)))
    return top, left


def place_objects(
    rng: np.random.Generator, size: int, count: int, class_weights: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int, Shape]]]:
    """Place up to ``count`` objects in depth order.

    Returns:
        label map int16 (size, size) with 0 = background and k + 1 = the k-th placed object (its visible
        pixels), and the placed objects as (top, left, Shape).
    """
    labels = np.zeros((size, size), dtype=np.int16)
    placed: list[tuple[int, int, Shape]] = []
    full_area: list[int] = []
    visible: list[int] = []
    for _ in range(count * 6):
        if len(placed) == count:
            break
        shape = SHAPE_MAKERS[int(rng.choice(len(SHAPE_MAKERS), p=class_weights))](rng)
        top, left = _propose_position(rng, shape, placed, size)
        window, part = _clip_patch(shape.mask, top, left, size)
        area = int(shape.mask.sum())
        if part.sum() < max(MIN_AREA, MIN_VISIBLE_FRACTION * area):
            continue
        below = labels[window][part]
        below = below[below > 0]
        if below.size > MAX_OVERLAP_FRACTION * area:
            continue
        lost = np.bincount(below, minlength=len(placed) + 1)[1:]
        remaining = np.asarray(visible) - lost
        if np.any(remaining < np.maximum(MIN_AREA, MIN_VISIBLE_FRACTION * np.asarray(full_area))):
            continue
        labels[window][part] = len(placed) + 1
        visible = [*remaining.tolist(), int(part.sum())]
        full_area.append(area)
        placed.append((top, left, shape))
    return labels, placed


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth multiplicative field: a broad off-centre bump plus a linear gradient, about 0.5..1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(-0.3, 1.3, size=2)
    width = rng.uniform(0.5, 1.5)
    bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    gx, gy = rng.uniform(-0.15, 0.15, size=2)
    strength = rng.uniform(0.1, 0.5)
    return np.clip((1 - strength) + strength * bump + gx * (xx - 0.5) + gy * (yy - 0.5), 0.2, None)


def render(rng: np.random.Generator, labels: np.ndarray, placed: list[tuple[int, int, Shape]]) -> np.ndarray:
    """Render the label map to a 16-bit fluorescence-like image (uint16, same shape)."""
    size = labels.shape[0]
    coarse, fine = _smooth_noise(rng, size, 3.0), _smooth_noise(rng, size, 1.0)
    signal = np.zeros((size, size), dtype=np.float32)
    for k, (top, left, shape) in enumerate(placed):
        window, part = _clip_patch(shape.mask, top, left, size)
        rows, cols = window
        prof = shape.profile[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
        mine = labels[window] == k + 1
        texture = 1.0 + shape.texture[0] * coarse[window] + shape.texture[1] * fine[window]
        amplitude = rng.uniform(450.0, 2500.0)
        signal[window] = np.where(mine, amplitude * prof * np.clip(texture, 0.3, None), signal[window])
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.4))
    background = rng.uniform(40.0, 300.0)
    photons = (signal + background) * _illumination(rng, size) * rng.uniform(0.4, 2.5)
    counts = (
        rng.poisson(photons).astype(np.float32)
        + 100.0
        + rng.normal(0.0, rng.uniform(3.0, 15.0), photons.shape)
    )
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def generate_image(
    rng: np.random.Generator, size: int = 256, objects_per_image: tuple[int, int] = (5, 15)
) -> SyntheticImage:
    """Generate one image with between ``objects_per_image[0]`` and ``[1]`` objects (fewer when crowded)."""
    count = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    class_weights = rng.dirichlet(np.full(len(CLASS_NAMES), 2.0))  # images differ in their class mix
    labels, placed = place_objects(rng, size, count, class_weights)
    image = render(rng, labels, placed)
    masks = labels[None] == np.arange(1, len(placed) + 1, dtype=np.int16)[:, None, None]
    classes = np.array([shape.label for _, _, shape in placed], dtype=np.int64)
    return SyntheticImage(image, masks, classes)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of how many images are generated."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


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


def coco_skeleton(split: str, seed: int, size: int) -> dict[str, Any]:
    return {
        "info": {
            "description": "napari-ovsam synthetic fluorescence instances",
            "split": split,
            "seed": seed,
            "size": size,
            "version": "1",
        },
        "licenses": [],
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(CLASS_NAMES)
        ],
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
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Generate and write one split; returns its COCO dict and the images (uint16 (size, size))."""
    (out / split).mkdir(parents=True, exist_ok=True)
    coco = coco_skeleton(split, seed, size)
    images = []
    for i in tqdm(range(num), desc=f"synthetic {split}", disable=not progress):
        sample = generate_image(image_rng(seed, split, i), size, objects_per_image)
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
) -> dict[str, Path]:
    """Write the dataset (layout in the module docstring) and return the paths of its parts by name."""
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
    options = {"seed": seed, "size": size, "objects_per_image": objects_per_image, "progress": progress}
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
        )
    except (FileExistsError, ValueError) as err:
        parser.error(str(err))
    if not args.quiet:
        print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
