"""The disk side of the embedding cache: a marked folder of verified safetensors entries (format version 3).

Layout::

    <folder>/napari-ovsam-cache.json               marks the folder as a cache (format, version)
    <folder>/<blake2b(fingerprint)>/fingerprint.txt the model fingerprint of this sub-folder
    <folder>/<blake2b(fingerprint)>/<content hash>.safetensors   one entry

An entry holds the state's arrays (floats as float16, or float32 where a value does not fit float16; other
arrays exactly) and string metadata: ``format``, ``version``, the key (``fingerprint``, ``content_hash``),
JSON ``dtypes`` (each array's own dtype), ``tuples`` and ``scalars``, and ``crc32``, a checksum over the other
metadata and every array's name, dtype, shape and bytes. No pickle anywhere.

Writes go to a unique temporary file in the entry's folder, then are linked into place atomically: when two
processes write one key, the first complete entry stays and the other discards its copy (a damaged entry is
replaced). Reads verify the size (safetensors' header must describe the whole file), the checksum and the
key; a bad entry is a miss with a :class:`CacheWarning` (once per damaged file).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from .atomic import unique_temporary
from .tensorfile import checksum as tensor_checksum

MARKER = "napari-ovsam-cache.json"
CACHE_FORMAT = "napari-ovsam embedding cache"
ENTRY_FORMAT = "napari-ovsam embedding"
VERSION = 3
ENTRY_SUFFIX = ".safetensors"
FINGERPRINT_FILE = "fingerprint.txt"
CHECKSUM_KEY = "crc32"
FLOAT16_MAX = float(np.finfo(np.float16).max)

Key = tuple[str, str]
Signature = tuple[int, int, int]  # (inode, size, mtime ns) of an entry file that verified


class CacheWarning(UserWarning):
    """An embedding-cache entry was damaged (it is computed again), or the cache folder cannot be written."""


class CacheStore:
    """Entries of one cache folder: :meth:`read` (verified), :meth:`verified`, :meth:`write`, :meth:`keys`.

    Args:
        root: the folder; created and marked if missing or empty. A folder that is neither empty nor marked
            (a user's zarr image, a home folder) is refused, except an older napari-ovsam cache (zarr layout),
            which is marked and whose old entries are misses.

    Raises:
        ValueError: ``root`` is a file, a folder of something else, or a cache of a newer format.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.writable = True
        self._verified: dict[Path, Signature] = {}
        self._warned: set[tuple[Path, Signature | None]] = set()
        self._open()

    # ------------------------------------------------------------------------------------------ the folder

    def _open(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} is a file; the embedding cache needs a folder (a new or empty one).")
        marker = root / MARKER
        if marker.is_file():
            self._check_marker(marker)
            return
        try:
            names = [p.name for p in root.iterdir()] if root.is_dir() else []
        except OSError as error:
            raise ValueError(
                f"{root} cannot be read ({error.strerror or error}); choose another folder."
            ) from None
        others = [name for name in names if not name.startswith(f".{MARKER}.")]  # another process's marker
        if others and not _is_zarr_cache(root):
            raise ValueError(
                f"{root} is not an embedding cache (it has no {MARKER}) and is not empty (it holds "
                f"{', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''}): choose a new or empty "
                "folder, so that nothing of yours is written into."
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            _atomic_write(marker, json.dumps({"format": CACHE_FORMAT, "version": VERSION}).encode())
        except OSError as error:
            self._refuse_writes(error)

    def _check_marker(self, marker: Path) -> None:
        try:
            info = json.loads(marker.read_text("utf-8"))
            version = int(info.get("version", 0)) if info.get("format") == CACHE_FORMAT else None
        except (OSError, ValueError, TypeError, AttributeError):
            version = VERSION  # unreadable marker: still our folder; entries verify themselves
        if version is None or version > VERSION:
            raise ValueError(
                f"{self.root} holds a cache of another format or a newer napari-ovsam ({marker.name}); "
                "update napari-ovsam or choose another folder."
            )

    def _refuse_writes(self, error: OSError) -> None:
        if self.writable:
            warnings.warn(
                f"The embedding cache {self.root} cannot be written ({error.strerror or error}): embeddings "
                "computed now stay in memory only; entries already there are still used.",
                CacheWarning,
                stacklevel=4,
            )
        self.writable = False

    def entry_path(self, key: Key) -> Path:
        return self.root / _folder_name(key[0]) / f"{key[1]}{ENTRY_SUFFIX}"

    def keys(self) -> list[Key]:
        """Keys with an entry file (not verified: :meth:`read` and :meth:`verified` do that)."""
        found = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            try:
                fingerprint = (folder / FINGERPRINT_FILE).read_text("utf-8")
            except OSError:
                continue
            for entry in sorted(folder.glob(f"[!.]*{ENTRY_SUFFIX}")):
                found.append((fingerprint, entry.name[: -len(ENTRY_SUFFIX)]))
        return found

    # ------------------------------------------------------------------------------------------ entries

    def read(self, key: Key) -> dict[str, Any] | None:
        """The verified state of ``key``, or None (missing, or damaged: then with a warning)."""
        path = self.entry_path(key)
        signature = _signature(path)
        if signature is None:
            return None
        try:
            state = decode_entry(path.read_bytes(), key)
        except (OSError, ValueError) as error:
            self._warn_damaged(path, signature, error)
            return None
        self._verified[path] = signature
        return state

    def verified(self, key: Key) -> bool:
        """Whether ``key`` has an entry that verifies (remembered per file state, so checked once)."""
        path = self.entry_path(key)
        signature = _signature(path)
        if signature is None:
            return False
        return self._verified.get(path) == signature or self.read(key) is not None

    def write(self, key: Key, state: Mapping[str, Any]) -> None:
        """Store ``state`` under ``key`` unless a verified entry is there; a damaged one is replaced."""
        if not self.writable:
            return
        path = self.entry_path(key)
        if self._quietly_valid(path, key):
            return
        try:
            self._place(path, key, encode_entry(key, state))
        except OSError as error:
            self._refuse_writes(error)

    def _place(self, path: Path, key: Key, data: bytes) -> None:
        folder = path.parent
        folder.mkdir(exist_ok=True)
        if not (folder / FINGERPRINT_FILE).is_file():
            _atomic_write(folder / FINGERPRINT_FILE, key[0].encode("utf-8"))
        temporary = unique_temporary(path)  # made empty, exclusively: no other writer has this name
        try:
            temporary.write_bytes(data)
            try:
                os.link(temporary, path)  # atomic, and never over another writer's complete entry
            except FileExistsError:
                if not self._quietly_valid(path, key):  # a damaged entry: ours replaces it
                    os.replace(temporary, path)
            except OSError:  # a file system without hard links
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        signature = _signature(path)
        if signature is not None:
            self._verified[path] = signature

    def _quietly_valid(self, path: Path, key: Key) -> bool:
        signature = _signature(path)
        if signature is None:
            return False
        if self._verified.get(path) == signature:
            return True
        try:
            decode_entry(path.read_bytes(), key)
        except (OSError, ValueError):
            return False
        self._verified[path] = signature
        return True

    def _warn_damaged(self, path: Path, signature: Signature, error: Exception) -> None:
        if (path, signature) in self._warned:
            return
        self._warned.add((path, signature))
        again = "it is computed again and rewritten" if self.writable else "it is computed again"
        warnings.warn(
            f"Embedding cache entry {path} is damaged ({error}); {again}.", CacheWarning, stacklevel=4
        )


# ---------------------------------------------------------------------------------------------- format


def encode_entry(key: Key, state: Mapping[str, Any]) -> bytes:
    """The safetensors bytes of one entry (see the module docstring)."""
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    tuples: dict[str, list] = {}
    scalars: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise ValueError(f"Cannot cache {name!r}: arrays of dtype {value.dtype} are not supported.")
            dtypes[name] = value.dtype.str
            stored = _storage_dtype(value)
            tensors[name] = np.ascontiguousarray(value.astype(stored.newbyteorder("<"), copy=False))
        elif isinstance(value, tuple):
            tuples[name] = list(value)
        else:
            scalars[name] = value
    metadata = {
        "format": ENTRY_FORMAT,
        "version": str(VERSION),
        "fingerprint": key[0],
        "content_hash": key[1],
        "dtypes": json.dumps(dtypes),
        "tuples": json.dumps(tuples),
        "scalars": json.dumps(scalars),
    }
    metadata[CHECKSUM_KEY] = checksum(tensors, metadata)
    return save_safetensors(tensors, metadata=metadata)


def decode_entry(data: bytes, key: Key) -> dict[str, Any]:
    """The state in an entry's bytes, after verifying them; ``ValueError`` says what is wrong."""
    metadata = _metadata(data)
    if metadata.get("format") != ENTRY_FORMAT or metadata.get("version") != str(VERSION):
        raise ValueError("not an entry of this cache format")
    if (metadata.get("fingerprint"), metadata.get("content_hash")) != tuple(key):
        raise ValueError("it holds the entry of another key")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError) as error:
        raise ValueError(f"its data does not match its header: {error}") from None
    if checksum(tensors, metadata) != metadata.get(CHECKSUM_KEY):
        raise ValueError("checksum mismatch: a changed or corrupted byte")
    try:
        dtypes = json.loads(metadata["dtypes"])
        state: dict[str, Any] = {name: tensors[name].astype(dtypes[name]) for name in tensors}
        state.update({name: tuple(value) for name, value in json.loads(metadata["tuples"]).items()})
        state.update(json.loads(metadata["scalars"]))
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"its metadata is incomplete ({error})") from None
    return state


