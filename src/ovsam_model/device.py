"""Device resolution, done once and carried as data: ``auto`` = cuda > mps > cpu."""

from __future__ import annotations

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
    device = torch.device(device)
    if device.type not in available_devices():
        raise ValueError(
            f"Device '{device}' is not available on this machine; available: {', '.join(available_devices())}."
        )
    return device
