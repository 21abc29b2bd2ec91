"""npe2 reader for COCO instance-segmentation JSON (ours with RLE masks, or any file with polygons/RLE).

``napari_get_reader(path)`` answers ``None`` for anything that is not a COCO instance file and never raises:
napari asks every reader about every file it opens. It parses the JSON once (files up to
:data:`MAX_PARSE_BYTES`; larger ones are sniffed from their first bytes and parsed when read) and hands the
parsed dict to the returned function. That function checks every entry and raises one ``ValueError`` naming
the file, the entry and the fault (napari shows it); the layers are described in
:mod:`napari_ovsam.coco_layers` (multi-image files from CVAT, Label Studio, Roboflow or COCO open with their
images).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from .coco_layers import coco_layer_data
from .coco_read import looks_like_coco

MAX_PARSE_BYTES = 256 * 2**20
SNIFF_BYTES = 2**16

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """A reader function for a COCO JSON file with polygon or RLE segmentations, else None.

    Args:
        path: a path, or a list holding a single path (napari passes lists when several files are dropped;
            those are left to other readers).
    """
    try:
        return _get_reader(path)
    except Exception:  # napari asks every reader about every path: answer "not mine", never raise
        return None


def _get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    if not path.lower().endswith(".json") or not os.path.isfile(path):
        return None
    if os.path.getsize(path) > MAX_PARSE_BYTES:
        return _lazy_reader if _sniff(path) else None
    with open(path, encoding="utf-8") as handle:
        coco = json.load(handle)
    if not looks_like_coco(coco):
        return None
    return lambda _path: _layer_data(coco, path)


def _sniff(path: str) -> bool:
    """Cheap check of a big file's head: a JSON object that mentions images and annotations."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(SNIFF_BYTES)
    return head.lstrip().startswith("{") and '"images"' in head and '"annotations"' in head


def _lazy_reader(path: str | list[str]) -> list[LayerData]:
    path = path[0] if isinstance(path, (list, tuple)) else path
    with open(path, encoding="utf-8") as handle:
        coco = json.load(handle)
    if not looks_like_coco(coco):
        raise ValueError(f"{path} is not a COCO instance-segmentation file with polygon or RLE masks.")
    return _layer_data(coco, path)


def _layer_data(coco: dict[str, Any], path: str) -> list[LayerData]:
    """The file's layers (``metadata['ovsam']`` of each Labels layer is for the widget and the writer)."""
    return coco_layer_data(coco, str(path))
