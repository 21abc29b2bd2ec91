"""Malformed COCO files and bad layer data: one clear ValueError each (table-driven; new faults join a table).

Reader rows: (name, how the valid file below is broken, message fragment). Every message also names the file.
napari_get_reader still claims each file (it is a COCO file), and reading it raises the ValueError napari shows.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils

from napari_ovsam._reader import napari_get_reader
from napari_ovsam._writer import write_coco, write_label_tiff, write_label_zarr
from napari_ovsam.coco_read import coco_to_labels


def valid_coco():
    """Two 20 x 30 images; a polygon, a compressed RLE and an uncompressed RLE annotation."""
    mask = np.zeros((20, 30), np.uint8)
    mask[3:9, 4:12] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in (1, 2)],
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "rod"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[2.5, 2, 12, 2, 12, 9.5, 2, 9]]},
            {"id": 11, "image_id": 2, "category_id": 2, "segmentation": {"size": [20, 30], "counts": counts}},
            {"id": 12, "image_id": 2, "category_id": 1, "segmentation": {"size": [20, 30], "counts": [500, 50, 50]}},
        ],
    }  # fmt: skip


def _ann(coco, k):
    return coco["annotations"][k]


def ann_set(k, key, value):
    """Edit: annotation k's ``key`` = value (``_DELETE``: remove the key)."""

    def edit(coco):
        if value is _DELETE:
            del _ann(coco, k)[key]
        else:
            _ann(coco, k)[key] = value

    return edit


def seg_set(k, key, value):
    return lambda coco: _ann(coco, k)["segmentation"].__setitem__(key, value)


def image_set(k, key, value):
    def edit(coco):
        if value is _DELETE:
            del coco["images"][k][key]
        else:
            coco["images"][k][key] = value

    return edit


def ovsam(section, image_update=None):
    def edit(coco):
        coco["ovsam"] = section
        if image_update:
            coco["images"][1].update(image_update)

    return edit


_DELETE = object()


def _short_rle(coco):
    mask = np.zeros((10, 30), np.uint8, order="F")
    mask[:5, :5] = 1
    _ann(coco, 1)["segmentation"]["counts"] = mask_utils.encode(mask)["counts"].decode()  # 10 x 30 only


def _poly_y(value):
    return lambda coco: _ann(coco, 0)["segmentation"][0].__setitem__(1, value)


def _truncated(coco):
    _ann(coco, 1)["segmentation"]["counts"] += "a"


BAD_FEATURES = {"shape": [2, 20, 30], "features": [{"index": 1}], "feature_dtypes": {"index": "nonsense"}}
READER_ROWS = [
    ("nan polygon", _poly_y(float("nan")), "annotation 10: polygon 0 has a non-finite value"),
    ("infinite polygon", _poly_y(float("inf")), "annotation 10: polygon 0 has a non-finite value"),
    ("huge polygon", _poly_y(1e9), "annotation 10: polygon 0 has points outside the 30 x 20 image"),
    ("negative polygon", _poly_y(-50), "polygon 0 has points outside"),
    ("string coordinate", _poly_y("3"), "polygon 0 must be a flat list of numbers"),
    ("odd polygon", lambda c: _ann(c, 0)["segmentation"][0].append(4), "odd number of coordinates"),
    ("polygon not a list", ann_set(0, "segmentation", [3, 4, 5, 6, 7, 8]), "polygon 0 must be a list"),
    ("segmentation a string", ann_set(0, "segmentation", "abc"), "'segmentation' must be a list of polygons"),
    ("no segmentation", ann_set(0, "segmentation", _DELETE), "annotation 10: it has no 'segmentation'"),
    ("short compressed RLE", _short_rle, "annotation 11: RLE counts cover 300 pixels, but the image has"),
    ("truncated RLE", _truncated, "ends in the middle of a run"),
    ("RLE bad characters", seg_set(1, "counts", "#$%"), "outside the RLE alphabet"),
    ("RLE wrong size", seg_set(1, "size", [10, 30]), "RLE 'size' [10, 30] is not"),
    ("RLE counts a number", seg_set(1, "counts", 5), "RLE 'counts' must be a string or a list"),
    ("uncompressed short", seg_set(2, "counts", [100, 50]), "annotation 12: RLE counts cover 150"),
    ("uncompressed negative", seg_set(2, "counts", [700, -100]), "integers >= 0"),
    ("unknown image_id", ann_set(0, "image_id", 99), "annotation 10: 'image_id' 99 is not in 'images'"),
    ("unknown category_id", ann_set(0, "category_id", 7), "'category_id' 7 is not in 'categories'"),
    ("string image_id", ann_set(0, "image_id", "1"), "'image_id' must be an integer"),
    ("negative annotation id", ann_set(0, "id", -3), "annotation -3: its 'id' must be in [0, 2**63)"),
    ("huge annotation id", ann_set(0, "id", 2**70), "its 'id' must be in [0, 2**63)"),
    ("duplicate annotation id", ann_set(1, "id", 10), "annotation id 10 appears twice"),
    ("annotation not an object", lambda c: c["annotations"].append(5), "an annotation entry is a int"),
    ("bad bbox", ann_set(0, "bbox", [1, 2, 3]), "'bbox' must be [x, y, width, height]"),
    ("bbox outside", ann_set(0, "bbox", [0, 0, 1e9, 4]), "'bbox' [0, 0, 1000000000.0, 4] is not inside"),
    ("nan area", ann_set(0, "area", float("nan")), "'area' must be a finite number"),
    ("bad iscrowd", ann_set(0, "iscrowd", 2), "'iscrowd' must be 0 or 1"),
    ("huge height", image_set(0, "height", 10**9), "image 1: 'height' must be in [1, 131072]"),
    ("too many pixels", lambda c: c["images"][0].update(height=99_999, width=99_999), "more than one image"),
    ("zero width", image_set(0, "width", 0), "'width' must be in [1,"),
    ("missing height", image_set(0, "height", _DELETE), "'height' must be an integer number of pixels"),
    ("duplicate image id", image_set(1, "id", 1), "image id 1 appears twice"),
    ("category without name", lambda c: c["categories"][0].pop("name"), "category 1: its 'name' must be"),
    ("categories not a list", lambda c: c.update(categories={"1": "cell"}), "'categories' must be a list"),
    ("huge instance_id", lambda c: [a.update(instance_id=2**64) for a in c["annotations"]], "'instance_id'"),
    ("ovsam shape", ovsam({"shape": [2, -1, 30]}), "its 'ovsam' section has a bad 'shape'"),
    ("ovsam huge shape", ovsam({"shape": [10**6, 20, 30] * 2}), "would hold"),
    ("ovsam dtype", ovsam({"shape": [2, 20, 30], "dtype": "<f4"}), "non-integer labels dtype"),
    ("ovsam bad dtype", ovsam({"shape": [2, 20, 30], "dtype": "nonsense"}), "unknown 'dtype'"),
    ("ovsam slice", ovsam({"shape": [2, 20, 30]}, {"slice_index": 5}), "'slice_index' 5 is not in [0, 2)"),
    ("ovsam features", ovsam(BAD_FEATURES), "stored features table is broken"),
]


