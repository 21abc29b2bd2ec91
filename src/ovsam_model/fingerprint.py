"""``model_fingerprint``: a string naming a model's configuration and weights.

It keys what is only valid for one model: the plugin's embedding cache and the exemplar files (region
embeddings of one model mean nothing to another).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import torch

_SAMPLE_BYTES = 2**16  # per sampled chunk of a large weight tensor
_SAMPLES = 16


def model_fingerprint(model: Any) -> str:
    """A string naming a model's configuration and weights, for cache keys.

    It hashes ``model.config`` (a dataclass or anything with a stable repr) and every state-dict tensor's
    name, shape and dtype, with the bytes of small tensors in full and evenly spaced 64 KiB samples of large
    ones: two models with different weights (another checkpoint, another random init) get different
    fingerprints, in milliseconds even for a ViT-H-sized model.
    """
    own = getattr(model, "fingerprint", None)
    if isinstance(own, str):  # a model that names itself (a served model seen from a client)
        return own
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
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        return flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)
    return np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)


def _sample(raw: np.ndarray) -> bytes:
    if raw.size <= _SAMPLES * _SAMPLE_BYTES:
        return raw.tobytes()
    starts = np.linspace(0, raw.size - _SAMPLE_BYTES, _SAMPLES).astype(np.int64)
    return b"".join(raw[s : s + _SAMPLE_BYTES].tobytes() for s in starts)
