"""``ModelPanel``: choose where the model runs, local or remote, and load it (or connect to it) in a worker.

Backend "local": a model (or a checkpoint file) and a device; loading builds the model and encodes the
vocabulary (the slow parts) in the "model" job lane. Backend "remote": the address and token of an OV-SAM server
(``python -m ovsam_model.serve``); Connect makes a ``RemotePredictor`` in the same lane (the server encodes the
vocabulary), Test connection only asks the server what it runs and times one round trip. A failure (missing
weights, an unreachable server, a refused token) is shown in napari's notifications and in the status line,
with what to do. The backend, the address and (if asked) the token are remembered between napari runs
(:mod:`napari_ovsam.backend_settings`) once a model is loaded or connected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QWidget,
)

from ovsam_model.config import list_models, load_config
from ovsam_model.device import available_devices
from ovsam_model.hub import PACKAGE_WEIGHTS_DIR, SOURCES
from ovsam_model.remote import RemotePredictor
from ovsam_model.text import encode_vocabulary

from ..backend_settings import (
    BACKENDS,
    LOCAL,
    REMOTE,
    BackendSettings,
    load_settings,
    save_settings,
    settings_path,
)
from ..cache import model_fingerprint
from ..session import AnnotationSession
from .controls import button, row_widget
from .jobs import Job, JobRunner
from .status import StatusPanel

CHECKPOINT_ITEM = "checkpoint file…"
DEMO = "demo"
CHECKPOINT_NOTE = "A checkpoint written by this package (it carries its own config)."
CONNECTION_LANE = "connection"  # Test connection (Connect runs in the "model" lane, as Load does)
REMOTE_NOTE = (
    "The model of an OV-SAM server (python -m ovsam_model.serve): Test connection asks what it runs, Connect "
    "uses it."
)
TEST_TIMEOUT = 10.0  # seconds Test connection waits for the server (Connect: the predictor's default)


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
        self._form = QFormLayout(self)
        self._backend = QComboBox()
        self._backend.addItems(list(BACKENDS))
        self._backend.setToolTip("local: a model loaded in napari · remote: an OV-SAM server's model")
        self._form.addRow("Backend", self._backend)
        self._local_rows = self._local_controls()
        self._remote_rows = self._remote_controls()
        self._restore(load_settings())
        self._backend.currentTextChanged.connect(self.on_backend_choice)
        self._load.clicked.connect(lambda: self.load_model())
        self._model.currentTextChanged.connect(self.on_model_choice)
        self._browse_checkpoint.clicked.connect(self._choose_checkpoint)
        self._test.clicked.connect(lambda: self.test_connection())
        self._connect.clicked.connect(lambda: self.connect_remote())
        self._remember.toggled.connect(self._on_remember)

    def _local_controls(self) -> list[QWidget]:
        """The model, device and Load rows; returns the widgets shown for the local backend."""
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
        label, choice = QLabel("Model"), row_widget(self._model, self._device, self._load, stretch=0)
        self._form.addRow(label, choice)
        self._checkpoint = QLineEdit()
        self._checkpoint.setPlaceholderText("path of a checkpoint (.safetensors or .pt)")
        self._browse_checkpoint = button("…", "Choose a checkpoint file")
        self._checkpoint_row = row_widget(self._checkpoint, self._browse_checkpoint, stretch=0)
        self._form.addRow(self._checkpoint_row)
        self._model_note = QLabel()
        self._model_note.setWordWrap(True)
        self._form.addRow(self._model_note)
        return [label, choice, self._model_note]  # the checkpoint row follows the model choice

    def _remote_controls(self) -> list[QWidget]:
        """The server's address, its token, Test connection and Connect; returns their widgets."""
        self._url = QLineEdit()
        self._url.setPlaceholderText("http://host:8765")
        self._url.setToolTip("The address of a server started with python -m ovsam_model.serve")
        self._token = QLineEdit()
        self._token.setEchoMode(QLineEdit.EchoMode.Password)
        self._token.setPlaceholderText("none")
        self._token.setToolTip("The token the server was started with (its --token-file, or OVSAM_TOKEN)")
        self._remember = QCheckBox("remember")
        self._remember.setToolTip(
            "Keep the token in the plugin's settings file (readable by you only) for the next napari runs"
        )
        self._test = button("Test connection", "Ask the server what it runs and time one round trip")
        self._connect = button("Connect", "Use the server's model (the server encodes the vocabulary)")
        rows = [
            (QLabel("Server"), self._url),
            (QLabel("Token"), row_widget(self._token, self._remember, stretch=0)),
            (QLabel(""), row_widget(self._test, self._connect)),
        ]
        for label, field in rows:
            self._form.addRow(label, field)
        self._remote_note = QLabel(REMOTE_NOTE)
        self._remote_note.setWordWrap(True)
        self._form.addRow(self._remote_note)
        return [*(widget for pair in rows for widget in pair), self._remote_note]

    # ------------------------------------------------------------------------------------------ backend

    @property
    def backend(self) -> str:
        """Where the next model comes from: "local" (loaded in napari) or "remote" (a server's)."""
        return str(self._backend.currentText())

    def set_backend(self, backend: str) -> None:
        """Choose the backend (a value of ``backend_settings.BACKENDS``) and show its rows."""
        if backend not in BACKENDS:
            raise ValueError(f"The backend must be one of {', '.join(BACKENDS)}, not {backend!r}.")
        self._backend.setCurrentText(backend)

    def settings(self) -> BackendSettings:
        """The backend, address and token the controls show (the token kept only if "remember" is ticked)."""
        return BackendSettings(
            backend=self.backend, url=self._url.text().strip(), token=self._token.text().strip(),
            remember_token=self._remember.isChecked(),
        )  # fmt: skip

    def on_backend_choice(self, *_: Any) -> None:
        """Show the chosen backend's rows."""
        remote = self.backend == REMOTE
        for widget in self._remote_rows:
            widget.setVisible(remote)
        for widget in self._local_rows:
            widget.setVisible(not remote)
        self._checkpoint_row.setVisible(not remote and self._model.currentText() == CHECKPOINT_ITEM)

    def _restore(self, settings: BackendSettings) -> None:
        self._url.setText(settings.url)
        self._token.setText(settings.token)
        self._remember.setChecked(settings.remember_token)
        self._backend.setCurrentText(settings.backend)
        self.on_backend_choice()

    def _remember_settings(self, settings: BackendSettings) -> None:
        """Keep the backend choice for the next napari runs (a failure to write is only reported)."""
        try:
            save_settings(settings)
        except OSError as error:
            self._status.report("Could not save the backend settings", error)

    def _on_remember(self, remember: bool) -> None:
        """Unticking "remember" forgets a remembered token at once (the rest of the settings stays)."""
        if not remember and settings_path().exists():
            self._remember_settings(replace(load_settings(), token="", remember_token=False))

    # ------------------------------------------------------------------------------------------ local

    def load_model(
        self, name: str | None = None, device: str | None = None, checkpoint: str | None = None
    ) -> Job | None:
        """Load a model in the background (default: the chosen one; the backend becomes local); returns the
        job, or None if refused."""
        self._backend.setCurrentText(LOCAL)
        name = name or self._model.currentText()
        device = device or self._device.currentText()
        if name == CHECKPOINT_ITEM:
            checkpoint = checkpoint or self._checkpoint.text().strip()
        vocabulary = self._vocabulary_if_free()
        if vocabulary is None:
            return None
        source = checkpoint or name
        self._status.set_status(f"Loading {source} on {device}…")
        return self._jobs.start(
            "model", _load_model, source, device, vocabulary,
            on_done=lambda result, job: self._on_model_loaded(name, result, job.seconds),
            on_error=lambda error, _: self._status.report(f"Could not load the model '{source}'", error),
            progress=f"OV-SAM: loading {source}",
        )  # fmt: skip

    def _vocabulary_if_free(self) -> Any:
        """The editor's vocabulary when a model may be loaded now; None (the reason shown) otherwise."""
        vocabulary = self._vocabulary()
        if vocabulary is None:
            return None
        if self._jobs.busy("model"):
            self._status.set_status("A model is being loaded already.")
            return None
        return vocabulary

    def set_busy(self, lanes: set[str]) -> None:
        self._load.setEnabled("model" not in lanes)
        self._connect.setEnabled("model" not in lanes)
        self._test.setEnabled(CONNECTION_LANE not in lanes)

    def _on_model_loaded(self, name: str, result: tuple[Any, Any, Any, str], seconds: float) -> None:
        predictor, vocabulary, text_embeddings, fingerprint = result
        self._session.set_predictor(predictor, fingerprint)
        self._session.set_vocabulary(vocabulary, text_embeddings=text_embeddings)
        self.loaded_name = name
        message = f"Model {name} loaded on {predictor.device} in {seconds:.1f} s; {len(vocabulary)} classes."
        if name == DEMO:  # in the status line, not a notification left over the canvas
            message += " " + self._notes[DEMO]
        self._status.set_status(message)
        self._remote_note.setText(REMOTE_NOTE)
        if self.backend == LOCAL:
            self._remember_settings(self.settings())
        self._on_loaded(name)

    def on_model_choice(self, *_: Any) -> None:
        """Show what the chosen model is (and whether its weights are there)."""
        name = self._model.currentText()
        self.on_backend_choice()  # the checkpoint row
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

    # ------------------------------------------------------------------------------------------ remote

    def test_connection(self, url: str | None = None, token: str | None = None) -> Job | None:
        """Ask the server (default: the address and token shown) what it runs, in the background; the answer,
        with one round trip's time, or why it failed, goes to the status line. Returns the job (None if
        refused)."""
        settings = self._remote_settings(url, token)
        self._status.set_status(f"Connecting to {settings.url}…")
        return self._jobs.start(
            CONNECTION_LANE, _probe_server, settings.url, settings.token,
            on_done=lambda message, _: self._status.set_status(message),
            on_error=lambda error, _: self._status.report("Connection test failed", error),
        )  # fmt: skip

    def connect_remote(self, url: str | None = None, token: str | None = None) -> Job | None:
        """Use the model of a server (default: the address and token shown; the backend becomes remote) with
        the editor's vocabulary, connecting in the background; the settings are remembered once connected.
        Returns the job, or None if refused."""
        settings = self._remote_settings(url, token)
        vocabulary = self._vocabulary_if_free()
        if vocabulary is None:
            return None
        self._status.set_status(f"Connecting to {settings.url}…")
        return self._jobs.start(
            "model", _connect_server, settings.url, settings.token, vocabulary,
            on_done=lambda predictor, job: self._on_connected(predictor, vocabulary, settings, job.seconds),
            on_error=lambda error, _: self._status.report("Could not connect to the OV-SAM server", error),
            progress=f"OV-SAM: connecting to {settings.url}",
        )  # fmt: skip

    def _remote_settings(self, url: str | None, token: str | None) -> BackendSettings:
        """The remote backend, with ``url`` and ``token`` shown in their fields if given."""
        self._backend.setCurrentText(REMOTE)
        if url is not None:
            self._url.setText(url)
        if token is not None:
            self._token.setText(token)
        return self.settings()

    def _on_connected(
        self, predictor: RemotePredictor, vocabulary: Any, settings: BackendSettings, seconds: float
    ) -> None:
        self._session.set_predictor(predictor, predictor.fingerprint)
        self._session.set_vocabulary(vocabulary)  # the server holds it already (sent by the worker)
        name = str(predictor.server_info["name"])
        self.loaded_name = name
        self._status.set_status(
            f"Model {name} on {predictor.device}, connected in {seconds:.1f} s; {len(vocabulary)} classes. "
            f"Last call: {remote_timing_note(predictor)}."
        )
        self._remote_note.setText(f"In use: {name} on {predictor.device}.")
        self._remember_settings(settings)  # what was connected to, whatever the fields show now
        self._on_loaded(name)


