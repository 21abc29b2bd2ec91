"""The OV-SAM widget in a real napari viewer (Xvfb), driven as a user would, with the tiny CPU model.

The tiny model has random weights (seeded here): its masks and names mean nothing, so the tests check the
bookkeeping (labels, features, names, undo, caches, IO), not the segmentation quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from widget_helpers import idle, load_tiny

from napari_ovsam import _layers
from napari_ovsam._qt.objects_table import ALTERNATIVES, CLASS
from napari_ovsam._qt.widget import OVSAMWidget
from napari_ovsam._sample_data import sample_2d, sample_stack
from napari_ovsam.cache import EmbeddingCache
from napari_ovsam.prompts import box_to_shape_vertices
from ovsam_model.vocabulary import DEMO_CLASSES

pytestmark = pytest.mark.gui


def add_sample(viewer, sample):
    data, attributes, _ = sample()[0]
    return viewer.add_image(data, **attributes)


def prompt(viewer, point=None, box=None):
    """Set prompts as a user's clicks would: a positive point (..., row, col), a box (2, ndim) of corners."""
    if point is not None:
        viewer.layers[_layers.POINTS].add(np.asarray([point], float))
    if box is not None:
        (*lead, r0, c0), (*_, r1, c1) = box
        viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((c0, r0, c1, r1), tuple(lead)))


def test_segment_commit_undo_rename_and_vocabulary(viewer, widget, qtbot):
    add_sample(viewer, sample_2d)
    load_tiny(qtbot, widget)
    assert widget.session.embedding_ready(())  # computed in a worker as soon as the model was there
    prompt(viewer, point=[40, 100])
    qtbot.waitUntil(lambda: widget._annotate._results is not None, timeout=5000)  # live preview
    assert viewer.layers[_layers.PREVIEW].data.any()
    prompt(viewer, box=[[150, 30], [220, 100]])
    results = widget.segment()
    assert len(results) == 2 and results.masks.shape == (2, 256, 256)
    assert (
        "last prompt:" in widget._status_panel._timing.text() and "ms" in widget._status_panel._timing.text()
    )

    labels = viewer.layers[_layers.LABELS]
    group = widget.commit()
    ids = list(group.label_ids)
    assert ids and sorted(np.unique(labels.data[labels.data > 0])) == ids
    assert list(labels.features["label_id"]) == ids
    assert set(labels.features["class_name"]) <= set(DEMO_CLASSES)
    names = viewer.layers[_layers.NAMES]
    assert len(names.data) == len(ids) and list(names.text.values) == list(labels.features["class_name"])
    assert widget._labels.table.rowCount() == len(ids)
    assert len(viewer.layers[_layers.POINTS].data) == 0 == len(viewer.layers[_layers.BOXES].data)
    committed = labels.data.copy()

    widget.set_vocabulary("cell\nblob, smudge\n")  # names the next objects, not the committed ones
    idle(qtbot, widget)
    assert set(labels.features["class_name"]) <= set(DEMO_CLASSES)
    prompt(viewer, point=[20, 20])
    assert set(widget.segment().class_names) <= {"cell", "blob"}
    widget.clear_prompts()

    widget._labels.table.item(0, CLASS).setText("my cell")  # what a double-click edit does
    assert labels.features.loc[0, "class_name"] == "my cell" and labels.features.loc[0, "reviewed"]
    assert "my cell" in list(names.text.values)
    combo = widget._labels.table.cellWidget(1 % len(ids), ALTERNATIVES)
    combo.activated.emit(2)
    assert labels.features.loc[1 % len(ids), "class_name"] == combo.itemData(2)

    prompt(viewer, point=[200, 200])
    assert widget.commit().label_ids == (max(ids) + 1,)
    widget.undo()
    np.testing.assert_array_equal(labels.data, committed)
    assert len(labels.features) == len(ids) and labels.features.loc[0, "class_name"] == "my cell"
    widget.undo()
    assert not labels.data.any() and labels.features.empty and len(names.data) == 0
    assert widget._labels.table.rowCount() == 0


