"""Per-slice image-embedding cache (the plugin's, and the OV-SAM server's): an in-memory LRU, optionally
backed by a folder of safetensors files.

What is cached is the state dict of ``OVSAMPredictor.get_image_embedding()``: float arrays (``embedding``,
``fpn_0``..``fpn_3``, ``clip_top``) and tuples (``original_size``, ``input_size``); other arrays (kept exactly),
tuples and JSON scalars are kept as well. ``predictor.set_image_embedding(cache.get(key))`` restores it. The
tiles of large images are entries too: the state of ``predictor.get_tile_embedding(index)`` (the same arrays,
``input_size`` and the tile's ``window``), restored by ``predictor.set_tile_embedding(index, state)``.

Keys are ``(model fingerprint, content hash)`` pairs (:func:`make_key`): :func:`model_fingerprint` names the
model's configuration and weights, :func:`content_hash` the slice's pixels, shape, dtype and the contrast
limits used to map it to the model's input. A tile's content hash is ``predictor.tile_key(index)`` (its
geometry, scale, contrast limits and pixels; see the plugin's ``napari_ovsam.tiles``). The same slice (or tile) of the
same file under the same model and contrast gives the same key in any session, so reopening a stack or a large
image reuses the embeddings computed before.

Disk layout (format version 3; :mod:`ovsam_model.cache_store` reads and writes it): a folder marked as a
cache by ``napari-ovsam-cache.json``, one sub-folder per model (``<blake2b(fingerprint)>/``, its fingerprint
in ``fingerprint.txt``) and one safetensors file per entry (``<content hash>.safetensors``: float arrays as
float16, or float32 where a value does not fit; JSON metadata with a CRC-32 checksum over the metadata and
every array). Entries are written under a unique temporary name and renamed into place, so several processes
(two napari windows, precompute while annotating) can share a folder: a reader sees a whole entry or none.
Every entry read is verified (size, checksum, key); a bad one is a miss with a warning, computed again and
rewritten. A folder that cannot be written still serves its entries (one warning; new ones stay in memory).
Entries of the older zarr layout (version 2) are misses.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache_store import CacheStore, CacheWarning
from .fingerprint import model_fingerprint

CacheKey = tuple[str, str]
State = dict[str, Any]
DEFAULT_MEMORY_BYTES = 1 << 30


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
    digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def make_key(fingerprint: str, image: np.ndarray, contrast_limits: Sequence[float] | None = None) -> CacheKey:
    """The cache key of one slice under one model: ``(fingerprint, content_hash(image, contrast_limits))``."""
    return str(fingerprint), content_hash(image, contrast_limits)


def state_nbytes(state: Mapping[str, Any]) -> int:
    """Bytes held by the arrays of a state dict."""
    return int(sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray)))


class EmbeddingCache:
    """In-memory LRU of embedding states, with an optional folder of verified entries shared across sessions.

    Args:
        max_items: states kept in memory (least recently used evicted first).
        store_path: the cache folder (created if missing; an existing folder must be empty or already a cache,
            so a user's own data is never written into); None keeps the cache in memory only. Several caches
            and processes may share one folder.
        max_bytes: memory budget of the in-memory states (default 1 GiB; a state of the RN50x16 model is
            ~100 MB, mostly its stride-4 FPN level); None for no budget beyond ``max_items``.

    Raises:
        ValueError: ``store_path`` is a file, or a folder that holds other things than a cache.
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
        self._store = CacheStore(self.store_path) if self.store_path is not None else None

    @property
    def writable(self) -> bool:
        """Whether new entries still go to disk (False: memory only, or the folder refused a write)."""
        return self._store is not None and self._store.writable

    # ------------------------------------------------------------------------------------------ mapping API

    def get(self, key: CacheKey) -> State | None:
        """The state stored under ``key`` (from memory, else verified from disk), or None.

        A damaged entry on disk (truncated, a changed byte, another key's file) is a miss, with a
        :class:`CacheWarning`; the next :meth:`put` of that key rewrites it.
        """
        key = _check_key(key)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        state = self._store.read(key) if self._store is not None else None
        if state is not None:
            self._remember(key, state)
        return state

    def peek(self, key: CacheKey) -> State | None:
        """The state under ``key`` if it is in memory, else None: never reads a file (for the GUI thread)."""
        key = _check_key(key)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        return None

    def put(self, key: CacheKey, state: Mapping[str, Any]) -> None:
        """Store a state (arrays, tuples, JSON scalars) in memory and, with a folder, on disk (once per key:
        a verified entry already there is kept)."""
        key = _check_key(key)
        state = _normalise(state)
        self._remember(key, state)
        if self._store is not None:
            self._store.write(key, state)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is in memory or on disk as an entry that verifies (a damaged one is not)."""
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            return False
        if key in self._memory:
            return True
        return self._store is not None and self._store.verified(key)  # type: ignore[arg-type]

    def keys(self) -> list[CacheKey]:
        """Every key held in memory or with an entry file on disk (``in`` and :meth:`get` verify them)."""
        found = list(self._memory)
        seen = set(found)
        for key in self._store.keys() if self._store is not None else []:
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


__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "CacheKey",
    "CacheWarning",
    "EmbeddingCache",
    "content_hash",
    "make_key",
    "model_fingerprint",
    "state_nbytes",
]
