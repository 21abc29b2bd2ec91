"""The widget's background work: slice embeddings, precomputing a stack, segmenting through a stack.

A mixin of :class:`~napari_ovsam._widget.OVSAMWidget` (it uses the widget's session, job runner, controls and
layers). Each computation runs in a job lane of ``_jobs``: "embedding" (the slice in view), "precompute" or
"propagation" (one stack job at a time; a propagation also blocks commits and undo while it writes labels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from . import _layers
from .cache import EmbeddingCache
from .propagation import PropagationSettings

SliceIndex = tuple[int, ...]
STACK_LANES = ("precompute", "propagation")


class StackActions:
    """Embeddings and stack jobs for the widget (see the module docstring)."""

    # ------------------------------------------------------------------------------------------ slice context

    def _current_slice(self) -> SliceIndex:
        return _layers.slice_of(self.viewer, self._image_layer)

    def _contrast_limits(self) -> tuple[float, float] | None:
        if self._image_layer is None or not self._use_contrast.isChecked():
            return None
        low, high = self._image_layer.contrast_limits
        return float(low), float(high)

    def _context(self) -> tuple[SliceIndex, Any, Any] | None:
        """(slice in view, points layer, boxes layer), or None with a status message saying what is missing."""
        if self.session.predictor is None:
            self._set_status("Load a model first (Model: choose one, then Load).")
            return None
        if self._image_layer is None or self._image_layer not in self.viewer.layers:
            self._set_status("Add or choose an image layer first.")
            return None
        points, boxes = self._prompt_layers()
        self.session.set_contrast_limits(self._contrast_limits())
        return self._current_slice(), points, boxes

    # ------------------------------------------------------------------------------------------ embeddings

    def _embed_current(self) -> None:
        """Start embedding the slice in view, if a model and an image are there and it is not cached."""
        if self.session.predictor is not None and self._image_layer is not None and not self._jobs.closed:
            self.session.set_contrast_limits(self._contrast_limits())
            self._when_embedded(self._current_slice(), None)

    def _when_embedded(self, slice_index: SliceIndex, then: Callable[[], Any] | None) -> None:
        """Run ``then`` now if the slice's embedding is cached, else after a worker computed it."""
        if self.session.embedding_ready(slice_index):
            if then is not None:
                then()
            return
        failure = self.session.embedding_failure(slice_index)
        if failure is not None:  # reported once; retried when the user changes something or asks
            self._waiting.clear()
            self._set_status(
                f"The image embedding failed: {failure.rstrip('.')}. Change the image, slice or contrast, or press "
                "Segment to try again."
            )
            return
        if then is not None and then not in self._waiting:
            self._waiting.append(then)
        job = self._jobs.start(
            "embedding", self.session.ensure_embedding, slice_index,
            on_done=lambda info, _: self._on_embedded(info, slice_index),
            on_error=self._on_embedding_error, progress="OV-SAM: image embedding",
            on_finish=lambda _: self._after_embedding(),
        )  # fmt: skip
        if job is not None:
            where = f" of slice {', '.join(map(str, slice_index))}" if slice_index else ""
            self._set_status(f"Computing the image embedding{where}…")

    def _on_embedded(self, info: Any, slice_index: SliceIndex) -> None:
        self._timing_embedding(info.seconds, info.computed)
        how = f"computed in {info.seconds:.2f} s" if info.computed else "from the cache"
        where = f"Slice {', '.join(map(str, slice_index))}" if slice_index else "Image"
        self._set_status(f"{where} ready ({how}): add points or boxes.")

    def _on_embedding_error(self, error: BaseException, _: Any) -> None:
        self._waiting.clear()
        self._report("Could not compute the image embedding", error)

    def _after_embedding(self) -> None:
        """Run what waited for the slice in view, or embed it if the view moved on meanwhile."""
        if self._image_layer is None or self._image_layer not in self.viewer.layers:
            return
        current = self._current_slice()
        if self.session.embedding_ready(current):
            waiting, self._waiting = self._waiting, []
            for then in waiting:
                then()
        elif self.session.predictor is not None and self.session.embedding_failure(current) is None:
            self._when_embedded(current, None)  # the view moved on while the job ran

    # ------------------------------------------------------------------------------------------ cache

    def _choose_cache(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Embedding cache (.zarr folder)")
        if path:
            self._cache_path.setText(path)
            self._on_cache_path()

    def _on_cache_path(self) -> None:
        """Use the cache folder typed in (empty: memory only); refused while a job uses the cache."""
        text = self._cache_path.text().strip()
        current = self.session.cache.store_path
        if (Path(text) if text else None) == current:
            return
        if any(self._jobs.busy(lane) for lane in ("embedding", *STACK_LANES)):
            self._set_status("Wait for the running computation before changing the cache.")
            return
        try:
            self.session.cache = EmbeddingCache(max_items=16, store_path=text or None)
        except Exception as error:  # a bad path: say so, keep the old cache
            self._report(f"Cannot use {text} as an embedding cache", error)
            return
        self._set_status(f"Embedding cache: {text or 'memory only'}.")
        self._embed_current()

    # ------------------------------------------------------------------------------------------ precompute

    def precompute(self):
        """Embed the slices of the chosen range (along the stack axis through the slice in view) in the
        background, skipping cached ones; returns the job (None if refused)."""
        if self._context() is None:
            return None
        if not self.session.leading_shape:
            self._set_status("The image is 2D: its embedding is computed when it is chosen.")
            return None
        if self._stack_busy():
            return None
        start, stop = self._range_start.value(), self._range_stop.value() + 1
        return self._jobs.start(
            "precompute",
            self._precompute_steps,
            self._current_slice(),
            start,
            stop,
            progress="OV-SAM: precomputing embeddings",
            on_done=lambda computed, job: self._set_status(
                f"Precomputed slices {start}-{stop - 1}: {computed} embedded in {job.seconds:.1f} s, "
                "the others were cached."
            ),
            on_error=lambda error, _: self._report("Precomputing failed", error),
            on_finish=self._on_stack_job_finished,
        )

    def _precompute_steps(self, slice_index: SliceIndex, start: int, stop: int) -> Iterator:
        computed = 0
        for done, total, new in self.session.iter_precompute(slice_index, start, stop):
            computed += int(new)
            yield done, total, f"Embeddings: {done}/{total} slices ({computed} computed)."
        return computed

    # ------------------------------------------------------------------------------------------ propagation

    def propagate(self):
        """Carry the object selected in the table (or those of the last commit) through the stack, in the
        background; one undo step. Returns the job (None if refused)."""
        if self._context() is None or self.session.target is None:
            return None
        if not self.session.leading_shape:
            self._set_status("The image is 2D: there is no stack to segment through.")
            return None
        chosen = self._propagation_start()
        if chosen is None:
            self._set_status("Commit an object (or select one in the table) to segment it through the stack.")
            return None
        label_ids, slice_index = chosen
        if self._stack_busy():
            return None
        settings = PropagationSettings(
            min_iou=self._min_iou.value(), min_overlap=self._min_overlap.value(),
            max_slices=self._max_slices.value() or None,
        )  # fmt: skip
        return self._jobs.start(
            "propagation",
            self._propagation_steps,
            label_ids,
            slice_index,
            settings,
            progress="OV-SAM: segmenting through the stack",
            on_step=lambda *_: self._labels_layer is not None and self._labels_layer.refresh(),
            on_done=lambda summary, job: self._set_status(
                f"Segmented through the stack in {job.seconds:.1f} s: {summary}"
            ),
            on_error=lambda error, _: self._report("Segmenting through the stack failed", error),
            on_finish=self._on_stack_job_finished,
        )

    def _on_stack_job_finished(self, job: Any) -> None:
        if job.lane == "propagation":
            self._show_labels()  # what was painted, also when cancelled part way
        if job.cancel.is_set():
            self._set_status(f"The {job.lane} was cancelled; what was done is kept (run it again to resume).")

    def _stack_busy(self) -> bool:
        """One stack job at a time (each runs the encoder on every slice it visits)."""
        busy = any(self._jobs.busy(lane) for lane in STACK_LANES)
        if busy:
            self._set_status("A stack job is running: wait for it or cancel it.")
        return busy

    def _propagation_start(self) -> tuple[list[int], SliceIndex] | None:
        """(label ids, slice) to start from: the selected object on its slice, else the last commit."""
        target = self.session.target
        selected = self._table.selected_label()
        if selected is not None:
            slices = target.slices_of(selected)
            current = self._current_slice()
            return ([selected], current if current in slices else slices[0]) if slices else None
        if not target.history:
            return None
        record = target.history[-1].records[0]
        return list(record.label_ids), record.slice_index

    def _propagation_steps(self, label_ids: list[int], slice_index: SliceIndex, settings: Any) -> Iterator:
        painted, stops = 0, []
        for step in self.session.iter_propagate(label_ids, slice_index, settings):
            painted += int(step.painted)
            if step.reason:
                stops.append(
                    f"object {step.label_id} stopped at slice {step.slice_index[-1]} ({step.reason})"
                )
            what = "painted" if step.painted else step.reason
            yield step.done, step.total, f"Object {step.label_id}, slice {step.slice_index[-1]}: {what}."
        return f"{painted} slice(s) painted; " + ("; ".join(stops) or "reached the ends of the stack") + "."
