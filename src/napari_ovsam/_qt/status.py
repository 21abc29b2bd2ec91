"""``StatusPanel``: progress of the running jobs with Cancel, the last timings, and the status line."""

from __future__ import annotations

from collections.abc import Callable

from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from .controls import button, row_widget


class StatusPanel(QWidget):
    """What the widget is doing and what happened last; the one place panels report to.

    Args:
        on_cancel: called when the user presses Cancel.
    """

    def __init__(self, *, on_cancel: Callable[[], None]) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._progress = QProgressBar()
        self._cancel = button("Cancel", "Stop the running computation (what is done is kept)")
        self._cancel.clicked.connect(on_cancel)
        self._progress_row = row_widget(self._progress, self._cancel, stretch=0)
        self._progress_row.setVisible(False)
        layout.addWidget(self._progress_row)
        self._timing = QLabel("embedding: – · last prompt: –")
        self._timing.setToolTip("Time of the last image embedding, and of the last prompt decoding")
        self._status = QLabel("Load a model to start.")
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self._timing)
        layout.addWidget(self._status)

    @property
    def text(self) -> str:
        """The status line."""
        return str(self._status.text())

    def set_status(self, text: str) -> None:
        self._status.setText(text)

    def report(self, what: str, error: BaseException) -> None:
        """Show an error in napari's notifications and in the status line (what failed, and why)."""
        message = f"{what}: {error}"
        self.set_status(message)
        show_error(message)

    def show_busy(self, busy: bool) -> None:
        """Show the progress row while jobs run (a busy indicator until a job reports numbers)."""
        self._progress_row.setVisible(busy)
        if not busy:
            self._progress.setRange(0, 1)
        elif self._progress.maximum() <= 1:
            self._progress.setRange(0, 0)

    def show_progress(self, done: int, total: int, message: str) -> None:
        self._progress.setRange(0, max(total, 1))
        self._progress.setValue(done)
        self.set_status(message)

    def show_prompt_time(self, latency_ms: float) -> None:
        embedding = self._timing.text().split(" · ")[0]
        self._timing.setText(f"{embedding} · last prompt: {latency_ms:.0f} ms")

    def show_embedding_time(self, seconds: float, computed: bool) -> None:
        prompt = self._timing.text().split(" · ")[-1]
        text = f"embedding: {seconds:.2f} s" if computed else "embedding: cached"
        self._timing.setText(f"{text} · {prompt}")
