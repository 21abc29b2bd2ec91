"""open_clip architectures: the built-in ones plus this package's small ones in ``configs/clip/``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import open_clip

#: This package's own open_clip architectures, one JSON file each.
CLIP_CONFIG_DIR = Path(__file__).parent / "configs" / "clip"


@cache
def register_clip_configs() -> None:
    """Make the JSON architectures in ``configs/clip/`` known to open_clip (idempotent)."""
    open_clip.add_model_config(CLIP_CONFIG_DIR)


def clip_model_config(model_name: str) -> dict:
    register_clip_configs()
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"Unknown open_clip architecture '{model_name}'. Known: see open_clip.list_models(); "
            f"this package adds {sorted(p.stem for p in CLIP_CONFIG_DIR.glob('*.json'))}."
        )
    return config


def clip_embed_dim(model_name: str) -> int:
    """The joint image-text embedding size of an open_clip architecture."""
    return int(clip_model_config(model_name)["embed_dim"])
