"""Background jobs of the widget: napari thread workers with progress, cancel, and a guard for closed widgets.

One :class:`JobRunner` runs at most one job per *lane* ("model", "embedding", "precompute", ...): starting a job in
a busy lane is refused. A generator job reports progress by yielding ``(done, total, message)``; its Cancel
stops it at the next yield (and closes the generator, so its ``finally`` clauses run in the worker). A function
job cannot be interrupted: Cancel drops its result. Every callback is skipped once the runner is closed, so a
job that ends after its widget was closed touches nothing.

Callbacks run on the GUI thread: ``on_step(item, job)`` for each yielded item, then ``on_done(result, job)``
(not for a cancelled job) or ``on_error(exception, job)``, and always ``on_finish(job)`` last.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error

Callback = Callable[..., None]


@dataclass
class Job:
    """A running job: its worker, lane, cancel flag and start time."""

    lane: str
    worker: Any
    bar: Any = None  # napari's progress bar (activity dock), if the job shows one
    ended: bool = False  # returned or failed: later progress reports are stale
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


class JobRunner:
    """Starts jobs in napari thread workers and routes their signals to callbacks while it is open.

    Args:
        on_busy: called with the set of busy lanes whenever it changes (to enable buttons, show progress).
        on_progress: called as ``on_progress(done, total, message)`` for every progress report.
    """

    def __init__(self, on_busy: Callback, on_progress: Callback) -> None:
        self.on_busy, self.on_progress = on_busy, on_progress
        self.jobs: dict[str, Job] = {}
        self.closed = False

    def busy(self, lane: str | None = None) -> bool:
        """Whether a job runs in ``lane`` (default: in any lane)."""
        return bool(self.jobs) if lane is None else lane in self.jobs

    def start(
        self,
        lane: str,
        func: Callable[..., Any],
        *args: Any,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_step: Callback | None = None,
        on_finish: Callback | None = None,
        progress: str | None = None,
    ) -> Job | None:
        """Run ``func(*args)`` (a function, or a generator function yielding progress) in a worker.

        Callbacks: see the module docstring. ``progress``: a description for a progress bar in napari's
        activity dock (busy until the job reports numbers). Returns None (and runs nothing) when the lane is
        busy or the runner is closed.
        """
        if self.closed or lane in self.jobs:
            return None
        cancel = threading.Event()
        # errors go to on_error (or napari's notifications), not re-raised in the event loop
        worker = create_worker(_cancellable(func, cancel), *args, _start_thread=False, _ignore_errors=True)
        job = self.jobs[lane] = Job(lane, worker, cancel=cancel)  # the lane is taken from here on
        worker.returned.connect(self._guard(lambda result: self._done(result, job, on_done)))
        worker.errored.connect(self._guard(lambda error: self._failed(error, job, on_error)))
        if hasattr(worker, "yielded"):
            worker.yielded.connect(self._guard(lambda item: self._step(item, job, on_step)))
        worker.finished.connect(lambda: self._finished(job, on_finish))
        if progress is not None:  # napari's progress bar processes events: only once the lane is taken
            job.bar = napari_progress(total=0, desc=progress)
        self.on_busy(set(self.jobs))
        worker.start()
        return job

    def cancel(self, lane: str | None = None) -> None:
        """Ask the job of ``lane`` (default: every job) to stop: at its next yield, or, for a function,
        by dropping its result. (``worker.quit()`` is not used: it would leave the generator unclosed.)"""
        for name, job in list(self.jobs.items()):
            if lane is None or name == lane:
                job.cancel.set()

    def close(self, *_: Any) -> None:
        """Cancel everything and drop every later signal (the widget is closed or deleted). Running threads
        end by themselves: a generator at its next yield, a function when it returns."""
        self.closed = True
        self.cancel()

    def _step(self, item: Any, job: Job, on_step: Callback | None) -> None:
        if isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], int) and not job.ended:
            done, total, _ = item
            self.on_progress(*item)
            if job.bar is not None:  # last: napari's bar processes events, the job may end meanwhile
                job.bar.total = total
                job.bar.update(done - job.bar.n)
        if on_step is not None:
            on_step(item, job)

    def _done(self, result: Any, job: Job, on_done: Callback | None) -> None:
        job.ended = True
        if on_done is not None and not job.cancel.is_set():
            on_done(result, job)

    def _failed(self, error: BaseException, job: Job, on_error: Callback | None) -> None:
        job.ended = True
        (on_error or _notify)(error, job)

    def _finished(self, job: Job, on_finish: Callback | None) -> None:
        job.ended = True
        if job.bar is not None:
            job.bar.close()
        if self.jobs.get(job.lane) is job:
            del self.jobs[job.lane]
        if not self.closed:
            if on_finish is not None:
                on_finish(job)
            self.on_busy(set(self.jobs))

    def _guard(self, callback: Callback) -> Callback:
        def guarded(*args: Any) -> None:
            if not self.closed:
                callback(*args)

        return guarded


def _cancellable(func: Callable[..., Any], cancel: threading.Event) -> Callable[..., Any]:
    """Wrap a generator function so that setting ``cancel`` ends it at the next yield, closing it."""
    if not inspect.isgeneratorfunction(func):
        return func

    def run(*args: Any) -> Iterator[Any]:
        generator = func(*args)
        try:
            while not cancel.is_set():
                try:
                    item = next(generator)
                except StopIteration as stop:
                    return stop.value
                yield item
        finally:
            generator.close()
        return None

    run.__name__ = getattr(func, "__name__", "job")
    return run


def _notify(error: BaseException, job: Job) -> None:
    show_error(f"OV-SAM {job.lane} job failed: {error}")
