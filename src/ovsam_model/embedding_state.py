"""Image-embedding states: the numpy dicts ``OVSAMPredictor`` gives and takes (``get_image_embedding``,
``get_tile_embedding``), checked against a model before they are restored.

A state holds the arrays of ``ImageFeatures.tensors()`` as float32 numpy (``embedding``, ``fpn_0``..``fpn_3``,
``clip_top``, each (C, h, w) without the batch axis), plus sizes: ``original_size`` and ``input_size`` for a
whole image, ``input_size`` and ``window`` (y0, x0, y1, x1) for a tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .config import OVSAMConfig
from .modeling.ovsam import ImageFeatures
from .tiling import Window

Size = tuple[int, int]


def feature_state(features: ImageFeatures) -> dict[str, Any]:
    """The arrays of a state as float32 numpy (batch of one, batch axis dropped)."""
    return {k: v[0].float().cpu().numpy() for k, v in features.tensors().items()}


def feature_shapes(config: OVSAMConfig) -> dict[str, tuple[int, ...]]:
    """The (C, h, w) of every array of a state of a model of ``config``."""
    size, grid = config.image_size, config.embedding_size
    shapes: dict[str, tuple[int, ...]] = {"embedding": (config.adapter.out_chans, grid, grid)}
    shapes["clip_top"] = (config.clip.channels[-1], size // 32, size // 32)
    for level in range(4):
        side = size // (4 * 2**level)
        shapes[f"fpn_{level}"] = (config.head.fpn_channels, side, side)
    return shapes


def features_from_state(state: dict[str, Any], config: OVSAMConfig, device: torch.device) -> ImageFeatures:
    """The ``ImageFeatures`` of a checked state, on ``device``."""
    tensors = {
        k: torch.as_tensor(np.asarray(state[k]), dtype=torch.float32, device=device)[None]
        for k in feature_shapes(config)
    }
    return ImageFeatures.from_tensors(tensors)


def check_feature_arrays(state: Any, config: OVSAMConfig) -> str:
    """Check the arrays of an image or tile state against the model; returns the advice for errors."""
    name = config.name
    advice = f"recompute it with this model ('{name}'): predictor.set_image(image)."
    if not isinstance(state, dict):
        raise ValueError(f"An image embedding state is the dict get_image_embedding() returns; {advice}")
    for key, shape in feature_shapes(config).items():
        got = None if state.get(key) is None else np.asarray(state[key])
        if got is None or got.shape != shape:
            found = None if got is None else got.shape
            raise ValueError(
                f"This image embedding does not fit the model '{name}': {key} is {found}, "
                f"expected {shape}; {advice}"
            )
        if got.dtype.kind not in "fiu" or not np.isfinite(got).all():
            raise ValueError(f"This image embedding's {key} holds NaN, infinite or non-numbers; {advice}")
    return advice


def check_image_state(
    state: Any, config: OVSAMConfig, input_size_for: Callable[[Size], Size]
) -> tuple[Size, Size]:
    """(original_size, input_size) of a ``get_image_embedding`` state, after checking that it fits."""
    advice = check_feature_arrays(state, config)
    sizes = []
    for key in ("original_size", "input_size"):
        value = state.get(key)
        if not (
            isinstance(value, Sequence) and len(value) == 2 and all(_is_int(v) and v >= 1 for v in value)
        ):
            raise ValueError(
                f"This image embedding's {key} must be (height, width) in pixels, got {value!r}."
            )
        sizes.append((int(value[0]), int(value[1])))
    if input_size_for(sizes[0]) != sizes[1]:
        raise ValueError(
            f"This image embedding's input_size {sizes[1]} does not match its original_size {sizes[0]} "
            f"for the model '{config.name}' (expected {input_size_for(sizes[0])}); {advice}"
        )
    return sizes[0], sizes[1]


def check_tile_state(state: Any, config: OVSAMConfig, index: int, window: Window) -> None:
    """Check a ``get_tile_embedding`` state against the model and against tile ``index`` (its window)."""
    check_feature_arrays(state, config)
    for key, want in (("window", window.bounds), ("input_size", window.input_size)):
        try:
            got = tuple(int(v) for v in np.asarray(state.get(key, ()), dtype=np.int64).reshape(-1))
        except (TypeError, ValueError):
            got = ()
        if got != want:
            raise ValueError(
                f"This tile embedding's {key} is {state.get(key)!r}, tile {index} of this image has {want}: "
                "it belongs to another tile or tiling; recompute it with predictor.get_tile_embedding(index)."
            )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
