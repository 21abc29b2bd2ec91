"""The widget's remote backend in a real napari viewer (Xvfb), against a real OV-SAM server on the tiny model
(random weights, CPU, a thread of this process): the backend rows, Test connection, Connect, a prompt decoded
by the server, and the settings remembered between widgets."""

from __future__ import annotations

import json
import re
import socket
import stat
import sys
import threading
import time

import numpy as np
import pytest
from widget_helpers import idle

from napari_ovsam import _layers
from napari_ovsam._qt.model_panel import local_model_needed, remote_timing_note
from napari_ovsam._qt.widget import OVSAMWidget
from napari_ovsam._sample_data import sample_2d
from napari_ovsam.backend_settings import CONFIG_DIR_ENV, LOCAL, REMOTE, TOKEN_ENV, settings_path
from napari_ovsam.prompts import box_to_shape_vertices
from ovsam_model.remote import RemotePredictor

pytestmark = pytest.mark.gui

TOKEN = "s3cret"
TIMING = re.compile(r"round trip \d+ ms \(server \d+ ms\)")


@pytest.fixture(scope="module")
def server_url(tiny_model):
    """The address of an OV-SAM server on the tiny model that wants the token ``TOKEN``."""
    uvicorn = pytest.importorskip("uvicorn")
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.serve.app import ServerSettings, create_app
    from ovsam_model.serve.engine import Engine

    engine = Engine(OVSAMPredictor(tiny_model))
    app = create_app(engine, ServerSettings(token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(5)
        engine.close()


@pytest.fixture(autouse=True)
def config(tmp_path, monkeypatch):
    """The widget's settings in a fresh folder, and no token in the environment (before the widget exists)."""
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return tmp_path / "config"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(qtbot, widget, lane):
    qtbot.waitUntil(lambda: not widget._jobs.busy(lane), timeout=30000)


def _shown(widgets):
    return [not widget.isHidden() for widget in widgets]


def test_the_backend_choice_shows_its_rows(widget):
    panel = widget._model_panel
    assert panel.backend == LOCAL  # nothing remembered yet
    assert all(_shown(panel._local_rows)) and not any(_shown(panel._remote_rows))
    assert panel._checkpoint_row.isHidden()
    panel._backend.setCurrentText(REMOTE)  # as the user picks it
    assert all(_shown(panel._remote_rows)) and not any(_shown(panel._local_rows))
    assert panel._token.echoMode() == panel._token.EchoMode.Password
    panel._model.setCurrentText("checkpoint file…")
    assert panel._checkpoint_row.isHidden()  # a local row, even when its model is chosen
    panel.set_backend(LOCAL)
    assert all(_shown(panel._local_rows)) and not panel._checkpoint_row.isHidden()
    assert not any(_shown(panel._remote_rows))
    with pytest.raises(ValueError, match="one of local, remote"):
        panel.set_backend("cloud")


def test_test_connection_reports_a_refused_token_an_unreachable_server_and_success(widget, qtbot, server_url):
    panel = widget._model_panel
    assert panel.test_connection(server_url, "wrong").lane == "connection"
    _wait(qtbot, widget, "connection")
    assert widget.status.startswith("Connection test failed") and "refused the token" in widget.status
    panel.test_connection(f"http://127.0.0.1:{_free_port()}", TOKEN)  # nothing listens there
    _wait(qtbot, widget, "connection")
    assert "Cannot reach the OV-SAM server" in widget.status
    panel.test_connection(server_url, TOKEN)
    _wait(qtbot, widget, "connection")
    assert widget.status.startswith(f"Connected to tiny on cpu at {server_url}: round trip"), widget.status
    assert TIMING.search(widget.status)
    assert widget.session.predictor is None  # a test only: nothing is loaded
    assert not settings_path().exists()  # nor remembered


def test_connect_puts_the_servers_model_in_the_session_and_prompts_run_there(
    viewer, widget, qtbot, server_url, monkeypatch
):
    said = []  # every status line (the embedding's follows the connection's at once)
    set_status = widget._status_panel.set_status
    monkeypatch.setattr(
        widget._status_panel, "set_status", lambda text: said.append(text) or set_status(text)
    )
    data, attributes, _ = sample_2d()[0]
    viewer.add_image(data, **attributes)
    widget.set_vocabulary("cell\nblob, smudge\nring\n")
    panel = widget._model_panel
    panel._backend.setCurrentText(REMOTE)
    panel._url.setText(server_url)
    panel._token.setText("wrong")
    panel._connect.click()
    idle(qtbot, widget)
    assert widget.session.predictor is None and "refused the token" in widget.status
    assert not settings_path().exists()  # a failed connection is not remembered

    panel._token.setText(TOKEN)
    panel._connect.click()
    idle(qtbot, widget)
    predictor = widget.session.predictor
    assert isinstance(predictor, RemotePredictor), widget.status
    assert widget.session.fingerprint == predictor.fingerprint and panel.loaded_name == "tiny"
    assert widget.session.vocabulary.names == ["cell", "blob", "ring"]
    connected = [text for text in said if text.startswith(f"Model tiny on cpu at {server_url}, connected in")]
    assert len(connected) == 1, said
    assert "; 3 classes." in connected[0] and TIMING.search(connected[0])
    assert panel._remote_note.text() == f"In use: tiny on cpu at {server_url}."  # after the status moves on
    assert widget.session.embedding_ready(())  # embedded on the server as soon as the model was there

    (r0, c0), (r1, c1) = (150, 30), (220, 100)
    viewer.layers[_layers.BOXES].add_rectangles(box_to_shape_vertices((c0, r0, c1, r1), ()))
    results = widget.segment()
    assert len(results) == 1 and results.masks.shape == (1, 256, 256) and results.masks.any()
    assert set(results.class_names) <= {"cell", "blob", "ring", "unknown"}
    assert TIMING.fullmatch(remote_timing_note(predictor))
    widget.set_vocabulary("nucleus\nrod\n")  # the server encodes the new classes
    idle(qtbot, widget)
    assert widget.session.vocabulary.names == ["nucleus", "rod"], widget.status
    assert set(widget.segment().class_names) <= {"nucleus", "rod", "unknown"}
    assert local_model_needed(predictor, "Fine-tuning").startswith(
        f"Fine-tuning needs a local model; the model in use runs on the server at {server_url}."
    )


def test_the_backend_is_remembered_and_the_token_only_when_asked(viewer, widget, qtbot, server_url, config):
    panel = widget._model_panel
    panel.connect_remote(server_url, TOKEN)
    idle(qtbot, widget)
    assert isinstance(widget.session.predictor, RemotePredictor), widget.status
    saved = json.loads(settings_path().read_text())
    assert saved == {"backend": REMOTE, "url": server_url, "remember_token": False}
    assert TOKEN not in settings_path().read_text()

    again = _second_widget(viewer)
    assert again.backend == REMOTE and again._url.text() == server_url and again._token.text() == ""
    assert not again._remember.isChecked() and all(_shown(again._remote_rows))

    panel._remember.setChecked(True)
    panel.connect_remote()
    idle(qtbot, widget)
    assert json.loads(settings_path().read_text())["token"] == TOKEN
    if sys.platform != "win32":
        assert stat.S_IMODE(settings_path().stat().st_mode) == 0o600
    assert _second_widget(viewer)._token.text() == TOKEN
    panel._remember.setChecked(False)  # forgets the token at once
    assert json.loads(settings_path().read_text()) == saved and TOKEN not in settings_path().read_text()
    assert panel._token.text() == TOKEN  # still used in this run

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    assert panel.load_model("tiny", "cpu").lane == "model"  # back to a local model: remembered too
    idle(qtbot, widget)
    assert panel.backend == LOCAL and local_model_needed(widget.session.predictor, "Fine-tuning") == ""
    assert remote_timing_note(widget.session.predictor) == ""
    assert json.loads(settings_path().read_text())["backend"] == LOCAL
    assert _second_widget(viewer).backend == LOCAL


def _second_widget(viewer):
    """The model panel of another widget made now (as in the next napari run), closed at once."""
    other = OVSAMWidget(viewer)
    try:
        return other._model_panel
    finally:
        other.close()


def test_a_damaged_settings_file_leaves_the_widget_local(viewer, config):
    config.mkdir()
    (config / "backend.json").write_text("{oops")
    with pytest.warns(UserWarning, match="cannot be read"):
        panel = _second_widget(viewer)
    assert panel.backend == LOCAL and np.all(_shown(panel._local_rows))
