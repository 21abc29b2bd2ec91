"""What we export imports elsewhere: every field CVAT's "COCO 1.0" and Label Studio's COCO importer read, with
the right types (see docs/coco-interop.md); RLE exact, polygons close, both read by pycocotools."""

from __future__ import annotations

import json
import numbers

import numpy as np
import pytest
from pycocotools.coco import COCO
from skimage.draw import disk

from napari_ovsam._writer import write_coco, write_coco_polygons
from napari_ovsam.coco_read import coco_to_labels
from napari_ovsam.features import add_feature_rows, features_row
from ovsam_model.data.coco import read_coco_json


@pytest.fixture
def layer():
    labels = np.zeros((2, 48, 64), np.uint16)
    labels[0][disk((20, 20), 12, shape=(48, 64))] = 1
    labels[0, 30:45, 40:60] = 2
    labels[1, 5:25, 10:30] = 3
    labels[1, 10:15, 15:20] = 0  # a hole
    features = add_feature_rows(
        None, [features_row(1, "nucleus", 0.9, 0.8), features_row(2, "rod", float("nan"), 0.5)]
    )  # label 3 has no row: unknown, no score
    attributes = {
        "name": "labels",
        "features": features,
        "metadata": {"ovsam": {"vocabulary": ["nucleus", "rod"], "image_name": "embryo.tif"}},
    }
    return labels, attributes


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def check_required_fields(coco, polygons):
    """The COCO fields the importers need, with their types."""
    assert isinstance(coco["info"], dict) and isinstance(coco["licenses"], list)
    image_ids, category_ids = set(), set()
    for image in coco["images"]:
        assert is_int(image["id"]) and image["id"] >= 1 and image["id"] not in image_ids
        assert (
            is_int(image["width"]) and is_int(image["height"]) and image["width"] > 0 and image["height"] > 0
        )
        assert isinstance(image["file_name"], str) and image["file_name"]
        image_ids.add(image["id"])
    for category in coco["categories"]:
        assert is_int(category["id"]) and category["id"] >= 1 and category["id"] not in category_ids
        assert isinstance(category["name"], str) and isinstance(category["supercategory"], str)
        category_ids.add(category["id"])
    ann_ids = set()
    for ann in coco["annotations"]:
        assert is_int(ann["id"]) and ann["id"] >= 1 and ann["id"] not in ann_ids
        ann_ids.add(ann["id"])
        assert ann["image_id"] in image_ids and ann["category_id"] in category_ids
        assert ann["iscrowd"] == 0 and is_int(ann["iscrowd"])
        assert is_number(ann["area"]) and ann["area"] > 0
        assert len(ann["bbox"]) == 4 and all(is_number(v) for v in ann["bbox"])
        segmentation = ann["segmentation"]
        if polygons:
            assert isinstance(segmentation, list) and segmentation
            for polygon in segmentation:
                assert len(polygon) >= 6 and len(polygon) % 2 == 0 and all(is_number(v) for v in polygon)
            assert None not in ann.values()  # no null numbers for importers to trip on
        else:
            assert isinstance(segmentation["counts"], str)
            image = next(im for im in coco["images"] if im["id"] == ann["image_id"])
            assert segmentation["size"] == [image["height"], image["width"]]


@pytest.mark.parametrize("polygons", [False, True], ids=["rle", "polygons"])
def test_export_has_the_fields_cvat_and_label_studio_read(tmp_path, layer, polygons):
    labels, attributes = layer
    writer = write_coco_polygons if polygons else write_coco
    [path] = writer(str(tmp_path / "export.json"), labels, attributes)
    coco = json.loads(open(path).read())
    check_required_fields(coco, polygons)
    assert [c["name"] for c in coco["categories"]] == ["nucleus", "rod", "unknown"]
    read_coco_json(path)  # our own training loader's validation accepts it too

    index = COCO(path)  # pycocotools reads it as the importers do
    for ann in coco["annotations"]:
        image = next(im for im in coco["images"] if im["id"] == ann["image_id"])
        truth = labels[image.get("slice_index", 0)] == ann["instance_id"]
        mask = index.annToMask(index.anns[ann["id"]]).astype(bool)
        if polygons:  # holes filled, corners cut: close, not exact
            filled = truth.copy()
            if ann["instance_id"] == 3:
                filled[5:25, 10:30] = True  # the object with its hole filled
            assert (mask & filled).sum() / (mask | filled).sum() > 0.95
            assert not (mask & ~filled).any()
        else:
            np.testing.assert_array_equal(mask, truth)


def test_polygon_export_reads_back_with_its_features(tmp_path, layer):
    labels, attributes = layer
    [path] = write_coco_polygons(str(tmp_path / "p.json"), labels, attributes)
    coco = json.loads(open(path).read())
    assert coco["ovsam"]["segmentation"] == "polygons"
    by_id = {a["instance_id"]: a for a in coco["annotations"]}
    assert "score" not in by_id[2] and by_id[2]["iou"] == 0.5 and "score" not in by_id[3]
    back, table, _ = coco_to_labels(coco)
    assert back.shape == labels.shape and list(table["class_name"]) == ["nucleus", "rod"]
    for label in (1, 2, 3):
        overlap = ((back == label) & (labels == label)).sum() / ((back == label) | (labels == label)).sum()
        assert overlap > 0.8
