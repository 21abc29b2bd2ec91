"""The widget's Everything tab in a real napari viewer (Xvfb): Segment everything and Name labels into the
preview, the commit and its undo, status-line messages, cancel, the region in view, and a click on background.

The shipped ``demo`` model (CPU) runs on crops of the samples with every filter open and a 6 x 6 grid: the
tests check what the widget does with the proposals, not their quality.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from widget_helpers import idle

from napari_ovsam import _layers
from napari_ovsam._sample_data import sample_2d, sample_stack
from napari_ovsam.automatic import visible_region
from napari_ovsam.proposals import SOURCE_COLUMN
from ovsam_model.data.coco_json import interior_point

pytestmark = pytest.mark.gui


def load_demo(qtbot, widget, viewer, image):
    """The image, the demo model on the CPU, and the Everything tab's filters open."""
    viewer.add_image(image, name="image")
    widget._model_panel._model.setCurrentText("demo")
    widget._model_panel._device.setCurrentText("cpu")
    assert widget.load_model().lane == "model"
    idle(qtbot, widget)
    assert widget.session.predictor is not None, widget.status
    panel = widget._automatic
    panel._points.setValue(6)
    for spin in (panel._min_iou, panel._min_stability, panel._min_score):
        spin.setValue(0.0)
    return panel


def test_segment_everything_goes_to_the_preview_then_one_commit(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_2d()[0][0][:128, :128])
    assert widget._tabs.tabText(widget._tabs.indexOf(panel)) == "Everything"
    assert panel._everything_btn.text() == "Segment everything" and not panel._commit_btn.isEnabled()
    assert widget.segment_everything("this slice").lane == "automatic"
    idle(qtbot, widget)
    assert panel.pending and panel._commit_btn.isEnabled(), widget.status
    assert "in the preview" in widget.status and "Commit [C]" in widget.status
    preview = viewer.layers[_layers.PREVIEW].data
    count = len(panel._proposals)
    assert len(np.unique(preview)) - 1 == count > 3
    labels = viewer.layers[_layers.LABELS]
    assert not labels.data.any()

    group = widget.commit()  # C: the proposals
    assert len(group.label_ids) == count and not panel.pending
    assert f"Committed {count} object(s) from Segment everything" in widget.status
    assert sorted(np.unique(labels.data[labels.data > 0])) == sorted(group.label_ids)
    assert len(labels.features) == count and not labels.features["reviewed"].any()
    assert widget._labels.table.rowCount() == count == len(viewer.layers[_layers.NAMES].data)
    assert not viewer.layers[_layers.PREVIEW].data.any()
    widget.undo()
    assert not labels.data.any() and labels.features.empty


def test_find_all_filters_classes_and_names_the_unknown_one(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_2d()[0][0][:128, :128])
    assert widget.segment_everything(classes="nucleus, dog") is None
    assert "no class 'dog'" in widget.status and "nucleus, rod, ring, cluster" in widget.status
    widget.segment_everything(classes="rod")
    idle(qtbot, widget)
    assert panel.pending and set(panel._proposals.on(()).class_names) == {"rod"}
    assert "Segment everything (rod):" in widget.status


def test_prompts_replace_the_proposals_and_cancel_writes_nothing(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_stack()[0][0][:, :128, :128])
    widget.segment_everything("this slice")
    idle(qtbot, widget)
    assert panel.pending
    z = viewer.dims.current_step[0]
    x, y = interior_point(next(iter(panel._proposals.results.values())).masks[0])  # a click on an object
    viewer.layers[_layers.POINTS].add(np.array([[z, float(y), float(x)]]))  # live preview of a click
    assert not panel.pending and len(widget._annotate._results) == 1
    widget.clear_prompts()

    assert widget.segment_everything("the whole stack") is not None
    widget.cancel()
    idle(qtbot, widget)
    assert "cancelled: nothing was written" in widget.status and not panel.pending
    assert not viewer.layers[_layers.LABELS].data.any()


