"""``ModelPanel``: choose a model (or a checkpoint file) and a device, and load it in a worker.

Loading builds the model and encodes the vocabulary (the slow parts) in the "model" job lane; a failure
(missing weights included) is shown in napari's notifications and in the status line, with what to download
and where.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QLineEdit

from ovsam_model.config import list_models, load_config
from ovsam_model.device import available_devices
from ovsam_model.hub import PACKAGE_WEIGHTS_DIR, SOURCES
from ovsam_model.text import encode_vocabulary

from ..cache import model_fingerprint
from ..session import AnnotationSession
from .controls import button, row, row_widget
from .jobs import Job, JobRunner
from .status import StatusPanel

CHECKPOINT_ITEM = "checkpoint file…"
DEMO = "demo"
CHECKPOINT_NOTE = "A checkpoint written by this package (it carries its own config)."


# The models offered by name: those that annotate with the weights they name (the other configs are
# architectures to train; a trained one is loaded as a checkpoint file).
OFFERED = (DEMO, "ovsam_rn50x16", "ovsam_rn50x16_official", "tiny")


def model_notes() -> dict[str, str]:
    """{model name: what it is}, from the configs' own descriptions (``ovsam_model.config``), the demo model
    first (the default), then the checkpoint-file item."""
    names = [name for name in OFFERED if name in list_models()]
    return {**{name: load_config(name).description for name in names}, CHECKPOINT_ITEM: CHECKPOINT_NOTE}


class ModelPanel(QGroupBox):
    """The model box (see the module docstring).

    Args:
        session: gets the loaded predictor and vocabulary. jobs: runs the loading. status: where to report.
        vocabulary: the vocabulary to load the model with (None if the editor's text is not valid).
        on_loaded: called with the model's name once it is in the session.
        on_demo_chosen: called when the demo model is chosen (its classes go to the vocabulary editor).
    """

    def __init__(
        self,
        *,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        vocabulary: Callable[[], Any],
        on_loaded: Callable[[str], None],
        on_demo_chosen: Callable[[], None],
    ) -> None:
        super().__init__("Model")
        self._session, self._jobs, self._status = session, jobs, status
        self._vocabulary, self._on_loaded, self._on_demo_chosen = vocabulary, on_loaded, on_demo_chosen
        self.loaded_name = ""  # the name of the model in the session ("" before the first load)
        form = QFormLayout(self)
        self._model = QComboBox()
        self._notes = model_notes()
        for i, (name, tip) in enumerate(self._notes.items()):
            self._model.addItem(name)
            self._model.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        self._device = QComboBox()
        self._device.addItems(["auto", *available_devices()])
        self._device.setToolTip("auto = cuda > mps > cpu (only devices this machine has are listed)")
        self._load = button(
            "Load", "Load the model in the background (weights must be in place; see the message)"
        )
        form.addRow("Model", row(self._model, self._device, self._load, stretch=0))
        self._checkpoint = QLineEdit()
        self._checkpoint.setPlaceholderText("path of a checkpoint (.safetensors or .pt)")
        self._browse_checkpoint = button("…", "Choose a checkpoint file")
        self._checkpoint_row = row_widget(self._checkpoint, self._browse_checkpoint, stretch=0)
        form.addRow(self._checkpoint_row)
        self._model_note = QLabel()
        self._model_note.setWordWrap(True)
        form.addRow(self._model_note)
        self._load.clicked.connect(lambda: self.load_model())
        self._model.currentTextChanged.connect(self.on_model_choice)
        self._browse_checkpoint.clicked.connect(self._choose_checkpoint)

    def load_model(
        self, name: str | None = None, device: str | None = None, checkpoint: str | None = None
    ) -> Job | None:
        """Load a model in the background (default: the chosen one); returns the job, or None if refused."""
        name = name or self._model.currentText()
        device = device or self._device.currentText()
        if name == CHECKPOINT_ITEM:
            checkpoint = checkpoint or self._checkpoint.text().strip()
        vocabulary = self._vocabulary()
        if vocabulary is None:
            return None
        if self._jobs.busy("model"):
            self._status.set_status("A model is being loaded already.")
            return None
        source = checkpoint or name
        self._status.set_status(f"Loading {source} on {device}…")
        return self._jobs.start(
            "model", _load_model, source, device, vocabulary,
            on_done=lambda result, job: self._on_model_loaded(name, result, job.seconds),
            on_error=lambda error, _: self._status.report(f"Could not load the model '{source}'", error),
            progress=f"OV-SAM: loading {source}",
        )  # fmt: skip

    def set_busy(self, lanes: set[str]) -> None:
        self._load.setEnabled("model" not in lanes)

    def _on_model_loaded(self, name: str, result: tuple[Any, Any, Any, str], seconds: float) -> None:
        predictor, vocabulary, text_embeddings, fingerprint = result
        self._session.set_predictor(predictor, fingerprint)
        self._session.set_vocabulary(vocabulary, text_embeddings=text_embeddings)
        self.loaded_name = name
        message = f"Model {name} loaded on {predictor.device} in {seconds:.1f} s; {len(vocabulary)} classes."
        if name == DEMO:  # in the status line, not a notification left over the canvas
            message += " " + self._notes[DEMO]
        self._status.set_status(message)
        self._on_loaded(name)

    def on_model_choice(self, *_: Any) -> None:
        """Show what the chosen model is (and whether its weights are there)."""
        name = self._model.currentText()
        self._checkpoint_row.setVisible(name == CHECKPOINT_ITEM)
        note = self._notes.get(name, "")
        if name == DEMO and not _demo_weights().exists():
            note += (
                f" Its weights are not installed yet (expected at {_demo_weights()}): train it "
                "(python -m ovsam_model.train), or load a checkpoint file."
            )
        self._model_note.setText(note)
        if name == DEMO:
            self._on_demo_chosen()

    def _choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "OV-SAM checkpoint", "", "Checkpoints (*.safetensors *.pt *.pth *.ckpt)"
        )
        if path:
            self._checkpoint.setText(path)


def _demo_weights() -> Path:
    return PACKAGE_WEIGHTS_DIR / SOURCES["ovsam_demo"].filename


def _load_model(source: str, device: str, vocabulary: Any) -> tuple[Any, Any, Any, str]:
    """Worker: build the model and its predictor, and encode the vocabulary (the slow parts of loading)."""
    # Heavy (open_clip, torchvision, segment_anything), and only after the widget's Triton guard (see _compat).
    from ovsam_model.build import build_ovsam
    from ovsam_model.predictor import OVSAMPredictor

    if Path(source).suffix and not Path(source).is_file():
        raise FileNotFoundError(
            f"No checkpoint at {source}: choose an existing checkpoint file (.safetensors or .pt)."
        )
    model = build_ovsam(source, device=device)
    embeddings = encode_vocabulary(vocabulary, model.text_encoder)
    # tiling="auto": slices larger than the model input by the predictor's margin are tiled (napari_ovsam.tiles)
    return OVSAMPredictor(model, tiling="auto"), vocabulary, embeddings, model_fingerprint(model)
