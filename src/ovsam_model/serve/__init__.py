"""An OV-SAM server for many annotators: ``python -m ovsam_model.serve`` (see ``serve.cli``), its HTTP API
(``serve.app``), the model thread that batches their prompts (``serve.engine``) and the wire format
(``serve.wire``). The client is ``ovsam_model.remote.RemotePredictor``. Needs the ``serve`` extra
(``pip install napari-ovsam[serve]``: FastAPI, uvicorn, httpx); this module itself imports none of them."""

from __future__ import annotations

import ipaddress

DEFAULT_PORT = 8765
TOKEN_ENV = "OVSAM_TOKEN"  # the environment variable a server reads its token from (and a client's default)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
