"""COCO export/import: exact round trips, categories, stacks, and agreement with pycocotools."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_ovsam.coco_io import category_names, labels_to_coco
from napari_ovsam.coco_read import coco_to_labels, looks_like_coco
from napari_ovsam.features import add_feature_rows, features_row

VOCAB = ["nucleus", "rod", "ring", "cluster"]


@pytest.fixture
def labels_2d():
    labels = np.zeros((23, 31), np.uint16)
    labels[2:9, 3:12] = 1
    labels[10:20, 20:31] = 2  # touches the right border
    labels[0, 0] = 3  # a single pixel in the corner
    labels[5:7, 5:7] = 4  # a hole-making object inside label 1
    labels[22, 10:15] = 5  # bottom row
    return labels


@pytest.fixture
def features():
    return add_feature_rows(
        None,
        [
            features_row(1, "nucleus", 0.93, 0.88, ["nucleus", "ring"], [0.93, 0.04]),
            features_row(2, "ring", 0.61, 0.72, ["ring", "rod"], [0.61, 0.3], reviewed=True),
            features_row(3, "my cell", np.nan, 0.5),  # a user's rename, no score
            features_row(4, "rod", 0.4, np.nan),
        ],
    )  # label 5 has no row


def through_json(coco):
    return json.loads(json.dumps(coco))


def test_round_trip_2d_is_exact(labels_2d, features):
    coco = through_json(labels_to_coco(labels_2d, features, vocabulary_names=VOCAB, image_name="cells.tif"))
    labels, table, metadata = coco_to_labels(coco)
    assert labels.dtype == labels_2d.dtype
    np.testing.assert_array_equal(labels, labels_2d)
    pd.testing.assert_frame_equal(table, features)
    assert metadata["vocabulary"] == VOCAB and metadata["source"] == "ovsam"
    assert metadata["image_name"] == "cells.tif"


def test_round_trip_of_a_stack_with_a_3d_object(features):
    stack = np.zeros((4, 12, 14), np.int32)
    stack[0, 1:4, 1:4] = 1
    stack[1, 2:6, 2:5] = 1  # object 1 continues on slice 1
    stack[1, 8:11, 8:13] = 2
    stack[3, :, :] = 3  # a whole-slice object; slice 2 is empty
    coco = through_json(labels_to_coco(stack, features, vocabulary_names=VOCAB, image_name="stack.zarr"))
    assert [im["slice_index"] for im in coco["images"]] == [0, 1, 2, 3]
    assert [im["slice_position"] for im in coco["images"]] == [[0], [1], [2], [3]]
    assert {im["file_name"] for im in coco["images"]} == {"stack.zarr"}
    parts = [a for a in coco["annotations"] if a["instance_id"] == 1]
    assert [a["image_id"] for a in parts] == [1, 2]
    assert all(a["class_name"] == "nucleus" and a["score"] == pytest.approx(0.93) for a in parts)
    labels, table, _ = coco_to_labels(coco)
    np.testing.assert_array_equal(labels, stack)
    pd.testing.assert_frame_equal(table, features)


def test_4d_stacks_use_a_flat_slice_index():
    stack = np.zeros((2, 3, 5, 5), np.uint8)
    stack[1, 2, 1:3, 1:3] = 9
    coco = labels_to_coco(stack, None, vocabulary_names=VOCAB)
    image = coco["images"][coco["annotations"][0]["image_id"] - 1]
    assert image["slice_index"] == 5 and image["slice_position"] == [1, 2]
    np.testing.assert_array_equal(coco_to_labels(through_json(coco))[0], stack)


def test_categories_follow_the_vocabulary_then_extra_names(labels_2d, features):
    coco = labels_to_coco(labels_2d, features, vocabulary_names=VOCAB)
    names = [c["name"] for c in coco["categories"]]
    assert names == [*VOCAB, "my cell", "unknown"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5, 6]
    by_instance = {a["instance_id"]: a for a in coco["annotations"]}
    assert by_instance[1]["category_id"] == 1
    assert by_instance[2]["category_id"] == 3
    assert by_instance[3]["category_id"] == 5 and by_instance[3]["score"] is None
    assert by_instance[4]["iou"] is None
    assert by_instance[5]["class_name"] == "unknown" and by_instance[5]["category_id"] == 6
    assert category_names(["person, child, girl", " dog "]) == ["person", "dog"]


def test_pycocotools_loads_the_file_and_masks_match(tmp_path, labels_2d, features):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    stack = np.stack([labels_2d, np.flipud(labels_2d), np.zeros_like(labels_2d)])
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(labels_to_coco(stack, features, vocabulary_names=VOCAB)))
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 10
    for ann in coco.loadAnns(coco.getAnnIds()):
        z = coco.imgs[ann["image_id"]]["slice_index"]
        expected = stack[z] == ann["instance_id"]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        encoded = mask_utils.encode(np.asfortranarray(expected.astype(np.uint8)))
        assert ann["segmentation"]["counts"] == encoded["counts"].decode()
        assert ann["bbox"] == list(mask_utils.toBbox(encoded))
        assert ann["area"] == int(mask_utils.area(encoded)) == int(expected.sum())
    assert coco.loadCats(coco.getCatIds())[0]["name"] == "nucleus"


def test_empty_labels_and_lazy_input(tmp_path):
    import zarr

    empty = labels_to_coco(np.zeros((2, 6, 7), np.int32), None, vocabulary_names=VOCAB)
    assert empty["annotations"] == [] and len(empty["images"]) == 2
    labels, table, _ = coco_to_labels(through_json(empty))
    assert labels.shape == (2, 6, 7) and not labels.any() and len(table) == 0

    lazy = zarr.create_array(str(tmp_path / "l.zarr"), shape=(2, 6, 7), dtype="int32", chunks=(1, 6, 7))
    lazy[1, 2:4, 2:4] = 8
    coco = labels_to_coco(lazy, None, vocabulary_names=VOCAB)
    assert [a["instance_id"] for a in coco["annotations"]] == [8]
    np.testing.assert_array_equal(coco_to_labels(through_json(coco))[0], lazy[...])


def test_foreign_coco_with_polygons_and_overlaps():
    big = [[1.0, 1.0, 18.0, 1.0, 18.0, 18.0, 1.0, 18.0]]
    small = [[5.0, 5.0, 9.0, 5.0, 9.0, 9.0, 5.0, 9.0]]
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 20}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "segmentation": small, "score": 0.9},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": big},
        ],
        "categories": [{"id": 1, "name": "cell"}, {"id": 3, "name": "nucleus"}],
    }
    assert looks_like_coco(coco)
    labels, table, metadata = coco_to_labels(coco)
    assert labels.shape == (20, 20) and labels.dtype == np.int32
    assert labels[7, 7] == 1  # the small object stays on top of the big one
    assert labels[2, 15] == 2
    assert list(table["class_name"]) == ["nucleus", "cell"]
    assert table["score"].iloc[0] == pytest.approx(0.9) and np.isnan(table["score"].iloc[1])
    assert metadata["vocabulary"] == ["cell", "nucleus"] and metadata["source"] == "coco"


def test_foreign_multi_image_coco_becomes_a_stack_and_uncompressed_rle_is_read():
    from pycocotools import mask as mask_utils

    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:6] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))
    uncompressed = {"size": [6, 8], "counts": [13, 2, 4, 2, 4, 2, 4, 2, 15]}
    np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(uncompressed, 6, 8)), mask)
    coco = {
        "images": [{"id": i, "height": 6, "width": 8, "file_name": f"{i}.png"} for i in (2, 1)],
        "annotations": [
            {
                "id": 1,
                "image_id": 2,
                "category_id": 1,
                "segmentation": {"size": [6, 8], "counts": counts["counts"]},
            },
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": uncompressed},
        ],
        "categories": [{"id": 1, "name": "rod"}],
    }
    labels, _, _ = coco_to_labels(coco)
    assert labels.shape == (2, 6, 8)
    np.testing.assert_array_equal(labels[1] == 1, mask.astype(bool))  # image id 2 is the second slice
    assert (labels[0] == 2).sum() == mask.sum()


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"images": []},
        {"images": [{"id": 1, "height": 4, "width": 4}], "annotations": []},  # empty, and not ours
        {
            "images": [{"id": 1, "height": 4, "width": 4}],
            "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}],
        },
        {"images": "x", "annotations": None},
    ],
)
def test_looks_like_coco_rejects(obj):
    assert not looks_like_coco(obj)


def test_looks_like_coco_claims_multi_size_and_broken_files_for_the_reader_to_refuse():
    two_sizes = {
        "images": [{"id": 1, "height": 4, "width": 4}, {"id": 2, "height": 5, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}],
    }
    assert looks_like_coco(two_sizes)
    assert looks_like_coco({**two_sizes, "annotations": [{"segmentation": None}]})  # broken: refused on read
    assert looks_like_coco({"images": [{"id": 1}], "annotations": [], "categories": []})


def test_coco_to_labels_needs_images():
    with pytest.raises(ValueError, match="no images"):
        coco_to_labels({"images": [], "annotations": []})
    with pytest.raises(ValueError, match=r"different sizes.*each image becomes its own layer"):
        coco_to_labels(
            {
                "images": [{"id": 1, "height": 4, "width": 4}, {"id": 2, "height": 5, "width": 4}],
                "annotations": [],
            }
        )
