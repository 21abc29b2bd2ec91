"""Atomic file writes: a unique temporary file beside the target, renamed into place when complete, so that an
interrupted write, or two writers at once, never leave a partial file where the user's file was."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def unique_temporary(path: Path) -> Path:
    """A new, empty file beside ``path`` with a name no other process or thread uses (``.name.<random>.tmp``),
    created with the permissions the user's umask gives (unlike ``tempfile.mkstemp``'s private 0600)."""
    while True:
        candidate = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
