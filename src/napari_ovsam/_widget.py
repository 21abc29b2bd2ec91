"""``OVSAMWidget``: the napari dock widget, a thin view on :class:`~napari_ovsam.session.AnnotationSession`.

Scriptable: ``load_model()``, ``set_vocabulary()``, ``segment()``, ``commit()``, ``undo()``, ``clear_prompts()``,
``precompute()``, ``propagate()``. The image encoder only runs in thread workers (``_jobs``); the GUI thread
decodes prompts on cached embeddings (milliseconds). Controls are built in ``_panels``, layers in ``_layers``.

Keys: S segment, C commit, Shift+C clear prompts, T flip points, Ctrl+Z undo the last commit. They are bound
on the widget, on the prompt layers, and (while the widget exists) on the viewer, where a selected layer's own
keys win (e.g. C is "auto contrast" on an image layer: select a prompt layer). On "ovsam labels", Ctrl+Z first
undoes brush strokes made after the last commit (napari's painting undo), then commits.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut, QWidget

from . import _layers, _panels
from ._compat import block_triton_if_llvm_loaded
from ._jobs import JobRunner
from ._widget_model import ModelActions
from ._widget_results import ResultsView
from ._widget_stack import StackActions
from .session import AnnotationSession, SessionBusy

if TYPE_CHECKING:
    import napari

    from .annotations import CommitGroup, LabelsTarget, ObjectResults

COMPLETE_ACTIONS = {"added", "removed", "changed"}  # data events that end an edit (not "changing" drags)


class OVSAMWidget(ModelActions, ResultsView, StackActions, QWidget):
    """Segment objects with points and boxes and name them from your vocabulary (see the module docstring)."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        block_triton_if_llvm_loaded()  # before anything imports torchvision (see _compat)
        self.viewer = viewer
        self.session = AnnotationSession()
        self._jobs = JobRunner(self._on_busy, self._on_progress)
        self._image_layer: Any = None
        self._labels_layer: Any = None
        self._targets: dict[int, LabelsTarget] = {}  # id(labels layer) -> its labels, history and names
        self._labels_by_image: dict[int, Any] = {}  # id(image layer) -> its labels layer
        self._results: ObjectResults | None = None  # the preview, until prompts change
        self._waiting: list[Any] = []  # what to run once the current slice's embedding is ready
        self._model_name = ""
        self._paints_since_commit = 0
        self._viewer_keys: dict[str, Any] = {}
        self._docked = False
        _panels.build(self)
        self._slice_timer = QTimer(self, singleShot=True, interval=150, timeout=self._embed_current)
        self._live_timer = QTimer(self, singleShot=True, interval=0, timeout=self._live_segment)
        self._live_key: tuple[Any, ...] | None = None  # the prompts of the live preview in self._results
        self._live_running = False
        self._hooked: weakref.WeakSet[Any] = weakref.WeakSet()  # prompt layers with our events and keys
        self._connect_controls()
        self._connect_viewer()
        self._on_preset()
        self._on_model_choice()
        self._refresh_images()
        self.destroyed.connect(self._jobs.close)  # a deleted widget may miss closeEvent

    # ------------------------------------------------------------------------------------------ wiring

    def _connect_controls(self) -> None:
        self._load.clicked.connect(lambda: self.load_model())
        self._model.currentTextChanged.connect(self._on_model_choice)
        self._browse_checkpoint.clicked.connect(self._choose_checkpoint)
        self._image.currentIndexChanged.connect(self._on_image_choice)
        self._segment_btn.clicked.connect(self._segment_asked)
        self._commit_btn.clicked.connect(lambda: self.commit())
        self._undo_btn.clicked.connect(lambda: self.undo())
        self._clear_btn.clicked.connect(lambda: self.clear_prompts())
        self._group.currentTextChanged.connect(self._on_group)
        self._table.renamed.connect(self._on_rename)
        self._table.picked.connect(self._on_pick)
        self._preset.activated.connect(lambda _: self._on_preset())
        self._load_vocab.clicked.connect(self._read_vocabulary_file)
        self._save_vocab.clicked.connect(self._write_vocabulary_file)
        self._apply_vocab.clicked.connect(lambda: self.set_vocabulary())
        self._unknown.valueChanged.connect(self._on_unknown)
        self._browse_cache.clicked.connect(self._choose_cache)
        self._cache_path.editingFinished.connect(self._on_cache_path)
        self._precompute_btn.clicked.connect(lambda: self.precompute())
        self._propagate_btn.clicked.connect(lambda: self.propagate())
        self._cancel.clicked.connect(self.cancel)
        for key, action in self._key_actions().items():
            shortcut = QShortcut(QKeySequence(key.replace("Control", "Ctrl").replace("-", "+")), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)

    def _segment_asked(self) -> None:
        """The user pressed Segment: retry a failed embedding too."""
        self.session.forget_failures()
        self.segment()

    def _key_actions(self) -> dict[str, Any]:
        return {
            "S": self._segment_asked, "C": self.commit, "Shift-C": self.clear_prompts, "Control-Z": self.undo,
            "T": self.toggle_points,
        }  # fmt: skip

    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._refresh_images)
        events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_slice_change)
        for key, action in self._key_actions().items():
            self._viewer_keys[key] = self.viewer.bind_key(key, self._alive(action), overwrite=True)

    def _alive(self, action: Any) -> Any:
        """A key callback that does nothing once the widget is closed."""

        def run(*_: Any) -> None:
            if not self._jobs.closed:
                action()

        return run

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt)
        """A dock as wide as its controls need, not as its longest wrapped text would like."""
        return QSize(430, super().sizeHint().height())

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        """napari removes a dock widget by taking it out of its dock (no close event): shut down then."""
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)

    def shutdown(self) -> None:
        """Stop the workers (their results are dropped), and unhook from the viewer and the layers."""
        if self._jobs.closed:
            return
        self._jobs.close()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.disconnect(self._refresh_images)
        events.removed.disconnect(self._on_layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._on_slice_change)
        for key, previous in self._viewer_keys.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        for layer in (_layers.find(self.viewer, _layers.POINTS), _layers.find(self.viewer, _layers.BOXES)):
            if layer is not None:
                self._hook_prompt_layer(layer, connect=False)
        for labels in self._labels_by_image.values():  # napari's own painting undo comes back
            self._hook_labels_layer(labels, connect=False)

    # ------------------------------------------------------------------------------------------ prompts

    def segment(self) -> ObjectResults | None:
        """Segment and name the prompted objects on the slice in view (preview); None while the slice's
        embedding is being computed (the segmentation follows when it is ready)."""
        context = self._context()
        if context is None:
            return None
        slice_index, points, boxes = context
        if not self.session.embedding_ready(slice_index):
            self._when_embedded(slice_index, self.segment)
            return None
        try:
            results = self.session.segment(*_layers.prompt_arrays(points, boxes), slice_index=slice_index)
        except Exception as error:  # the status line is the user's only window into a failed decode
            self._report("Segmentation failed", error)
            return None
        self._results = results
        _layers.show_preview(self.viewer, self._image_layer, results)
        if len(results):
            self._timing_prompt(results.latency_ms)
        names = ", ".join(f"{n} {s:.2f}" for n, s in zip(results.class_names, results.scores))
        self._set_status(" ".join([f"{len(results)} object(s): {names or 'no prompt'}.", *results.messages]))
        return results

    def commit(self) -> CommitGroup | None:
        """Write the previewed (or freshly segmented) objects into the labels layer, with their names."""
        results = self._results or self.segment()
        if results is None:
            if self._context() is not None and self._waiting:
                self._waiting.append(self.commit)  # after the pending segmentation
            return None
        if self._ensure_labels() is None:
            return None
        try:
            group = self.session.commit(results, _panels.COMMIT_MODES[self._commit_mode.currentText()])
        except SessionBusy as error:
            self._set_status(str(error))
            return None
        if group is None:
            self._set_status("Nothing to commit: no prompt, or every pixel is already labelled (keep mode).")
            return None
        self._paints_since_commit = 0
        if self.session.vocabulary is not None:  # the writers export it as the COCO categories
            metadata = self._labels_layer.metadata.setdefault("ovsam", {})
            metadata["vocabulary"] = self.session.vocabulary.to_text().splitlines()
        self._show_labels()
        self.clear_prompts()
        self._set_status(
            f"Committed {len(group.label_ids)} object(s): ids {', '.join(map(str, group.label_ids))}."
        )
        return group

    def undo(self) -> CommitGroup | None:
        """Undo the last commit or propagation (pixels, names and features)."""
        if self.session.target is None:
            self._set_status("Nothing to undo.")
            return None
        try:
            group = self.session.undo()
        except SessionBusy as error:
            self._set_status(str(error))
            return None
        self._set_status(f"Undid the {group.description}." if group else "Nothing to undo.")
        if group is not None:
            self._show_labels()
        return group

    def clear_prompts(self) -> None:
        """Remove every point and box, and the preview."""
        _layers.clear_prompts(
            _layers.find(self.viewer, _layers.POINTS), _layers.find(self.viewer, _layers.BOXES)
        )
        self._results = None
        _layers.clear_preview(self.viewer)

    def toggle_points(self) -> None:
        """Flip the selected points between positive and negative (or the mode of the next point)."""
        points = _layers.find(self.viewer, _layers.POINTS)
        if points is not None:
            self._set_status(_layers.toggle_points(points).capitalize() + ".")
            self._on_prompts_changed()

    def _on_group(self, text: str) -> None:
        self.session.group = _panels.GROUP_RULES[text]
        self._on_prompts_changed()

    def _on_prompts_changed(self, event: Any = None) -> None:
        """A prompt layer changed: in live mode, segment at once, inside the layer's event, so that napari
        draws the user's prompt and its preview in the same frame (a deferred call would wait for that
        frame to be painted first)."""
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
        points, boxes = _layers.find(self.viewer, _layers.POINTS), _layers.find(self.viewer, _layers.BOXES)
        if points is None or boxes is None or self._image_layer is None:
            return None
        data, positive, vertices, types = _layers.prompt_arrays(points, boxes)
        return (
            self._current_slice(),
            data.tobytes(),
            positive.tobytes(),
            tuple(np.asarray(v, float).tobytes() for v in vertices),
            tuple(types),
        )

    def _schedule_live(self) -> None:
        """Segment again on the next turn of the event loop (after a model, vocabulary or setting change)."""
        self._live_key = None
        if self._live.isChecked() and not self._jobs.closed:
            self._live_timer.start()

    def _live_segment(self) -> None:
        if self._jobs.closed or self._context() is None:
            return
        if self.segment() is not None:
            self._live_key = self._prompts_key()

    def _activate(self, points: Any) -> None:
        if not self._jobs.closed and points in self.viewer.layers:
            self.viewer.layers.selection.active = points
            points.mode = "add"

    def _prompt_layers(self) -> tuple[Any, Any]:
        """The prompt layers of the current image (recreated if deleted), with our events and keys."""
        with _layers.keep_selection(self.viewer):
            points, boxes = _layers.ensure_prompt_layers(self.viewer, self._image_layer)
        for layer in (points, boxes):
            if layer not in self._hooked:  # once per layer: hooking costs more than a small model's decode
                self._hook_prompt_layer(layer)
        return points, boxes

    def _hook_prompt_layer(self, layer: Any, *, connect: bool = True) -> None:
        if connect:
            self._hooked.add(layer)
        else:
            self._hooked.discard(layer)
        for emitter in (layer.events.data, getattr(layer.events, "features", None)):
            if emitter is not None:
                emitter.disconnect(self._on_prompts_changed)
                if connect:
                    emitter.connect(self._on_prompts_changed)
        for key, action in self._key_actions().items():
            layer.bind_key(key, self._alive(action) if connect else None, overwrite=True)

    # ------------------------------------------------------------------------------------------ images

    def _refresh_images(self, *_: Any) -> None:
        """Refill the image combo (layers added, removed, moved or renamed); the chosen layer stays chosen."""
        if self._jobs.closed:
            return
        layers = _layers.image_layers(self.viewer)
        for layer in layers:
            layer.events.name.connect(self._refresh_images)  # napari ignores a repeated connection
        chosen = self._image_layer if self._image_layer in layers else None
        self._image.blockSignals(True)
        self._image.clear()
        self._image.addItems([layer.name for layer in layers])
        if layers:
            self._image.setCurrentIndex(layers.index(chosen) if chosen is not None else 0)
        self._image.blockSignals(False)
        self._on_image_choice()

    def _on_image_choice(self, *_: Any) -> None:
        name = self._image.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is self._image_layer or self._jobs.closed:
            return
        self._image_layer, self._results = layer, None
        if layer is None:
            return
        data = layer.data[0] if layer.multiscale else layer.data  # full resolution, read slice by slice
        self.session.set_image(data, rgb=layer.rgb, contrast_limits=self._contrast_limits())
        new = _layers.find(self.viewer, _layers.POINTS) is None
        points, _ = self._prompt_layers()
        if new:  # ready to click, once napari is done selecting the layer it just added
            QTimer.singleShot(0, lambda: self._activate(points))
        self._labels_layer = self._labels_by_image.get(id(layer))
        self._ensure_labels()
        depth = self.session.leading_shape[-1] if self.session.leading_shape else 1
        for spin, value in ((self._range_start, 0), (self._range_stop, depth - 1)):
            spin.setMaximum(depth - 1)
            spin.setValue(value)
        self._embed_current()

    # ------------------------------------------------------------------------------------------ slices

    def _on_slice_change(self, *_: Any) -> None:
        if self._image_layer is not None and self.session.leading_shape and not self._jobs.closed:
            self._results = None
            self._waiting.clear()
            self.session.forget_failures()  # another slice: the user may try a failed one again
            self._slice_timer.start()

    # ------------------------------------------------------------------------------------------ feedback

    def _on_busy(self, lanes: set[str]) -> None:
        writing, stack = "propagation" in lanes, bool(lanes & {"precompute", "propagation"})
        for button in (self._commit_btn, self._undo_btn):
            button.setEnabled(not writing)  # the labels are being written
        for button in (self._propagate_btn, self._precompute_btn):
            button.setEnabled(not stack)
        self._load.setEnabled("model" not in lanes)
        self._progress_row.setVisible(bool(lanes))
        if not lanes:
            self._progress.setRange(0, 1)
        elif self._progress.maximum() <= 1:
            self._progress.setRange(0, 0)  # busy indicator until a job reports numbers

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self._progress.setRange(0, max(total, 1))
        self._progress.setValue(done)
        self._set_status(message)

    @property
    def busy(self) -> bool:
        """Whether a background job (model, embedding, vocabulary, stack) is running."""
        return self._jobs.busy()

    def cancel(self) -> None:
        """Stop the running jobs: a stack job at its next slice (what is done is kept)."""
        self._jobs.cancel()
        self._waiting.clear()
        self._set_status("Cancelling…")

    def _set_status(self, text: str) -> None:
        self._status.setText(text)

    def _timing_prompt(self, latency_ms: float) -> None:
        embedding = self._timing.text().split(" · ")[0]
        self._timing.setText(f"{embedding} · last prompt: {latency_ms:.0f} ms")

    def _timing_embedding(self, seconds: float, computed: bool) -> None:
        prompt = self._timing.text().split(" · ")[-1]
        text = f"embedding: {seconds:.2f} s" if computed else "embedding: cached"
        self._timing.setText(f"{text} · {prompt}")

    def _report(self, what: str, error: BaseException) -> None:
        """Show an error in napari's notifications and in the status line (what failed, and why)."""
        message = f"{what}: {error}"
        self._set_status(message)
        show_error(message)
