"""Device resolution and giving freed CPU memory back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ovsam_model.device import _malloc_trim, available_devices, resolve_device

_FREE_THEN_TRIM = """
import os, numpy as np
from ovsam_model.device import release_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss()
blocks = [np.ones(16 * 1024, dtype=np.float32) for _ in range(4000)]  # 256 MB in 64 KiB heap blocks
last = np.ones(16 * 1024, dtype=np.float32)  # allocated after them: the heap's top stays in use
del blocks
freed = rss() - base
release_freed_memory()
print(freed, rss() - base)
"""


def test_auto_device_is_the_first_available_and_unknown_ones_are_named():
    assert resolve_device("auto") == torch.device(available_devices()[0])
    assert available_devices()[-1] == "cpu"
    with pytest.raises(ValueError, match="not available"):
        resolve_device("xla")


@pytest.mark.slow  # a subprocess that allocates and frees 256 MB
@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim")
def test_release_freed_memory_shrinks_the_process():
    done = subprocess.run([sys.executable, "-c", _FREE_THEN_TRIM], capture_output=True, text=True, check=True)
    kept, after = (int(v) for v in done.stdout.split())
    assert kept > 128 * 2**20  # the allocator kept the freed blocks
    assert after < kept / 4  # and gave them back