def test_segment_everything_in_the_region_in_view(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_2d()[0][0])
    camera = viewer.scene.camera
    camera.center, camera.zoom = (0, 80.0, 170.0), viewer.canvas.size[0] / 90
    region = visible_region(camera.center, camera.zoom, viewer.canvas.size, (1, 1), (0, 0), (256, 256))
    r0, r1, c0, c1 = region
    assert 0 < r0 and r1 < 256 and (r1 - r0) * (c1 - c0) < 256 * 256 / 2
    widget.segment_everything("the region in view")
    idle(qtbot, widget)
    results = panel._proposals.on(())
    painted = results.label_image() > 0
    assert len(results) and painted[r0:r1, c0:c1].sum() == painted.sum()


def test_name_labels_of_another_layer(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_2d()[0][0][:128, :128])
    user = np.zeros((128, 128), np.uint16)
    user[10:30, 10:30], user[60:90, 70:100] = 4, 12
    viewer.add_labels(user.copy(), name="cellpose")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="small")
    viewer.add_labels(np.full((128, 128), 2**60, np.uint64), name="huge")
    widget._labels.ensure()
    sources = [panel._source.itemText(i) for i in range(panel._source.count())]
    assert sources == ["cellpose", "small", "huge"]  # not ovsam labels, not the preview

    assert widget.name_labels(viewer.layers["small"]) is None
    assert "Cannot name 'small'" in widget.status and "shape (64, 64)" in widget.status
    widget.name_labels(viewer.layers["huge"])
    idle(qtbot, widget)
    assert "failed" in widget.status and "2^53" in widget.status and not panel.pending

    panel._source.setCurrentText("cellpose")
    widget.name_labels()
    idle(qtbot, widget)
    assert len(panel._proposals) == 2 and "Name labels of 'cellpose'" in widget.status
    widget.commit()
    labels = viewer.layers[_layers.LABELS]
    for _, row in labels.features.iterrows():
        np.testing.assert_array_equal(labels.data == row["label_id"], user == row[SOURCE_COLUMN])
    np.testing.assert_array_equal(viewer.layers["cellpose"].data, user)  # never changed


def test_a_click_on_background_says_so(viewer, widget, qtbot, monkeypatch):
    load_demo(qtbot, widget, viewer, sample_2d()[0][0][:128, :128])
    predictor = widget.session.predictor
    predict = predictor.predict

    def on_background(*args, **kwargs):
        out = predict(*args, **kwargs)
        return dataclasses.replace(out, background=np.full(len(out.scores), 0.9, np.float32))

    monkeypatch.setattr(predictor, "predict", on_background)
    viewer.layers[_layers.POINTS].add(np.array([[64.0, 64.0]]))
    assert widget._annotate._results is not None and len(widget._annotate._results) == 0
    assert "no object here (background)" in widget.status.lower() and "object(s)" not in widget.status
    assert not viewer.layers[_layers.PREVIEW].data.any()


def test_the_whole_stack_follows_the_slider_and_commits_as_one_step(viewer, widget, qtbot):
    panel = load_demo(qtbot, widget, viewer, sample_stack()[0][0][2:5, :128, :128])
    widget.segment_everything("the whole stack")
    idle(qtbot, widget)
    proposals = panel._proposals
    assert set(proposals.results) == {(0,), (1,), (2,)} and "on 3 slice(s)" in widget.status
    preview = viewer.layers[_layers.PREVIEW]
    for z in (0, 2):
        viewer.dims.set_point(0, z)
        assert preview.translate[0] == z  # the slice in view's proposals
        assert preview.data.max() == len(proposals.on((z,)))
    panel._commit_btn.click()
    labels = viewer.layers[_layers.LABELS]
    assert len(labels.features) == len(proposals) and all(labels.data[z].any() for z in range(3))
    assert "one undo step" in widget.status
    widget.undo()
    assert not labels.data.any() and labels.features.empty
