"""Checksummed safetensors files: how this package stores tensors it writes (checkpoints, caches, examples).

No pickle at all: tensors in safetensors layout, everything else as JSON text in the file's string metadata,
plus a checksum over the metadata (sorted, without the checksum entry) and every tensor's name, dtype, shape
and raw bytes, in name order. A changed or truncated byte is detected on read. Two digests: ``sha256`` (files
that travel: checkpoints, examples) and ``crc32`` (caches read on every access: it runs at memory speed and
catches any accidental change). Writes are atomic (a unique temporary file renamed into place), so concurrent
writers never leave a mixed file: the last rename wins whole, and readers see an old or a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

State = dict[str, torch.Tensor]
PathLike = str | Path

CHECKSUM_KEYS = ("sha256", "crc32")  # the metadata entry names the digest
_HEADER_LIMIT = 100 * 1024**2  # safetensors' own bound on the JSON header


class _Digest:
    """sha256 or crc32 behind one ``update`` / ``hexdigest`` interface."""

    def __init__(self, algorithm: str) -> None:
        if algorithm not in CHECKSUM_KEYS:
            raise ValueError(f"Unknown checksum {algorithm!r}; use one of {CHECKSUM_KEYS}.")
        self._sha = hashlib.sha256() if algorithm == "sha256" else None
        self._crc = 0

    def update(self, data: bytes | memoryview) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        return self._sha.hexdigest() if self._sha is not None else f"{self._crc:08x}"


def _raw(tensor: torch.Tensor | np.ndarray) -> tuple[str, list[int], memoryview]:
    """(dtype name, shape, bytes without a copy) of a contiguous CPU tensor or array."""
    if isinstance(tensor, np.ndarray):
        array = np.ascontiguousarray(tensor)
        return array.dtype.str, list(array.shape), array.reshape(-1).view(np.uint8).data
    flat = tensor.detach().cpu().contiguous()
    return str(flat.dtype), list(flat.shape), flat.reshape(-1).view(torch.uint8).numpy().data


def checksum(
    tensors: Mapping[str, torch.Tensor] | Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    algorithm: str = "sha256",
) -> str:
    """The digest (hex) over ``metadata`` (sorted, without any checksum entry) and every tensor's name,
    dtype, shape and bytes, in name order. Tensors may be torch tensors or numpy arrays."""
    digest = _Digest(algorithm)
    digest.update(
        json.dumps({k: v for k, v in metadata.items() if k not in CHECKSUM_KEYS}, sort_keys=True).encode()
    )
    for name in sorted(tensors):
        dtype, shape, data = _raw(tensors[name])
        digest.update(json.dumps([name, dtype, shape]).encode())
        digest.update(data)
    return digest.hexdigest()


def verify(
    tensors: Mapping[str, torch.Tensor] | Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> bool | None:
    """True or False where the metadata carries a checksum (and it matches), None where it carries none."""
    for algorithm in CHECKSUM_KEYS:
        if algorithm in metadata:
            return checksum(tensors, metadata, algorithm) == metadata[algorithm]
    return None


def write_safetensors(
    path: PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    algorithm: str = "sha256",
) -> Path:
    """Write ``tensors`` with ``metadata`` and its checksum, atomically (a unique temporary file in the same
    folder renamed into place: an interrupted write leaves any old file as it was). Returns the path."""
    path = Path(path)
    plain = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    entries = {k: v for k, v in metadata.items() if k not in CHECKSUM_KEYS}
    entries[algorithm] = checksum(plain, entries, algorithm)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
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
    if verify(tensors, metadata) is False:
        raise ValueError(
            f"{path} is damaged: its checksum does not match its content (a changed or corrupted byte). "
            "Use another copy of the file, or write it again."
        )
    return tensors, metadata


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
