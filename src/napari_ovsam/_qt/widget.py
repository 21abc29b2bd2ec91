"""``OVSAMWidget``: the napari dock widget, assembled from one panel per concern over an
:class:`~napari_ovsam.session.AnnotationSession` (the Qt-free state and logic).

Scriptable: ``load_model()``, ``set_vocabulary()``, ``segment()``, ``commit()``, ``undo()``, ``clear_prompts()``,
``toggle_points()``, ``segment_everything()``, ``name_labels()``, ``precompute()``, ``propagate()``,
``finetune()``, ``cancel()``, ``busy`` and ``status``. The image encoder
only runs in thread workers (``jobs``); the GUI thread decodes prompts on cached embeddings (milliseconds).

Keys: S segment, C commit, Shift+C clear prompts, T flip points, Ctrl+Z undo the last commit. They are bound
on the widget, on the prompt layers, and (while the widget exists) on the viewer, where a selected layer's own
keys win (e.g. C is "auto contrast" on an image layer: select a prompt layer). On "ovsam labels", Ctrl+Z first
undoes brush strokes made after the last commit (napari's painting undo), then commits.

Review keys (see :mod:`napari_ovsam._qt.review`): N / Shift+N the next / previous unreviewed object, most
uncertain first (the camera centres on it, the slice follows), K accept its name (marks it reviewed), Alt+1 …
Alt+5 take its k-th alternative name; the line above the status counts reviewed objects ("12 / 40 reviewed").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

import napari
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QShortcut, QTabWidget, QVBoxLayout, QWidget

from .._compat import block_triton_if_llvm_loaded
from ..results import ObjectResults
from ..session import AnnotationSession
from ..targets import CommitGroup
from .annotate_panel import AnnotatePanel
from .automatic_panel import AutomaticPanel
from .embeddings import EmbeddingScheduler
from .finetune_panel import FinetunePanel
from .image_panel import ImagePanel
from .jobs import Job, JobRunner
from .labels_view import LabelsView
from .model_panel import CHECKPOINT_ITEM, ModelPanel
from .review import ReviewPanel
from .stack_panel import StackPanel
from .status import StatusPanel
from .teach_panel import TeachPanel
from .vocabulary_panel import DEMO_PRESET, VocabularyPanel


class _Common(TypedDict):
    """What every panel is given."""

    session: AnnotationSession
    jobs: JobRunner
    status: StatusPanel


class OVSAMWidget(QWidget):
    """Segment objects with points and boxes and name them from your vocabulary (see the module docstring)."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        block_triton_if_llvm_loaded()  # before anything imports torchvision (see _compat)
        self.viewer = viewer
        self.session = AnnotationSession()
        self._docked = False
        self._viewer_keys: dict[str, Any] = {}
        self._status_panel = StatusPanel(on_cancel=self.cancel)
        self._jobs = JobRunner(self._on_busy, self._status_panel.show_progress)
        is_open = lambda: not self._jobs.closed  # noqa: E731
        common = _Common(session=self.session, jobs=self._jobs, status=self._status_panel)
        self._image_panel = ImagePanel(
            viewer=viewer, session=self.session, on_change=self._on_image, is_open=is_open,
            report=self._status_panel.report,
        )  # fmt: skip
        image, slice_in_view = (lambda: self._image_panel.layer), self._image_panel.slice_in_view
        self._embeddings = EmbeddingScheduler(**common, slice_in_view=slice_in_view, parent=self)
        self._labels = LabelsView(
            viewer=viewer, session=self.session, status=self._status_panel, image=image,
            store_dir=lambda: self._stack.labels_dir(), undo=self.undo, is_open=is_open,
        )  # fmt: skip
        self._review = ReviewPanel(
            viewer=viewer, session=self.session, status=self._status_panel, labels=self._labels,
            slice_in_view=slice_in_view,
        )  # fmt: skip
        self._annotate = AnnotatePanel(
            viewer=viewer, **common, image=image, slice_in_view=slice_in_view, embeddings=self._embeddings,
            labels=self._labels, keys=self._key_actions(),
        )  # fmt: skip
        self._automatic = AutomaticPanel(
            viewer=viewer, **common, image=image, slice_in_view=slice_in_view, labels=self._labels,
            commit_mode=lambda: self._annotate.commit_mode,
        )  # fmt: skip
        self._annotate.keep_preview = self._automatic.prompts_previewed
        self._vocabulary = VocabularyPanel(
            **common,
            loaded_model=lambda: self._model_panel.loaded_name,
            on_changed=self._annotate.names_changed,
        )
        self._stack = StackPanel(
            **common, slice_in_view=slice_in_view, use_contrast=self._image_panel.set_use_contrast,
            embeddings=self._embeddings, labels=self._labels,
        )  # fmt: skip
        self._teach = TeachPanel(
            session=self.session, status=self._status_panel, labels_layer=lambda: self._labels.layer
        )
        self._model_panel = ModelPanel(
            **common, vocabulary=self._vocabulary.parse, on_loaded=self._on_model_loaded,
            on_demo_chosen=lambda: self._vocabulary.use_preset(DEMO_PRESET),
        )  # fmt: skip
        self._finetune = FinetunePanel(
            viewer=viewer, **common, use_contrast=lambda: self._image_panel.contrast_limits() is not None,
            load_model=lambda path: self.load_model(CHECKPOINT_ITEM, None, path),
            set_vocabulary=self.set_vocabulary,
        )  # fmt: skip
        self._layout()
        self._connect()
        self._model_panel.on_model_choice()
        self._image_panel.refresh()
        self.destroyed.connect(self._jobs.close)  # a deleted widget may miss closeEvent

    def _layout(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._model_panel)
        layout.addWidget(self._image_panel)
        self._tabs = QTabWidget()
        for panel, title in (
            (self._annotate, "Annotate"),
            (self._automatic, "Everything"),
            (self._vocabulary, "Vocabulary"),
            (self._stack, "Stack"),
            (self._teach, "Teach"),
            (self._finetune, "Fine-tune"),
        ):
            self._tabs.addTab(panel, title)
        layout.addWidget(self._tabs, stretch=1)
        layout.addWidget(self._review)
        layout.addWidget(self._status_panel)

    def _key_actions(self) -> dict[str, Callable[[], Any]]:
        return {
            "S": lambda: self._annotate.segment_asked(), "C": lambda: self.commit(),
            "Shift-C": lambda: self.clear_prompts(), "Control-Z": lambda: self.undo(),
            "T": lambda: self.toggle_points(), **self._review.key_actions(),
        }  # fmt: skip

    def _connect(self) -> None:
        for key, action in self._key_actions().items():
            shortcut = QShortcut(QKeySequence(key.replace("Control", "Ctrl").replace("-", "+")), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)
            self._viewer_keys[key] = self.viewer.bind_key(key, self._alive(action), overwrite=True)
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved):
            emitter.connect(self._image_panel.refresh)
        events.removed.connect(self._labels.on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_slice_change)

    def _alive(self, action: Callable[[], Any]) -> Callable[..., None]:
        """A key callback that does nothing once the widget is closed."""

        def run(*_: Any) -> None:
            if not self._jobs.closed:
                action()

        return run

    # ------------------------------------------------------------------------------------------ scripting

    def load_model(
        self, name: str | None = None, device: str | None = None, checkpoint: str | None = None
    ) -> Job | None:
        """Load a model in the background (default: the chosen one); returns the job, or None if refused."""
        return self._model_panel.load_model(name, device, checkpoint)

    def connect_remote(self, url: str | None = None, token: str | None = None) -> Job | None:
        """Use the model of an OV-SAM server (``python -m ovsam_model.serve``; default: the address and token
        the Model box shows), connecting in the background; returns the job, or None if refused."""
        return self._model_panel.connect_remote(url, token)

    def finetune(self) -> Job | None:
        """Fine-tune the loaded model on the committed, named objects of the open images (background
        process); returns the job, or None if refused."""
        return self._finetune.finetune()

    def set_vocabulary(self, text: str | None = None) -> Job | None:
        """Name the next objects from ``text`` (one class per line; default: the editor's)."""
        return self._vocabulary.set_vocabulary(text)

    def segment(self) -> ObjectResults | None:
        """Segment and name the prompted objects on the slice in view (preview); None while its embedding
        is computed (the segmentation follows)."""
        return self._annotate.segment()

    def commit(self) -> CommitGroup | None:
        """Write the previewed (or freshly segmented) objects into the labels layer, with their names: the
        proposals of Segment everything or Name labels while there are some (one undoable step)."""
        if self._automatic.pending:
            return self._automatic.commit()
        return self._annotate.commit()

    def undo(self) -> CommitGroup | None:
        """Undo the last commit or propagation (pixels, names and features); None if there is none."""
        return self._annotate.undo()

    def clear_prompts(self) -> None:
        """Remove every point and box, and the preview (proposals included)."""
        self._automatic.discard()
        self._annotate.clear_prompts()

    def toggle_points(self) -> None:
        """Flip the selected points between positive and negative (or the mode of the next points)."""
        self._annotate.toggle_points()

    def segment_everything(self, scope: str | None = None, classes: str | None = None) -> Job | None:
        """Propose and name every object ("this slice", "the whole stack" or "the region in view"; only
        ``classes``, e.g. "nucleus, rod", if given) into the preview; returns the job (None if refused)."""
        return self._automatic.segment_everything(scope, classes)

    def name_labels(self, layer: Any = None, scope: str | None = None) -> Job | None:
        """Name every label of a Labels layer ("this slice" or "the whole stack") into the preview; returns
        the job (None if refused)."""
        return self._automatic.name_labels(layer, scope)

    def precompute(self) -> Job | None:
        """Embed the Stack tab's slice range in the background; returns the job (None if refused)."""
        return self._stack.precompute()

    def propagate(self) -> Job | None:
        """Carry the selected object (or the last commit) through the stack; returns the job (None if refused)."""
        return self._stack.propagate()

    def cancel(self) -> None:
        """Stop the running jobs: a stack job at its next slice (what is done is kept)."""
        self._jobs.cancel()
        self._embeddings.clear()
        self._status_panel.set_status("Cancelling…")

    @property
    def busy(self) -> bool:
        """Whether a background job (model, embedding, vocabulary, stack) is running."""
        return self._jobs.busy()

    @property
    def status(self) -> str:
        """The status line: what happened last, or what is missing."""
        return self._status_panel.text

    # ------------------------------------------------------------------------------------------ events

    def _on_image(self, layer: Any) -> None:
        self._automatic.discard()  # proposals of another image
        self._annotate.on_image(layer)
        self._labels.ensure()
        self._teach.on_image()
        self._stack.on_image()
        self._embeddings.embed_current()

    def _on_model_loaded(self, _: str) -> None:
        self._annotate.invalidate()
        self._embeddings.embed_current()

    def _on_slice_change(self, *_: Any) -> None:
        if self._image_panel.layer is not None and self.session.leading_shape and not self._jobs.closed:
            self._annotate.invalidate()
            self._automatic.slice_changed()
            self._embeddings.slice_changed()

    def _on_busy(self, lanes: set[str]) -> None:
        for panel in (self._annotate, self._automatic, self._stack, self._model_panel, self._finetune):
            panel.set_busy(lanes)
        self._status_panel.show_busy(bool(lanes))

    # ------------------------------------------------------------------------------------------ lifetime

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt)
        """A dock as wide as its controls need, not as its longest wrapped text would like."""
        return QSize(430, super().sizeHint().height())

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent | None) -> bool:
        """napari removes a dock widget by taking it out of its dock (no close event): shut down then."""
        if event is not None and event.type() == QEvent.Type.ParentChange:
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
            emitter.disconnect(self._image_panel.refresh)
        events.removed.disconnect(self._labels.on_layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._on_slice_change)
        for key, previous in self._viewer_keys.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        self._annotate.shutdown()
        self._automatic.shutdown()
        self._labels.shutdown()  # napari's own painting undo comes back
        self._image_panel.shutdown()
