"""Shared fixtures for the ovsam_model tests."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import open_clip
import pytest
import torch
from torch import nn

from ovsam_model.text import CACHE_DIR_ENV, TextEncoder

TINY_TEST_CLIP = "ovsam-test-tiny-clip"
TINY_TEST_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_ovsam_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point $OVSAM_CACHE_DIR at a temporary folder so no test reads or writes the user's cache."""
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("ovsam-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register a ~2M-parameter random-weight open_clip architecture (ModifiedResNet + 1-layer text tower)."""
    path = tmp_path_factory.mktemp("clip-configs") / f"{TINY_TEST_CLIP}.json"
    path.write_text(json.dumps(TINY_TEST_CLIP_CONFIG))
    open_clip.add_model_config(path)
    return TINY_TEST_CLIP


@pytest.fixture(scope="session")
def make_tiny_clip(tiny_clip_name: str) -> Callable[[int], tuple[nn.Module, Callable]]:
    """Factory ``make_tiny_clip(seed) -> (model, tokenizer)``: random weights fixed by ``seed``, eval mode."""

    def make(seed: int = 0) -> tuple[nn.Module, Callable]:
        torch.manual_seed(seed)
        model = open_clip.create_model(tiny_clip_name, pretrained=None).eval()
        return model, open_clip.get_tokenizer(tiny_clip_name)

    return make


@pytest.fixture
def tiny_text_encoder(make_tiny_clip: Callable[[int], tuple[nn.Module, Callable]]) -> TextEncoder:
    """A TextEncoder over a fresh seed-0 tiny CLIP (no name: its cache key is a hash of its weights)."""
    model, tokenizer = make_tiny_clip(0)
    return TextEncoder(model, tokenizer)


@pytest.fixture(scope="session")
def tiny_model():
    """The ``tiny`` OV-SAM (random weights, 128 px input) in eval mode on the CPU. Do not modify it."""
    from ovsam_model.build import build_ovsam

    torch.manual_seed(0)
    return build_ovsam("tiny", device="cpu")


@pytest.fixture
def tiny_predictor(tiny_model):
    """A predictor on the tiny model with a three-class vocabulary."""
    from ovsam_model.predictor import OVSAMPredictor

    predictor = OVSAMPredictor(tiny_model)
    predictor.set_vocabulary(["nucleus", "rod, bacterium", "ring"])
    return predictor


@pytest.fixture
def image16():
    """A non-square (90, 150) uint16 image with a bright 30x40 block at rows 30-60, cols 40-80."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(90, 150), dtype=np.uint16)
    image[30:60, 40:80] += 30000
    return image
