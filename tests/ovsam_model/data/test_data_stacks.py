"""Lazy stack readers (TIFF, zarr, npy) and load_image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from ovsam_model.data.stacks import Stack, iter_slices, load_image, open_stack


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 60000, (4, 20, 30), dtype=np.uint16)


def test_tiff_stack_reads_one_slice(tmp_path: Path, stack: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    with open_stack(tmp_path / "s.tif") as opened:
        assert opened.shape == (4, 20, 30) and opened.dtype == np.uint16 and len(opened) == 4
        np.testing.assert_array_equal(opened[2], stack[2])
        np.testing.assert_array_equal(opened[-1], stack[3])
        np.testing.assert_array_equal(opened[1:3, 5], stack[1:3, 5])
    np.testing.assert_array_equal(load_image(tmp_path / "s.tif", 1), stack[1])


def test_zarr_stack_reads_one_chunk(tmp_path: Path, stack: np.ndarray) -> None:
    path = tmp_path / "s.zarr"
    z = zarr.open_array(str(path), mode="w", shape=stack.shape, chunks=(1, 20, 30), dtype=stack.dtype)
    z[:] = stack
    with open_stack(path) as opened:
        np.testing.assert_array_equal(opened[3], stack[3])
    chunk_files = [p for p in (path / "c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 4  # one chunk per slice, so reading a slice reads one file
    np.testing.assert_array_equal(load_image(path, 0), stack[0])


def test_leading_axes_are_flattened_in_c_order(tmp_path: Path) -> None:
    tz = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    tifffile.imwrite(tmp_path / "tz.tif", tz, imagej=True, metadata={"axes": "TZYX"})
    with open_stack(tmp_path / "tz.tif") as opened:
        assert opened.shape == (6, 4, 5)
        np.testing.assert_array_equal(opened[1 * 3 + 2], tz[1, 2])  # slice_index = t * Z + z
    assert [i for i, _ in iter_slices(tmp_path / "tz.tif")] == list(range(6))


def test_rgb_tiff_and_npy_channels_last(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    assert open_stack(tmp_path / "rgb.tif").shape == (1, 10, 12, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.tif"), rgb)
    np.save(tmp_path / "frames.npy", np.stack([rgb, rgb]))
    assert open_stack(tmp_path / "frames.npy").shape == (2, 10, 12, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "frames.npy", 1), rgb)


def test_plain_images_and_errors(tmp_path: Path, stack: np.ndarray) -> None:
    grey = (np.arange(200).reshape(10, 20) % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(load_image(tmp_path / "g.png", 0), grey)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    with pytest.raises(ValueError, match="stack of 4 slices.*slice_index"):
        load_image(tmp_path / "s.tif")
    with pytest.raises(ValueError, match="slice_index 9 is out of range for 4"):
        load_image(tmp_path / "s.tif", 9)
    with pytest.raises(ValueError, match="single image"):
        load_image(tmp_path / "g.png", 2)
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        load_image(tmp_path / "nope.tif")


def test_stack_wraps_any_array() -> None:
    array = np.zeros((2, 3, 8, 9), dtype=np.float32)
    wrapped = Stack(array, channel_axis=False)
    assert wrapped.shape == (6, 8, 9) and wrapped.ndim == 3 and np.asarray(wrapped).shape == (6, 8, 9)
