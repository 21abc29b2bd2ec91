"""``VocabularyPanel``: the classes objects are named from (one per line, synonyms after commas), presets and
files, and the score below which an object is named ``unknown``.

Encoding a vocabulary (the text tower over every class and synonym: seconds for LVIS-1203) runs in the
"vocabulary" job lane. Objects already committed keep their names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from ovsam_model.vocabulary import DEMO_CLASSES, Vocabulary

from ..session import AnnotationSession
from .controls import button, row
from .jobs import Job, JobRunner
from .model_panel import DEMO
from .status import StatusPanel

DEMO_PRESET = "demo classes"
PRESETS = {DEMO_PRESET: "demo", "COCO-80": "coco80", "LVIS-1203": "lvis1203"}


class VocabularyPanel(QWidget):
    """The Vocabulary tab (see the module docstring).

    Args:
        session: gets the vocabulary and threshold. jobs: runs the text encoder. status: where to report.
        loaded_model: the name of the loaded model ("" before one is loaded).
        on_changed: called when the names of the next objects change (vocabulary or threshold).
    """

    def __init__(
        self,
        *,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        loaded_model: Callable[[], str],
        on_changed: Callable[[], None],
    ) -> None:
        super().__init__()
        self._session, self._jobs, self._status = session, jobs, status
        self._loaded_model, self._on_changed = loaded_model, on_changed
        layout = QVBoxLayout(self)
        self._preset = QComboBox()
        self._preset.addItems(list(PRESETS))
        self._preset.setToolTip("Fill the editor with a shipped vocabulary")
        self._load_vocab = button("Load…", "Read a vocabulary text file (one class per line)")
        self._save_vocab = button("Save…", "Write the editor's vocabulary to a text file")
        layout.addLayout(row(QLabel("Preset"), self._preset, self._load_vocab, self._save_vocab, stretch=1))
        self._vocab_text = QPlainTextEdit()
        self._vocab_text.setPlaceholderText(
            "one class per line; synonyms after commas, e.g.\nmitotic cell, dividing cell"
        )
        self._vocab_text.setToolTip(
            "One class per line, its name first; synonyms comma-separated; # starts a comment"
        )
        layout.addWidget(self._vocab_text, stretch=1)
        self._unknown = QDoubleSpinBox()
        self._unknown.setRange(0.0, 1.0)
        self._unknown.setSingleStep(0.05)
        self._unknown.setToolTip("Objects whose best class has a lower probability are named 'unknown'")
        self._apply_vocab = button(
            "Apply", "Name the next objects from this vocabulary (committed names stay)"
        )
        layout.addLayout(row(QLabel("'unknown' below score"), self._unknown, self._apply_vocab, stretch=None))
        self._preset.activated.connect(lambda _: self._on_preset())
        self._load_vocab.clicked.connect(self._read_file)
        self._save_vocab.clicked.connect(self._write_file)
        self._apply_vocab.clicked.connect(lambda: self.set_vocabulary())
        self._unknown.valueChanged.connect(self._on_unknown)
        self._on_preset()

    def set_vocabulary(self, text: str | None = None) -> Job | None:
        """Name the next objects from ``text`` (default: the editor's; one class per line). Committed objects
        keep their names. Runs the text encoder in the background when a model is loaded."""
        if text is not None:
            self._vocab_text.setPlainText(text)
        vocabulary = self.parse()
        if vocabulary is None or self._session.predictor is None:
            if vocabulary is not None:
                self._status.set_status(
                    f"Vocabulary of {len(vocabulary)} classes: used when a model is loaded."
                )
            return None
        if self._loaded_model() == DEMO and set(vocabulary.names) - set(DEMO_CLASSES):
            show_warning(f"The demo model is closed-vocabulary: it only knows {', '.join(DEMO_CLASSES)}.")
        return self._jobs.start(
            "vocabulary", self._session.encode_vocabulary, vocabulary,
            on_done=lambda embeddings, _: self._on_encoded(vocabulary, embeddings),
            on_error=lambda error, _: self._status.report("Could not encode the vocabulary", error),
            progress="OV-SAM: encoding the vocabulary",
        )  # fmt: skip

    def parse(self) -> Vocabulary | None:
        """The editor's vocabulary, or None (with the reason in the status line) if it is not valid."""
        try:
            return Vocabulary.from_text(self._vocab_text.toPlainText())
        except (ValueError, TypeError) as error:
            self._status.report("The vocabulary is not valid", error)
            return None

    def use_preset(self, preset: str) -> None:
        """Fill the editor with a shipped vocabulary (a key of :data:`PRESETS`)."""
        self._preset.setCurrentText(preset)
        self._on_preset()

    def _on_encoded(self, vocabulary: Vocabulary, embeddings: Any) -> None:
        self._session.set_vocabulary(vocabulary, text_embeddings=embeddings)
        self._status.set_status(
            f"Vocabulary: {len(vocabulary)} classes ({', '.join(vocabulary.names[:4])}…)."
        )
        self._on_changed()

    def _on_preset(self) -> None:
        self._vocab_text.setPlainText(Vocabulary.preset(PRESETS[self._preset.currentText()]).to_text())

    def _on_unknown(self, value: float) -> None:
        self._session.unknown_threshold = float(value)
        self._on_changed()

    def _read_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Vocabulary", "", "Text (*.txt);;All files (*)")
        if path:
            self._vocab_text.setPlainText(Path(path).read_text(encoding="utf-8"))

    def _write_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save vocabulary", "vocabulary.txt", "Text (*.txt)")
        if path:
            Path(path).write_text(self._vocab_text.toPlainText(), encoding="utf-8")
