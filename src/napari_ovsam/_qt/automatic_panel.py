"""``AutomaticPanel``: Segment everything and Name labels, in the background, into the preview, then one commit.

Segment everything proposes and names every object of the slice in view, of the whole stack, or of the
region of the slice in view (the camera's rectangle, clipped to the image); "Find all" keeps only some
classes. Name labels names every label of another Labels layer (its masks are kept; the layer is never
changed). Both run in the job runner's "automatic" lane with progress and Cancel; their objects go to
"ovsam preview" (the slice in view's, following the slice slider), and Commit writes all of them into the
labels as one undoable step. New prompts that preview objects of their own replace the proposals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import Any

import napari
from napari.layers import Labels
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import _layers
from ..automatic import (
    AutomaticSettings,
    Region,
    check_source_labels,
    iter_name_labels,
    iter_segment_everything,
    parse_classes,
    visible_region,
)
from ..painting import PaintMode
from ..proposals import Proposals, empty_results
from ..results import ObjectResults, SliceIndex
from ..session import AnnotationSession, SessionBusy
from ..targets import CommitGroup
from .controls import button, row
from .jobs import Job, JobRunner
from .labels_view import LabelsView
from .status import StatusPanel

LANE = "automatic"
SCOPES = {"this slice": "slice", "the whole stack": "stack", "the region in view": "region"}
HELP = (
    "Proposals go to <i>ovsam preview</i>; <b>Commit [C]</b> writes them all into <i>ovsam labels</i> "
    "(one undo step), <b>Discard</b> drops them. Existing labels are kept in the commit mode "
    "<i>keep</i> (Annotate tab): proposals lying on them are dropped or clipped."
)


class AutomaticPanel(QWidget):
    """The Everything tab (see the module docstring).

    Args:
        viewer: the napari viewer. session: annotates and writes. jobs: runs the jobs. status: where to report.
        image: the chosen image layer (or None). slice_in_view: its slice in view (or None).
        labels: the labels layer, names and table. commit_mode: keep or overwrite existing labels.
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
        labels: LabelsView,
        commit_mode: Callable[[], PaintMode],
    ) -> None:
        super().__init__()
        self._viewer, self._session, self._jobs, self._status = viewer, session, jobs, status
        self._image, self._slice_in_view, self._labels = image, slice_in_view, labels
        self._commit_mode = commit_mode
        self._proposals: Proposals | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self._everything_box())
        layout.addWidget(self._names_box())
        self._commit_btn = button("Commit [C]", "Write every proposal into 'ovsam labels' (one undo step)")
        self._discard_btn = button("Discard", "Drop the proposals")
        layout.addLayout(row(self._commit_btn, self._discard_btn))
        note = QLabel(HELP)
        note.setWordWrap(True)
        note.setStyleSheet("font-size: 11px; color: #a0a0a0;")
        layout.addWidget(note)
        layout.addStretch(1)
        self._everything_btn.clicked.connect(lambda: self.segment_everything())
        self._names_btn.clicked.connect(lambda: self.name_labels())
        self._commit_btn.clicked.connect(lambda: self.commit())
        self._discard_btn.clicked.connect(lambda: self.discard())
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self.refresh_sources)
        self.refresh_sources()
        self._enable_commit()

    def _everything_box(self) -> QGroupBox:
        box = QGroupBox("Segment everything")
        form = QFormLayout(box)
        self._scope = QComboBox()
        self._scope.addItems(list(SCOPES))
        self._scope.setToolTip("Where to look: the slice in view, every slice, or what the camera shows")
        self._classes = QLineEdit()
        self._classes.setPlaceholderText("every class (or e.g. nucleus, rod)")
        self._classes.setToolTip("Find all of these classes (comma separated; all classes compete)")
        self._points = QSpinBox()
        self._points.setRange(2, 128)
        self._points.setValue(AutomaticSettings.points_per_side)
        self._points.setToolTip("Grid points along each side (of each tile of a large image)")
        defaults = AutomaticSettings()
        self._min_iou, self._min_stability, self._min_score = (self._spin(v) for v in (
            defaults.min_iou, defaults.min_stability, defaults.min_score,
        ))  # fmt: skip
        self._min_iou.setToolTip("Lowest predicted mask IoU kept")
        self._min_stability.setToolTip("Lowest stability score kept (mask IoU at logits -1 and +1)")
        self._min_score.setToolTip("Lowest probability of the named class kept")
        self._everything_btn = button("Segment everything", "Propose and name every object (preview)")
        form.addRow("Where", self._scope)
        form.addRow("Find all", self._classes)
        form.addRow("Points per side", self._points)
        form.addRow("Min IoU · stability · score", row(self._min_iou, self._min_stability, self._min_score))
        form.addRow(self._everything_btn)
        return box

    def _names_box(self) -> QGroupBox:
        box = QGroupBox("Name labels")
        form = QFormLayout(box)
        self._source = QComboBox()
        self._source.setToolTip(
            "A Labels layer of this image (Cellpose, StarDist, a threshold…): never changed"
        )
        self._names_scope = QComboBox()
        self._names_scope.addItems(list(SCOPES)[:2])
        self._names_btn = button("Name labels", "Name every label of the chosen layer (preview)")
        form.addRow("Labels", self._source)
        form.addRow("Where", self._names_scope)
        form.addRow(self._names_btn)
        return box

    @staticmethod
    def _spin(value: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setValue(value)
        return spin

    # ------------------------------------------------------------------------------------------ state

    @property
    def pending(self) -> bool:
        """Whether proposals wait in the preview for a commit."""
        return self._proposals is not None and len(self._proposals) > 0

    @property
    def settings(self) -> AutomaticSettings:
        """The annotator's settings from the controls."""
        return AutomaticSettings(
            points_per_side=self._points.value(), min_iou=self._min_iou.value(),
            min_stability=self._min_stability.value(), min_score=self._min_score.value(),
        )  # fmt: skip

    def refresh_sources(self, *_: Any) -> None:
        """The Labels layers that can be named: every one but ours and the preview."""
        ours = {_layers.PREVIEW, _layers.LABELS}
        names = [
            layer.name
            for layer in self._viewer.layers
            if isinstance(layer, Labels)
            and layer.name not in ours
            and not layer.name.startswith(f"{_layers.LABELS} [")
            and layer is not self._labels.layer
        ]
        current = self._source.currentText()
        self._source.clear()
        self._source.addItems(names)
        if current in names:
            self._source.setCurrentText(current)

    def set_busy(self, lanes: set[str]) -> None:
        for widget in (self._everything_btn, self._names_btn):
            widget.setEnabled(not lanes & {LANE, "propagation"})
        self._enable_commit(lanes)

    def _enable_commit(self, lanes: set[str] | frozenset[str] = frozenset()) -> None:
        for widget in (self._commit_btn, self._discard_btn):
            widget.setEnabled(self.pending and "propagation" not in lanes)

    def slice_changed(self) -> None:
        """Show the proposals of the slice now in view."""
        if self.pending:
            self._show()

    def prompts_previewed(self, results: ObjectResults) -> bool:
        """The prompts' preview is about to be drawn: objects of their own replace the proposals (False);
        no object keeps the proposals shown (True: the preview stays)."""
        if not self.pending:
            return False
        if len(results):
            self.discard()
            return False
        return True

    def discard(self) -> None:
        """Drop the proposals (and their preview)."""
        if self._proposals is not None:
            self._proposals = None
            _layers.clear_preview(self._viewer)
        self._enable_commit()

    def shutdown(self) -> None:
        for emitter in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            emitter.disconnect(self.refresh_sources)

    # ------------------------------------------------------------------------------------------ jobs

    def segment_everything(self, scope: str | None = None, classes: str | None = None) -> Job | None:
        """Propose and name every object of the scope ("this slice", "the whole stack", "the region in
        view"; default: the chosen one), only of ``classes`` ("nucleus, rod"; default: the field) if any, in
        the background; returns the job (None if refused, with the reason in the status line)."""
        if scope is not None:
            self._scope.setCurrentText(scope)
        if classes is not None:
            self._classes.setText(classes)
        slice_index = self._ready()
        if slice_index is None:
            return None
        try:
            vocabulary = self._session.vocabulary
            wanted = parse_classes(self._classes.text(), vocabulary.names if vocabulary is not None else [])
        except ValueError as error:
            self._status.set_status(str(error))
            return None
        kind = SCOPES[self._scope.currentText()]
        region = self._region_in_view() if kind == "region" else None
        if kind == "region" and region is None:
            return None
        slices = self._slices(slice_index, kind == "stack")
        what = "Segment everything" + (f" ({', '.join(wanted)})" if wanted else "")
        steps, mode = self._everything_steps, self._commit_mode()
        return self._start(what, steps, slices, wanted, region, self.settings, mode)

    def name_labels(self, layer: Any = None, scope: str | None = None) -> Job | None:
        """Name every label of a Labels layer (default: the chosen one) on the slice in view or the whole
        stack, in the background; returns the job (None if refused, with the reason in the status line)."""
        if scope is not None:
            self._names_scope.setCurrentText(scope)
        slice_index = self._ready()
        if slice_index is None:
            return None
        if layer is None:
            name = self._source.currentText()
            layer = self._viewer.layers[name] if name in self._viewer.layers else None
        if layer is None:
            self._status.set_status("Add or choose a Labels layer to name (Name labels: Labels).")
            return None
        source = layer.data[0] if layer.multiscale else layer.data
        try:
            check_source_labels(source, self._session.labels_shape)
        except ValueError as error:
            self._status.set_status(f"Cannot name '{layer.name}': {error}")
            return None
        stack = SCOPES[self._names_scope.currentText()] == "stack"
        return self._start(
            f"Name labels of '{layer.name}'", self._names_steps, source, self._slices(slice_index, stack),
            self._commit_mode(),
        )  # fmt: skip

    def _ready(self) -> SliceIndex | None:
        """The slice in view when a job can start, else None with the reason in the status line."""
        if self._session.predictor is None:
            self._status.set_status("Load a model first (Model: choose one, then Load).")
        elif self._image() is None or self._slice_in_view() is None:
            self._status.set_status("Add or choose an image layer first.")
        elif self._jobs.busy(LANE) or self._jobs.busy("propagation"):
            self._status.set_status(
                "A job writing or proposing objects is running: wait for it or cancel it."
            )
        elif self._labels.ensure() is not None:
            return self._slice_in_view()
        return None

    def _slices(self, slice_index: SliceIndex, stack: bool) -> list[SliceIndex]:
        """The slice in view, or every slice along the stack axis through it."""
        if not stack or not slice_index:
            return [tuple(slice_index)]
        prefix = tuple(slice_index[:-1])
        return [(*prefix, z) for z in range(self._session.leading_shape[-1])]

    def _image_hw(self) -> tuple[int, int]:
        height, width = self._session.labels_shape[-2:]
        return height, width

    def _region_in_view(self) -> Region | None:
        image = self._image()
        if self._viewer.dims.ndisplay != 2:
            self._status.set_status("The region in view needs the 2D view: switch napari to 2D.")
            return None
        camera = self._viewer.scene.camera
        region = visible_region(
            camera.center, camera.zoom, self._viewer.canvas.size, image.scale, image.translate,
            self._image_hw(),
        )  # fmt: skip
        if region is None:
            self._status.set_status("The image is not in view: pan or zoom to it first.")
        return region

    def _start(self, what: str, steps: Callable[..., Any], *args: Any) -> Job | None:
        self.discard()
        job = self._jobs.start(
            LANE, steps, *args, progress=f"OV-SAM: {what}",
            on_done=lambda proposals, job: self._on_done(dataclasses.replace(proposals, what=what), job),
            on_error=lambda error, _: self._status.report(f"{what} failed", error),
            on_finish=lambda job: self._on_finish(job, what),
        )  # fmt: skip
        if job is not None:
            self._status.set_status(f"{what}…")
        return job

    def _everything_steps(
        self,
        slices: list[SliceIndex],
        classes: list[str] | None,
        region: Region | None,
        settings: AutomaticSettings,
        mode: PaintMode,
    ) -> Generator[tuple[int, int, str], None, Proposals]:
        return (
            yield from iter_segment_everything(
                self._session, slices, classes=classes, region=region, settings=settings, mode=mode
            )
        )

    def _names_steps(
        self, source: Any, slices: list[SliceIndex], mode: PaintMode
    ) -> Generator[tuple[int, int, str], None, Proposals]:
        return (yield from iter_name_labels(self._session, source, slices, mode))

    def _on_done(self, proposals: Proposals, job: Job) -> None:
        if not len(proposals):
            self._status.set_status(
                f"{proposals.what} found no object in {job.seconds:.1f} s (more points per side, or lower "
                "min IoU, stability or score; in keep mode, labelled places are skipped)."
            )
            return
        self._proposals = proposals
        self._show()
        self._enable_commit()
        self._status.set_status(
            f"{proposals.what}: {proposals.summary()} in {job.seconds:.1f} s, in the preview. "
            "Commit [C] writes them, Discard drops them."
        )

    def _on_finish(self, job: Job, what: str) -> None:
        if job.cancel.is_set():
            self._status.set_status(f"{what} was cancelled: nothing was written.")

    def _show(self) -> None:
        """Draw the proposals of the slice in view in the preview."""
        image, index = self._image(), self._slice_in_view()
        if image is None or index is None or self._proposals is None:
            return
        results = self._proposals.on(index) or empty_results(index, self._image_hw())
        _layers.show_preview(self._viewer, image, results)

    # ------------------------------------------------------------------------------------------ commit

    def commit(self) -> CommitGroup | None:
        """Write every proposal into the labels as one undoable step (existing labels kept in keep mode)."""
        if self._proposals is None or not len(self._proposals):
            self._status.set_status("Nothing to commit: run Segment everything or Name labels first.")
            return None
        if self._labels.ensure() is None:
            return None
        self._labels.take_user_edits()
        proposals = self._proposals
        try:
            group = self._session.commit_all(list(proposals.results.values()), self._commit_mode())
        except SessionBusy as error:
            self._status.set_status(str(error))
            return None
        self.discard()
        if group is None:
            self._status.set_status("Nothing committed: every proposal lies on existing labels (keep mode).")
            return None
        self._labels.committed()
        self._labels.show()
        self._status.set_status(
            f"Committed {len(group.label_ids)} object(s) from {proposals.what} (one undo step: Ctrl+Z)."
        )
        return group
