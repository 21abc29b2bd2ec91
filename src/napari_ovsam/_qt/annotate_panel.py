"""``AnnotatePanel``: prompts -> live preview -> commit into the labels, and undo.

Prompts are the "ovsam points" and "ovsam boxes" layers of the chosen image (recreated if deleted). In live
mode every completed prompt edit is segmented at once, inside the layer's event, so napari draws the prompt and
its preview in the same frame; the decode runs on the cached embedding (milliseconds), never the encoder.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QLabel, QVBoxLayout, QWidget

from .. import _layers
from ..painting import PaintMode
from ..prompts import GroupRule
from ..results import ObjectResults, SliceIndex
from ..session import AnnotationSession, SessionBusy, TilesNeeded
from ..targets import CommitGroup
from .controls import button, row, single_shot_timer
from .embeddings import EmbeddingScheduler
from .jobs import JobRunner
from .labels_view import LabelsView
from .model_panel import remote_timing_note
from .status import StatusPanel

COMPLETE_ACTIONS = {"added", "removed", "changed"}  # data events that end an edit (not "changing" drags)
GROUP_RULES: dict[str, GroupRule] = {
    "one object from all points": "refine",
    "one object per positive point": "per_positive",
}
COMMIT_MODES: dict[str, PaintMode] = {
    "keep existing labels": "keep",
    "overwrite existing labels": "overwrite",
}
PROMPT_HELP = (
    "<b>Prompts.</b> Click in <i>ovsam points</i> (positive: green, negative: red; <b>T</b> switches the "
    "next points, or flips the selected ones in select mode) and draw rectangles in <i>ovsam boxes</i>. "
    "Each box is one object; points inside a box refine it (the smallest box that holds them); the other "
    "points make one object, or one per positive point. <b>S</b> segment · <b>C</b> commit · <b>Shift+C</b> "
    "clear prompts · <b>Ctrl+Z</b> undo the last commit (on <i>ovsam labels</i>, brush strokes made after it "
    "are undone first)."
)


class AnnotatePanel(QWidget):
    """The Annotate tab (see the module docstring).

    Args:
        viewer: the napari viewer. session: segments and writes. jobs: tells whether the widget is closed.
        status: where to report. image: the chosen image layer (or None) and its slice in view.
        embeddings: the slice in view's embedding. labels: the labels layer, names and objects table.
        keys: key name -> action, bound on the prompt layers too.
    """

    def __init__(
        self,
        *,
        viewer: napari.Viewer,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        image: Callable[[], Any],
        slice_in_view: Callable[[], SliceIndex | None],
        embeddings: EmbeddingScheduler,
        labels: LabelsView,
        keys: dict[str, Callable[[], Any]],
    ) -> None:
        super().__init__()
        self._viewer, self._session, self._jobs, self._status = viewer, session, jobs, status
        self._image, self._slice_in_view, self._embeddings, self._labels = (
            image,
            slice_in_view,
            embeddings,
            labels,
        )
        self._keys = keys
        self._results: ObjectResults | None = None  # the preview, until the prompts change
        self._live_key: tuple[Any, ...] | None = None  # the prompts of the live preview in _results
        self._live_running = False
        # Whether the preview layer stays as it is (Segment everything's proposals) instead of the prompts'.
        self.keep_preview: Callable[[ObjectResults], bool] = lambda _: False
        self._hooked: weakref.WeakSet[Any] = weakref.WeakSet()  # prompt layers with our events and keys
        self._live_timer = single_shot_timer(self, 0, self._live_segment)
        self._build()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self._live = QCheckBox("Live preview")
        self._live.setToolTip("Segment on every prompt edit (decoding the cached embedding: milliseconds)")
        self._live.setChecked(True)
        self._group = QComboBox()
        self._group.addItems(list(GROUP_RULES))
        self._group.setToolTip("How points outside boxes are grouped into objects")
        layout.addLayout(row(self._live, self._group, stretch=1))
        self._commit_mode = QComboBox()
        self._commit_mode.addItems(list(COMMIT_MODES))
        self._commit_mode.setToolTip(
            "Keep: new objects only fill unlabelled pixels. Overwrite: they paint over labels."
        )
        layout.addLayout(row(QLabel("Commit"), self._commit_mode, stretch=1))
        self._segment_btn = button("Segment [S]", "Segment and name the prompted objects (preview)")
        self._commit_btn = button("Commit [C]", "Write the objects into 'ovsam labels' with their names")
        self._undo_btn = button("Undo [Ctrl+Z]", "Undo the last commit or propagation (labels and names)")
        self._clear_btn = button("Clear [⇧C]", "Remove every point and box")
        layout.addLayout(row(self._segment_btn, self._commit_btn, self._undo_btn, self._clear_btn))
        self._help = QLabel(PROMPT_HELP)
        self._help.setWordWrap(True)
        self._help.setStyleSheet("font-size: 11px; color: #a0a0a0;")
        layout.addWidget(self._help)
        layout.addWidget(self._labels.table, stretch=1)
        self._segment_btn.clicked.connect(self.segment_asked)
        self._commit_btn.clicked.connect(lambda: self._keys["C"]())  # the widget's commit, as the C key
        self._undo_btn.clicked.connect(lambda: self.undo())
        self._clear_btn.clicked.connect(lambda: self.clear_prompts())
        self._group.currentTextChanged.connect(self._on_group)

    # ------------------------------------------------------------------------------------------ actions

    def segment_asked(self) -> None:
        """The user pressed Segment (or S): a failed embedding is tried again too."""
        self._embeddings.retry()
        self.segment()

    def segment(self) -> ObjectResults | None:
        """Segment and name the prompted objects on the slice in view (preview); None while the slice's
        embedding is being computed (the segmentation follows when it is ready)."""
        slice_index = self._ready_slice()
        if slice_index is None:
            return None
        if not self._session.embedding_ready(slice_index):
            self._embeddings.when_ready(slice_index, self.segment)
            return None
        points, boxes = self._prompt_layers()
        try:
            results = self._session.segment(*_layers.prompt_arrays(points, boxes), slice_index=slice_index)
        except (
            TilesNeeded
        ) as needed:  # a large image: its tiles are encoded in a worker, then this runs again
            self._embeddings.when_tiles_ready(needed, self.segment)
            return None
        except Exception as error:  # the status line is the user's only window into a failed decode
            self._status.report("Segmentation failed", error)
            return None
        self._results = results
        if not self.keep_preview(results):
            _layers.show_preview(self._viewer, self._image(), results)
        if len(results):
            self._status.show_prompt_time(results.latency_ms)
        names = ", ".join(f"{n} {s:.2f}" for n, s in zip(results.class_names, results.scores))
        found = (
            []
            if results.messages and not len(results)
            else [f"{len(results)} object(s): {names or 'no prompt'}."]
        )
        timing = remote_timing_note(self._session.predictor)  # a served model: round trip and server times
        self._status.set_status(" ".join(filter(None, [*found, *results.messages, timing])))
        return results

    def commit(self) -> CommitGroup | None:
        """Write the previewed (or freshly segmented) objects into the labels layer, with their names."""
        results = self._results or self.segment()
        if results is None:
            if self._missing() is None and self._embeddings.pending:
                self._embeddings.wait_for(self.commit)  # after the pending segmentation
            return None
        if self._labels.ensure() is None:
            return None
        self._labels.take_user_edits()
        try:
            group = self._session.commit(results, self.commit_mode)
        except SessionBusy as error:
            self._status.set_status(str(error))
            return None
        if group is None:
            self._status.set_status(
                "Nothing to commit: no prompt, or every pixel is already labelled (keep mode)."
            )
            return None
        self._labels.committed()
        self._labels.show()
        self.clear_prompts()
        self._status.set_status(
            f"Committed {len(group.label_ids)} object(s): ids {', '.join(map(str, group.label_ids))}."
        )
        return group

    def undo(self) -> CommitGroup | None:
        """Undo the last commit or propagation (pixels, names and features)."""
        if self._session.target is None or self._labels.layer is None:
            self._status.set_status("Nothing to undo.")
            return None
        self._labels.take_user_edits()
        try:
            group = self._session.undo()
        except SessionBusy as error:
            self._status.set_status(str(error))
            return None
        self._status.set_status(f"Undid the {group.description}." if group else "Nothing to undo.")
        if group is not None:
            self._labels.show()
        return group

    def clear_prompts(self) -> None:
        """Remove every point and box, and the preview."""
        _layers.clear_prompts(
            _layers.find(self._viewer, _layers.POINTS), _layers.find(self._viewer, _layers.BOXES)
        )
        self._results = None
        _layers.clear_preview(self._viewer)

    def toggle_points(self) -> None:
        """Flip the selected points between positive and negative (or the mode of the next points)."""
        points = _layers.find(self._viewer, _layers.POINTS)
        if points is not None:
            self._status.set_status(_layers.toggle_points(points).capitalize() + ".")
            self._on_prompts_changed()

    # ------------------------------------------------------------------------------------------ state

    def on_image(self, image: Any) -> None:
        """Another image is chosen: its prompt layers (ready to click when new), no preview."""
        self._results = None
        new = _layers.find(self._viewer, _layers.POINTS) is None
        points, _ = self._prompt_layers()
        if new:  # once napari is done selecting the layer it just added
            QTimer.singleShot(0, lambda: self._activate(points))

    def invalidate(self) -> None:
        """The preview is out of date (another slice or model)."""
        self._results = None

    def names_changed(self) -> None:
        """The vocabulary or the unknown threshold changed: segment again (live)."""
        self._results = None
        self._live_key = None
        if self._live.isChecked() and not self._jobs.closed:
            self._live_timer.start()

    @property
    def commit_mode(self) -> PaintMode:
        """Keep or overwrite existing labels (the Commit choice)."""
        return COMMIT_MODES[self._commit_mode.currentText()]

    def set_busy(self, lanes: set[str]) -> None:
        for widget in (self._commit_btn, self._undo_btn):
            widget.setEnabled("propagation" not in lanes)  # the labels are being written

    def shutdown(self) -> None:
        """Unhook the prompt layers (their events and keys)."""
        for layer in list(self._hooked):
            self._hook(layer, connect=False)

    def _missing(self) -> str | None:
        """What segmenting needs and lacks (a pure query), or None."""
        if self._session.predictor is None:
            return "Load a model first (Model: choose one, then Load)."
        if self._image() is None:
            return "Add or choose an image layer first."
        return None

    def _ready_slice(self) -> SliceIndex | None:
        """The slice in view, or None with the reason in the status line."""
        missing = self._missing()
        if missing is not None:
            self._status.set_status(missing)
            return None
        return self._slice_in_view()

    # ------------------------------------------------------------------------------------------ live preview

    def _on_group(self, text: str) -> None:
        self._session.group = GROUP_RULES[text]
        self._on_prompts_changed()

    def _on_prompts_changed(self, event: Any = None) -> None:
        """A prompt layer changed: in live mode, segment at once, inside the layer's event (a deferred call
        would wait for napari to paint the prompt first)."""
        action = str(getattr(event, "action", "changed"))
        if action not in COMPLETE_ACTIONS:
            return
        live = self._live.isChecked() and not self._jobs.closed
        if live and event is not None and self._results is not None and self._live_key == self._prompts_key():
            return  # napari sends a data and a features event for one edit: the same prompts
        self._results = None
        self._live_key = None
        if live and not self._live_running:
            self._live_running = True
            try:
                self._live_segment()
            finally:
                self._live_running = False

    def _prompts_key(self) -> tuple[Any, ...] | None:
        """What the prompts are now (slice, points, signs, boxes), to recognise an event that changed nothing."""
        points, boxes = _layers.find(self._viewer, _layers.POINTS), _layers.find(self._viewer, _layers.BOXES)
        if points is None or boxes is None or self._image() is None:
            return None
        data, positive, vertices, types = _layers.prompt_arrays(points, boxes)
        return (
            self._slice_in_view(),
            data.tobytes(),
            positive.tobytes(),
            tuple(np.asarray(v, float).tobytes() for v in vertices),
            tuple(types),
        )

    def _live_segment(self) -> None:
        if self._jobs.closed or self._missing() is not None:
            return
        if self.segment() is not None:
            self._live_key = self._prompts_key()

    def _activate(self, points: Any) -> None:
        if not self._jobs.closed and points in self._viewer.layers:
            self._viewer.layers.selection.active = points
            points.mode = "add"

    def _prompt_layers(self) -> tuple[Any, Any]:
        """The prompt layers of the chosen image (recreated if deleted), with our events and keys."""
        with _layers.keep_selection(self._viewer):
            points, boxes = _layers.ensure_prompt_layers(self._viewer, self._image())
        for layer in (points, boxes):
            if layer not in self._hooked:  # once per layer: hooking costs more than a small model's decode
                self._hook(layer)
        return points, boxes

    def _hook(self, layer: Any, *, connect: bool = True) -> None:
        if connect:
            self._hooked.add(layer)
        else:
            self._hooked.discard(layer)
        for emitter in (layer.events.data, getattr(layer.events, "features", None)):
            if emitter is not None:
                emitter.disconnect(self._on_prompts_changed)
                if connect:
                    emitter.connect(self._on_prompts_changed)
        for key, action in self._keys.items():
            layer.bind_key(key, self._key(action) if connect else None, overwrite=True)

    def _key(self, action: Callable[[], Any]) -> Callable[..., None]:
        def run(*_: Any) -> None:
            if not self._jobs.closed:
                action()

        return run
