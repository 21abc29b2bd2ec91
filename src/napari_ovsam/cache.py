"""The plugin's per-slice embedding cache: :mod:`ovsam_model.embedding_cache` (memory LRU plus a folder of
verified entries), which the OV-SAM server shares (``python -m ovsam_model.serve --cache DIR``)."""

from ovsam_model.cache_store import CacheWarning
from ovsam_model.embedding_cache import (
    DEFAULT_MEMORY_BYTES,
    CacheKey,
    EmbeddingCache,
    State,
    content_hash,
    make_key,
    state_nbytes,
)
from ovsam_model.fingerprint import model_fingerprint

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "CacheKey",
    "CacheWarning",
    "EmbeddingCache",
    "State",
    "content_hash",
    "make_key",
    "model_fingerprint",
    "state_nbytes",
]
