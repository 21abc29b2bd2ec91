"""Per-slice image-embedding cache: an in-memory LRU, optionally backed by a zarr v3 store on disk.

What is cached is the state dict of ``OVSAMPredictor.get_image_embedding()``: float arrays (``embedding``,
``fpn_0``..``fpn_3``, ``clip_top``) and tuples (``original_size``, ``input_size``); any other key of those two
kinds is kept as well. ``predictor.set_image_embedding(cache.get(key))`` restores it.

Keys are ``(model fingerprint, content hash)`` pairs (:func:`make_key`): :func:`model_fingerprint` names the
model's configuration and weights, :func:`content_hash` the slice's pixels, shape, dtype and the contrast
limits used to map it to the model's input. The same slice of the same file under the same model and contrast
gives the same key in any session, so reopening a stack reuses the embeddings computed before.

Disk layout (zarr v3 directory, format version 2): ``<blake2b(fingerprint)>/<content hash>`` is one entry, a
single 1D array of one chunk holding every state array flattened one after the other (float16, or float32
when some value does not fit float16), with each array's name, shape, dtype and offset and the tuples in its
attributes: reading an entry back is two file reads (its metadata and its chunk), not two per array. The
``complete`` attribute is written last, so an interrupted write leaves an entry that
:meth:`EmbeddingCache.get` does not return and the next :meth:`EmbeddingCache.put` overwrites. Entries in
another layout (the version 1 group per entry) are not read: they are computed again and replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CacheKey = tuple[str, str]
State = dict[str, Any]
FLOAT16_MAX = float(np.finfo(np.float16).max)
DEFAULT_MEMORY_BYTES = 1 << 30
# The zarr v3 metadata of an entry as _write makes it: raw little-endian chunks at "c/<index>".
_RAW_CODEC = {"name": "bytes", "configuration": {"endian": "little"}}
_CHUNK_KEYS = {"name": "default", "configuration": {"separator": "/"}}
_SAMPLE_BYTES = 2**16  # per sampled chunk of a large weight tensor
_SAMPLES = 16


def content_hash(image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> str:
    """blake2b hex digest (32 chars) of an image slice's bytes, shape, dtype and contrast limits.

    Args:
        image: (H, W) or (H, W, C) slice, any dtype (a lazy slice is read once here).
        contrast_limits: (low, high) passed to ``set_image`` with it, or None (the predictor's percentile
            rule).
    """
    array = np.ascontiguousarray(np.asarray(image))
    digest = hashlib.blake2b(digest_size=16)
    limits = "auto" if contrast_limits is None else ",".join(repr(float(v)) for v in contrast_limits)
    digest.update(f"{array.shape}|{array.dtype.str}|{limits}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def make_key(fingerprint: str, image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> CacheKey:
    """The cache key of one slice under one model: ``(fingerprint, content_hash(image, contrast_limits))``."""
    return str(fingerprint), content_hash(image, contrast_limits)


def model_fingerprint(model: Any) -> str:
    """A string naming a model's configuration and weights, for cache keys.

    It hashes ``model.config`` (a dataclass or anything with a stable repr) and every state-dict tensor's
    name, shape and dtype, with the bytes of small tensors in full and evenly spaced 64 KiB samples of large
    ones: two models with different weights (another checkpoint, another random init) get different
    fingerprints, in milliseconds even for a ViT-H-sized model.
    """
    digest = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    else:
        digest.update(repr(config).encode())
    state_dict = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, tensor in state_dict.items():
        raw = _tensor_bytes(tensor)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(_sample(raw))
    name = getattr(config, "name", None) or type(model).__name__
    return f"{name}-{digest.hexdigest()}"


def _tensor_bytes(tensor: Any) -> np.ndarray:
    """The raw bytes of a torch tensor (any dtype, bfloat16 included) or array as a uint8 array."""
    if hasattr(tensor, "detach"):
        import torch

        flat = tensor.detach().cpu().contiguous().reshape(-1)
        return flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
    return np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)


def _sample(raw: np.ndarray) -> bytes:
    if raw.size <= _SAMPLES * _SAMPLE_BYTES:
        return raw.tobytes()
    starts = np.linspace(0, raw.size - _SAMPLE_BYTES, _SAMPLES).astype(np.int64)
    return b"".join(raw[s : s + _SAMPLE_BYTES].tobytes() for s in starts)


def state_nbytes(state: Mapping[str, Any]) -> int:
    """Bytes held by the arrays of a state dict."""
    return int(sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray)))


class EmbeddingCache:
    """In-memory LRU of embedding states, with an optional zarr v3 store shared across sessions.

    Args:
        max_items: states kept in memory (least recently used evicted first).
        store_path: a ``.zarr`` directory (created if missing); None keeps the cache in memory only. Several
            caches (and processes) may open the same store: each finds the entries the others completed.
        max_bytes: memory budget of the in-memory states (default 1 GiB; a state of the RN50x16 model is
            ~100 MB, mostly its stride-4 FPN level); None for no budget beyond ``max_items``.
    """

    def __init__(
        self,
        max_items: int = 16,
        store_path: str | Path | None = None,
        *,
        max_bytes: int | None = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}.")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.store_path = None if store_path is None else Path(store_path)
        self._memory: OrderedDict[CacheKey, State] = OrderedDict()
        self._root = self._open_store() if self.store_path is not None else None

    def _open_store(self) -> Any:
        import zarr

        root = zarr.open_group(str(self.store_path), mode="a", zarr_format=3)
        if "format" not in root.attrs:
            root.attrs.update({"format": "napari-ovsam embedding cache", "version": 2})
        return root

    # ------------------------------------------------------------------------------------------ mapping API

    def get(self, key: CacheKey) -> State | None:
        """The state stored under ``key`` (from memory, else from disk), or None."""
        key = _check_key(key)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        state = self._read(key)
        if state is not None:
            self._remember(key, state)
        return state

    def put(self, key: CacheKey, state: Mapping[str, Any]) -> None:
        """Store a state (arrays and tuples) in memory and, with a store, on disk (once per key)."""
        key = _check_key(key)
        state = _normalise(state)
        self._remember(key, state)
        if self._root is not None and not self._on_disk(key):
            self._write(key, state)

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        return key in self._memory or self._on_disk(key)  # type: ignore[arg-type]

    def keys(self) -> list[CacheKey]:
        """Every key held in memory or complete on disk."""
        found = list(self._memory)
        seen = set(found)
        for key in self._disk_keys():
            if key not in seen:
                found.append(key)
        return found

    def __len__(self) -> int:
        return len(self.keys())

    def clear_memory(self) -> None:
        """Forget the in-memory states (the disk store is kept)."""
        self._memory.clear()

    @property
    def memory_keys(self) -> list[CacheKey]:
        """Keys in memory, least recently used first."""
        return list(self._memory)

    # ------------------------------------------------------------------------------------------ memory

    def _remember(self, key: CacheKey, state: State) -> None:
        self._memory[key] = state
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items or (
            self.max_bytes is not None
            and len(self._memory) > 1
            and sum(state_nbytes(s) for s in self._memory.values()) > self.max_bytes
        ):
            self._memory.popitem(last=False)

    # ------------------------------------------------------------------------------------------ disk

    def _entry_path(self, key: CacheKey) -> str:
        return f"{_fingerprint_dir(key[0])}/{key[1]}"

    def _entry(self, key: CacheKey) -> Any:
        """The entry's packed array, or None (missing, or an entry of another layout)."""
        if self._root is None:
            return None
        try:
            entry = self._root[self._entry_path(key)]
        except KeyError:
            return None
        return entry if _is_array(entry) else None

    def _meta(self, key: CacheKey) -> dict[str, Any] | None:
        """The ``zarr.json`` of a complete array entry, read as a plain file (no zarr call), else None."""
        if self.store_path is None:
            return None
        try:
            meta = json.loads((self.store_path / self._entry_path(key) / "zarr.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        complete = meta.get("node_type") == "array" and meta.get("attributes", {}).get("complete", False)
        return meta if complete else None

    def _on_disk(self, key: CacheKey) -> bool:
        return self._meta(key) is not None

    def _read(self, key: CacheKey) -> State | None:
        meta = self._meta(key)
        if meta is None:
            return None
        attrs = meta["attributes"]
        packed = self._read_plain(key, meta)
        if packed is None:  # stored with another encoding: zarr decodes it
            entry = self._entry(key)
            if entry is None:
                return None
            packed = np.asarray(entry[...])
        state: State = {}
        for name, (dtype, shape, start) in attrs["arrays"].items():
            size = int(np.prod(shape, dtype=np.int64))
            state[name] = packed[start : start + size].reshape(shape).astype(dtype)
        for name, (dtype, values) in attrs.get("small", {}).items():
            state[name] = np.asarray(values, dtype=dtype)
        for name, value in attrs["tuples"].items():
            state[name] = tuple(value)
        state.update(attrs.get("scalars", {}))
        return state

    def _read_plain(self, key: CacheKey, meta: dict[str, Any]) -> np.ndarray | None:
        """The packed values of an entry read straight from its chunk file, or None where the entry is not the
        plain layout ``_write`` makes (then zarr reads it).

        An entry is a zarr v3 array with no compression and one chunk: its ``zarr.json`` and the raw
        little-endian bytes of chunk ``c/0``. Two plain file reads instead of zarr's asynchronous machinery,
        which costs about a millisecond per call, more than an embedding's read itself.
        """
        assert self.store_path is not None
        plain = (
            meta.get("codecs") == [_RAW_CODEC]
            and meta.get("chunk_key_encoding") == _CHUNK_KEYS
            and meta["shape"] == meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
        )
        if not plain:
            return None
        try:
            chunk = self.store_path / self._entry_path(key) / "c" / "0"
            packed = np.fromfile(chunk, dtype=np.dtype(meta["data_type"]).newbyteorder("<"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return packed if packed.size == meta["shape"][0] else None

    def _write(self, key: CacheKey, state: State) -> None:
        folder = self._root.require_group(_fingerprint_dir(key[0]))
        if "fingerprint" not in folder.attrs:
            folder.attrs["fingerprint"] = key[0]
        arrays: dict[str, Any] = {}
        tuples: dict[str, Any] = {}
        scalars: dict[str, Any] = {}
        parts, start = [], 0
        small: dict[str, Any] = {}  # integer and bool arrays (not embeddings): exactly, as JSON
        for name, value in state.items():
            if isinstance(value, np.ndarray) and value.dtype.kind not in "fc":
                small[name] = [value.dtype.str, value.tolist()]
            elif isinstance(value, np.ndarray):
                arrays[name] = [value.dtype.str, list(value.shape), start]
                parts.append(value.reshape(-1))
                start += value.size
            elif isinstance(value, tuple):
                tuples[name] = list(value)
            else:
                scalars[name] = value
        stored = np.dtype(np.float16)
        if any(_storage_dtype(part) != stored for part in parts):
            stored = np.dtype(np.float32)
        packed = (
            np.concatenate([p.astype(stored, copy=False) for p in parts]) if parts else np.zeros(0, stored)
        )
        # overwrite: replaces a half-written entry, or one of another layout
        entry = folder.create_array(
            key[1], shape=packed.shape, dtype=stored, chunks=packed.shape, compressors=None, overwrite=True
        )
        entry[...] = packed
        entry.attrs.update({"arrays": arrays, "small": small, "tuples": tuples, "scalars": scalars})
        entry.attrs["complete"] = True  # last: only now may another reader return this entry

    def _disk_keys(self) -> list[CacheKey]:
        if self._root is None:
            return []
        keys = []
        for _, folder in self._root.groups():
            fingerprint = folder.attrs.get("fingerprint")
            if fingerprint is None:
                continue
            for name, entry in folder.arrays():
                if entry.attrs.get("complete", False):
                    keys.append((str(fingerprint), name))
        return keys


def _is_array(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Array)


def _fingerprint_dir(fingerprint: str) -> str:
    return hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest()


def _check_key(key: Any) -> CacheKey:
    if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise TypeError(
            f"A cache key is a (fingerprint, content_hash) tuple of strings (make_key); got {key!r}."
        )
    return key


def _normalise(state: Mapping[str, Any]) -> State:
    """Arrays as numpy, lists as tuples; anything else must be a JSON scalar."""
    out: State = {}
    for name, value in state.items():
        if isinstance(value, (tuple, list)):
            out[name] = tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in value)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = value
        else:
            out[name] = np.asarray(value)
    return out


def _storage_dtype(array: np.ndarray) -> np.dtype:
    """float16 for float arrays whose values fit it, float32 for the others."""
    if array.dtype.kind != "f":
        return np.dtype(np.float32)
    if array.size and float(np.abs(array).max()) > FLOAT16_MAX:
        return np.dtype(np.float32)
    return np.dtype(np.float16)
