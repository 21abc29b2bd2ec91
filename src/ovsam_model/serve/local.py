"""Run the server in a background thread of this process (notebooks, tests): ``serve_in_thread``; in a process
of its own (benchmarks, tests): ``start_server_process``; wait for one to answer: ``wait_until_serving``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``app`` (``create_app(...)``) with uvicorn in a daemon thread; yields its URL, stops on exit."""
    import uvicorn

    port = free_port(host) if port is None else port
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ovsam-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"The server did not start on {host}:{port} (is the port in use?).")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until_serving(url: str, process: Any = None, timeout: float = 120.0) -> None:
    """Return once ``GET url/v1/health`` answers; a RuntimeError when ``process`` (a ``subprocess.Popen`` of the
    server, optional) ends first, with its stderr, or after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            err = process.stderr.read() if getattr(process, "stderr", None) else ""
            raise RuntimeError(f"The server stopped (exit status {process.returncode}): {err}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"The server at {url} did not answer within {timeout:g} s.")


def start_server_process(
    args: list[str], port: int, *, threads: int = 1, stderr: Any = None
) -> subprocess.Popen:
    """``python -m ovsam_model.serve --port PORT ARGS...`` in a new process (``threads`` torch threads, offline),
    returned once it answers on 127.0.0.1; killed, and a RuntimeError, if it stops or does not answer."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "ovsam_model.serve", "--port", str(port), *args]
    process = subprocess.Popen(command, env=env, stderr=stderr, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
    except BaseException:
        process.kill()
        raise
    return process
