"""Multiscale (pyramidal) images opened lazily, full resolution first: OME-Zarr groups and pyramidal TIFFs.

``open_pyramid(path)`` gives the levels as lazy arrays (zarr arrays: nothing is read until sliced), in the form
napari's multiscale layers take (``viewer.add_image(levels, multiscale=True)``) and the session annotates
(level 0, the full resolution, tile by tile when the predictor tiles it; see ``session.set_image``):

- OME-Zarr: a zarr group whose ``multiscales`` metadata (OME-NGFF 0.4 attributes, or 0.5's ``ome`` key)
  lists its datasets, full resolution first;
- pyramidal TIFF: the levels of the file's first series (tifffile's ``series[0].levels``: sub-IFDs or reduced
  pages), each read through tifffile's zarr store.

The levels are checked by :func:`napari_ovsam.validation.check_multiscale`: a pyramid whose levels disagree
(a level not smaller than the one before, other channels) is a ``ValueError`` that says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tifffile
import zarr

from .validation import check_multiscale

TIFF_SUFFIXES = (".tif", ".tiff")


def open_pyramid(path: str | os.PathLike[str], *, rgb: bool = False) -> list[Any]:
    """The levels of an OME-Zarr group or a pyramidal TIFF as lazy zarr arrays, full resolution first
    (checked: see the module docstring). A plain zarr array or single-level TIFF is a pyramid of one level."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"No image at {p}: give an OME-Zarr folder or a (pyramidal) TIFF file.")
    levels = _tiff_levels(p) if p.suffix.lower() in TIFF_SUFFIXES else _zarr_levels(p)
    check_multiscale(levels, rgb)
    return levels


def _zarr_levels(path: Path) -> list[Any]:
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises several types for a folder that is not zarr
        raise ValueError(f"{path} is not a zarr array or group ({error}).") from None
    if isinstance(node, zarr.Array):
        return [node]
    attributes: dict[str, Any] = dict(node.attrs)
    ome: Any = attributes.get("ome") or {}
    multiscales: Any = attributes.get("multiscales") or (
        ome.get("multiscales") if isinstance(ome, dict) else None
    )
    if not isinstance(multiscales, list) or not multiscales or not multiscales[0].get("datasets"):
        raise ValueError(
            f"{path} is a zarr group without OME-Zarr 'multiscales' metadata: open one of its arrays "
            "(e.g. its full-resolution level) instead."
        )
    levels = []
    for dataset in multiscales[0]["datasets"]:
        name = str(dataset.get("path", ""))
        try:
            levels.append(node[name])
        except KeyError:
            raise ValueError(
                f"{path}: the multiscales metadata names level '{name}', which is missing."
            ) from None
    return levels


def _tiff_levels(path: Path) -> list[Any]:
    tif = tifffile.TiffFile(path)  # stays open: the levels' stores read from it
    try:
        series = tif.series[0]
        return [zarr.open_array(series.aszarr(level=i), mode="r") for i in range(len(series.levels))]
    except Exception:
        tif.close()
        raise
