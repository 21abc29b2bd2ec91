"""open_clip architectures: the built-in ones plus this package's small ones in ``configs/clip/``.

open_clip is imported on first use (it brings torch and torchvision): ``ovsam_model.config``, which reads
architecture numbers from here, stays cheap to import (the plugin lists models before it loads one).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

#: This package's own open_clip architectures, one JSON file each.
CLIP_CONFIG_DIR = Path(__file__).parent / "configs" / "clip"


def _open_clip() -> ModuleType:
    import open_clip  # heavy (torch, torchvision): see the module docstring

    return open_clip


@cache
def register_clip_configs() -> None:
    """Make the JSON architectures in ``configs/clip/`` known to open_clip (idempotent)."""
    _open_clip().add_model_config(CLIP_CONFIG_DIR)


def clip_model_config(model_name: str) -> dict:
    register_clip_configs()
    config = _open_clip().get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"Unknown open_clip architecture '{model_name}'. Known: see open_clip.list_models(); "
            f"this package adds {sorted(p.stem for p in CLIP_CONFIG_DIR.glob('*.json'))}."
        )
    return config


def clip_embed_dim(model_name: str) -> int:
    """The joint image-text embedding size of an open_clip architecture."""
    return int(clip_model_config(model_name)["embed_dim"])
