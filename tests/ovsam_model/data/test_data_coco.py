"""CocoInstanceDataset: loading, filtering, class mapping, items, prompts, stacks and error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import zarr
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ovsam_model.data.coco import CocoInstanceDataset, collate_instances, interior_point
from ovsam_model.data.synthetic import CLASS_NAMES
from ovsam_model.data.transforms import masks_to_boxes
from ovsam_model.image import to_model_rgb


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_train_item_shapes_dtypes_and_ranges(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(synthetic_root / "train.json", synthetic_root, image_size=128)
    assert len(ds) == 3 and ds.class_names == list(CLASS_NAMES)
    item = ds[0]
    image, masks = item["image"], item["masks"]
    assert image.dtype == torch.float32 and image.shape[0] == 3 and max(image.shape[1:]) <= 128
    assert 0.0 <= float(image.min()) and float(image.max()) <= 255.0
    m = masks.shape[0]
    assert m >= 1 and masks.dtype == torch.bool and masks.shape[1:] == image.shape[1:]
    assert item["boxes"].dtype == torch.float32 and item["boxes"].shape == (m, 4)
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (m,)
    assert int(item["labels"].max()) < 4
    assert item["original_size"] == (96, 96) and isinstance(item["image_id"], int)
    assert isinstance(item["scale"], float)
    assert masks.flatten(1).sum(1).min() >= 32  # instances under min_area were dropped after the crop
    torch.testing.assert_close(item["boxes"], masks_to_boxes(masks))


def test_prompts_counts_targets_and_geometry(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(
        synthetic_root / "train.json", synthetic_root, image_size=128, points_per_prompt=2
    )
    item = ds[1]
    prompts, masks = item["prompts"], item["masks"]
    nb, np_ = len(prompts["boxes"]), len(prompts["points"])
    assert nb + np_ == 40 and nb == 21
    assert prompts["points"].shape == (np_, 2, 2) and prompts["point_labels"].shape == (np_, 2)
    assert bool((prompts["point_labels"] == 1).all())
    torch.testing.assert_close(prompts["boxes"], item["boxes"][prompts["box_targets"]])
    for points, target in zip(prompts["points"], prompts["point_targets"]):
        for x, y in points.tolist():
            assert masks[target, int(y), int(x)]
    counts = torch.bincount(
        torch.cat([prompts["box_targets"], prompts["point_targets"]]), minlength=len(masks)
    )
    assert int(counts.max()) - int(counts.min()) <= 1  # instances tiled evenly


def test_eval_item_resizes_longest_side(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(synthetic_root / "val.json", synthetic_root, image_size=160, train=False)
    item = ds[0]
    assert item["image"].shape == (3, 160, 160) and "prompts" not in item
    assert item["scale"] == pytest.approx(160 / 96)
    coco = COCO(str(synthetic_root / "val.json"))
    assert len(item["masks"]) == len(coco.getAnnIds(imgIds=[item["image_id"]]))


def test_items_are_reproducible_and_epochs_differ(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(synthetic_root / "train.json", synthetic_root, image_size=128, seed=3)
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["prompts"]["points"], b["prompts"]["points"])
    ds.set_epoch(1)
    assert not torch.equal(a["prompts"]["points"], ds[2]["prompts"]["points"])


def test_heavy_crops_never_return_zero_instances(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(
        synthetic_root / "train.json", synthetic_root, image_size=32, resize_ratio=(8.0, 10.0), min_area=32
    )
    for i in range(len(ds)):
        item = ds[i]
        assert len(item["masks"]) >= 1 and item["masks"].flatten(1).sum(1).min() >= 32
        assert max(item["image"].shape[1:]) <= 32


def test_collate_keeps_a_list(synthetic_root: Path) -> None:
    ds = CocoInstanceDataset(synthetic_root / "train.json", synthetic_root, image_size=64)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_instances)
    batch = next(iter(loader))
    assert isinstance(batch, list) and len(batch) == 2 and "prompts" in batch[0]


def test_polygons_rle_crowd_and_tiny_instances(tiny_coco: dict[str, Any]) -> None:
    ds = CocoInstanceDataset(tiny_coco["ann_file"], tiny_coco["root"], train=False)
    kept = {i: ds.load_original(i) for i in range(len(ds))}
    assert [list(k["ann_ids"]) for k in kept.values()] == [[1, 2], [4, 5]]  # eval keeps the tiny one
    train = CocoInstanceDataset(tiny_coco["ann_file"], tiny_coco["root"])
    assert [a["id"] for r in train.records for a in r.annotations] == [1, 2, 4]  # no crowd (3), no tiny (5)
    coco = COCO(str(tiny_coco["ann_file"]))
    original = train.load_original(0)
    for mask, ann_id in zip(original["masks"], original["ann_ids"]):
        np.testing.assert_array_equal(mask, coco.annToMask(coco.anns[int(ann_id)]).astype(bool))
    np.testing.assert_array_equal(train.load_original(1)["masks"][0], tiny_coco["masks"][4])
    assert list(original["labels"]) == [0, 1] and list(train.load_original(1)["labels"]) == [2]


def test_class_names_map_labels_and_unknown_categories_fail(tiny_coco: dict[str, Any]) -> None:
    ann, root = tiny_coco["ann_file"], tiny_coco["root"]
    ds = CocoInstanceDataset(ann, root, class_names=["bird, sparrow", "Dog", "cat", "horse"], train=False)
    assert list(ds.load_original(0)["labels"]) == [2, 1] and list(ds.load_original(1)["labels"]) == [0, 1]
    with pytest.raises(ValueError, match=r"not in class_names: cat.*ignore_unknown_categories"):
        CocoInstanceDataset(ann, root, class_names=["dog", "bird"])
    ds = CocoInstanceDataset(ann, root, class_names=["dog", "bird"], ignore_unknown_categories=True)
    assert [a["id"] for r in ds.records for a in r.annotations] == [2, 4]


def test_keep_classes_drops_instances_and_empty_images(tiny_coco: dict[str, Any]) -> None:
    ds = CocoInstanceDataset(tiny_coco["ann_file"], tiny_coco["root"], keep_classes={"cat"})
    assert ds.image_ids == [1] and [a["id"] for a in ds.records[0].annotations] == [1]
    assert ds.class_names == ["cat", "dog", "bird"]  # the classifier still spans every class
    with pytest.raises(ValueError, match="keep_classes.*horse"):
        CocoInstanceDataset(tiny_coco["ann_file"], tiny_coco["root"], keep_classes={"horse"})


def test_error_messages_name_the_file(tiny_coco: dict[str, Any], tmp_path: Path) -> None:
    root, data = tiny_coco["root"], tiny_coco["data"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoInstanceDataset(tmp_path / "missing.json", root)
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        CocoInstanceDataset(_write(tmp_path / "bad.json", "{not json"), root)
    with pytest.raises(ValueError, match=r"keys.json is not a COCO instance file.*'categories'"):
        CocoInstanceDataset(_write(tmp_path / "keys.json", {"images": [], "annotations": []}), root)
    broken = dict(
        data, annotations=[{k: v for k, v in data["annotations"][0].items() if k != "segmentation"}]
    )
    with pytest.raises(ValueError, match=r"annotation entry 1 lacks the key\(s\) \['segmentation'\]"):
        CocoInstanceDataset(_write(tmp_path / "noseg.json", broken), root)
    with pytest.raises(ValueError, match=r"empty.json has no annotations; annotate"):
        CocoInstanceDataset(_write(tmp_path / "empty.json", dict(data, annotations=[])), root)
    with pytest.raises(FileNotFoundError, match=r"a.png.*image_root"):
        CocoInstanceDataset(tiny_coco["ann_file"], tmp_path / "elsewhere")
    moved = dict(data, images=[data["images"][0], dict(data["images"][1], file_name="gone.tif")])
    ds = CocoInstanceDataset(_write(tmp_path / "moved.json", moved), root)
    with pytest.raises(FileNotFoundError, match=r"gone.tif \(image_id 2 of .*moved.json\)"):
        ds[1]
    wrong_size = dict(data, images=[dict(data["images"][0], height=41), data["images"][1]])
    with pytest.raises(ValueError, match=r"size.json: annotation 2: RLE 'size' \[40, 60\] is not the image"):
        CocoInstanceDataset(_write(tmp_path / "size.json", wrong_size), root)
    wrong_size["annotations"] = data["annotations"][:1] + data["annotations"][3:]  # polygon only in image 1
    with pytest.raises(ValueError, match=r"a.png: image is \(40, 60\) but .*says"):
        CocoInstanceDataset(_write(tmp_path / "size.json", wrong_size), root).load_original(0)


def test_per_slice_entries_of_tiff_and_zarr_stacks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 3000, (3, 24, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    z = zarr.open_array(
        str(tmp_path / "stack.zarr"), mode="w", shape=stack.shape, chunks=(1, 24, 32), dtype="uint16"
    )
    z[:] = stack
    tifffile.imwrite(tmp_path / "plain.tif", stack[0])
    box = np.zeros((24, 32, 1), dtype=np.uint8, order="F")
    box[2:12, 4:7] = 1  # 30 pixels
    encoded = mask_utils.encode(box)[0]
    rle = {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
    images = [
        {"id": 1, "file_name": "stack.tif", "slice_index": 2, "height": 24, "width": 32},
        {"id": 2, "file_name": str(tmp_path / "stack.zarr"), "frame_index": 1, "height": 24, "width": 32},
        {"id": 3, "file_name": "plain.tif", "height": 24, "width": 32},
    ]
    anns = [{"id": i, "image_id": i, "category_id": 1, "segmentation": rle, "iscrowd": 0} for i in (1, 2, 3)]
    categories = [{"id": 1, "name": "nucleus"}]
    ann_file = _write(
        tmp_path / "slices.json", {"images": images, "annotations": anns, "categories": categories}
    )
    ds = CocoInstanceDataset(ann_file, train=False, image_size=32)  # image_root defaults to the JSON's folder
    slices = [(r.path.name, r.slice_index) for r in ds.records]
    assert slices == [("stack.tif", 2), ("stack.zarr", 1), ("plain.tif", None)]
    for index, expected in ((0, stack[2]), (1, stack[1]), (2, stack[0])):
        np.testing.assert_array_equal(ds.load_original(index)["image"], to_model_rgb(expected))
    assert int(ds[0]["masks"].sum()) == 30


def test_interior_point_is_farthest_from_the_boundary() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:11, 2:25] = True  # a 7-row bar: the centre row is row 7
    x, y = interior_point(mask)
    assert y == 7 and 5 <= x <= 21 and mask[y, x]
    l_shape = np.zeros((30, 30), dtype=bool)
    l_shape[0:30, 0:6] = True
    l_shape[24:30, 0:30] = True
    x, y = interior_point(l_shape)
    assert l_shape[y, x]
    edge = np.ones((5, 5), dtype=bool)  # the image border counts as boundary
    assert interior_point(edge) == (2, 2)
    with pytest.raises(ValueError):
        interior_point(np.zeros((3, 3), dtype=bool))


def test_lvis_style_entries(tmp_path: Path) -> None:
    (tmp_path / "train2017").mkdir()
    tifffile.imwrite(tmp_path / "train2017" / "000000000009.tif", np.zeros((20, 20), dtype=np.uint8))
    image = {
        "id": 9,
        "coco_url": "http://images.cocodataset.org/train2017/000000000009.tif",
        "height": 20,
        "width": 20,
    }
    polygon = [[2, 2, 15, 2, 15, 15, 2, 15]]
    anns = [{"id": 1, "image_id": 9, "category_id": 5, "segmentation": polygon, "area": 169}]  # no iscrowd
    cats = [{"id": 5, "name": "aerosol_can", "frequency": "r"}]
    ann_file = _write(tmp_path / "lvis.json", {"images": [image], "annotations": anns, "categories": cats})
    ds = CocoInstanceDataset(ann_file, tmp_path, class_names=["Aerosol can"], train=False)
    assert ds.records[0].path == tmp_path / "train2017" / "000000000009.tif"
    assert ds[0]["labels"].tolist() == [0]


def _edit_ann(key: str, value: Any, k: int = 0) -> Any:
    return lambda d: d["annotations"][k].__setitem__(key, value)


def _edit_rle_counts(d: dict[str, Any]) -> None:
    short = np.zeros((20, 60), np.uint8, order="F")  # image 1 is 40 x 60: half its pixels
    d["annotations"][1]["segmentation"] = dict(_rle(short), size=[40, 60])


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


LOADER_ROWS = [
    ("nan polygon", _edit_ann("segmentation", [[5, float("nan"), 25, 5, 25, 20]]), "annotation 1: polygon 0"),
    ("infinite polygon", _edit_ann("segmentation", [[5, 5, float("inf"), 5, 25, 20]]), "non-finite"),
    ("huge polygon", _edit_ann("segmentation", [[5, 5, 1e9, 5, 25, 20]]), "outside the 60 x 40 image"),
    ("short RLE", _edit_rle_counts, "annotation 2: RLE counts cover 1200 pixels"),
    ("unknown category", _edit_ann("category_id", 9), "annotation 1: 'category_id' 9 is not in"),
    ("unknown image", _edit_ann("image_id", 9), "annotation 1: 'image_id' 9 is not in 'images'"),
    ("string id", _edit_ann("id", "one"), "its 'id' must be an integer"),
    ("duplicate id", _edit_ann("id", 1, k=1), "annotation id 1 appears twice"),
    ("huge width", lambda d: d["images"][0].__setitem__("width", 10**12), "image 1: 'width' must be in"),
    ("bool height", lambda d: d["images"][0].__setitem__("height", True), "'height' must be an integer"),
    ("category id", lambda d: d["categories"][0].__setitem__("id", -1), "category -1: its 'id'"),
    ("bbox", _edit_ann("bbox", [0, 0, "a", 1]), "'bbox' must be a flat list of numbers"),
]


@pytest.mark.parametrize(("edit", "fragment"), [r[1:] for r in LOADER_ROWS], ids=[r[0] for r in LOADER_ROWS])
def test_loader_refuses_malformed_coco_before_decoding(
    tiny_coco: dict[str, Any], tmp_path: Path, edit: Any, fragment: str
) -> None:
    data = json.loads(json.dumps(tiny_coco["data"]))
    edit(data)
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(ValueError) as caught:
        CocoInstanceDataset(path, tiny_coco["root"])
    assert str(path) in str(caught.value) and fragment in str(caught.value), str(caught.value)


def test_ann_to_mask_checks_before_decoding() -> None:
    from ovsam_model.data.coco import ann_to_mask

    with pytest.raises(ValueError, match="non-finite"):
        ann_to_mask([[1, 1, float("nan"), 1, 3, 3]], 10, 10)
    with pytest.raises(ValueError, match="RLE counts cover 50 pixels"):
        ann_to_mask({"size": [10, 10], "counts": [50]}, 10, 10)
    assert ann_to_mask([[1, 1, 8, 1, 8, 8]], 10, 10).sum() > 0
