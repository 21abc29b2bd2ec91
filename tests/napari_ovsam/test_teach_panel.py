"""The Teach tab in a real napari viewer (Xvfb) with the tiny CPU model: classes and their example counts,
adding a class and committing its first objects, renames and undo in the counts, save / load of examples
(into another image), refusal of another model's or a corrupted file, and examples kept with the labels
layer through the COCO writer and reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from widget_helpers import idle, load_tiny

from napari_ovsam import _layers
from napari_ovsam._qt.objects_table import CLASS
from napari_ovsam._qt.teach_panel import MODEL_CHOICE
from napari_ovsam._sample_data import sample_2d
from napari_ovsam._writer import write_coco
from napari_ovsam.coco_layers import coco_layer_data
from napari_ovsam.examples import METADATA_KEY
from napari_ovsam.examples_files import save_examples
from napari_ovsam.prompts import box_to_shape_vertices
from napari_ovsam.session import AnnotationSession
from ovsam_model import OVSAMPredictor, build_ovsam
from ovsam_model.vocabulary import DEMO_CLASSES

pytestmark = pytest.mark.gui
BOXES = ([[20, 80], [60, 120]], [[150, 30], [220, 100]], [[90, 150], [140, 210]])  # (row, col) corners
INSIDE_A_TILE = [[143, 184], [182, 212]]  # a bright object within one tile of the tiny model's 3 x 3 grid


@pytest.fixture
def ready(viewer, widget, qtbot):
    """The 2D sample with the tiny model loaded and its embedding computed; the Teach tab shown."""
    data, attributes, _ = sample_2d()[0]
    image = viewer.add_image(data, **attributes)
    load_tiny(qtbot, widget)
    idle(qtbot, widget)
    widget._tabs.setCurrentWidget(widget._teach)
    return image


def commit_box(viewer, widget, qtbot, box):
    """Draw a box and commit its object (the sample is tiled for the tiny model: a tile the box needs may
    be encoded first, and the commit follows it)."""
    (r0, c0), (r1, c1) = box
    viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((c0, r0, c1, r1), ()))
    steps = len(widget.session.target.history) if widget.session.target is not None else 0
    widget.commit()
    idle(qtbot, widget)
    history = widget.session.target.history
    assert len(history) == steps + 1, widget.status
    return history[-1]


def counts(panel):
    """class -> (examples, from) as the Teach table shows them."""
    table = panel._classes
    return {
        table.item(r, 0).text(): (int(table.item(r, 1).text()), table.item(r, 2).text())
        for r in range(table.rowCount())
    }


def test_counts_add_class_commit_rename_and_undo(viewer, widget, ready, qtbot):
    panel = widget._teach
    assert widget._tabs.tabText(widget._tabs.indexOf(panel)) == "Teach"
    assert counts(panel) == {name: (0, "vocabulary") for name in DEMO_CLASSES}
    assert panel._learn.isChecked()

    first = commit_box(viewer, widget, qtbot, BOXES[0])
    name = widget.session.target.features["class_name"].iloc[0]
    assert counts(panel)[name] == (1, "vocabulary")
    layer = viewer.layers[_layers.LABELS]
    assert layer.metadata["ovsam"][METADATA_KEY] is widget.session.target.examples  # kept with the layer

    panel._new_class.setText("mitotic")
    panel._add.click()
    assert counts(panel)["mitotic"] == (0, "added, no example yet")
    assert (
        panel._commit_class.currentText() == "mitotic" and "next commits are named 'mitotic'" in widget.status
    )
    second = commit_box(viewer, widget, qtbot, BOXES[1])
    row = widget.session.target.row(second.label_ids[0])
    assert row["class_name"] == "mitotic" and row["reviewed"]
    assert counts(panel)["mitotic"] == (1, "examples only")
    assert "mitotic" in widget.session.predictor.class_names

    panel._commit_class.setCurrentText(MODEL_CHOICE)
    panel._commit_class.activated.emit(0)
    assert widget.session.teaching.commit_class is None
    third = commit_box(viewer, widget, qtbot, BOXES[2])
    widget._labels.table.item(2, CLASS).setText("mitotic")  # the user renames it in the objects table
    assert counts(panel)["mitotic"] == (2, "examples only")
    widget.undo()
    assert counts(panel)["mitotic"] == (1, "examples only")
    assert third.label_ids[0] not in widget.session.target.examples.learnt
    assert (
        sum(c for c, _ in counts(panel).values()) == 2
        and first.label_ids[0] in widget.session.target.examples.learnt
    )


@pytest.mark.parametrize("name, message", [("", "empty"), ("Nucleus", "already"), ("mitotic", "already")])
def test_an_empty_or_duplicate_class_is_refused_with_a_message(widget, ready, name, message):
    panel = widget._teach
    panel.add_class("mitotic")
    assert panel.add_class(name) is None
    assert message in panel.notice and message in widget.status and message in panel._info.text()
    assert list(counts(panel)).count("mitotic") == 1


def test_learning_off_and_removing_a_class(viewer, widget, ready, qtbot):
    panel = widget._teach
    panel._learn.setChecked(False)
    commit_box(viewer, widget, qtbot, BOXES[0])
    assert sum(c for c, _ in counts(panel).values()) == 0
    panel._learn.setChecked(True)
    commit_box(viewer, widget, qtbot, BOXES[1])
    name = widget.session.target.features["class_name"].iloc[1]
    panel._classes.selectRow(list(counts(panel)).index(name))
    panel._forget.click()
    assert counts(panel)[name][0] == 0 and "Removed 1 example" in widget.status


def test_save_load_into_another_image_and_refusals(viewer, widget, ready, qtbot, tmp_path):
    panel = widget._teach
    assert panel.save_examples(str(tmp_path / "none.examples.safetensors")) is None
    assert "no examples to save" in panel.notice
    for box in BOXES[:2]:
        commit_box(viewer, widget, qtbot, box)
    path = tmp_path / "mine.examples.safetensors"
    assert panel.save_examples(str(path)) == 2 and path.is_file()

    other = viewer.add_image(np.asarray(ready.data)[::-1].copy(), name="other")
    widget._image_panel._image.setCurrentText(other.name)
    idle(qtbot, widget)
    assert len(widget.session.target.examples) == 0
    assert panel.load_examples(str(path)) == 2
    assert len(widget.session.target.examples.loaded) == 1 and len(widget.session.predictor.examples) == 4

    torch.manual_seed(5)  # another model: other random weights
    stranger = AnnotationSession(OVSAMPredictor(build_ovsam("tiny", device="cpu")))
    stranger.set_vocabulary(list(DEMO_CLASSES))
    stranger.set_image(np.asarray(ready.data))
    stranger.attach_labels(np.zeros(stranger.labels_shape, np.uint32))
    stranger.ensure_embedding(())
    (r0, c0), (r1, c1) = BOXES[0]
    rect = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)
    stranger.commit(stranger.segment(np.zeros((0, 2)), np.zeros(0, bool), [rect], ["rectangle"], ()))
    foreign = tmp_path / "foreign.examples.safetensors"
    save_examples(stranger, foreign)
    assert panel.load_examples(str(foreign)) is None
    assert "another model" in panel.notice and "another model" in widget.status
    broken = tmp_path / "broken.examples.safetensors"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert panel.load_examples(str(broken)) is None and "not loaded" in panel.notice
    assert len(widget.session.predictor.examples) == 4  # nothing lost, nothing added


def test_examples_come_back_with_labels_reopened_from_coco(viewer, widget, ready, qtbot, tmp_path):
    panel = widget._teach
    for box in BOXES[:2]:
        commit_box(viewer, widget, qtbot, box)
    widget._labels.table.renamed.emit(2, "mitotic")  # what editing its class cell does
    layer = viewer.layers[_layers.LABELS]
    data, attributes, _ = layer.as_layer_data_tuple()
    (path,) = write_coco(str(tmp_path / "cells.json"), data, attributes)
    assert (tmp_path / "cells.examples.safetensors").is_file()
    before = counts(panel)

    viewer.layers.remove(layer)
    assert sum(c for c, _ in counts(panel).values()) == 0  # its examples went with it
    ((labels, reopened, _),) = coco_layer_data(json.loads((tmp_path / "cells.json").read_text()), path)
    viewer.add_labels(labels, **reopened)
    widget._on_image(ready)  # what choosing the image again does
    idle(qtbot, widget)
    assert widget._labels.layer.name == "cells"
    assert counts(panel) == before and widget.session.target.examples.learnt == {1, 2}
    assert list(widget.session.predictor.examples.class_names)[-1] == "mitotic"


def test_a_reopened_layer_found_by_the_next_commit_brings_its_examples(
    viewer, widget, ready, qtbot, tmp_path
):
    for box in BOXES[:2]:
        commit_box(viewer, widget, qtbot, box)
    layer = viewer.layers[_layers.LABELS]
    (path,) = write_coco(str(tmp_path / "cells.json"), *layer.as_layer_data_tuple()[:2])
    viewer.layers.remove(layer)
    ((labels, reopened, _),) = coco_layer_data(json.loads((tmp_path / "cells.json").read_text()), path)
    viewer.add_labels(labels, **reopened)
    commit_box(viewer, widget, qtbot, INSIDE_A_TILE)  # the commit finds the reopened layer by its image name
    assert widget._labels.layer.name == "cells"
    assert widget.session.target.examples.learnt == {1, 2, 3} and len(widget.session.predictor.examples) == 3
    assert widget._labels.layer.metadata["ovsam"][METADATA_KEY] is widget.session.target.examples


def test_examples_of_another_model_are_shown_kept_but_unused(viewer, widget, ready, qtbot):
    panel = widget._teach
    for box in BOXES[:2]:
        commit_box(viewer, widget, qtbot, box)
    widget._model_panel._model.setCurrentText("demo")  # the closed-vocabulary demo model
    assert widget.load_model().lane == "model"
    idle(qtbot, widget)
    assert sum(c for c, _ in counts(panel).values()) == 0
    assert "2 example(s) of another model are kept but not used" in panel._info.text()
    panel.add_class("mitotic")  # teaching works with the demo model too
    commit_box(viewer, widget, qtbot, INSIDE_A_TILE)
    assert counts(panel)["mitotic"] == (1, "examples only")
