"""Frames of napari layer data: the (row, col) <-> (x, y) axis order, and which slice of a stack is in view.

- napari layer data (Points, Shapes, Labels) is in *data coordinates* ordered ``(..., row, col)``: leading
  non-spatial axes (z, t, ...) first, then the two displayed spatial axes. Pixel centres sit at integer
  coordinates, so pixel ``(r, c)`` covers ``[r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]``.
- The model takes pixel coordinates ordered ``(x, y)`` = ``(col, row)``, with the same integer-centre
  convention: nothing but the axis order changes at this boundary.

Every function here takes and returns numpy arrays; none imports napari.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------- axis order


def rowcol_to_xy(rowcol: np.ndarray) -> np.ndarray:
    """(..., 2) coordinates (row, col) -> float32 (..., 2) coordinates (x, y)."""
    rowcol = np.asarray(rowcol, dtype=np.float32)
    return np.ascontiguousarray(rowcol[..., ::-1])


# ---------------------------------------------------------------------------------------------- slicing


def as_rows(coords: np.ndarray) -> np.ndarray:
    """Coordinates as a float (n, ndim) array; a single (ndim,) point becomes (1, ndim)."""
    try:
        coords = np.asarray(coords, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("Prompt coordinates must be numbers, (n, ndim) in (..., row, col).") from None
    if coords.size == 0:  # no prompt (an empty layer, or a bare empty list)
        return coords.reshape(0, coords.shape[-1] if coords.ndim > 1 else 2)
    coords = coords[None, :] if coords.ndim == 1 else coords
    if coords.ndim != 2 or not np.isfinite(coords).all():
        raise ValueError(
            f"Prompt coordinates must be finite numbers of shape (n, ndim); got shape {coords.shape}."
        )
    return coords


def current_slice(
    dims_point: Sequence[float],
    image_ndim: int,
    rgb: bool,
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The leading (non-spatial) indices of the slice of an image layer shown by the viewer.

    Args:
        dims_point: ``viewer.dims.point``, world coordinates of every viewer axis. The viewer may have more
            axes than the layer; the layer's axes are the last ones.
        image_ndim: ``layer.data.ndim`` (the raw array's ndim, colour axis included for RGB layers).
        rgb: ``layer.rgb``: the last array axis is colour and is not a viewer axis.
        scale, translate: the layer's per-axis scale and translate (length = layer ndim) to go from world to
            data coordinates; identity when omitted.
        shape: the layer's data shape; when given, indices are clipped into range.

    Returns:
        the indices of the leading axes, e.g. ``(z,)`` for a (Z, H, W) or (Z, H, W, 3) RGB stack, ``()`` for a
        2D image. The spatial axes are the last two non-colour axes.
    """
    layer_ndim = image_ndim - 1 if rgb else image_ndim
    if layer_ndim < 2:
        raise ValueError(f"An image layer needs two spatial axes; got ndim {image_ndim} (rgb={rgb}).")
    if len(dims_point) < layer_ndim:
        raise ValueError(f"dims_point has {len(dims_point)} axes but the layer has {layer_ndim}.")
    n_leading = layer_ndim - 2
    world = np.asarray(dims_point, dtype=float)[len(dims_point) - layer_ndim :][:n_leading]
    scale_arr = np.ones(n_leading) if scale is None else np.asarray(scale, dtype=float)[:n_leading]
    translate_arr = (
        np.zeros(n_leading) if translate is None else np.asarray(translate, dtype=float)[:n_leading]
    )
    data = (world - translate_arr) / scale_arr
    index = np.floor(data + 0.5).astype(int)  # round half up, as napari picks the nearest slice
    if shape is not None:
        index = np.clip(index, 0, np.asarray(shape[:n_leading]) - 1)
    return tuple(int(i) for i in index)


def on_slice(coords: np.ndarray, slice_index: tuple[int, ...] | None) -> np.ndarray:
    """Which rows of (n, ndim) layer coordinates (..., row, col) lie on the slice ``slice_index``.

    The leading coordinates are rounded to the nearest integer (napari shows a point on the slice it rounds
    to). ``slice_index=None`` (or ``()``) means a 2D layer: every row is on the slice and leading coordinates,
    if any, are ignored.

    Returns:
        bool (n,) mask.
    """
    coords = as_rows(coords)
    if not slice_index:
        return np.ones(len(coords), dtype=bool)
    n_leading = len(slice_index)
    if coords.shape[1] != n_leading + 2:
        raise ValueError(
            f"Coordinates with {coords.shape[1]} axes do not match slice_index {slice_index} "
            f"(expected {n_leading + 2} axes: {n_leading} leading + row, col)."
        )
    leading = np.floor(coords[:, :n_leading] + 0.5).astype(int)
    return np.all(leading == np.asarray(slice_index, dtype=int), axis=1)


def empty_prompt_data(ndim: int) -> np.ndarray:
    """An empty (0, ndim) float array: the ``data`` of a new prompt layer with the image layer's ndim."""
    if ndim < 2:
        raise ValueError(f"Prompt layers need at least 2 dimensions, got {ndim}.")
    return np.zeros((0, ndim), dtype=float)