@pytest.mark.parametrize(("edit", "fragment"), [r[1:] for r in READER_ROWS], ids=[r[0] for r in READER_ROWS])
def test_reader_refuses_malformed_coco_with_one_clear_message(tmp_path, edit, fragment):
    coco = copy.deepcopy(valid_coco())
    edit(coco)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(coco))
    reader = napari_get_reader(str(path))
    assert callable(reader)  # still a COCO file: claimed, then refused with the reason
    with pytest.raises(ValueError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the images are not there
        reader(str(path))
    message = str(caught.value)
    assert str(path) in message and fragment in message, message


def test_the_valid_file_of_the_table_reads():
    labels, table, _ = coco_to_labels(valid_coco())
    assert labels.shape == (2, 20, 30) and sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert list(table["class_name"]) == ["cell", "rod", "cell"]
    assert (labels[1] == 2).sum() == 48 and (labels[1] == 3).sum() == 50


def test_a_short_rle_never_labels_random_pixels():
    """Before: pycocotools decoded the missing pixels from uninitialised memory."""
    coco = valid_coco()
    _short_rle(coco)
    with pytest.raises(ValueError, match="annotation 11: RLE counts cover 300 pixels"):
        coco_to_labels(coco, "file.json")


# ------------------------------------------------------------------------------------------------ writers

WRITERS = {"coco": write_coco, "tiff": write_label_tiff, "zarr": write_label_zarr}
LABELS = np.zeros((4, 5), np.int32)
WRITER_ROWS = [
    ("float labels", "all", np.zeros((4, 5), np.float32), {}, "labels must be integers"),
    ("1D labels", "all", np.zeros(5, np.int32), {}, "labels must have at least 2 dimensions"),
    ("empty labels", "all", np.zeros((0, 5), np.int32), {}, "labels must not be empty"),
    ("no array", "all", None, {}, "labels must be an array"),
    ("string array", "all", np.array([["a", "b"], ["c", "d"]]), {}, "labels must be integers"),
    ("features not a table", "all", LABELS, {"features": [1, 2]}, "features must be a table"),
    ("metadata not a dict", "all", LABELS, {"metadata": "x"}, "metadata must be a dict"),
    ("ovsam not a dict", "all", LABELS, {"metadata": {"ovsam": 3}}, "metadata['ovsam'] must be a dict"),
    ("vocabulary a number", "all", LABELS, {"metadata": {"ovsam": {"vocabulary": 5}}}, "vocabulary must be"),
    ("negative labels", "coco", np.array([[-1, 0], [0, 1]], np.int32), {}, "negative label -1"),
]  # fmt: skip


def _writer_cases():
    for name, which, data, attributes, fragment in WRITER_ROWS:
        for kind in WRITERS if which == "all" else [which]:
            yield pytest.param(kind, data, attributes, fragment, id=f"{kind}-{name}")


@pytest.mark.parametrize(("kind", "data", "attributes", "fragment"), list(_writer_cases()))
def test_writers_refuse_bad_layer_data(tmp_path, kind, data, attributes, fragment):
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="Cannot save") as caught:
        WRITERS[kind](str(target), data, attributes)
    assert fragment in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_writers_take_bool_labels_and_a_features_dict(tmp_path):
    data = np.zeros((4, 5), bool)
    data[1:3, 1:3] = True
    features = pd.DataFrame({"index": [1], "class_name": ["cell"]})
    [path] = write_coco(str(tmp_path / "a.json"), data, {"features": features})
    labels, table, _ = coco_to_labels(json.loads(open(path).read()))
    np.testing.assert_array_equal(labels, data.astype(labels.dtype))
    assert list(table["class_name"]) == ["cell"]
