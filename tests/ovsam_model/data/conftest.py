"""Fixtures for the data tests: a tiny synthetic dataset and a COCO file with every annotation kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from ovsam_model.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset: 3 train and 2 val images of 96x96 (plus the val stack), seed 1."""
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, num_train=3, num_val=2, size=96, objects_per_image=(3, 6), seed=1)
    return root


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE: column-major run lengths, starting with a (possibly empty) run of zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def _box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Bool (h, w) mask of the pixels with x0 <= col < x1 and y0 <= row < y1."""
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def tiny_coco(tmp_path: Path) -> dict[str, Any]:
    """Two images (8-bit PNG 40x60, 16-bit TIFF 50x50) with polygon, RLE, uncompressed-RLE, crowd and tiny
    instances of the categories cat (1), dog (2), bird (3).

    Returns a dict with ``ann_file``, ``root``, ``data`` (the JSON dict) and ``masks`` (ann id -> bool mask).
    """
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", rng.integers(0, 4000, (50, 50), dtype=np.uint16))
    masks = {
        1: _box_mask(40, 60, 5, 5, 25, 20),  # polygon, cat
        2: _box_mask(40, 60, 30, 10, 55, 35),  # compressed RLE, dog
        3: _box_mask(40, 60, 0, 0, 60, 40),  # crowd
        4: _box_mask(50, 50, 10, 10, 40, 30),  # uncompressed RLE, bird
        5: _box_mask(50, 50, 45, 45, 50, 50),  # 25 px: too small
    }
    polygon = [5, 5, 25, 5, 25, 20, 5, 20]  # masks[1] only approximates its rasterisation
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [polygon], "area": 300, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _rle(masks[2]), "area": 625, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": _uncompressed_rle(masks[3]), "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 3, "segmentation": _uncompressed_rle(masks[4]), "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 2, "segmentation": _rle(masks[5]), "area": 25, "iscrowd": 0},
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 2, "file_name": "b.tif", "height": 50, "width": 50},
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return {"ann_file": ann_file, "root": tmp_path, "data": data, "masks": masks}
