"""Bad input to tiling: one row per case, each one clear ``ValueError`` (nothing fails inside torch).

A row is (case id, call on a predictor whose image is a tiled 600 x 800 image, message fragment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ovsam_model.prediction import CompactMasks
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.tiling import TileSpec

LARGE = np.random.default_rng(0).integers(0, 4000, (600, 800), dtype=np.uint16)
BOX = np.array([100.0, 100.0, 130.0, 140.0])


class ShapeOnly:
    """An array-like that is far too large to read: any read fails the test."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.uint16) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        raise AssertionError("nothing may be read")


@pytest.fixture
def tiled(tiny_model) -> OVSAMPredictor:
    predictor = OVSAMPredictor(tiny_model)
    predictor.set_vocabulary(["a", "b"])
    predictor.set_image(LARGE)
    return predictor


def _tile_state(p: OVSAMPredictor, **changes: Any) -> dict[str, Any]:
    state = p.get_tile_embedding(0)
    state.update(changes)
    return state


def _masks() -> CompactMasks:
    return CompactMasks([np.ones((1, 2, 2), bool)], np.array([[0, 0]]), (4, 4))


Case = tuple[str, Callable[[OVSAMPredictor], Any], str]

CASES: list[Case] = [
    # the tiling asked for
    ("scale zero", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(scale=0)), "scale must be a number > 0"),
    ("scale negative", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(scale=-1)), "> 0"),
    ("scale NaN", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(scale=float("nan"))), "> 0"),
    ("scale text", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(scale="2")), "> 0"),  # type: ignore[arg-type]
    (
        "scale too large",
        lambda p: OVSAMPredictor(p.model, tiling=TileSpec(scale=1000)),
        "less than one pixel",
    ),
    (
        "tile size",
        lambda p: OVSAMPredictor(p.model, tiling=TileSpec(tile_size=512)),
        "not this model's input",
    ),
    ("overlap negative", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(overlap=-1)), "overlap must"),
    ("overlap past half", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(overlap=65)), "half a tile (64)"),
    ("overlap float", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(overlap=3.5)), "whole number"),  # type: ignore[arg-type]
    ("min factor", lambda p: OVSAMPredictor(p.model, tiling=TileSpec(min_factor=0.5)), "min_factor"),
    ("tiling word", lambda p: OVSAMPredictor(p.model, tiling="on"), 'tiling must be "auto", "off"'),
    ("cache budget", lambda p: OVSAMPredictor(p.model, tile_cache_bytes=-1), "tile_cache_bytes"),
    # images
    (
        "numpy too large to encode whole",
        lambda p: OVSAMPredictor(p.model, tiling="off").set_image(ShapeOnly((20000, 20000))),
        "pass it as a zarr or dask array",
    ),
    ("lazy image 4D", lambda p: p.set_image(ShapeOnly((2, 3, 5000, 5000))), "one slice at a time"),
    ("lazy image of text", lambda p: p.set_image(ShapeOnly((5000, 5000), "U4")), "Unsupported image dtype"),
    ("contrast inverted", lambda p: p.set_image(LARGE, contrast_limits=(10, 0)), "inverted"),
    # tiles
    ("tile past the edge", lambda p: p.tile_key(len(p.tile_grid)), "past the edge of this image's 48 tiles"),
    ("tile negative", lambda p: p.get_tile_embedding(-1), "give an index from 0 to 47"),
    ("tile float", lambda p: p.get_tile_embedding(1.0), "past the edge"),  # type: ignore[arg-type]
    (
        "tile state of another tile",
        lambda p: p.set_tile_embedding(1, p.get_tile_embedding(0)),
        "another tile",
    ),
    ("tile state without window", lambda p: p.set_tile_embedding(0, _tile_state(p, window=None)), "window"),
    (
        "tile state of another model",
        lambda p: p.set_tile_embedding(0, _tile_state(p, embedding=np.zeros((8, 4, 4)))),
        "does not fit the model",
    ),
    ("tile state not a dict", lambda p: p.set_tile_embedding(0, [1, 2]), "the dict"),  # type: ignore[arg-type]
    ("whole embedding of a tiled image", lambda p: p.get_image_embedding(), "get_tile_embedding(index)"),
    (
        "tiles of an untiled image",
        lambda p: (p.set_image(LARGE[:100, :100]), p.get_tile_embedding(0)),
        "not tiled",
    ),
    # prompts and masks
    ("box outside", lambda p: p.predict(boxes=[700, 500, 900, 650]), "outside the 800x600"),
    ("top_k", lambda p: p.predict(boxes=BOX, top_k=0), "top_k"),
    ("paint wrong shape", lambda p: _masks().paint(np.zeros((3, 4), np.uint16), [1]), "do not match"),
    ("paint ids", lambda p: _masks().paint(np.zeros((4, 4), np.uint16), [1, 2]), "one label id per object"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_tiling_input_is_one_clear_value_error(tiled: OVSAMPredictor, case: Case) -> None:
    _, call, fragment = case
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call(tiled)


def test_a_failed_set_image_keeps_the_tiled_image(tiled: OVSAMPredictor) -> None:
    with pytest.raises(ValueError):
        tiled.set_image(LARGE, contrast_limits=(10, 0))
    assert tiled.tiles is not None and len(tiled.predict(boxes=BOX)) == 1
