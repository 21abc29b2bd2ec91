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
import stat
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import unique_temporary

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
    temporary = unique_temporary(path)
    try:
        mode = stat.S_IMODE(temporary.stat().st_mode)  # what the umask gives; safetensors writes 0600
        save_file(plain, temporary, metadata=entries)
        os.chmod(temporary, mode)
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


# ------------------------------------------------------------------------------------- nested states
# A nested state (dicts with str/int keys, lists, tuples, tensors, numbers, strings, None: an optimiser's
# state_dict, RNG states) is stored as its tensors plus a JSON skeleton in the metadata entry ``state``. In the
# skeleton every JSON object is one of three markers, so decoding is unambiguous.
_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"
_KEY_TYPES = (str, int, float, bool, type(None))


def _flatten(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value
        return {_TENSOR: name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, _KEY_TYPES)]
        if bad:
            raise ValueError(f"{where}: dict key {bad[0]!r} is not a string or number.")
        return {_DICT: [[k, _flatten(v, tensors, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_flatten(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"{where}: a {type(value).__name__} cannot be stored (tensors, numbers, text, lists, dicts)."
    )


def _unflatten(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _TUPLE in value:
        return tuple(_unflatten(v, tensors) for v in value[_TUPLE])
    return {k: _unflatten(v, tensors) for k, v in value[_DICT]}


def write_state(path: PathLike, state: Any, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a nested state (see above) as a checksummed safetensors file, atomically. Returns the path."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_flatten(state, tensors, "state"))
    seen: set[int] = set()
    for name, tensor in tensors.items():  # safetensors refuses tensors that share memory: copy repeats
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if pointer in seen:
            tensors[name] = tensor.clone()
        seen.add(pointer)
    return write_safetensors(path, tensors, {**(metadata or {}), "state": skeleton})


def read_state(path: PathLike) -> tuple[Any, dict[str, str]]:
    """(nested state, other metadata) of a file from ``write_state``; ``ValueError`` if it is damaged or
    holds no state."""
    tensors, metadata = read_safetensors(path)
    if "state" not in metadata:
        raise ValueError(f"{path} holds no nested state (it was not written by write_state).")
    try:
        state = _unflatten(json.loads(metadata.pop("state")), tensors)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} has a damaged state skeleton ({error}).") from None
    return state, metadata
