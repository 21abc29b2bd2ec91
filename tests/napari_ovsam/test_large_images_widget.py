"""The widget on large images under Xvfb with the tiny model (128 px input: a 1024 x 1024 zarr image is tiled):
box prompt -> tiles encoded in a worker (the status line names the tile) -> preview -> commit into zarr
labels; multiscale layers annotated at level 0; a multiscale layer whose levels disagree gets its message."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from widget_helpers import idle, load_tiny

from napari_ovsam import _layers
from napari_ovsam._qt.widget import OVSAMWidget
from napari_ovsam.prompts import box_to_shape_vertices
from napari_ovsam.results import CroppedMasks

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    messages: list[str] = []
    original = widget._status_panel.set_status
    widget._status_panel.set_status = lambda text: (messages.append(text), original(text))[-1]
    widget.messages = messages
    yield widget
    widget.close()
    qtbot.waitUntil(lambda: not widget._jobs.jobs, timeout=30000)


def big_zarr(path, shape=(1024, 1024)):
    data = np.random.default_rng(0).integers(0, 3000, shape).astype(np.uint16)
    data[300:340, 500:560] += 20000
    array = zarr.create_array(store=str(path), shape=shape, dtype=np.uint16, chunks=(256, 256))
    array[...] = data
    return array


def test_box_prompt_preview_and_commit_on_a_large_zarr_image(widget, qtbot, tmp_path):
    viewer = widget.viewer
    image = viewer.add_image(big_zarr(tmp_path / "big.zarr"), name="mosaic")
    load_tiny(qtbot, widget)
    idle(qtbot, widget)
    assert widget.session.tiled and widget.session.embedding_ready(())
    assert any("in 121 tiles" in m for m in widget.messages)
    labels = viewer.layers[_layers.LABELS]
    assert isinstance(labels.data, zarr.Array) and labels.data.shape == (1024, 1024)  # chunked, full size

    viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((505, 305, 550, 335)))
    qtbot.waitUntil(lambda: widget._annotate._results is not None, timeout=30000)  # after the tile's worker
    assert any(m.startswith("Encoding tile ") and m.endswith(" of 121…") for m in widget.messages)
    results = widget._annotate._results
    assert isinstance(results.masks, CroppedMasks) and results.masks[0].any()
    preview = viewer.layers[_layers.PREVIEW]
    r0, r1, c0, c1 = results.masks.bbox()
    assert preview.data.shape == (r1 - r0, c1 - c0)  # the box around the object, not the whole image
    np.testing.assert_allclose(preview.translate, np.asarray(image.translate) + [r0, c0])
    predictor = widget.session._tiled[()].predictor
    assert predictor.tiles.encodings == 1  # one tile of 121, in the worker

    group = widget.commit()
    assert group is not None and group.label_ids == (1,)
    np.testing.assert_array_equal(labels.data[...] == 1, results.masks[0])
    assert list(labels.features["label_id"]) == [1]
    widget.undo()
    assert not labels.data[...].any()


def test_a_multiscale_layer_is_annotated_at_level_zero(widget, qtbot, tmp_path):
    viewer = widget.viewer
    full = big_zarr(tmp_path / "0.zarr")
    half = zarr.create_array(
        store=str(tmp_path / "1.zarr"), shape=(512, 512), dtype=np.uint16, chunks=(256, 256)
    )
    viewer.add_image([full, half], multiscale=True, name="pyramid")
    assert widget.session.image is full and widget.session.labels_shape == (1024, 1024)
    assert viewer.layers[_layers.LABELS].data.shape == (1024, 1024)


def test_a_multiscale_layer_whose_levels_disagree_gets_a_message(widget, qtbot):
    viewer = widget.viewer
    viewer.add_image(
        [np.zeros((64, 64), np.uint16), np.zeros((128, 128), np.uint16)], multiscale=True, name="bad"
    )
    assert (
        "Cannot annotate the image 'bad'" in widget.status and "is not smaller than level 0" in widget.status
    )
    assert widget.session.image is None and _layers.LABELS not in viewer.layers


def test_precompute_covers_the_tiles_of_a_large_2d_image(widget, qtbot, tmp_path):
    viewer = widget.viewer
    viewer.add_image(big_zarr(tmp_path / "big.zarr", shape=(600, 700)), name="mosaic")  # 6 x 7 tiles
    load_tiny(qtbot, widget)
    widget._stack._cache_path.setText(str(tmp_path / "cache"))
    widget._stack._on_cache_path()
    idle(qtbot, widget)
    assert widget.precompute().lane == "precompute"
    idle(qtbot, widget, timeout=60000)
    assert "Precomputed the image: 42 tiles embedded" in widget.status
    assert any(m == "Embeddings: 42/42 tiles (42 computed)." for m in widget.messages)
    assert len(list((tmp_path / "cache").glob("*/*.safetensors"))) == 42
    viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((505, 305, 550, 335)))
    qtbot.waitUntil(lambda: widget._annotate._results is not None, timeout=30000)
    assert widget.session._tiled[()].predictor.tiles.encodings == 0  # restored from the cache


def test_a_commit_asked_while_tiles_are_encoded_follows_them(widget, qtbot, tmp_path):
    viewer = widget.viewer
    viewer.add_image(big_zarr(tmp_path / "big.zarr"), name="mosaic")
    load_tiny(qtbot, widget)
    widget._annotate._live.setChecked(False)
    boxes = viewer.layers[_layers.BOXES]
    boxes.add_rectangles(box_to_shape_vertices((505, 305, 550, 335)))
    boxes.add_rectangles(box_to_shape_vertices((20, 900, 60, 960)))
    assert widget.commit() is None  # the tiles are encoded first, in the worker
    labels = viewer.layers[_layers.LABELS]
    qtbot.waitUntil(lambda: len(labels.features) >= 1, timeout=30000)
    idle(qtbot, widget)
    assert widget.session._tiled[()].predictor.tiles.encodings == 2
    assert sorted(np.unique(labels.data[...])[1:]) == list(labels.features["label_id"])
    assert "Committed" in widget.status and len(boxes.data) == 0


def test_an_image_of_a_few_tiles_is_encoded_tile_by_tile_when_it_comes_into_view(widget, qtbot):
    viewer = widget.viewer
    viewer.add_image(np.random.default_rng(1).integers(0, 3000, (256, 300)).astype(np.uint16), name="few")
    load_tiny(qtbot, widget)
    idle(qtbot, widget)
    assert [m for m in widget.messages if m.startswith("Encoding tile ")] == [
        f"Encoding tile {i} of 9…" for i in range(1, 10)
    ]
    assert (
        widget.status.startswith("Image ready (computed in ")
        and "9 tiles at native resolution" in widget.status
    )
    viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((30, 30, 90, 80)))
    assert widget._annotate._results is not None  # decoded at once, inside the layer's event: no worker
    assert widget.session._tiled[()].predictor.tiles.encodings == 9
