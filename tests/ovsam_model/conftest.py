"""Fixtures of the ovsam_model tests: a tiny registered open_clip architecture and its text encoder (the
models, predictor and images both test packages use are in ``tests/conftest.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import open_clip
import pytest
import torch
from torch import nn

from ovsam_model.text import TextEncoder

TINY_TEST_CLIP = "ovsam-test-tiny-clip"
TINY_TEST_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


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
