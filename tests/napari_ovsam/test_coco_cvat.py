"""Multi-image COCO files from other tools (CVAT layout built here): opened with their images and labels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from napari_ovsam import coco_layers
from napari_ovsam._reader import napari_get_reader
from napari_ovsam.coco_layers import LazyLabelStack
from ovsam_model.data.coco import read_coco_json

SIZES = [(40, 60), (40, 60), (50, 30), (50, 30), (64, 64), (64, 64)]  # (height, width): 3 sizes
CATEGORIES = [f"class {k}" for k in range(1, 24)]  # CVAT exports every label of the task: 23


def cvat_export(root: Path, sizes=SIZES, with_images: bool = True) -> Path:
    """A CVAT "COCO 1.0" export: ``annotations/instances_default.json`` and ``images/``; 29 polygons with float
    coordinates and CVAT's ``attributes``; the fields CVAT writes (licenses, info, empty urls)."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id, (height, width) in enumerate(sizes, start=1):
        name = f"frame_{image_id:06d}.png"
        if with_images:
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / name)
        images.append(
            {"id": image_id, "width": width, "height": height, "file_name": name, "license": 0,
             "flickr_url": "", "coco_url": "", "date_captured": 0}
        )  # fmt: skip
    for ann_id in range(1, 30):
        image = images[(ann_id - 1) % len(images)]
        height, width = image["height"], image["width"]
        x0, y0 = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
        x1, y1 = rng.uniform(x0 + 4, width), rng.uniform(y0 + 4, height)
        polygon = [x0, y0, x1, y0 + 0.3, x1 - 0.7, y1, x0 + 0.2, y1 - 0.1]
        annotations.append(
            {"id": ann_id, "image_id": image["id"], "category_id": int(rng.integers(1, 24)),
             "segmentation": [[round(v, 2) for v in polygon]], "area": (x1 - x0) * (y1 - y0),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)], "iscrowd": 0,
             "attributes": {"occluded": False, "rotation": 0.0, "track_id": ann_id % 3}}
        )  # fmt: skip
    coco = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {
            "contributor": "",
            "date_created": "",
            "description": "",
            "url": "",
            "version": "",
            "year": "",
        },
        "categories": [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(CATEGORIES)],
        "images": images,
        "annotations": annotations,
    }
    path = root / "annotations" / "instances_default.json"
    path.write_text(json.dumps(coco))
    return path


def read_layers(path: Path) -> list:
    reader = napari_get_reader(str(path))
    assert callable(reader)
    return reader(str(path))


def test_cvat_export_opens_with_one_image_and_labels_layer_per_image(tmp_path):
    path = cvat_export(tmp_path / "task")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every image is found: no warning
        layers = read_layers(path)
    assert [kind for _, _, kind in layers] == ["image", "labels"] * 6
    coco = COCO(str(path))
    for k, (height, width) in enumerate(SIZES):
        (pixels, image_meta, _), (labels, meta, _) = layers[2 * k], layers[2 * k + 1]
        name = f"frame_{k + 1:06d}"
        assert image_meta["name"] == name and meta["name"] == f"{name} labels"
        assert pixels.shape == (height, width, 3) and labels.shape == (height, width)
        np.testing.assert_array_equal(
            pixels, np.asarray(Image.open(tmp_path / "task/images" / f"{name}.png"))
        )
        assert meta["visible"] == image_meta["visible"] == (k == 0)  # they overlap: the first pair shows
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[k + 1]))
        features = meta["features"]
        assert list(features["index"]) == list(range(1, len(anns) + 1))
        assert list(features["class_name"]) == [CATEGORIES[a["category_id"] - 1] for a in anns]
        for label, ann in enumerate(anns, start=1):  # each polygon rasterised as pycocotools does
            expected = coco.annToMask(ann).astype(bool)
            assert ((labels == label) & ~expected).sum() == 0
        assert meta["metadata"]["ovsam"]["image_name"] == f"{name}.png"
        assert meta["metadata"]["ovsam"]["vocabulary"] == CATEGORIES


def test_cvat_export_trains_through_the_same_validation(tmp_path):
    path = cvat_export(tmp_path / "task")
    data = read_coco_json(path)
    assert len(data["images"]) == 6 and len(data["annotations"]) == 29 and len(data["categories"]) == 23


def test_missing_images_open_the_labels_with_a_message_naming_the_folders(tmp_path):
    path = cvat_export(tmp_path / "task", with_images=False)
    with pytest.warns(UserWarning) as caught:
        layers = read_layers(path)
    [message] = [str(w.message) for w in caught if w.category is UserWarning]
    assert "6 of 6 images not found (e.g. frame_000001.png)" in message
    for folder in ("task/annotations", "task/images", "task,"):
        assert str(tmp_path / folder).rstrip(",") in message
    assert [kind for _, _, kind in layers] == ["labels"] * 6


