"""The synthetic dataset generator: determinism, classes, areas, COCO round trip, the CLI and its speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from pycocotools.coco import COCO

from ovsam_model.data.coco import CocoInstanceDataset
from ovsam_model.data.synthetic import CLASS_NAMES, generate_image, image_rng, main, write_dataset


def test_same_seed_gives_identical_images() -> None:
    a = generate_image(image_rng(7, "train", 3), 128)
    b = generate_image(image_rng(7, "train", 3), 128)
    c = generate_image(image_rng(8, "train", 3), 128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    options = {"num_train": 2, "num_val": 1, "size": 64, "objects_per_image": (2, 4), "seed": 5}
    first, second = write_dataset(tmp_path / "a", **options), write_dataset(tmp_path / "b", **options)
    for name in ("train", "val", "val_stack"):
        assert first[name].read_text() == second[name].read_text()
    for image in sorted((tmp_path / "a" / "train").iterdir()):
        np.testing.assert_array_equal(
            tifffile.imread(image), tifffile.imread(tmp_path / "b" / "train" / image.name)
        )


def test_images_are_16bit_with_visible_disjoint_instances() -> None:
    sample = generate_image(image_rng(0, "val", 0), 256, (8, 12))
    assert sample.image.dtype == np.uint16 and sample.image.shape == (256, 256)
    assert 5 <= len(sample.labels) <= 12  # crowded images may get fewer than asked
    assert sample.masks.sum(axis=0).max() == 1  # no pixel belongs to two instances
    assert sample.masks.sum(axis=(1, 2)).min() >= 32
    inside = sample.image[sample.masks.any(axis=0)].mean()
    outside = sample.image[~sample.masks.any(axis=0)].mean()
    assert inside > 1.5 * outside


def test_objects_touch_or_overlap() -> None:
    touching = 0
    for i in range(4):
        masks = generate_image(image_rng(0, "train", i), 128, (10, 12)).masks
        labels = (masks * np.arange(1, len(masks) + 1)[:, None, None]).sum(axis=0)
        left, right = labels[:, :-1], labels[:, 1:]
        touching += int(np.count_nonzero((left > 0) & (right > 0) & (left != right)))
    assert touching > 0


def test_all_four_classes_appear_across_images() -> None:
    labels = np.concatenate([generate_image(image_rng(0, "train", i), 128).labels for i in range(8)])
    assert set(labels.tolist()) == {0, 1, 2, 3}


def test_coco_json_categories_areas_and_round_trip(synthetic_root: Path) -> None:
    data = json.loads((synthetic_root / "train.json").read_text())
    assert data["categories"] == [
        {"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(CLASS_NAMES)
    ]
    assert CLASS_NAMES == ("nucleus", "rod", "ring", "cluster")
    assert all(a["area"] >= 32 and a["iscrowd"] == 0 for a in data["annotations"])
    coco = COCO(str(synthetic_root / "train.json"))
    for image in data["images"]:
        index = image["id"] - 1
        sample = generate_image(image_rng(1, "train", index), 96, (3, 6))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == len(sample.masks)
        for ann, mask, label in zip(anns, sample.masks, sample.labels):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["category_id"] == label + 1
            rows, cols = np.nonzero(mask)
            assert ann["bbox"] == [cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1]
        np.testing.assert_array_equal(tifffile.imread(synthetic_root / image["file_name"]), sample.image)


def test_val_stack_matches_val_images(synthetic_root: Path) -> None:
    stack = tifffile.imread(synthetic_root / "val_stack.tif")
    assert stack.shape == (2, 96, 96)
    per_file = CocoInstanceDataset(synthetic_root / "val.json", synthetic_root, train=False, image_size=96)
    per_slice = CocoInstanceDataset(
        synthetic_root / "val_stack.json", synthetic_root, train=False, image_size=96
    )
    assert [r.slice_index for r in per_slice.records] == [0, 1]
    for i in range(2):
        a, b = per_file[i], per_slice[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])


def test_cli_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["--out", str(out), "--num-train", "1", "--num-val", "1", "--size", "64", "--quiet"]
    assert main([*argv, "--objects-per-image", "2", "3", "--seed", "3"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["train", "train.json", "val", "val.json", "val_stack.json", "val_stack.tif"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(argv)
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--num-train", "2", "--overwrite"]) == 0
    assert len(list((out / "train").iterdir())) == 2
    assert (out / "notes.txt").read_text() == "mine"  # only the generator's own outputs are replaced


def test_generation_is_fast() -> None:
    generate_image(image_rng(0, "train", 0))  # warm up imports and caches
    start = time.perf_counter()
    for i in range(10):
        generate_image(image_rng(0, "train", i), 256)
    per_image = (time.perf_counter() - start) / 10
    assert per_image < 0.15  # measured ~14 ms; generous for a busy two-core machine
