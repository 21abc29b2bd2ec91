"""Builds the widget's controls (no behaviour here: ``_widget`` wires them to the session).

Every control becomes a private attribute of the widget (``widget._model``, ``widget._live``, ...) so tests and
scripts can set a value and call the handler, as with the napari plugin template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._objects_table import ObjectsTable

if TYPE_CHECKING:
    from ._widget import OVSAMWidget

CHECKPOINT_ITEM = "checkpoint file…"
MODELS = {
    "demo": "Small model trained on the synthetic cells. Closed vocabulary: its text tower is untrained, so it "
    "only knows nucleus, rod, ring and cluster.",
    "ovsam_rn50x16": "OV-SAM with CLIP RN50x16 and SAM's multimask decoder (released weights, ~3 GB).",
    "ovsam_rn50x16_official": "OV-SAM RN50x16 with the released single-token decoder (as in the paper).",
    "tiny": "Random weights, 128 px input: for tests only, its masks and names mean nothing.",
    CHECKPOINT_ITEM: "A checkpoint written by this package (it carries its own config).",
}
PRESETS = {"demo classes": "demo", "COCO-80": "coco80", "LVIS-1203": "lvis1203"}
GROUP_RULES = {"one object from all points": "refine", "one object per positive point": "per_positive"}
COMMIT_MODES = {"keep existing labels": "keep", "overwrite existing labels": "overwrite"}
PROMPT_HELP = (
    "<b>Prompts.</b> Click in <i>ovsam points</i> (positive: green, negative: red; <b>T</b> switches the "
    "next points, or flips the selected ones in select mode) and draw rectangles in <i>ovsam boxes</i>. "
    "Each box is one object; points inside a box refine it (the smallest box that holds them); the other "
    "points make one object, or one per positive point. <b>S</b> segment · <b>C</b> commit · <b>Shift+C</b> "
    "clear prompts · <b>Ctrl+Z</b> undo the last commit (on <i>ovsam labels</i>, brush strokes made after it "
    "are undone first)."
)


def build(widget: OVSAMWidget) -> None:
    """Create the controls as attributes of ``widget`` and lay them out: model, image, tabs, status."""
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.addWidget(_model_box(widget))
    widget._tabs = QTabWidget()
    widget._tabs.addTab(_annotate_tab(widget), "Annotate")
    widget._tabs.addTab(_vocabulary_tab(widget), "Vocabulary")
    widget._tabs.addTab(_stack_tab(widget), "Stack")
    layout.addWidget(widget._tabs, stretch=1)
    layout.addWidget(_status_box(widget))


def _button(text: str, tip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    return button


def _row(*widgets: QWidget, stretch: int | None = None) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, item in enumerate(widgets):
        row.addWidget(item, stretch=1 if i == stretch else 0)
    return row


def _model_box(w: OVSAMWidget) -> QGroupBox:
    from ovsam_model.device import available_devices

    box = QGroupBox("Model and image")
    form = QFormLayout(box)
    w._model = QComboBox()
    for i, (name, tip) in enumerate(MODELS.items()):
        w._model.addItem(name)
        w._model.setItemData(i, tip, Qt.ToolTipRole)
    w._device = QComboBox()
    w._device.addItems(["auto", *available_devices()])
    w._device.setToolTip("auto = cuda > mps > cpu (only devices this machine has are listed)")
    w._load = _button("Load", "Load the model in the background (weights must be in place; see the message)")
    form.addRow("Model", _row(w._model, w._device, w._load, stretch=0))
    w._checkpoint = QLineEdit()
    w._checkpoint.setPlaceholderText("path of a .pt checkpoint")
    w._browse_checkpoint = _button("…", "Choose a checkpoint file")
    w._checkpoint_row = QWidget()
    w._checkpoint_row.setLayout(_row(w._checkpoint, w._browse_checkpoint, stretch=0))
    w._checkpoint_row.layout().setContentsMargins(0, 0, 0, 0)
    form.addRow(w._checkpoint_row)
    w._model_note = QLabel()
    w._model_note.setWordWrap(True)
    form.addRow(w._model_note)
    w._image = QComboBox()
    w._image.setToolTip("The image layer to annotate; its labels go to its own 'ovsam labels' layer")
    form.addRow("Image", w._image)
    return box


def _annotate_tab(w: OVSAMWidget) -> QWidget:
    tab = QWidget()
    layout = QVBoxLayout(tab)
    w._live = QCheckBox("Live preview")
    w._live.setToolTip("Segment on every prompt edit (decoding the cached embedding: milliseconds)")
    w._live.setChecked(True)
    w._group = QComboBox()
    w._group.addItems(list(GROUP_RULES))
    w._group.setToolTip("How points outside boxes are grouped into objects")
    layout.addLayout(_row(w._live, w._group, stretch=1))
    w._commit_mode = QComboBox()
    w._commit_mode.addItems(list(COMMIT_MODES))
    w._commit_mode.setToolTip(
        "Keep: new objects only fill unlabelled pixels. Overwrite: they paint over labels."
    )
    layout.addLayout(_row(QLabel("Commit"), w._commit_mode, stretch=1))
    w._segment_btn = _button("Segment [S]", "Segment and name the prompted objects (preview)")
    w._commit_btn = _button("Commit [C]", "Write the objects into 'ovsam labels' with their names")
    w._undo_btn = _button("Undo [Ctrl+Z]", "Undo the last commit or propagation (labels and names)")
    w._clear_btn = _button("Clear [⇧C]", "Remove every point and box")
    layout.addLayout(_row(w._segment_btn, w._commit_btn, w._undo_btn, w._clear_btn))
    w._help = QLabel(PROMPT_HELP)
    w._help.setWordWrap(True)
    w._help.setStyleSheet("font-size: 11px; color: #a0a0a0;")
    layout.addWidget(w._help)
    w._table = ObjectsTable()
    layout.addWidget(w._table, stretch=1)
    return tab


def _vocabulary_tab(w: OVSAMWidget) -> QWidget:
    tab = QWidget()
    layout = QVBoxLayout(tab)
    w._preset = QComboBox()
    w._preset.addItems(list(PRESETS))
    w._preset.setToolTip("Fill the editor with a shipped vocabulary")
    w._load_vocab = _button("Load…", "Read a vocabulary text file (one class per line)")
    w._save_vocab = _button("Save…", "Write the editor's vocabulary to a text file")
    layout.addLayout(_row(QLabel("Preset"), w._preset, w._load_vocab, w._save_vocab, stretch=1))
    w._vocab_text = QPlainTextEdit()
    w._vocab_text.setPlaceholderText(
        "one class per line; synonyms after commas, e.g.\nmitotic cell, dividing cell"
    )
    w._vocab_text.setToolTip(
        "One class per line, its name first; synonyms comma-separated; # starts a comment"
    )
    layout.addWidget(w._vocab_text, stretch=1)
    w._unknown = QDoubleSpinBox()
    w._unknown.setRange(0.0, 1.0)
    w._unknown.setSingleStep(0.05)
    w._unknown.setToolTip("Objects whose best class has a lower probability are named 'unknown'")
    w._apply_vocab = _button("Apply", "Name the next objects from this vocabulary (committed names stay)")
    layout.addLayout(_row(QLabel("'unknown' below score"), w._unknown, w._apply_vocab, stretch=None))
    return tab


def _stack_tab(w: OVSAMWidget) -> QWidget:
    tab = QWidget()
    layout = QVBoxLayout(tab)
    cache = QGroupBox("Embeddings")
    form = QFormLayout(cache)
    w._cache_path = QLineEdit()
    w._cache_path.setPlaceholderText("memory only, or a .zarr folder")
    w._cache_path.setToolTip(
        "A zarr store keyed by model and slice content: reopening the stack costs nothing. "
        "The labels of lazy (zarr, dask) stacks are then written next to it, else in a temporary folder."
    )
    w._browse_cache = _button("…", "Choose or create a .zarr folder for the embedding cache")
    form.addRow("Cache", _row(w._cache_path, w._browse_cache, stretch=0))
    w._use_contrast = QCheckBox("use the layer's contrast limits")
    w._use_contrast.setToolTip(
        "Off: each slice is normalised by its own percentiles (display changes are free)"
    )
    form.addRow(w._use_contrast)
    w._range_start, w._range_stop = QSpinBox(), QSpinBox()
    w._range_stop.setToolTip("last slice (inclusive)")
    w._precompute_btn = _button("Precompute", "Embed every slice of the range in the background (resumable)")
    form.addRow("Slices", _row(w._range_start, QLabel("to"), w._range_stop, w._precompute_btn, stretch=3))
    layout.addWidget(cache)
    propagation = QGroupBox("Segment through stack")
    form = QFormLayout(propagation)
    w._min_iou, w._min_overlap = QDoubleSpinBox(), QDoubleSpinBox()
    for spin, value, tip in (
        (w._min_iou, 0.5, "stop when the model's predicted mask IoU drops below"),
        (w._min_overlap, 0.3, "stop when the mask overlaps the previous slice's by less (IoU)"),
    ):
        spin.setRange(-1.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setValue(value)
        spin.setToolTip(tip)
    w._max_slices = QSpinBox()
    w._max_slices.setRange(0, 100000)
    w._max_slices.setSpecialValueText("no limit")
    w._max_slices.setToolTip("slices per direction (0: to the end)")
    form.addRow("Stop below IoU", w._min_iou)
    form.addRow("Stop below overlap", w._min_overlap)
    form.addRow("Max slices", w._max_slices)
    w._propagate_btn = _button(
        "Segment through stack",
        "Carry the selected object (or the last commit) to the neighbouring slices; one undo step",
    )
    form.addRow(w._propagate_btn)
    layout.addWidget(propagation)
    layout.addStretch(1)
    return tab


def _status_box(w: OVSAMWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    w._progress = QProgressBar()
    w._cancel = _button("Cancel", "Stop the running computation (what is done is kept)")
    w._progress_row = QWidget()
    w._progress_row.setLayout(_row(w._progress, w._cancel, stretch=0))
    w._progress_row.layout().setContentsMargins(0, 0, 0, 0)
    w._progress_row.setVisible(False)
    layout.addWidget(w._progress_row)
    w._timing = QLabel("embedding: – · last prompt: –")
    w._timing.setToolTip("Time of the last image embedding, and of the last prompt decoding")
    w._status = QLabel("Load a model to start.")
    w._status.setWordWrap(True)
    w._status.setTextInteractionFlags(Qt.TextSelectableByMouse)
    layout.addWidget(w._timing)
    layout.addWidget(w._status)
    return box