def checksum(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """The CRC-32 of ``ovsam_model.tensorfile`` over the metadata and every array (an entry is verified on
    every read: CRC-32 runs at memory speed and catches any changed byte)."""
    return tensor_checksum(tensors, metadata, CHECKSUM_KEY)


def _metadata(data: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of safetensors bytes; ``ValueError`` for a truncated or unreadable header."""
    if len(data) < 8:
        raise ValueError(f"truncated to {len(data)} bytes")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError(f"truncated: its header needs {size} bytes, {len(data) - 8} are left")
    try:
        header = json.loads(data[8 : 8 + size])
        metadata = header["__metadata__"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("unreadable header") from None
    if not isinstance(metadata, dict):
        raise ValueError("unreadable header")
    return metadata


def _storage_dtype(array: np.ndarray) -> np.dtype:
    """float16 for float arrays whose values fit it, float32 for other floats; other arrays as they are."""
    if array.dtype.kind != "f":
        return array.dtype
    finite = array[np.isfinite(array)] if array.size else array
    if array.dtype.itemsize > 2 and finite.size and float(np.abs(finite).max()) > FLOAT16_MAX:
        return np.dtype(np.float32)
    return np.dtype(np.float16)


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _folder_name(fingerprint: str) -> str:
    return hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()


def _is_zarr_cache(root: Path) -> bool:
    """An older napari-ovsam cache: a zarr group whose attributes name this cache format."""
    try:
        meta = json.loads((root / "zarr.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("attributes") or {}).get("format") == CACHE_FORMAT


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = unique_temporary(path)
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
