"""Reading weight files: PyTorch files through ``weights_only=True``, safetensors files with a checksum.

Two file kinds reach the loader:
- PyTorch files (``torch.save``): the foreign formats (SAM, released OV-SAM) and our older own format. They are
  read with ``torch.load(weights_only=True, map_location="cpu")``; a file holding objects that need code to
  unpickle is refused.
- safetensors files (no pickle at all): our own format from version 2 on. Their string metadata carries JSON
  values and a SHA-256 checksum over the metadata and every tensor's name, dtype, shape and bytes, so a
  flipped byte is detected on load (``read_safetensors``, from ``ovsam_model.tensorfile``). Generic
  safetensors state dicts without our metadata load too (no checksum to verify).

A file is recognised by its content, never by its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..tensorfile import PathLike, State, checksum, is_safetensors, read_safetensors, write_safetensors

__all__ = [
    "CHECKSUM_KEY",
    "PathLike",
    "State",
    "checksum",
    "is_safetensors",
    "load_torch_file",
    "read_safetensors",
    "state_dict_of",
    "strip_wrapper_prefixes",
    "write_safetensors",
]

CHECKSUM_KEY = "sha256"  # metadata entry of a checksummed own checkpoint (``ovsam_model.tensorfile``)


def strip_wrapper_prefixes(key: str) -> str:
    """Drop the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) parts of a key."""
    if key.startswith("module."):
        key = key[len("module.") :]
    return key.replace("_orig_mod.", "")


def load_torch_file(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")``, memory-mapped where the file allows it.

    Raises:
        ValueError: not a PyTorch file, or one holding objects other than tensors and plain containers
            (refused: unpickling those could run code).
    """
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
        # Files in the legacy (non-zip) serialisation cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Cannot read {path} as a weights file with weights_only=True (it is not a PyTorch file, or it "
            f"holds pickled objects that could run code, which are refused): {error}"
        ) from error


def state_dict_of(data: Any, where: str) -> State:
    """The flat tensor dict of a loaded file: unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips
    wrapper prefixes; anything but tensors is an error."""
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if isinstance(data, torch.Tensor):
        raise ValueError(
            f"{where} holds one tensor of shape {list(data.shape)}, not a state dict of weights (like the "
            "official demo's class-embedding file): it is not a checkpoint."
        )
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} holds a {type(data).__name__}, not a state dict of weights.")
    others = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"{where} is not a state dict: entries {others[:8]} are not tensors.")
    return {strip_wrapper_prefixes(str(k)): v for k, v in data.items()}