def test_live_preview_runs_once_per_edit_inside_the_layer_event(viewer, widget, qtbot, monkeypatch):
    add_sample(viewer, sample_2d)
    load_tiny(qtbot, widget)
    calls, fired = [], []
    segment = widget.session.segment
    monkeypatch.setattr(widget.session, "segment", lambda *a, **k: calls.append(1) or segment(*a, **k))
    panel_segment = widget._annotate.segment  # what benchmarks/bench_widget_latency.py times
    monkeypatch.setattr(widget._annotate, "segment", lambda: fired.append(1) or panel_segment())
    prompt(viewer, box=[[150, 30], [220, 100]])  # no event-loop turn: the preview is there when add returns
    assert len(calls) == 1 == len(fired) and len(widget._annotate._results or []) == 1
    assert viewer.layers[_layers.PREVIEW].data.any()
    prompt(viewer, point=[40, 100])
    assert (
        len(calls) == 2 and len(widget._annotate._results) == 2
    )  # napari's data + features events: one decode
    widget._annotate._group.setCurrentIndex(
        (widget._annotate._group.currentIndex() + 1) % widget._annotate._group.count()
    )
    assert len(calls) == 3  # a new grouping rule, the same prompts: segmented again
    widget._annotate._live.setChecked(False)
    prompt(viewer, point=[60, 60])
    assert len(calls) == 3 and widget._annotate._results is None  # not live: the old preview is out of date


def test_keys_toggle_points_and_undo(viewer, widget, qtbot):
    from napari.utils.key_bindings import coerce_keybinding

    add_sample(viewer, sample_2d)
    load_tiny(qtbot, widget)
    points = viewer.layers[_layers.POINTS]
    press = lambda layer, key: layer.keymap[coerce_keybinding(key)](layer)  # noqa: E731
    press(points, "T")  # add mode: the next points are negative
    prompt(viewer, point=[40, 100])
    assert list(points.features["positive"]) == [False]
    press(points, "T")
    prompt(viewer, point=[60, 100])
    points.mode = "select"
    points.selected_data = {0}
    press(points, "T")  # select mode: flips the selected point
    assert list(points.features["positive"]) == [True, True]
    np.testing.assert_allclose(points.face_color[:, :3], [[0, 1, 0], [0, 1, 0]])
    press(points, "C")  # commit from the points layer
    labels = viewer.layers[_layers.LABELS]
    committed = labels.data.copy()
    assert committed.any()
    labels.paint((5, 5), 99)  # a brush stroke after the commit: Ctrl+Z on the labels undoes it first
    press(labels, "Control-Z")
    np.testing.assert_array_equal(labels.data, committed)
    viewer.keymap[coerce_keybinding("Control-Z")](viewer)  # the viewer's binding while the widget lives
    assert not labels.data.any()
    viewer.window.remove_dock_widget(widget)  # what the dock's close button does
    assert widget._jobs.closed
    assert coerce_keybinding("Control-Z") not in viewer.keymap
    assert coerce_keybinding("T") not in points.keymap


def test_export_reimport_and_image_switch(viewer, widget, qtbot, tmp_path):
    from pycocotools import mask as mask_utils

    image = add_sample(viewer, sample_2d)
    other = viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    widget._image_panel._image.setCurrentText(image.name)
    load_tiny(qtbot, widget)
    prompt(viewer, box=[[150, 30], [220, 100]])
    widget.commit()
    labels = viewer.layers[_layers.LABELS]
    path = tmp_path / "objects.json"
    assert labels.save(str(path), plugin="napari-ovsam") == [str(path)]
    coco = json.loads(path.read_text())
    [annotation] = coco["annotations"]
    assert annotation["class_name"] == labels.features.loc[0, "class_name"]
    decoded = mask_utils.decode(annotation["segmentation"]).astype(bool)
    np.testing.assert_array_equal(decoded, labels.data == annotation["instance_id"])

    [reread] = viewer.open(str(path), plugin="napari-ovsam")
    np.testing.assert_array_equal(reread.data, labels.data)
    assert list(reread.features["class_name"]) == list(labels.features["class_name"])

    image.name = "renamed"  # the image keeps its labels layer
    assert widget._image_panel._image.currentText() == "renamed" and widget._labels.ensure() is labels
    widget._image_panel._image.setCurrentText(other.name)  # another image gets its own labels
    idle(qtbot, widget)
    assert widget._labels.layer.name == f"{_layers.LABELS} [blank]" and labels.data.any()
    widget._model_panel._model.setCurrentText("tiny")
    widget.load_model()  # switching the model keeps the labels too
    idle(qtbot, widget)
    widget._image_panel._image.setCurrentText("renamed")
    assert widget._labels.layer is labels and labels.data.any()
    widget.undo()  # the history came back with the image
    assert not labels.data.any()


