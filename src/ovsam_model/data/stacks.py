"""Lazy reading of image files and stacks, one 2D slice at a time.

A *stack* is any array whose last axes are one image, (H, W) or (H, W, C), and whose leading axes
(z, t, c, ...) index slices. Slices are numbered by a single flat ``slice_index`` over the leading axes in C
order (for a (T, Z, H, W) stack, ``slice_index = t * Z + z``): that is the number the plugin writes into
per-slice COCO image entries. Only the slice asked for is read from disk.

Where the channel axis is:
- TIFF: from tifffile's series axes; only a trailing samples axis (``S``, e.g. RGB) is a channel axis. Other
  axes, ImageJ ``C`` included, index slices. (tifffile writes a (3, H, W) or (4, H, W) array as planar RGB,
  axes ``SYX``, unless given ``photometric="minisblack"``; such files are read as 3 or 4 slices.)
- Zarr and ``.npy``: a 3D+ array whose last axis has at most 4 entries is channels-last; otherwise all axes
  but the last two index slices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from PIL import Image

TIFF_SUFFIXES = (".tif", ".tiff")
STACK_SUFFIXES = (*TIFF_SUFFIXES, ".zarr", ".npy")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_CHANNELS = 4

PathLike = str | os.PathLike[str]


class Stack:
    """A read-only, lazily read stack of 2D images.

    ``shape`` is (N, H, W) or (N, H, W, C); ``stack[i]`` reads slice ``i`` only and returns a numpy array of
    shape (H, W) or (H, W, C). Also an array-like for napari (``shape``, ``dtype``, ``ndim``, axis-0 slicing).
    Close it (or use it as a context manager) to release the file handle of a TIFF.
    """

    def __init__(self, array: Any, *, channel_axis: bool, path: str = "", closer: Any = None) -> None:
        self.array = array
        self.path = path
        self.channels_last = channel_axis
        image_ndim = 3 if channel_axis else 2
        if array.ndim < image_ndim:
            raise ValueError(f"{path or 'array'}: shape {array.shape} holds no 2D image.")
        self.leading_shape: tuple[int, ...] = tuple(int(s) for s in array.shape[: array.ndim - image_ndim])
        self.image_shape: tuple[int, ...] = tuple(int(s) for s in array.shape[array.ndim - image_ndim :])
        self._closer = closer

    @property
    def num_slices(self) -> int:
        return int(np.prod(self.leading_shape, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_slices, *self.image_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def __len__(self) -> int:
        return self.num_slices

    def read_slice(self, index: int) -> np.ndarray:
        """Read slice ``index`` (flat over the leading axes; negative counts from the end) as numpy."""
        n = self.num_slices
        if not -n <= index < n:
            raise IndexError(f"{self.path or 'stack'}: slice_index {index} is out of range for {n} slice(s).")
        index %= n
        key = np.unravel_index(index, self.leading_shape) if self.leading_shape else ()
        return np.asarray(self.array[tuple(int(k) for k in key)])

    def __getitem__(self, key: Any) -> np.ndarray:
        """``stack[i]`` reads one slice; ``stack[a:b, ...]`` reads slices a..b-1 and indexes the rest."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if isinstance(first, (int, np.integer)):
            return self.read_slice(int(first))[rest]
        if not isinstance(first, slice):
            raise TypeError(
                f"Stack indices on axis 0 must be integers or slices, got {type(first).__name__}."
            )
        indices = range(self.num_slices)[first]
        slices = [self.read_slice(i) for i in indices]
        out = np.stack(slices) if slices else np.empty((0, *self.image_shape), dtype=self.dtype)
        return out[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Stack({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def _open_tiff(path: Path) -> Stack:
    tif = tifffile.TiffFile(path)
    try:
        series = tif.series[0]
        array = zarr.open_array(series.aszarr(level=0), mode="r")
    except Exception:
        tif.close()
        raise
    return Stack(array, channel_axis=series.axes.endswith("S"), path=str(path), closer=tif)


def _zarr_array(path: Path) -> Any:
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    arrays = dict(node.arrays())
    if "0" in arrays:  # OME-Zarr multiscales: level 0 is full resolution
        return arrays["0"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise ValueError(
        f"{path} is a zarr group with arrays {sorted(arrays)}; point to one of them "
        f"(e.g. {path / sorted(arrays)[0]})."
        if arrays
        else f"{path} is a zarr group without arrays."
    )


def _channels_last_by_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 3 and shape[-1] <= MAX_CHANNELS


def open_stack(path: PathLike) -> Stack:
    """Open a TIFF (``.tif``/``.tiff``), zarr (``.zarr`` or any zarr folder) or ``.npy`` file lazily.

    Args:
        path: the file or zarr directory.

    Returns:
        a :class:`Stack` of shape (N, H, W) or (N, H, W, C); a single 2D image is a stack of one slice.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file holds no 2D image or its format is not a stack format.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Image file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(p)
    if suffix == ".npy":
        array = np.load(p, mmap_mode="r")
        return Stack(array, channel_axis=_channels_last_by_shape(array.shape), path=str(p))
    if suffix == ".zarr" or p.is_dir():
        zarray = _zarr_array(p)
        return Stack(zarray, channel_axis=_channels_last_by_shape(tuple(zarray.shape)), path=str(p))
    raise ValueError(f"{p}: not a stack format (expected one of {', '.join(STACK_SUFFIXES)}).")


def iter_slices(path_or_stack: PathLike | Stack) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(slice_index, image)`` for every slice of a stack, reading one slice at a time.

    ``image`` is (H, W) or (H, W, C). A path is opened and closed here; a :class:`Stack` is left open.
    """
    if isinstance(path_or_stack, Stack):
        for i in range(path_or_stack.num_slices):
            yield i, path_or_stack.read_slice(i)
        return
    with open_stack(path_or_stack) as stack:
        yield from iter_slices(stack)


def _read_plain(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            return np.asarray(
                img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
            )
        return np.asarray(img)


def load_image(path: PathLike, slice_index: int | None = None) -> np.ndarray:
    """Read one 2D image: a plain image file, or one slice of a stack.

    Args:
        path: PNG/JPEG/BMP/... file, TIFF (one image or a stack), ``.zarr`` directory or ``.npy`` file.
        slice_index: which slice of a stack (flat over the leading axes, see the module docstring). ``None``
            is only allowed for files holding a single image.

    Returns:
        the image as a numpy array of shape (H, W) or (H, W, C), in the file's own dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a stack without ``slice_index``, or an out-of-range ``slice_index``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Image file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in STACK_SUFFIXES or p.is_dir():
        with open_stack(p) as stack:
            if slice_index is None:
                if stack.num_slices != 1:
                    raise ValueError(
                        f"{p} is a stack of {stack.num_slices} slices (shape {stack.shape}); say which one "
                        "with slice_index (an integer 'slice_index' field in a COCO image entry)."
                    )
                slice_index = 0
            try:
                return stack.read_slice(int(slice_index))
            except IndexError as err:
                raise ValueError(str(err)) from None
    if slice_index not in (None, 0):
        raise ValueError(f"{p} holds a single image; slice_index {slice_index} does not exist.")
    return _read_plain(p)
