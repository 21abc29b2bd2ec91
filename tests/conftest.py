"""What every test shares: offline, one torch thread (tiny models are overhead-bound; two threads on a busy
two-core machine are slower, not faster), fixed seeds, a private ovsam cache, and the fixtures both test
packages build on (``tiny_model`` -> ``tiny_predictor``; ``image16``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ovsam_model.build import build_ovsam  # noqa: E402  (after HF_HUB_OFFLINE: nothing may reach a hub)
from ovsam_model.hub import CACHE_ENV as CACHE_DIR_ENV  # noqa: E402
from ovsam_model.predictor import OVSAMPredictor  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_defaults() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


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
def tiny_model():
    """The ``tiny`` OV-SAM (random weights, 128 px input) in eval mode on the CPU. Do not modify it."""
    torch.manual_seed(0)
    return build_ovsam("tiny", device="cpu")


@pytest.fixture
def tiny_predictor(tiny_model):
    """A predictor on the tiny model with a three-class vocabulary."""
    predictor = OVSAMPredictor(tiny_model)
    predictor.set_vocabulary(["nucleus", "rod, bacterium", "ring"])
    return predictor


@pytest.fixture
def image16():
    """A non-square (90, 150) uint16 image with a bright 30x40 block at rows 30-60, cols 40-80."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(90, 150), dtype=np.uint16)
    image[30:60, 40:80] += 30000
    return image