@pytest.mark.parametrize("storage", ["zarr", "tiff"])
def test_lazy_stack_cache_and_propagation(viewer, widget, qtbot, tmp_path, storage):
    stack = sample_stack()[0][0][:, :128, :128]
    if storage == "zarr":
        data = zarr.create_array(
            str(tmp_path / "stack.zarr"), shape=stack.shape, dtype=stack.dtype, chunks=(1, 128, 128)
        )
        data[...] = stack
    else:
        tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
        data = zarr.open_array(tifffile.imread(tmp_path / "stack.tif", aszarr=True), mode="r")
    viewer.add_image(data, name="stack")
    viewer.dims.set_point(0, 2)
    load_tiny(qtbot, widget)
    labels = viewer.layers[_layers.LABELS]
    assert not isinstance(labels.data, np.ndarray) and labels.data.shape == stack.shape  # zarr-backed
    model = widget.session.predictor.model
    calls = []
    original = model.encode_image
    model.encode_image = lambda *a, **k: calls.append(1) or original(*a, **k)
    for z in (3, 2):  # slice 2 was embedded after loading: revisiting it costs no encoder run
        viewer.dims.set_point(0, z)
        qtbot.waitUntil(lambda z=z: widget.session.embedding_ready((z,)) and not widget.busy, timeout=10000)
    qtbot.waitUntil(lambda: not widget._embeddings.pending and not widget.busy, timeout=10000)
    assert len(calls) == 1 and widget.session.embedding_ready((2,))

    store = tmp_path / "embeddings.zarr"
    widget._stack._cache_path.setText(str(store))
    widget._stack._on_cache_path()  # a disk cache: starts empty, so slice 2 is embedded again
    idle(qtbot, widget)
    widget._stack._range_start.setValue(0)
    widget._stack._range_stop.setValue(4)
    widget.precompute()
    idle(qtbot, widget)
    assert len(calls) == 6 and "Precomputed slices 0-4" in widget.status
    assert len(EmbeddingCache(store_path=store)) == 5  # another session (or the CLI) finds them all

    prompt(viewer, point=[2, 64, 64])
    group = widget.commit()
    [label_id] = group.label_ids
    widget._stack._min_iou.setValue(-1.0)  # random weights: accept every mask
    widget._stack._min_overlap.setValue(0.0)
    widget._stack._max_slices.setValue(2)
    widget.propagate()
    idle(qtbot, widget)
    painted = [z for z in range(len(stack)) if (np.asarray(labels.data[z]) == label_id).any()]
    assert painted == [0, 1, 2, 3, 4], widget.status
    assert len(viewer.layers[_layers.NAMES].data) == 5
    widget.undo()  # the whole propagation is one step
    assert [z for z in range(len(stack)) if np.asarray(labels.data[z]).any()] == [2]


def test_close_while_a_worker_runs(viewer, qtbot):
    viewer.add_image(sample_stack()[0][0][:, :96, :96], name="stack")
    widget = OVSAMWidget(viewer)
    load_tiny(qtbot, widget)
    widget._stack._range_stop.setValue(7)
    assert widget.precompute().lane == "precompute" and widget.busy
    widget.close()  # mid-computation: the job stops at its next slice and its callbacks are dropped
    qtbot.waitUntil(lambda: not widget._jobs.jobs, timeout=30000)
    assert widget._jobs.closed and widget.session.encoder_runs < 8
    viewer.layers[_layers.POINTS].add([[0, 10, 10]])  # hooks are gone: nothing runs, nothing raises
    assert widget._annotate._results is None and not widget._embeddings.pending


def test_missing_weights_are_explained(viewer, widget, qtbot, tmp_path):
    widget._model_panel._model.setCurrentText("checkpoint file…")
    assert widget._model_panel._checkpoint_row.isVisibleTo(widget)
    widget._model_panel._checkpoint.setText(str(tmp_path / "nowhere.pt"))
    widget.load_model()
    idle(qtbot, widget)
    assert "No checkpoint at" in widget.status and widget.session.predictor is None

    widget._model_panel._model.setCurrentText("demo")
    assert "closed vocabulary" in widget._model_panel._model_note.text().lower()
    assert widget._vocabulary._vocab_text.toPlainText().split() == list(DEMO_CLASSES)
    weights = (
        Path(__file__).resolve().parents[2] / "src" / "ovsam_model" / "weights" / "ovsam_demo.safetensors"
    )
    if not weights.exists():
        assert "not installed yet" in widget._model_panel._model_note.text()
        widget.load_model()
        idle(qtbot, widget)
        assert "ovsam_demo.safetensors" in widget.status


