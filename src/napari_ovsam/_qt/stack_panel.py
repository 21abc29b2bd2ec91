"""``StackPanel``: the embedding cache, precomputing a stack, and segmenting objects through it.

Each stack job runs in its own lane of the job runner ("precompute" or "propagation", one at a time: each
runs the encoder on every slice it visits); a propagation also blocks commits and undo while it writes labels.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..cache import EmbeddingCache
from ..propagation import PropagationSettings
from ..results import SliceIndex
from ..session import AnnotationSession
from .controls import button, row
from .embeddings import EmbeddingScheduler
from .jobs import Job, JobRunner
from .labels_view import LabelsView
from .status import StatusPanel

STACK_LANES = ("precompute", "propagation")


class StackPanel(QWidget):
    """The Stack tab (see the module docstring).

    Args:
        session: embeds and propagates. jobs: runs the stack jobs. status: where to report.
        slice_in_view: the chosen image's slice in view (or None). use_contrast: switches the model input to
            the layer's contrast limits. embeddings: the slice in view's embedding (redone on a new cache).
        labels: the labels layer, its table (the selected object) and names.
    """

    def __init__(
        self,
        *,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        slice_in_view: Callable[[], SliceIndex | None],
        use_contrast: Callable[[bool], None],
        embeddings: EmbeddingScheduler,
        labels: LabelsView,
    ) -> None:
        super().__init__()
        self._session, self._jobs, self._status = session, jobs, status
        self._slice_in_view, self._embeddings, self._labels = slice_in_view, embeddings, labels
        layout = QVBoxLayout(self)
        layout.addWidget(self._cache_box())
        layout.addWidget(self._propagation_box())
        layout.addStretch(1)
        self._browse_cache.clicked.connect(self._choose_cache)
        self._cache_path.editingFinished.connect(self._on_cache_path)
        self._use_contrast.toggled.connect(use_contrast)
        self._precompute_btn.clicked.connect(lambda: self.precompute())
        self._propagate_btn.clicked.connect(lambda: self.propagate())

    def _cache_box(self) -> QGroupBox:
        box = QGroupBox("Embeddings")
        form = QFormLayout(box)
        self._cache_path = QLineEdit()
        self._cache_path.setPlaceholderText(
            "memory only, or a cache folder (new, empty, or an earlier cache)"
        )
        self._cache_path.setToolTip(
            "A zarr store keyed by model and slice content: reopening the stack costs nothing. "
            "The labels of lazy (zarr, dask) stacks are then written next to it, else in a temporary folder."
        )
        self._browse_cache = button("…", "Choose or create a folder for the embedding cache")
        form.addRow("Cache", row(self._cache_path, self._browse_cache, stretch=0))
        self._use_contrast = QCheckBox("use the layer's contrast limits")
        self._use_contrast.setToolTip(
            "Off: each slice is normalised by its own percentiles (display changes are free)"
        )
        form.addRow(self._use_contrast)
        self._range_start, self._range_stop = QSpinBox(), QSpinBox()
        self._range_stop.setToolTip("last slice (inclusive)")
        self._precompute_btn = button(
            "Precompute", "Embed every slice of the range in the background (resumable)"
        )
        form.addRow(
            "Slices", row(self._range_start, QLabel("to"), self._range_stop, self._precompute_btn, stretch=3)
        )
        return box

    def _propagation_box(self) -> QGroupBox:
        box = QGroupBox("Segment through stack")
        form = QFormLayout(box)
        self._min_iou, self._min_overlap = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, value, tip in (
            (self._min_iou, 0.5, "stop when the model's predicted mask IoU drops below"),
            (self._min_overlap, 0.3, "stop when the mask overlaps the previous slice's by less (IoU)"),
        ):
            spin.setRange(-1.0, 1.0)
            spin.setSingleStep(0.05)
            spin.setValue(value)
            spin.setToolTip(tip)
        self._max_slices = QSpinBox()
        self._max_slices.setRange(0, 100000)
        self._max_slices.setSpecialValueText("no limit")
        self._max_slices.setToolTip("slices per direction (0: to the end)")
        form.addRow("Stop below IoU", self._min_iou)
        form.addRow("Stop below overlap", self._min_overlap)
        form.addRow("Max slices", self._max_slices)
        self._propagate_btn = button(
            "Segment through stack",
            "Carry the selected object (or the last commit) to the neighbouring slices; one undo step",
        )
        form.addRow(self._propagate_btn)
        return box

    # ------------------------------------------------------------------------------------------ state

    def labels_dir(self) -> Path | None:
        """Where new zarr labels go: next to the embedding cache, if there is one (else a temporary folder)."""
        text = self._cache_path.text().strip()
        return Path(text).parent if text else None

    def on_image(self) -> None:
        """Another image: the slice range covers its whole stack."""
        depth = self._session.leading_shape[-1] if self._session.leading_shape else 1
        for spin, value in ((self._range_start, 0), (self._range_stop, depth - 1)):
            spin.setMaximum(depth - 1)
            spin.setValue(value)

    def set_busy(self, lanes: set[str]) -> None:
        busy = bool(lanes & set(STACK_LANES))
        for widget in (self._propagate_btn, self._precompute_btn):
            widget.setEnabled(not busy)

    # ------------------------------------------------------------------------------------------ cache

    def _choose_cache(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Embedding cache folder (new, empty, or an earlier cache)"
        )
        if path:
            self._cache_path.setText(path)
            self._on_cache_path()

    def _on_cache_path(self) -> None:
        """Use the cache folder typed in (empty: memory only); refused while a job uses the cache."""
        text = self._cache_path.text().strip()
        if (Path(text) if text else None) == self._session.cache.store_path:
            return
        if any(self._jobs.busy(lane) for lane in ("embedding", *STACK_LANES)):
            self._status.set_status("Wait for the running computation before changing the cache.")
            return
        try:
            self._session.cache = EmbeddingCache(max_items=16, store_path=text or None)
        except Exception as error:  # a bad path: say so, keep the old cache
            self._status.report(f"Cannot use {text} as an embedding cache", error)
            return
        self._status.set_status(f"Embedding cache: {text or 'memory only'}.")
        self._embeddings.embed_current()

    # ------------------------------------------------------------------------------------------ jobs

    def _stack_slice(self, what: str, *, tiles: bool = False) -> SliceIndex | None:
        """The slice in view of a stack (or of a tiled 2D image, with ``tiles``), or None with the reason in
        the status line."""
        index = self._slice_in_view()
        if self._session.predictor is None:
            self._status.set_status("Load a model first (Model: choose one, then Load).")
        elif index is None:
            self._status.set_status("Add or choose an image layer first.")
        elif not index and not (tiles and self._session.tiled):
            self._status.set_status(f"The image is 2D: {what}")
        elif any(self._jobs.busy(lane) for lane in STACK_LANES):  # one at a time: each runs the encoder a lot
            self._status.set_status("A stack job is running: wait for it or cancel it.")
        else:
            return index
        return None

    def precompute(self) -> Job | None:
        """Embed the slices of the chosen range (along the stack axis through the slice in view) in the
        background, skipping cached ones; returns the job (None if refused)."""
        index = self._stack_slice("its embedding is computed when it is chosen.", tiles=True)
        if index is None:
            return None
        start, stop = self._range_start.value(), self._range_stop.value() + 1
        what = f"slices {start}-{stop - 1}" if index else "the image"
        unit = " tiles" if self._session.tiled else ""
        return self._jobs.start(
            "precompute", self._precompute_steps, index, start, stop,
            progress="OV-SAM: precomputing embeddings",
            on_done=lambda computed, job: self._status.set_status(
                f"Precomputed {what}: {computed}{unit} embedded in {job.seconds:.1f} s, the others were cached."
            ),
            on_error=lambda error, _: self._status.report("Precomputing failed", error),
            on_finish=self._on_finished,
        )  # fmt: skip

    def _precompute_steps(
        self, slice_index: SliceIndex, start: int, stop: int
    ) -> Generator[tuple[int, int, str], None, int]:
        computed, unit = 0, "tiles" if self._session.tiled else "slices"  # large slices: tile by tile
        for done, total, new in self._session.iter_precompute(slice_index, start, stop):
            computed += int(new)
            yield done, total, f"Embeddings: {done}/{total} {unit} ({computed} computed)."
        return computed

    def propagate(self) -> Job | None:
        """Carry the object selected in the table (or those of the last commit) through the stack, in the
        background; one undo step. Returns the job (None if refused)."""
        index = self._stack_slice("there is no stack to segment through.")
        if index is None:
            return None
        if self._labels.ensure() is None or self._session.target is None:
            return None
        chosen = self._session.propagation_start(self._labels.selected_label(), index)
        if chosen is None:
            self._status.set_status(
                "Commit an object (or select one in the table) to segment it through the stack."
            )
            return None
        self._labels.take_user_edits()
        settings = PropagationSettings(
            min_iou=self._min_iou.value(), min_overlap=self._min_overlap.value(),
            max_slices=self._max_slices.value() or None,
        )  # fmt: skip
        return self._jobs.start(
            "propagation", self._propagation_steps, *chosen, settings,
            progress="OV-SAM: segmenting through the stack",
            on_step=lambda *_: self._labels.refresh_pixels(),
            on_done=lambda summary, job: self._status.set_status(
                f"Segmented through the stack in {job.seconds:.1f} s: {summary}"
            ),
            on_error=lambda error, _: self._status.report("Segmenting through the stack failed", error),
            on_finish=self._on_finished,
        )  # fmt: skip

    def _propagation_steps(
        self, label_ids: list[int], slice_index: SliceIndex, settings: PropagationSettings
    ) -> Generator[tuple[int, int, str], None, str]:
        painted, stops = 0, []
        for step in self._session.iter_propagate(label_ids, slice_index, settings):
            painted += int(step.painted)
            if step.reason:
                stops.append(
                    f"object {step.label_id} stopped at slice {step.slice_index[-1]} ({step.reason})"
                )
            what = "painted" if step.painted else step.reason
            yield step.done, step.total, f"Object {step.label_id}, slice {step.slice_index[-1]}: {what}."
        return f"{painted} slice(s) painted; " + ("; ".join(stops) or "reached the ends of the stack") + "."

    def _on_finished(self, job: Job) -> None:
        if job.lane == "propagation":
            self._labels.show()  # what was painted, also when cancelled part way
        if job.cancel.is_set():
            self._status.set_status(
                f"The {job.lane} was cancelled; what was done is kept (run it again to resume)."
            )
