"""Settings shared by every test: offline, one torch thread (tiny models are overhead-bound; two threads on a
busy two-core machine are slower, not faster), fixed seeds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _torch_defaults() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