def remote_timing_note(predictor: Any) -> str:
    """The round trip and server times of a remote predictor's last call ("round trip 12 ms (server 8 ms)");
    "" for a local predictor, or before its first call."""
    timing = getattr(predictor, "last_timing", None) if getattr(predictor, "remote", False) else None
    return "" if timing is None else timing.describe()


def local_model_needed(predictor: Any, what: str) -> str:
    """Why ``what`` (e.g. "Fine-tuning") cannot run on ``predictor``'s model: "" for a local model; for a
    server's model, what to do instead."""
    if predictor is None or predictor.device.type != "remote":
        return ""
    return (
        f"{what} needs a local model; the model in use runs on the server at {predictor.device.url}. "
        "Choose Backend: local and load the model (or a checkpoint of it) in napari."
    )


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


def _probe_server(url: str, token: str) -> str:
    """Worker: connect, time one round trip, and say what the server runs."""
    predictor = RemotePredictor(url, token or None, timeout=TEST_TIMEOUT, retries=1)
    try:
        timing = predictor.ping()
        return f"Connected to {predictor.server_info['name']} on {predictor.device}: {timing.describe()}."
    finally:
        predictor.close()


def _connect_server(url: str, token: str, vocabulary: Any) -> RemotePredictor:
    """Worker: connect (checks the token) and have the server encode the vocabulary (the slow part)."""
    predictor = RemotePredictor(url, token or None)
    try:
        predictor.set_vocabulary(vocabulary)
    except BaseException:
        predictor.close()
        raise
    return predictor
