"""The widget's model and vocabulary controls: loading a model, and the vocabulary it names objects from.

A mixin of :class:`~napari_ovsam._widget.OVSAMWidget`. Loading a model and encoding a vocabulary (the text
tower over every class and synonym: seconds for LVIS-1203) run in thread workers; a failure (missing weights
included) is shown in napari's notifications and in the status line, with what to download and where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from . import _panels
from .cache import model_fingerprint

DEMO_CLASSES = {"nucleus", "rod", "ring", "cluster"}


class ModelActions:
    """Model loading and vocabulary editing for the widget (see the module docstring)."""

    # ------------------------------------------------------------------------------------------ model

    def load_model(self, name: str | None = None, device: str | None = None, checkpoint: str | None = None):
        """Load a model in the background (default: the chosen one); returns the job, or None if refused."""
        name = name or self._model.currentText()
        device = device or self._device.currentText()
        if name == _panels.CHECKPOINT_ITEM:
            checkpoint = checkpoint or self._checkpoint.text().strip()
        vocabulary = self._parse_vocabulary()
        if vocabulary is None:
            return None
        if self._jobs.busy("model"):
            self._set_status("A model is being loaded already.")
            return None
        self._set_status(f"Loading {checkpoint or name} on {device}…")
        return self._jobs.start(
            "model", _load_model, checkpoint or name, device, vocabulary,
            on_done=lambda result, job: self._on_model_loaded(name, result, job.seconds),
            on_error=lambda error, _: self._report(f"Could not load the model '{checkpoint or name}'", error),
            progress=f"OV-SAM: loading {checkpoint or name}",
        )  # fmt: skip

    def _on_model_loaded(self, name: str, result: tuple, seconds: float) -> None:
        predictor, vocabulary, text_embeddings, fingerprint = result
        self.session.set_predictor(predictor, fingerprint)
        self.session.set_vocabulary(vocabulary, text_embeddings=text_embeddings)
        self._model_name = name
        device = predictor.device
        self._set_status(f"Model {name} loaded on {device} in {seconds:.1f} s; {len(vocabulary)} classes.")
        if name == "demo":
            show_info(_panels.MODELS["demo"])
        self._results = None
        self._embed_current()

    def _on_model_choice(self, *_: Any) -> None:
        name = self._model.currentText()
        self._checkpoint_row.setVisible(name == _panels.CHECKPOINT_ITEM)
        note = _panels.MODELS.get(name, "")
        if name == "demo" and not _demo_weights().exists():
            note += (
                f" Its weights are not installed yet (expected at {_demo_weights()}): train it "
                "(python -m ovsam_model.train), or load a checkpoint file."
            )
        self._model_note.setText(note)
        if name == "demo":
            self._preset.setCurrentText("demo classes")
            self._on_preset()

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "OV-SAM checkpoint", "", "Checkpoints (*.pt *.pth *.ckpt)"
        )
        if path:
            self._checkpoint.setText(path)

    # ------------------------------------------------------------------------------------------ vocabulary

    def set_vocabulary(self, text: str | None = None):
        """Name the next objects from ``text`` (default: the editor's; one class per line). Committed objects
        keep their names. Runs the text encoder in the background when a model is loaded."""
        if text is not None:
            self._vocab_text.setPlainText(text)
        vocabulary = self._parse_vocabulary()
        if vocabulary is None or self.session.predictor is None:
            if vocabulary is not None:
                self._set_status(f"Vocabulary of {len(vocabulary)} classes: used when a model is loaded.")
            return None
        if self._model_name == "demo" and set(vocabulary.names) - DEMO_CLASSES:
            show_warning("The demo model is closed-vocabulary: it only knows nucleus, rod, ring and cluster.")
        return self._jobs.start(
            "vocabulary", self.session.encode_vocabulary, vocabulary,
            on_done=lambda embeddings, _: self._on_vocabulary_encoded(vocabulary, embeddings),
            on_error=lambda error, _: self._report("Could not encode the vocabulary", error),
            progress="OV-SAM: encoding the vocabulary",
        )  # fmt: skip

    def _on_vocabulary_encoded(self, vocabulary: Any, embeddings: Any) -> None:
        self.session.set_vocabulary(vocabulary, text_embeddings=embeddings)
        self._set_status(f"Vocabulary: {len(vocabulary)} classes ({', '.join(vocabulary.names[:4])}…).")
        self._results = None
        self._schedule_live()

    def _parse_vocabulary(self) -> Any:
        from ovsam_model.vocabulary import Vocabulary

        try:
            return Vocabulary.from_text(self._vocab_text.toPlainText())
        except (ValueError, TypeError) as error:
            self._report("The vocabulary is not valid", error)
            return None

    def _on_preset(self) -> None:
        from ovsam_model.vocabulary import Vocabulary

        preset = _panels.PRESETS[self._preset.currentText()]
        self._vocab_text.setPlainText(Vocabulary.preset(preset).to_text())

    def _on_unknown(self, value: float) -> None:
        self.session.unknown_threshold = float(value)
        self._results = None
        self._schedule_live()

    def _read_vocabulary_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Vocabulary", "", "Text (*.txt);;All files (*)")
        if path:
            self._vocab_text.setPlainText(Path(path).read_text(encoding="utf-8"))

    def _write_vocabulary_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save vocabulary", "vocabulary.txt", "Text (*.txt)")
        if path:
            Path(path).write_text(self._vocab_text.toPlainText(), encoding="utf-8")


def _demo_weights() -> Path:
    from ovsam_model.hub import PACKAGE_WEIGHTS_DIR, SOURCES

    return PACKAGE_WEIGHTS_DIR / SOURCES["ovsam_demo"].filename


def _load_model(source: str, device: str, vocabulary: Any) -> tuple[Any, Any, Any, str]:
    """Worker: build the model and its predictor, and encode the vocabulary (the slow parts of loading)."""
    from ovsam_model.build import build_ovsam
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.text import encode_vocabulary

    if Path(source).suffix and not Path(source).is_file():
        raise FileNotFoundError(f"No checkpoint at {source}: choose an existing .pt file.")
    model = build_ovsam(source, device=device)
    embeddings = encode_vocabulary(vocabulary, model.text_encoder)
    return OVSAMPredictor(model), vocabulary, embeddings, model_fingerprint(model)
