"""The widget's remembered backend: a local model or an OV-SAM server (its address, and its token if asked).

The choice lives in one small JSON file, ``backend.json``, in the user's config folder (``platformdirs``' one
for "napari-ovsam", else ``~/.config/napari-ovsam``; the ``NAPARI_OVSAM_CONFIG_DIR`` environment variable
names another folder)::

    {"backend": "remote", "url": "http://gpu-box:8765", "remember_token": false}

The token is written only when the user asks for it (``remember_token``); the file is then readable by its
owner alone (0600). A damaged or unreadable file gives the defaults and a warning: it never stops the widget.
When no token is remembered, the token comes from the ``OVSAM_TOKEN`` environment variable (the one the
server reads too), if set.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ovsam_model.serve import DEFAULT_PORT, TOKEN_ENV

try:  # optional: napari's dependencies bring it; the fallback is the XDG default
    import platformdirs
except ImportError:  # pragma: no cover - platformdirs is missing
    platformdirs = None  # type: ignore[assignment]

CONFIG_DIR_ENV = "NAPARI_OVSAM_CONFIG_DIR"
FILENAME = "backend.json"
LOCAL, REMOTE = "local", "remote"
BACKENDS = (LOCAL, REMOTE)
DEFAULT_URL = f"http://localhost:{DEFAULT_PORT}"  # the server's default port, on this machine


@dataclass(frozen=True)
class BackendSettings:
    """Where the widget's model runs, as the user last chose it."""

    backend: str = LOCAL  # "local" (a model loaded in napari) or "remote" (an OV-SAM server)
    url: str = DEFAULT_URL  # the server's address, "http(s)://host:port"
    token: str = ""  # the server's bearer token ("" for none); written to the file only if remember_token
    remember_token: bool = False  # whether the token is kept in the file between napari runs

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"The backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}.")
        for name, kind in (("url", str), ("token", str), ("remember_token", bool)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"'{name}' must be a {kind.__name__}, not {getattr(self, name)!r}.")


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of the plugin's settings (``NAPARI_OVSAM_CONFIG_DIR`` if set)."""
    env = os.environ if env is None else env
    if env.get(CONFIG_DIR_ENV):
        return Path(env[CONFIG_DIR_ENV]).expanduser()
    if platformdirs is not None:
        return Path(platformdirs.user_config_dir("napari-ovsam", appauthor=False))
    return Path.home() / ".config" / "napari-ovsam"


def settings_path(env: Mapping[str, str] | None = None) -> Path:
    """The settings file: ``backend.json`` in :func:`config_dir`."""
    return config_dir(env) / FILENAME


def load_settings(env: Mapping[str, str] | None = None) -> BackendSettings:
    """The remembered settings (defaults if there are none, or, with a warning, if the file is damaged); the
    token is ``OVSAM_TOKEN``'s when none is remembered."""
    env = os.environ if env is None else env
    path = settings_path(env)
    settings = BackendSettings()
    if path.exists():
        try:
            settings = _parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
            warnings.warn(
                f"The OV-SAM backend settings in {path} cannot be read ({error}); using the defaults "
                "(local model). Choosing a backend again writes a new file.",
                stacklevel=2,
            )
            settings = BackendSettings()
    if not settings.token:
        settings = replace(settings, token=env.get(TOKEN_ENV, ""))
    return settings


def save_settings(settings: BackendSettings, env: Mapping[str, str] | None = None) -> Path:
    """Write ``settings`` (the token only if ``remember_token``), readable by its owner only; returns the
    file. The file is replaced at once (a crash leaves the old one). Raises ``OSError`` if it cannot be
    written."""
    path = settings_path(env)
    data = asdict(settings)
    if not settings.remember_token:
        del data["token"]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".backend-", suffix=".json", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _parse(data: Any) -> BackendSettings:
    """Settings from the file's JSON object (unknown keys are ignored: a newer version may write more)."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    known = {field.name for field in fields(BackendSettings)}
    values = {key: value for key, value in data.items() if key in known}
    if not values.get("remember_token"):
        values.pop("token", None)  # a token the user did not ask to keep is not used
    return BackendSettings(**values)
