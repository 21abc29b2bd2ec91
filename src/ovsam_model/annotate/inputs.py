"""What a batch run annotates: image files, every slice of TIFF/zarr/``.npy`` stacks, and folders of them.

Each 2D image is one :class:`SliceRef` (a path and, for a stack, the flat ``slice_index`` over its leading axes,
as ``ovsam_model.data.stacks`` numbers them): small and picklable, so a Dask task carries the reference and
reads its own slice from the (shared) file system; no process holds the whole dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.stacks import PLAIN_SUFFIXES, STACK_SUFFIXES, load_image, open_stack

IMAGE_SUFFIXES = (*PLAIN_SUFFIXES, *STACK_SUFFIXES)
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


@dataclass(frozen=True)
class SliceRef:
    """One 2D image of a run.

    index: its place in the run, 0-based (its COCO image id is ``index + 1``); path: the absolute path of the
    file or zarr folder; slice_index: the slice of a stack (flat over its leading axes), None for a file that
    holds one image; height, width: its size in pixels; file_name: what the COCO image entry names it (the
    path relative to the output's folder where there is one).
    """

    index: int
    path: str
    slice_index: int | None
    height: int
    width: int
    file_name: str

    def image_entry(self) -> dict[str, Any]:
        """The COCO ``images`` entry: id, file_name, height, width, path, and slice_index for a stack."""
        entry: dict[str, Any] = {
            "id": self.index + 1,
            "file_name": self.file_name,
            "height": self.height,
            "width": self.width,
            "path": self.path,
        }
        if self.slice_index is not None:
            entry["slice_index"] = self.slice_index
        return entry

    def describe(self) -> str:
        """``path`` or ``path slice N``, for messages."""
        return self.path if self.slice_index is None else f"{self.path} slice {self.slice_index}"

    def read(self) -> np.ndarray:
        """The image, (H, W) or (H, W, C), read from disk now."""
        return load_image(self.path, self.slice_index)


def collect_slices(
    inputs: Sequence[str | os.PathLike[str]], relative_to: Path | None = None
) -> list[SliceRef]:
    """Every 2D image of ``inputs`` in order (a folder's images sorted by name, a stack's slices in order).

    Raises:
        ValueError: an input that does not exist, is not an image or stack, holds no pixels, or a folder
            without images; nothing at all to annotate.
    """
    if not inputs:
        raise ValueError("No input: give image files, stacks (.tif, .zarr, .npy) or folders of them.")
    files: list[Path] = []
    for given in inputs:
        path = Path(given).expanduser()
        if not path.exists():
            raise ValueError(f"Input not found: {path}")
        files.extend(_folder_images(path) if path.is_dir() and not _is_zarr(path) else [path])
    refs: list[SliceRef] = []
    for path in files:
        for slice_index, height, width in _slices_of(path):
            absolute = str(path.resolve())
            refs.append(
                SliceRef(len(refs), absolute, slice_index, height, width, _name(absolute, relative_to))
            )
    return refs


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or any((path / marker).exists() for marker in ZARR_MARKERS)


def _folder_images(folder: Path) -> list[Path]:
    """The images and stacks directly in ``folder``, sorted by name (hidden files skipped)."""
    found = sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or _is_zarr(p)))
    )
    if not found:
        raise ValueError(
            f"{folder} holds no images: expected files ending in {', '.join(IMAGE_SUFFIXES)} (not searched "
            "in sub-folders)."
        )
    return found


def _slices_of(path: Path) -> list[tuple[int | None, int, int]]:
    """(slice_index or None, height, width) of every 2D image in a file, without reading its pixels."""
    suffix = path.suffix.lower()
    if suffix in PLAIN_SUFFIXES and path.is_file():
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path} is not an image that can be read ({error}).") from None
        _check_pixels(path, (height, width))
        return [(None, height, width)]
    if suffix not in STACK_SUFFIXES and not _is_zarr(path):
        raise ValueError(
            f"{path} is not an image: expected a file ending in {', '.join(IMAGE_SUFFIXES)} or a folder."
        )
    try:
        with open_stack(path) as stack:
            (height, width), count, stacked = (
                stack.image_shape[:2],
                stack.num_slices,
                bool(stack.leading_shape),
            )
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"{path} cannot be read as an image or stack ({error}).") from None
    _check_pixels(path, (height, width, count) if stacked else (height, width))
    return [(i if stacked else None, height, width) for i in range(count)]


def _check_pixels(path: Path, sizes: tuple[int, ...]) -> None:
    if min(sizes) <= 0:
        raise ValueError(f"{path} is empty (size {' x '.join(map(str, sizes))}): it holds no pixels.")


def _name(path: str, relative_to: Path | None) -> str:
    """``path`` relative to ``relative_to`` (the output's folder), or absolute where that cannot be."""
    if relative_to is None:
        return path
    try:
        return Path(os.path.relpath(path, relative_to.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path
