"""Work around a crash between Mesa's OpenGL and Triton in one process (Linux).

Mesa drivers (llvmpipe under Xvfb, radeonsi, iris) load the system ``libLLVM`` when napari creates its canvas;
Triton's ``libtriton`` carries another LLVM, and loading it afterwards segfaults the process. torchvision (used
by open_clip) imports ``torch._dynamo``, which imports Triton when it is installed. The plugin never compiles
with Triton, so when ``libLLVM`` is already mapped and Triton not yet imported, Triton is marked unavailable
(``import triton`` then raises ImportError and torch runs without it).
"""

from __future__ import annotations

import sys
from pathlib import Path


def block_triton_if_llvm_loaded() -> bool:
    """Make ``import triton`` fail if a system libLLVM is mapped into the process; True if it did so."""
    if "triton" in sys.modules:
        return False
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: nothing to guard
        return False
    if "libLLVM" not in maps:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    return True
