"""The npe2 writer and reader functions, called directly as napari would (no viewer)."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from napari_ovsam import _writer
from napari_ovsam._reader import napari_get_reader
from napari_ovsam._writer import write_coco, write_label_tiff, write_label_zarr
from napari_ovsam.features import add_feature_rows, features_row

VOCAB = ["nucleus, nuclei", "rod", "ring", "cluster"]


@pytest.fixture
def layer():
    """(data, attributes) as napari hands a Labels layer to a single-layer writer."""
    data = np.zeros((3, 16, 20), np.uint16)
    data[0, 2:6, 3:9] = 1
    data[1, 2:6, 3:9] = 1
    data[2, 8:14, 10:19] = 2
    features = add_feature_rows(
        None,
        [
            features_row(1, "nucleus", 0.9, 0.8, ["nucleus", "ring"], [0.9, 0.05]),
            features_row(2, "ring", 0.6, 0.7, reviewed=True),
        ],
    )
    attributes = {
        "name": "ovsam labels",
        "features": features,
        "metadata": {"ovsam": {"vocabulary": VOCAB, "image_name": "embryo.tif"}},
        "scale": (1.0, 1.0, 1.0),
    }
    return data, attributes


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_coco_writer_and_reader_round_trip(tmp_path, layer):
    data, attributes = layer
    path = str(tmp_path / "objects.json")
    assert write_coco(path, data, attributes) == [path]
    assert leftovers(tmp_path) == []
    coco = json.loads((tmp_path / "objects.json").read_text())
    assert coco["categories"][0]["name"] == "nucleus"  # the first synonym names the category
    assert coco["ovsam"]["vocabulary"] == VOCAB

    reader = napari_get_reader(path)
    assert callable(reader)
    [(labels, meta, layer_type)] = reader(path)
    assert layer_type == "labels" and meta["name"] == "objects"
    np.testing.assert_array_equal(labels, data)
    assert labels.dtype == data.dtype
    pd.testing.assert_frame_equal(meta["features"], attributes["features"])
    assert meta["metadata"]["ovsam"]["vocabulary"] == VOCAB
    assert meta["metadata"]["ovsam"]["image_name"] == "embryo.tif"

    # what the reader gives, the writer takes back unchanged
    again = str(tmp_path / "again.json")
    write_coco(again, labels, meta)
    assert json.loads((tmp_path / "again.json").read_text()) == coco


def test_coco_writer_accepts_multiscale_text_vocabulary_and_no_suffix(tmp_path, layer):
    data, attributes = layer
    text = "# demo classes\nnucleus, nuclei\nrod\n"
    attributes = {**attributes, "metadata": {"ovsam": {"vocabulary": text}}, "features": None}
    [written] = write_coco(str(tmp_path / "plain"), [data, data[:, ::2, ::2]], attributes)
    assert written.endswith("plain.json")
    coco = json.loads(open(written).read())
    assert [c["name"] for c in coco["categories"]] == ["nucleus", "rod", "unknown"]
    assert coco["ovsam"]["vocabulary"] == ["nucleus, nuclei", "rod"]
    assert coco["images"][0]["file_name"] == "ovsam labels"


def test_failed_write_keeps_the_old_file(tmp_path, layer, monkeypatch):
    data, attributes = layer
    path = tmp_path / "objects.json"
    path.write_text("old")

    def broken_dump(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_writer.json, "dump", broken_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        write_coco(str(path), data, attributes)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_label_tiff_writer(tmp_path, layer):
    import tifffile

    data, attributes = layer
    path = str(tmp_path / "labels.tif")
    assert write_label_tiff(path, data, attributes) == [path]
    assert leftovers(tmp_path) == []
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), data)
        assert tif.series[0].axes == "ZYX"
        ovsam = tif.shaped_metadata[0]["ovsam"]
    assert ovsam["vocabulary"] == VOCAB
    assert [row["class_name"] for row in ovsam["features"]] == ["nucleus", "ring"]
    [path2d] = write_label_tiff(str(tmp_path / "slice"), data[2], attributes)
    np.testing.assert_array_equal(tifffile.imread(path2d), data[2])


@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (4, 5, 3), (1, 6, 5)])
def test_label_tiff_writer_never_takes_a_small_axis_for_colour(tmp_path, shape):
    import tifffile

    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    [path] = write_label_tiff(str(tmp_path / "labels.tif"), data, {})
    np.testing.assert_array_equal(tifffile.imread(path), data)


def test_label_zarr_writer_is_chunked_per_slice_and_replaces_atomically(tmp_path, layer):
    import zarr

    data, attributes = layer
    path = str(tmp_path / "labels.zarr")
    assert write_label_zarr(path, data, attributes) == [path]
    stored = zarr.open_array(path, mode="r")
    np.testing.assert_array_equal(stored[...], data)
    assert stored.chunks == (1, 16, 20)
    assert stored.metadata.zarr_format == 3
    assert stored.attrs["ovsam"]["vocabulary"] == VOCAB

    write_label_zarr(path, np.zeros_like(data), attributes)  # overwrite an existing store
    assert not zarr.open_array(path, mode="r")[...].any()
    assert leftovers(tmp_path) == []


def test_zarr_writer_reads_lazy_input_slice_by_slice(tmp_path, layer):
    import zarr

    data, attributes = layer
    source = zarr.create_array(
        str(tmp_path / "source.zarr"), shape=data.shape, dtype=data.dtype, chunks=(1, 16, 20)
    )
    source[...] = data
    [path] = write_label_zarr(str(tmp_path / "copy.zarr"), source, attributes)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], data)


def test_reader_declines_what_it_cannot_read(tmp_path):
    not_json = tmp_path / "image.tif"
    not_json.write_bytes(b"II*\x00")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    detections = tmp_path / "boxes.json"
    detections.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "height": 4, "width": 4}],
                "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}],
            }
        )
    )
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    for path in (not_json, broken, listing, detections, binary, tmp_path / "missing.json", tmp_path):
        assert napari_get_reader(str(path)) is None
    assert napari_get_reader([str(broken), str(listing)]) is None
    assert napari_get_reader(12) is None


def test_reader_takes_a_single_path_list_and_foreign_coco(tmp_path):
    path = tmp_path / "foreign.json"
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 2, "segmentation": [[1, 1, 8, 1, 8, 8, 1, 8]]}
        ],
        "categories": [{"id": 2, "name": "rod"}],
    }
    path.write_text(json.dumps(coco))
    reader = napari_get_reader([str(path)])
    with pytest.warns(UserWarning, match=r"1 of 1 images not found \(e.g. a.png\); looked in"):
        [(labels, meta, _)] = reader([str(path)])
    assert labels.shape == (10, 10) and labels[4, 4] == 1
    assert list(meta["features"]["class_name"]) == ["rod"]
    assert meta["metadata"]["ovsam"]["source"] == "coco"


def test_coco_writer_takes_a_vocabulary_object(tmp_path, layer):
    vocabulary_module = pytest.importorskip("ovsam_model.vocabulary")
    data, attributes = layer
    vocabulary = vocabulary_module.Vocabulary(["nucleus, nuclei", "rod"])
    attributes = {**attributes, "metadata": {"ovsam": {"vocabulary": vocabulary}}}
    [path] = write_coco(str(tmp_path / "v.json"), data, attributes)
    coco = json.loads(open(path).read())
    assert coco["ovsam"]["vocabulary"] == ["nucleus, nuclei", "rod"]
    assert [c["name"] for c in coco["categories"]] == ["nucleus", "rod", "ring"]


def test_napari_labels_layer_state_round_trips_through_the_writers(tmp_path, layer):
    layers = pytest.importorskip("napari.layers")
    data, attributes = layer
    [path] = write_coco(str(tmp_path / "a.json"), data, attributes)
    [(labels, meta, layer_type)] = napari_get_reader(path)(path)
    napari_layer = layers.Layer.create(labels, meta, layer_type)
    assert napari_layer._label_index == {1: 0, 2: 1}
    out_data, out_attributes, _ = napari_layer.as_layer_data_tuple()
    [again] = write_coco(str(tmp_path / "b.json"), out_data, out_attributes)
    assert json.loads(open(again).read()) == json.loads(open(path).read())


def test_exported_files_are_readable_as_the_umask_says(tmp_path, layer):
    """Exports are written through a temporary file; they must not end up private (0600) to the user."""
    data, attributes = layer
    previous = os.umask(0o022)
    try:
        [coco] = write_coco(str(tmp_path / "labels.json"), data, attributes)
        [tiff] = write_label_tiff(str(tmp_path / "labels.tif"), data, attributes)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(coco).st_mode) == 0o644 and stat.S_IMODE(os.stat(tiff).st_mode) == 0o644


def test_reader_opens_the_slices_of_a_stack_named_by_per_slice_entries(tmp_path):
    import tifffile

    stack = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    images = [
        {"id": i + 1, "file_name": "stack.tif", "slice_index": i, "height": 10, "width": 12} for i in range(3)
    ]
    annotation = {"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 8, 1, 8]]}
    coco = {"images": images, "annotations": [annotation], "categories": [{"id": 1, "name": "rod"}]}
    path = tmp_path / "per_slice.json"
    path.write_text(json.dumps(coco))
    layers = napari_get_reader(str(path))(str(path))
    (pixels, _, image_kind), (labels, _, _) = layers
    assert image_kind == "image" and np.array_equal(np.asarray(pixels), stack)
    assert labels.shape == (3, 10, 12) and labels[1, 4, 4] == 1 and not labels[0].any()