def test_images_of_one_size_open_as_one_stack(tmp_path):
    path = cvat_export(tmp_path / "task", sizes=[(40, 60)] * 6)
    [(images, image_meta, kind), (labels, meta, _)] = read_layers(path)
    assert kind == "image" and image_meta["name"] == "instances_default images"
    assert images.shape == (6, 40, 60, 3) and labels.shape == (6, 40, 60)
    assert isinstance(labels, np.ndarray) and len(meta["features"]) == 29
    assert set(np.unique(labels[0])) - {0} <= set(range(1, 30, 6))  # annotations 1, 7, ... are on image 1


def test_large_files_rasterise_only_what_is_looked_at(tmp_path, monkeypatch):
    monkeypatch.setattr(coco_layers, "EAGER_PIXELS", 0)
    path = cvat_export(tmp_path / "task", sizes=[(40, 60)] * 6)
    [(images, _, _), (labels, _, _)] = read_layers(path)
    assert isinstance(labels, LazyLabelStack) and labels.made == [] and images.made == []
    eager = coco_layers.coco_layer_data(json.loads(path.read_text()), str(path))
    monkeypatch.setattr(coco_layers, "EAGER_PIXELS", 2**25)
    expected = coco_layers.coco_layer_data(json.loads(path.read_text()), str(path))[1][0]
    np.testing.assert_array_equal(labels[2], expected[2])
    assert labels.made == [2]  # one image rasterised, the others not
    labels[2, 0:3, 0:3] = 99  # napari paints into the made slice; it is kept
    labels[np.array([4, 4]), np.array([1, 2]), np.array([5, 5])] = 7  # napari's fancy-index painting
    assert (labels[2][0:3, 0:3] == 99).all() and labels[4][1, 5] == labels[4][2, 5] == 7
    np.testing.assert_array_equal(labels[np.array([2, 4]), np.array([0, 1]), np.array([0, 5])], [99, 7])
    assert labels[[4, 2], 0, 0].tolist() == [labels[4][0, 0], 99] and labels[2:5:2].shape == (2, 40, 60)
    assert labels.made == [2, 4] and np.asarray(labels).shape == (6, 40, 60)
    assert eager[1][0].shape == labels.shape


def test_many_images_of_different_sizes_open_as_one_padded_stack(tmp_path, monkeypatch):
    monkeypatch.setattr(coco_layers, "MAX_IMAGE_LAYERS", 4)
    path = cvat_export(tmp_path / "task")
    [(images, _, _), (labels, meta, _)] = read_layers(path)
    assert labels.shape == (6, 64, 64) and images.shape == (6, 64, 64, 3)
    assert meta["metadata"]["ovsam"]["padded"]
    assert not labels[0][40:].any() and not labels[0][:, 60:].any()  # a 40 x 60 image, top-left


@pytest.mark.parametrize("layout", ["label studio", "roboflow", "coco"])
def test_other_tools_image_layouts(tmp_path, layout):
    root = tmp_path / "export"
    cvat = cvat_export(root, sizes=[(40, 60)] * 2)
    coco = json.loads(cvat.read_text())
    if layout == "label studio":  # result.json beside images/, file_name "images/<name>"
        for image in coco["images"]:
            image["file_name"] = f"images/{image['file_name']}"
        path = root / "result.json"
    elif layout == "roboflow":  # train/_annotations.coco.json beside the images
        (root / "train").mkdir()
        for image in coco["images"]:
            (root / "images" / image["file_name"]).rename(root / "train" / image["file_name"])
        path = root / "train" / "_annotations.coco.json"
    else:  # COCO: annotations/instances_val2017.json, images in val2017/
        (root / "images").rename(root / "val2017")
        path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(coco))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        [(images, _, kind), (labels, _, _)] = read_layers(path)
    assert kind == "image" and images.shape == (2, 40, 60, 3) and labels.shape == (2, 40, 60)


@pytest.mark.gui
def test_file_open_in_napari(make_napari_viewer_proxy, tmp_path):
    path = cvat_export(tmp_path / "task")
    viewer = make_napari_viewer_proxy()
    viewer.open(str(path), plugin="napari-ovsam")
    kinds = [type(layer).__name__ for layer in viewer.layers]
    assert kinds == ["Image", "Labels"] * 6
    labels = viewer.layers["frame_000001 labels"]
    assert labels.features["class_name"].tolist()[0] in CATEGORIES


@pytest.mark.gui
def test_lazy_labels_paint_in_napari(make_napari_viewer_proxy, tmp_path, monkeypatch):
    monkeypatch.setattr(coco_layers, "EAGER_PIXELS", 0)
    path = cvat_export(tmp_path / "task", sizes=[(40, 60)] * 6)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(path), plugin="napari-ovsam")
    labels = viewer.layers["instances_default"]
    assert isinstance(labels.data, LazyLabelStack)
    viewer.dims.set_point(0, 3)
    labels.paint((3, 20, 30), 42, refresh=True)
    assert labels.data[3][20, 30] == 42
    assert 3 in labels.data.made and len(labels.data.made) <= 3  # napari samples a few slices, not all six