def test_hand_painted_ids_on_a_zarr_stack_stay_unique(viewer, widget, qtbot, tmp_path):
    stack = sample_stack()[0][0][:3, :96, :96]
    data = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=stack.shape, dtype=stack.dtype, chunks=(1, 96, 96)
    )
    data[...] = stack
    viewer.add_image(data, name="stack")
    load_tiny(qtbot, widget)
    labels = viewer.layers[_layers.LABELS]
    assert not isinstance(labels.data, np.ndarray)  # zarr-backed
    labels.paint((0, 10, 10), 1)  # a brush stroke on slice 0, before any commit
    viewer.dims.set_point(0, 1)
    qtbot.waitUntil(lambda: widget.session.embedding_ready((1,)) and not widget.busy, timeout=10000)
    prompt(viewer, box=[[1, 30, 30], [1, 70, 70]])
    [first] = widget.commit().label_ids
    labels.paint((2, 5, 5), 7)  # a later stroke on slice 2: seen through napari's paint event
    prompt(viewer, box=[[1, 5, 60], [1, 25, 90]])
    [second] = widget.commit().label_ids
    assert first == 2 and second == 8
    assert list(labels.features["label_id"]) == [2, 8]


def _nan_image():
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    image[3, 3] = np.nan
    return image


@pytest.mark.parametrize(
    "image",
    [_nan_image(), np.random.default_rng(0).random((64, 64)) > 0.5, np.ones((1, 2000), np.float32)],
    ids=["nan-pixel", "bool", "1x2000"],
)
def test_a_failing_embedding_is_reported_once(viewer, widget, qtbot, monkeypatch, image):
    from napari_ovsam._qt import status

    errors = []
    monkeypatch.setattr(status, "show_error", errors.append)
    load_tiny(qtbot, widget)
    attempts = []
    embed = widget.session.iter_embedding  # the embedding job's entry point (a generator: it reports tiles)

    def counted(*args):
        attempts.append(args)
        return (yield from embed(*args))

    monkeypatch.setattr(widget.session, "iter_embedding", counted)
    viewer.add_image(image, name="hostile")
    widget._image_panel._image.setCurrentText("hostile")
    idle(qtbot, widget)  # the old widget retried at once, forever: never idle
    assert len(attempts) == 1
    if not widget.session.embedding_ready(()):  # the model cannot take this image: one clear message
        assert len(errors) == 1 and "embedding" in errors[0]
        prompt(viewer, point=[0, 1])  # live preview of a prompt: no new attempt, the status says why
        assert len(attempts) == 1 and "press Segment to try again" in widget.status
        widget._annotate._segment_btn.click()  # asking retries once
        idle(qtbot, widget)
        assert len(attempts) == 2 and len(errors) == 2
    good = add_sample(viewer, sample_2d)  # the widget stays usable for other images
    widget._image_panel._image.setCurrentText(good.name)
    qtbot.waitUntil(lambda: widget.session.embedding_ready(()) and not widget.busy, timeout=10000)


def test_deleting_the_labels_layer_drops_its_names_and_history(viewer, widget, qtbot):
    add_sample(viewer, sample_2d)
    load_tiny(qtbot, widget)
    prompt(viewer, box=[[150, 30], [220, 100]])
    assert widget.commit().label_ids == (1,)
    assert len(viewer.layers[_layers.NAMES].data) == 1
    viewer.layers.remove(viewer.layers[_layers.LABELS])
    assert _layers.NAMES not in viewer.layers and widget._labels.table.rowCount() == 0
    assert widget.undo() is None and widget.status == "Nothing to undo."
    prompt(viewer, box=[[150, 30], [220, 100]])
    group = widget.commit()  # a new labels layer, from id 1
    assert group.label_ids == (1,) and viewer.layers[_layers.LABELS].data.max() == 1
    assert len(viewer.layers[_layers.NAMES].data) == 1


def test_the_users_own_features_edits_survive_a_commit(viewer, widget, qtbot):
    add_sample(viewer, sample_2d)
    load_tiny(qtbot, widget)
    prompt(viewer, box=[[150, 30], [220, 100]])
    widget.commit()
    labels = viewer.layers[_layers.LABELS]
    table = labels.features.copy()
    table["note"] = ["check this one"]  # a column the user added in napari's features table
    table.loc[0, "class_name"] = "my cell"  # a value they typed
    labels.features = table
    prompt(viewer, box=[[20, 150], [90, 230]])
    widget.commit()
    assert list(labels.features["label_id"]) == [1, 2]
    assert list(labels.features["class_name"])[0] == "my cell"
    assert labels.features.loc[0, "note"] == "check this one" and pd.isna(labels.features.loc[1, "note"])
    widget.undo()
    assert list(labels.features["note"]) == ["check this one"]
