"""The HTTP side of ``RemotePredictor``: one connection to an OV-SAM server, with retries, errors and timings.

Connection failures and "busy" answers (503) are retried with backoff; what cannot be retried raises a
``RemoteError`` that says why and what to do (unreachable, token refused, timed out), or, for input the model
refuses (413, 422), a ``ValueError`` with the server's message, which is the local predictor's own. Each call's
round trip and the server's part of it (its ``Server-Timing`` header) are kept in ``last_timing``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


class RemoteError(RuntimeError):
    """The server could not be used: the message says why and what to do."""


@dataclass(frozen=True)
class Timing:
    """One call's round trip, the server's part of it, and of that the time waiting for and running the
    model (queue, compute), in seconds (from the ``Server-Timing`` header)."""

    round_trip: float
    server: float
    queue: float
    compute: float = 0.0

    def describe(self) -> str:
        return f"round trip {self.round_trip * 1000:.0f} ms (server {self.server * 1000:.0f} ms)"


class ServerConnection:
    """Requests to the server at ``url`` (with the bearer ``token``, if any): see the module docstring.

    timeout: seconds per request (a request may ask for another); retries: attempts after a connection failure
    or a busy answer, ``backoff`` seconds apart at first, doubling; transport: an ``httpx`` transport (tests).
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        transport: Any = None,
    ) -> None:
        try:
            import httpx
        except ImportError:  # pragma: no cover - the serve extra is missing
            raise RemoteError("A remote model needs httpx: pip install 'napari-ovsam[serve]'.") from None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RemoteError(f"The server address must start with http:// or https://, got {url!r}.")
        self.url = url.rstrip("/")
        self.token = token or None
        self.retries, self.backoff = int(retries), float(backoff)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._httpx = httpx
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.last_timing: Timing | None = None

    def close(self) -> None:
        self._http.close()

    def post_json(
        self, path: str, body: dict[str, Any], allow: tuple[int, ...] = (), timeout: float | None = None
    ) -> Any:
        """POST ``body`` as JSON: the decoded answer, or the response itself when ``allow`` names statuses
        the caller handles."""
        options = {} if timeout is None else {"timeout": timeout}
        response = self.call("POST", path, json=body, allow=allow, **options)
        return response if allow else response.json()

    def call(self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """One request (``httpx`` keyword arguments), retried after connection failures and busy answers;
        returns the response (a status of ``allow`` included), else raises (module docstring)."""
        httpx = self._httpx
        delay = self.backoff
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as error:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise RemoteError(
                    f"Cannot reach the OV-SAM server at {self.url} ({error}): is `python -m ovsam_model.serve` "
                    "running there, and are the address and port right?"
                ) from None
            except httpx.TimeoutException:
                waited = kwargs.get("timeout", self._http.timeout.read)
                raise RemoteError(
                    f"The OV-SAM server at {self.url} did not answer within {waited:g} s: it may be busy with "
                    "a long request or stalled; try again, or check the server."
                ) from None
            self.last_timing = _timing(response, time.perf_counter() - started)
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(max(delay, _retry_after(response)))
                delay *= 2
                continue
            if response.status_code < 400 or response.status_code in allow:
                return response
            self._raise(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, response: Any) -> None:
        code, message = error_of(response)
        status = response.status_code
        if status == 401:
            advice = "give the token it was started with (its --token-file, or OVSAM_TOKEN)"
            if self.token:
                raise RemoteError(f"The server at {self.url} refused the token: {advice}.")
            raise RemoteError(f"The server at {self.url} needs a token: {advice}.")
        if status in (413, 422):
            raise ValueError(message)
        raise RemoteError(f"The server at {self.url} answered {status} ({code}): {message}")


def error_of(response: Any) -> tuple[str, str]:
    """(code, message) of an error answer (``{"error": ..., "message": ...}``; else its text)."""
    try:
        data = response.json()
        return str(data.get("error", "")), str(data.get("message", data))
    except ValueError:
        return "", response.text[:300]


def _timing(response: Any, seconds: float) -> Timing:
    """The round trip, and the server's queue and compute times from its ``Server-Timing`` header."""
    parts: dict[str, float] = {}
    for item in response.headers.get("server-timing", "").split(","):
        name, _, duration = item.strip().partition(";dur=")
        try:
            parts[name] = float(duration) / 1000
        except ValueError:
            continue
    queue, compute = parts.get("queue", 0.0), parts.get("compute", 0.0)
    return Timing(seconds, parts.get("total", queue + compute), queue, compute)


def _retry_after(response: Any) -> float:
    try:
        return float(response.headers.get("retry-after", 1))
    except ValueError:
        return 1.0
