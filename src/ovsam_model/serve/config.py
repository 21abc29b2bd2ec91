"""What a server runs (``ServeConfig``, parsed by ``serve.cli``) and the engine it builds (``build_engine``):
shared by the single-process server and the Ray Serve replicas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .app import ServerSettings


@dataclass(frozen=True)
class ServeConfig:
    """What a server runs: the model and its options, the engine's budgets and the HTTP settings."""

    model: str
    device: str
    host: str
    port: int
    cache: str | None
    memory_bytes: int
    max_queue: int
    replicas: int
    tiling: str
    settings: ServerSettings


def build_engine(config: ServeConfig) -> Any:
    """Load the model and wrap it in an ``Engine`` (slow: builds the model)."""
    from ..build import build_ovsam
    from ..predictor import OVSAMPredictor
    from .engine import Engine

    model = build_ovsam(config.model, device=config.device)
    predictor = OVSAMPredictor(model, tiling=config.tiling)
    return Engine(
        predictor, cache_dir=config.cache, memory_bytes=config.memory_bytes, max_queue=config.max_queue
    )
