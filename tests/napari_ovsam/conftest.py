"""Shared setup of the plugin tests."""

from __future__ import annotations

import pytest

from napari_ovsam._compat import block_triton_if_llvm_loaded


@pytest.fixture(autouse=True)
def _no_triton_after_a_viewer():
    """A test's viewer maps Mesa's libLLVM; a later ``import torchvision`` (another test module, run alone)
    would then load Triton's LLVM and crash the process. The widget guards itself this way when it is built;
    tests that make a viewer without it get the same guard (see ``napari_ovsam._compat``)."""
    yield
    block_triton_if_llvm_loaded()
