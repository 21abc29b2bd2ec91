"""``EmbeddingScheduler``: the image embedding of the slice in view, computed in the "embedding" job lane, and
the actions waiting for it.

The image encoder never runs on the GUI thread: an action that needs the slice's embedding (a segmentation, a
commit) is queued and run when the worker is done. A failure is reported once and remembered by the session;
it is retried only when the user changes the image, the slice or the contrast, or asks (:meth:`retry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject

from ..results import SliceIndex
from ..session import AnnotationSession, EmbeddingInfo, TilesNeeded
from ..tiles import EAGER_TILES
from .controls import single_shot_timer
from .jobs import JobRunner
from .status import StatusPanel

SLICE_DEBOUNCE_MS = 150  # a slider drag embeds the slice it stops on, not every slice it passes


class EmbeddingScheduler:
    """Starts embedding jobs for the slice in view and runs what waits for them.

    Args:
        session: the annotation session. jobs: the widget's job runner. status: where to report.
        slice_in_view: the chosen image's slice in view, or None without an image.
        parent: the Qt object that owns the slice-change timer.
    """

    def __init__(
        self,
        *,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        slice_in_view: Callable[[], SliceIndex | None],
        parent: QObject,
    ) -> None:
        self._session, self._jobs, self._status, self._slice_in_view = session, jobs, status, slice_in_view
        self._waiting: list[Callable[[], Any]] = []
        self._timer = single_shot_timer(parent, SLICE_DEBOUNCE_MS, self.embed_current)

    @property
    def pending(self) -> bool:
        """Whether actions wait for an embedding, or a slice change is about to start one."""
        return bool(self._waiting) or self._timer.isActive()

    def wait_for(self, then: Callable[[], Any]) -> None:
        """Run ``then`` after the embedding being computed (once)."""
        if then not in self._waiting:
            self._waiting.append(then)

    def clear(self) -> None:
        """Drop what waits (the user cancelled, or moved on)."""
        self._waiting.clear()

    def slice_changed(self) -> None:
        """The view moved to another slice: drop what waited, embed the new slice once the slider rests."""
        self._waiting.clear()
        self._session.forget_failures()  # another slice: the user may try a failed one again
        self._timer.start()

    def retry(self) -> None:
        """The user asked again: failed slices are embedded anew."""
        self._session.forget_failures()

    def embed_current(self) -> None:
        """Start embedding the slice in view, if a model and an image are there and it is not cached."""
        index = self._slice_in_view()
        if self._session.predictor is not None and index is not None and not self._jobs.closed:
            self.when_ready(index, None)

    def when_ready(self, slice_index: SliceIndex, then: Callable[[], Any] | None) -> bool:
        """Run ``then`` now if the slice's embedding is cached (True), else after a worker computed it."""
        if self._session.embedding_ready(slice_index):
            if then is not None:
                then()
            return True
        failure = self._session.embedding_failure(slice_index)
        if failure is not None:  # reported once already
            self._waiting.clear()
            self._status.set_status(
                f"The image embedding failed: {failure.rstrip('.')}. Change the image, slice or contrast, "
                "or press Segment to try again."
            )
            return False
        if then is not None:
            self.wait_for(then)
        job = self._jobs.start(
            "embedding", self._session.iter_embedding, slice_index,
            on_done=lambda info, _: self._on_done(info, slice_index),
            on_error=self._on_error, progress="OV-SAM: image embedding",
            on_finish=lambda _: self._after(),
        )  # fmt: skip
        if job is not None:
            where = f" of slice {', '.join(map(str, slice_index))}" if slice_index else ""
            self._status.set_status(f"Computing the image embedding{where}…")
        return False

    def when_tiles_ready(self, needed: TilesNeeded, then: Callable[[], Any]) -> None:
        """Run ``then`` once the tiles that ``needed``'s prompts are decoded on are encoded (large slices:
        from the cache, else by the encoder in the "embedding" lane; the status line names each tile)."""
        self.wait_for(then)
        self._jobs.start(
            "embedding", self._session.iter_tiles, needed.slice_index, needed.objects,
            on_done=lambda encoded, job: self._on_tiles_done(encoded, job.seconds),
            on_error=self._on_error, progress="OV-SAM: encoding tiles", on_finish=lambda _: self._after(),
        )  # fmt: skip
        # a busy lane: ``then`` runs after the running job, and asks again if it still needs tiles

    def _on_tiles_done(self, encoded: int, seconds: float) -> None:
        if encoded:
            self._status.show_embedding_time(seconds, True)
        how = f"{encoded} encoded in {seconds:.2f} s" if encoded else "from the cache"
        self._status.set_status(f"Tiles ready ({how}).")

    def _on_done(self, info: EmbeddingInfo, slice_index: SliceIndex) -> None:
        where = f"Slice {', '.join(map(str, slice_index))}" if slice_index else "Image"
        if info.tiles > EAGER_TILES:  # a large slice: its tiles are encoded where prompts are
            self._status.set_status(
                f"{where} ready: a large image in {info.tiles} tiles, each encoded the first time a prompt "
                "needs it: add points or boxes."
            )
            return
        self._status.show_embedding_time(info.seconds, info.computed)
        how = f"computed in {info.seconds:.2f} s" if info.computed else "from the cache"
        tiles = f", {info.tiles} tiles at native resolution" if info.tiles else ""
        self._status.set_status(f"{where} ready ({how}{tiles}): add points or boxes.")

    def _on_error(self, error: BaseException, _: Any) -> None:
        self._waiting.clear()
        self._status.report("Could not compute the image embedding", error)

    def _after(self) -> None:
        """Run what waited for the slice in view, or embed it if the view moved on meanwhile."""
        current = self._slice_in_view()
        if current is None:
            return
        if self._session.embedding_ready(current):
            waiting, self._waiting = self._waiting, []
            for then in waiting:
                then()
        elif self._session.predictor is not None and self._session.embedding_failure(current) is None:
            self.when_ready(current, None)
