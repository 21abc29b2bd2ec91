"""Device resolution, done once and carried as data: ``auto`` = cuda > mps > cpu."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache

import torch


def available_devices() -> list[str]:
    """The devices this machine can run on, best first (always ends with ``cpu``)."""
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> the best available device; anything else is validated and returned."""
    if device is None or str(device) == "auto":
        return torch.device(available_devices()[0])
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Unknown device {device!r}: use auto, {', '.join(available_devices())} (or e.g. cuda:1)."
        ) from None
    if device.type not in available_devices():
        raise ValueError(
            f"Device '{device}' is not available on this machine; available: {', '.join(available_devices())}."
        )
    return device


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Return to the OS the memory that the C allocator kept after a large CPU computation has freed it.

    glibc keeps freed blocks of a finished computation (an image encoding frees a few hundred MB of
    activations) in its arenas, so the process stays that much larger while it goes on to other work, such as
    decoding a thousand prompts. ``malloc_trim(0)`` hands those pages back; elsewhere this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
