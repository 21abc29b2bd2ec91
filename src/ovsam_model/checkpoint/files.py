"""Reading weight files: PyTorch files through ``weights_only=True``, safetensors files with a checksum.

Two file kinds reach the loader:
- PyTorch files (``torch.save``): the foreign formats (SAM, released OV-SAM) and our older own format. They are
  read with ``torch.load(weights_only=True, map_location="cpu")``; a file holding objects that need code to
  unpickle is refused.
- safetensors files (no pickle at all): our own format from version 2 on. Their string metadata carries JSON
  values and a SHA-256 checksum over the metadata and every tensor's name, dtype, shape and bytes, so a
  flipped byte is detected on load (``read_safetensors``). Generic safetensors state dicts without our
  metadata load too (no checksum to verify).

A file is recognised by its content, never by its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

State = dict[str, torch.Tensor]
PathLike = str | Path

CHECKSUM_KEY = "sha256"  # metadata entry of a checksummed safetensors file
_HEADER_LIMIT = 100 * 1024**2  # safetensors' own bound on the JSON header


def strip_wrapper_prefixes(key: str) -> str:
    """Drop the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) parts of a key."""
    if key.startswith("module."):
        key = key[len("module.") :]
    return key.replace("_orig_mod.", "")


def is_safetensors(path: PathLike) -> bool:
    """True when the file starts like a safetensors file: an 8-byte little-endian header size, then ``{``."""
    try:
        with open(path, "rb") as file:
            head = file.read(9)
            size = os.fstat(file.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (header_size,) = struct.unpack("<Q", head[:8])
    return header_size <= min(size - 8, _HEADER_LIMIT)


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


def checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over the metadata (sorted, without the checksum entry) and every tensor's name, dtype, shape
    and raw bytes, in name order."""
    digest = hashlib.sha256()
    entries = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    digest.update(json.dumps(entries, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # the bytes, without a copy
    return digest.hexdigest()


def write_safetensors(
    path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write ``tensors`` with ``metadata`` and its checksum, atomically (a temporary file renamed into place:
    an interrupted write leaves any old file as it was). Returns the path."""
    path = Path(path)
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    entries = dict(metadata)
    entries[CHECKSUM_KEY] = checksum(plain, entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(plain, temporary, metadata=entries)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_safetensors(path: PathLike) -> tuple[State, dict[str, str]]:
    """(tensors, metadata) of a safetensors file; the checksum is verified where the file has one.

    Raises:
        ValueError: the file is damaged (unreadable header or data, or a checksum that does not match).
    """
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path} is a damaged safetensors file (cannot read it: {error}).") from error
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and checksum(tensors, metadata) != expected:
        raise ValueError(
            f"{path} is damaged: its checksum does not match its content (a changed or corrupted byte). "
            "Use another copy of the file, or write it again."
        )
    return tensors, metadata


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
