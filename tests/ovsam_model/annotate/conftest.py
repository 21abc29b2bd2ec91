"""Fixtures of the batch-annotation tests: the synthetic stack of ``annotate_helpers`` as a TIFF and as a
zarr array."""

from __future__ import annotations

from pathlib import Path

import pytest
import tifffile
import zarr
from annotate_helpers import SIZE, synthetic_stack


@pytest.fixture
def stack_tif(tmp_path: Path) -> Path:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, synthetic_stack(), photometric="minisblack")
    return path


@pytest.fixture
def stack_zarr(tmp_path: Path) -> Path:
    """The same three slices as ``stack_tif``, as a zarr array with one chunk per slice."""
    path = tmp_path / "stack.zarr"
    data = synthetic_stack()
    array = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(1, SIZE, SIZE), dtype=data.dtype)
    array[:] = data
    return path
