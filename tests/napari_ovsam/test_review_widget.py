"""The review queue in a real napari viewer (Xvfb): the objects table's uncertainty order and the review keys.

No model is needed: objects are committed through the session with chosen scores and alternatives, as a
commit of the model's predictions would write them, so the order they are reviewed in is known.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding
from napari.utils.shortcuts import default_shortcuts

from napari_ovsam import _layers
from napari_ovsam._qt.objects_table import CLASS, ID, MARGIN
from napari_ovsam._qt.review import REVIEW_LAYER
from napari_ovsam.results import ObjectResults

pytestmark = pytest.mark.gui
REVIEW_KEYS = ["N", "Shift-N", "K", "Alt-1", "Alt-2", "Alt-3", "Alt-4", "Alt-5"]
NAMES = ["rod", "ring", "nucleus"]


def press(viewer, key):
    """What pressing ``key`` on the canvas does when the selected layer does not bind it."""
    viewer.keymap[coerce_keybinding(key)](viewer)


def commit(widget, slice_index, boxes, top_scores):
    """Commit one box-shaped object per (row0, row1, col0, col1) box, with alternatives NAMES scored
    ``top_scores[i]`` (best first) and named after the best."""
    height, width = widget.session.labels_shape[-2:]
    masks = np.zeros((len(boxes), height, width), bool)
    for mask, (r0, r1, c0, c1) in zip(masks, boxes):
        mask[r0:r1, c0:c1] = True
    scores = np.asarray(top_scores, np.float32)
    results = ObjectResults(
        tuple(slice_index), masks, [NAMES[0]] * len(boxes), scores[:, 0], np.full(len(boxes), 0.9, np.float32),
        [list(NAMES)] * len(boxes), scores,
    )  # fmt: skip
    group = widget.session.commit(results)
    widget._labels.show()
    return list(group.label_ids)


def world_centroid(layer, label_id, slice_index=()):
    """The centroid of an object on a slice, in world coordinates of the displayed (row, col) axes."""
    pixels = np.argwhere(np.asarray(layer.data[slice_index] if slice_index else layer.data) == label_id)
    row, col = pixels.mean(axis=0)
    return np.asarray(layer.data_to_world((*slice_index, row, col)))[-2:]


def test_review_keys_are_none_of_napari_defaults():
    taken = {binding for bindings in default_shortcuts.values() for binding in bindings}
    assert not [key for key in REVIEW_KEYS if coerce_keybinding(key) in taken]


def test_table_sorts_by_uncertainty_and_keys_walk_accept_and_rename(viewer, widget, qtbot):
    viewer.add_image(np.zeros((100, 120), np.float32), scale=(0.5, 2.0), translate=(10.0, -4.0), name="cells")
    labels = viewer.layers[_layers.LABELS]
    ids = commit(
        widget, (),
        [(5, 15, 5, 25), (40, 60, 10, 20), (70, 90, 60, 100)],
        [(0.9, 0.05, 0.01), (0.45, 0.4, 0.1), (0.6, 0.3, 0.05)],  # margins 0.85, 0.05, 0.3
    )  # fmt: skip
    table = widget._labels.table
    assert [table.label_id(r) for r in range(3)] == ids and table.sort_order == "commit"
    assert "0 / 3 reviewed" in widget._review._summary.text()
    table.horizontalHeader().sectionClicked.emit(MARGIN)  # a click on the margin header
    assert [table.label_id(r) for r in range(3)] == [ids[1], ids[2], ids[0]]
    assert table.item(0, MARGIN).text() == "0.05"
    table.horizontalHeader().sectionClicked.emit(ID)
    assert table.sort_order == "commit" and table.label_id(0) == ids[0]

    press(viewer, "N")  # the most uncertain: the smallest margin
    assert table.sort_order == "uncertainty" and table.selected_label() == ids[1] == labels.selected_label
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], world_centroid(labels, ids[1]), atol=1e-6)
    assert "0 / 3 reviewed" in widget.status and f"Object {ids[1]}" in widget.status
    frame = viewer.layers[REVIEW_LAYER]  # a frame around the object: rows 40..59, cols 10..19, 2 px off
    [corners] = frame.data
    np.testing.assert_allclose([corners.min(axis=0), corners.max(axis=0)], [[37.5, 7.5], [61.5, 21.5]])
    assert viewer.layers.selection.active is not frame and tuple(frame.scale) == tuple(labels.scale)

    press(viewer, "K")  # accept: reviewed, name kept, on to the next
    row = widget.session.target.row(ids[1])
    assert (
        row["reviewed"]
        and row["class_name"] == "rod"
        and labels.features.set_index("index").loc[ids[1], "reviewed"]
    )
    assert table.selected_label() == ids[2] and "1 / 3 reviewed" in widget.status
    assert "1 / 3 reviewed" in widget._review._summary.text()
    assert table.label_id(2) == ids[1] and table.item(2, ID).text().endswith("✓")  # reviewed: last, marked

    press(viewer, "Alt-2")  # take the second alternative, through the table's rename
    row = widget.session.target.row(ids[2])
    assert (
        row["class_name"] == "ring"
        and row["reviewed"]
        and table.item(table.row_of(ids[2]), CLASS).text() == "ring"
    )
    assert "ring" in list(viewer.layers[_layers.NAMES].text.values)
    assert table.selected_label() == ids[0] and "2 / 3 reviewed" in widget.status
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], world_centroid(labels, ids[0]), atol=1e-6)

    press(viewer, "N")  # the only one left: around to itself
    assert table.selected_label() == ids[0]
    press(viewer, "Alt-5")  # it has three alternatives only
    assert "no alternative 5" in widget.status and not widget.session.target.row(ids[0])["reviewed"]
    press(viewer, "K")
    assert "Every object is reviewed (3 / 3 reviewed)" in widget.status and len(frame.data) == 0
    press(viewer, "Shift-N")
    assert "Every object is reviewed" in widget.status


def test_keys_follow_the_stack_and_start_from_a_picked_row(viewer, widget, qtbot):
    viewer.add_image(np.zeros((6, 64, 64), np.float32), name="stack")
    labels = viewer.layers[_layers.LABELS]
    viewer.dims.set_point(0, 0)
    [sure] = commit(widget, (1,), [(5, 15, 5, 15)], [(0.9, 0.05, 0.0)])
    [unsure] = commit(widget, (4,), [(30, 50, 40, 60)], [(0.5, 0.45, 0.0)])
    [middle] = commit(widget, (2,), [(20, 24, 20, 40)], [(0.6, 0.3, 0.0)])
    press(viewer, "N")
    assert viewer.dims.current_step[0] == 4 and labels.selected_label == unsure
    [corners] = viewer.layers[REVIEW_LAYER].data  # the frame is on the object's slice
    assert set(corners[:, 0]) == {4}
    np.testing.assert_allclose(
        viewer.scene.camera.center[-2:], world_centroid(labels, unsure, (4,)), atol=1e-6
    )
    press(viewer, "N")
    assert viewer.dims.current_step[0] == 2 and labels.selected_label == middle
    press(viewer, "Shift-N")
    assert viewer.dims.current_step[0] == 4
    press(viewer, "Shift-N")  # before the first: around to the last
    assert viewer.dims.current_step[0] == 1 and widget._labels.table.selected_label() == sure

    widget._labels.table.select_label(middle)  # a click on a row: K accepts that one
    press(viewer, "K")
    assert widget.session.target.row(middle)["reviewed"] and not widget.session.target.row(sure)["reviewed"]
    assert widget._labels.table.selected_label() == sure  # after 2 comes 1 (4 is before 2)


def test_keys_say_what_is_missing(viewer, widget):
    press(viewer, "N")
    assert "No objects to review" in widget.status
    viewer.add_image(np.zeros((32, 32), np.float32))
    press(viewer, "K")
    assert "Select an object first" in widget.status
    press(viewer, "N")
    assert "No objects to review yet (0 / 0 reviewed)" in widget.status
    viewer.window.remove_dock_widget(widget)  # the dock's close button: the review keys go with the widget
    assert not [key for key in REVIEW_KEYS if coerce_keybinding(key) in viewer.keymap]
