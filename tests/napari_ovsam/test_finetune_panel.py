"""Fine-tuning from napari: gathering the named objects of images and stacks (no viewer), and the Fine-tune
panel in a real viewer (Xvfb) running a short job on the tiny model, its refusals, and cancelling it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from widget_helpers import idle, load_tiny

from napari_ovsam import _layers
from napari_ovsam._qt.finetune_panel import FinetunePanel
from napari_ovsam._qt.model_panel import CHECKPOINT_ITEM
from napari_ovsam._qt.widget import OVSAMWidget
from napari_ovsam.features import features_row
from napari_ovsam.finetune import AnnotatedLayer, annotated_images, class_names_of
from ovsam_model.data.synthetic_images import generate_image, image_rng
from ovsam_model.vocabulary import DEMO_CLASSES


def _table(names: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame([features_row(i, name, 0.9, 0.8) for i, name in names.items()])


class _Reads:
    """An array that records which leading indices were read (a lazy stack)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.read = data, []
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __getitem__(self, index):
        self.read.append(index)
        return self.data[index]


def test_names_come_from_the_features_and_unknown_is_left_out() -> None:
    names = class_names_of(_table({1: "crescent", 2: "unknown", 3: " rod "}))
    assert names == {1: "crescent", 3: "rod"}


def test_a_stack_gives_the_slices_with_named_objects_only() -> None:
    labels = np.zeros((3, 20, 30), np.int32)
    labels[1, 2:8, 2:8] = 4
    labels[2, 2:8, 2:8] = 9  # no name: this slice is not read
    image = _Reads(np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30))
    layer = AnnotatedLayer("stack", image, labels, _table({4: "crescent"}), contrast_limits=(0.0, 100.0))
    [item] = annotated_images([layer])
    assert item.source == "stack, slice (1,)" and item.contrast_limits == (0.0, 100.0)
    assert np.array_equal(item.image, image.data[1]) and dict(item.class_names) == {4: "crescent"}
    assert image.read == [(1,)]


def test_an_image_without_named_objects_gives_nothing_and_wrong_labels_are_refused() -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[:5, :5] = 1
    assert annotated_images([AnnotatedLayer("a", np.zeros((20, 30)), labels, _table({}))]) == []
    rgb = AnnotatedLayer("rgb", np.zeros((20, 30, 3), np.uint8), labels, _table({1: "x"}), rgb=True)
    assert len(annotated_images([rgb])) == 1
    with pytest.raises(ValueError, match="each image.s own labels layer"):
        annotated_images([AnnotatedLayer("b", np.zeros((21, 30)), labels, _table({1: "x"}))])


# ------------------------------------------------------------------------------------------------ the panel
def _panel(widget: OVSAMWidget, viewer, folder: Path) -> FinetunePanel:
    """The panel wired as the widget wires it (its tab added here)."""
    panel = FinetunePanel(
        viewer=viewer, session=widget.session, jobs=widget._jobs, status=widget._status_panel,
        use_contrast=lambda: False, load_model=lambda path: widget.load_model(CHECKPOINT_ITEM, None, path),
        set_vocabulary=widget.set_vocabulary,
    )  # fmt: skip
    widget._tabs.addTab(panel, "Fine-tune")
    panel._folder.setText(str(folder))
    return panel


def _annotate(viewer, count: int = 4, names: tuple[str, ...] = ("nucleus", "crescent")) -> None:
    """Synthetic images, each with its "ovsam labels" layer (the widget's, or a new one: labels opened from
    a file) whose objects are named in turn by ``names``."""
    for index in range(count):
        sample = generate_image(image_rng(0, "train", index), size=128, objects_per_image=(7, 9))
        image = viewer.add_image(sample.image, name=f"cells {index}")
        layer = _layers.labels_layer_for(viewer, image)
        if layer is None:
            layer = _layers.add_labels_layer(
                viewer, image, np.zeros(sample.image.shape, np.int32), DEMO_CLASSES
            )
        for k, mask in enumerate(sample.masks):
            layer.data[mask] = k + 1
        layer.features = _table({k + 1: names[k % len(names)] for k in range(len(sample.masks))})


@pytest.mark.gui
def test_a_short_job_on_the_tiny_model_saves_and_loads_a_new_checkpoint(viewer, widget, qtbot, tmp_path):
    _annotate(viewer)
    load_tiny(qtbot, widget)
    original = widget.session.predictor
    panel = _panel(widget, viewer, tmp_path)
    panel._steps.setValue(3)
    job = panel.finetune()
    assert job is not None and job.lane == "finetune", widget.status
    qtbot.waitUntil(lambda: panel.result is not None or not widget.busy, timeout=180000)
    idle(qtbot, widget, timeout=60000)  # the new model's loading and its vocabulary
    assert panel.result is not None, widget.status
    assert panel.result.checkpoint == tmp_path / "tiny_finetuned.safetensors" and panel.result.steps == 3
    assert panel._before.text().startswith("mIoU ") and panel._after.text() == panel.result.after.line()
    assert panel._loss.text() != "–"
    assert widget.session.predictor is not original
    assert widget.session.vocabulary.names == [*DEMO_CLASSES, "crescent"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tiny_finetuned.examples.safetensors",
        "tiny_finetuned.safetensors",
    ]
    assert set(widget.session.predictor.examples.classes) == {"nucleus", "crescent"}


@pytest.mark.gui
def test_too_few_objects_and_no_model_are_refused_with_a_reason(viewer, widget, qtbot, tmp_path):
    _annotate(viewer, count=1, names=("nucleus", "crescent", "rod", "ring"))
    panel = _panel(widget, viewer, tmp_path)
    assert panel.finetune() is None and "Load a model first" in widget.status
    load_tiny(qtbot, widget)
    assert panel.finetune() is None
    assert (
        "Too few objects to fine-tune on" in widget.status
        and "'nucleus' has 3 (commit 2 more)" in widget.status
    )
    assert "at least 20 named objects in all: there are 9" in widget.status  # 9 objects on the image
    panel._folder.setText(str(tmp_path / "missing"))
    assert panel.finetune() is None and "is not one" in widget.status


@pytest.mark.gui
def test_cancel_midway_keeps_the_model_and_saves_nothing(viewer, widget, qtbot, tmp_path):
    _annotate(viewer)
    load_tiny(qtbot, widget)
    original = widget.session.predictor
    panel = _panel(widget, viewer, tmp_path)
    panel._steps.setValue(100_000)
    assert panel.finetune() is not None
    qtbot.waitUntil(lambda: panel._progress.value() >= 1, timeout=180000)
    panel.cancel()
    idle(qtbot, widget, timeout=60000)
    assert panel.result is None and "cancelled" in widget.status
    assert widget.session.predictor is original
    assert list(tmp_path.iterdir()) == []
