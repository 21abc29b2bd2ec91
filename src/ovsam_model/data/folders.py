"""Unlabelled images for SAM2CLIP distillation: any image folder, or the SA-1B layout.

SA-1B layout: ``root/sa_000000/sa_1.jpg`` (+ ``sa_1.json``, ignored here), one folder per tar shard. The
official "1%" subset is a list file naming shard folders (``data/sam/train.txt``: one ``sa_000000`` per line);
a list file may also name image files, relative to ``root`` or absolute. Without a list file, ``root`` is
searched recursively. Stacks (multi-page TIFF, zarr, ``.npy``) are expanded into one entry per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovsam_model.data.stacks import PLAIN_SUFFIXES, STACK_SUFFIXES, PathLike, load_image, open_stack
from ovsam_model.data.transforms import resize_longest_side
from ovsam_model.image import to_model_rgb

IMAGE_SUFFIXES = (*PLAIN_SUFFIXES, *STACK_SUFFIXES)


def _is_image(path: Path, suffixes: Sequence[str]) -> bool:
    return path.suffix.lower() in suffixes and not path.name.startswith(".")


def find_images(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files (and ``.zarr`` folders) under ``root``, recursively, in sorted order."""
    found: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.suffix.lower() != ".zarr":
            found += find_images(path, suffixes)
        elif _is_image(path, suffixes):
            found.append(path)
    return found


def read_list_file(list_file: Path, root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The images a list file names: lines are shard folders or image files (relative to ``root``)."""
    paths: list[Path] = []
    for line_no, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        path = Path(name) if Path(name).is_absolute() else root / name
        if path.is_dir() and path.suffix.lower() != ".zarr":
            paths += find_images(path, suffixes)
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{list_file}, line {line_no}: {path} does not exist.")
    return paths


def expand_slices(paths: Sequence[Path]) -> list[tuple[Path, int | None]]:
    """(path, slice_index) entries: one per slice for stack files, (path, None) for single images."""
    entries: list[tuple[Path, int | None]] = []
    for path in paths:
        if path.suffix.lower() in STACK_SUFFIXES:
            with open_stack(path) as stack:
                count = stack.num_slices
            entries += [(path, None)] if count == 1 else [(path, i) for i in range(count)]
        else:
            entries.append((path, None))
    return entries


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images resized so that their longest side is ``image_size`` (no labels).

    Items: ``image`` float32 [3, h, w] in 0..255 (``to_model_rgb``, then resized; max(h, w) == image_size),
    ``path`` str, ``slice_index`` int or None, ``original_size`` (H, W), ``scale`` float (resized / original),
    ``index`` int. ``key(i)`` is a stable name for caching per-image results (e.g. teacher features).
    """

    def __init__(
        self,
        root: PathLike,
        *,
        image_size: int = 1024,
        list_file: PathLike | None = None,
        suffixes: Sequence[str] = IMAGE_SUFFIXES,
        expand_stacks: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder not found: {self.root}")
        suffixes = tuple(s.lower() for s in suffixes)
        if list_file is not None:
            paths = read_list_file(Path(list_file), self.root, suffixes)
        else:
            paths = find_images(self.root, suffixes)
        self.entries = expand_slices(paths) if expand_stacks else [(p, None) for p in paths]
        if not self.entries:
            where = f"{self.root}" + (f" (list file {list_file})" if list_file else "")
            raise ValueError(f"No images found in {where}; expected files ending in {', '.join(suffixes)}.")
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.entries)

    def key(self, index: int) -> str:
        """``relative/path`` or ``relative/path#slice``: unique per entry, stable across runs."""
        path, slice_index = self.entries[index]
        try:
            name = path.relative_to(self.root).as_posix()
        except ValueError:
            name = path.as_posix()
        return name if slice_index is None else f"{name}#{slice_index}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, slice_index = self.entries[index]
        rgb = to_model_rgb(load_image(path, slice_index))
        no_masks = np.zeros((0, *rgb.shape[:2]), dtype=bool)
        image, _, scale = resize_longest_side(rgb, no_masks, self.image_size)
        return {
            "image": image,
            "path": str(path),
            "slice_index": slice_index,
            "original_size": (int(rgb.shape[0]), int(rgb.shape[1])),
            "scale": scale,
            "index": int(index),
        }
