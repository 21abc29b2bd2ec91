"""``python -m ovsam_model.serve``: its arguments (a token off localhost, token files, ranges), and a real
server process killed mid-session, started again, and a client that carries on; ids that are not content
hashes never reach the disk cache."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from ovsam_model.checkpoint.own import save_checkpoint  # noqa: E402
from ovsam_model.predictor import OVSAMPredictor  # noqa: E402
from ovsam_model.remote import RemotePredictor  # noqa: E402
from ovsam_model.serve.app import create_app  # noqa: E402
from ovsam_model.serve.cli import parse_args  # noqa: E402
from ovsam_model.serve.engine import Engine  # noqa: E402
from ovsam_model.serve.local import free_port, serve_in_thread, start_server_process  # noqa: E402

CLASSES = ["nucleus", "rod, bacterium", "ring"]


def refused(argv: list[str], capsys, environ=None) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_args(argv, environ=environ or {})
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_other_machines_need_a_token(tmp_path: Path, capsys) -> None:
    assert "give a token" in refused(["--host", "0.0.0.0"], capsys)
    token = tmp_path / "token"
    token.write_text("abc123\n")
    assert (
        parse_args(["--host", "0.0.0.0", "--token-file", str(token)], environ={}).settings.token == "abc123"
    )
    assert parse_args(["--host", "0.0.0.0"], environ={"OVSAM_TOKEN": "xyz"}).settings.token == "xyz"
    assert (
        parse_args([], environ={}).settings.token is None and parse_args([], environ={}).host == "127.0.0.1"
    )
    token.write_text("\n")
    assert "is empty" in refused(["--token-file", str(token)], capsys)
    assert "cannot read the token file" in refused(["--token-file", str(tmp_path / "missing")], capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port must be <= 65535"),
        (["--max-queue", "0"], "--max-queue must be >= 1"),
        (["--memory-gb", "0"], "--memory-gb must be > 0"),
        (["--timeout", "-1"], "--timeout must be > 0"),
        (["--tiling", "sometimes"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str], message: str, capsys) -> None:
    err = refused(argv, capsys)
    assert message in err and len(err.strip().splitlines()) == 1


def test_ids_that_are_not_content_hashes_are_unknown(tiny_model, tmp_path: Path) -> None:
    engine = Engine(OVSAMPredictor(tiny_model), cache_dir=str(tmp_path / "cache"))
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    try:
        with serve_in_thread(create_app(engine)) as url:
            for key in ("..", "..%2F..%2Foutside", "A" * 32, "0" * 31):
                answer = httpx.get(f"{url}/v1/images/{key}")
                assert answer.status_code == 404, (key, answer.text)
    finally:
        engine.close()


def start(checkpoint: Path, port: int, token_file: Path) -> subprocess.Popen:
    args = ["--model", str(checkpoint), "--device", "cpu", "--token-file", str(token_file)]
    return start_server_process(args, port, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_killed_server_is_started_again_and_the_client_carries_on(
    tiny_model, image16, tmp_path: Path
) -> None:
    checkpoint = save_checkpoint(tiny_model, tmp_path / "tiny.safetensors")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    port = free_port()
    local = OVSAMPredictor(tiny_model)
    local.set_vocabulary(CLASSES)
    local.set_image(image16)
    expected = local.predict(boxes=[40, 30, 80, 60])
    server = start(checkpoint, port, token_file)
    try:
        client = RemotePredictor(f"http://127.0.0.1:{port}", token="s3cret", model="tiny", backoff=0.1)
        client.set_vocabulary(CLASSES)
        client.set_image(image16)
        got = client.predict(boxes=[40, 30, 80, 60])
        np.testing.assert_array_equal(got.masks, expected.masks)
        server.send_signal(signal.SIGKILL)  # no goodbye: everything the server held is gone
        server.wait(10)
        server = start(checkpoint, port, token_file)
        got = client.predict(boxes=[40, 30, 80, 60])  # the client sends the vocabulary and the image again
        np.testing.assert_array_equal(got.masks, expected.masks)
        assert got.class_names == expected.class_names
    finally:
        server.terminate()
        # uvicorn shuts down cleanly on SIGTERM, then ends the process by the signal it received
        assert server.wait(30) in (0, -signal.SIGTERM)
