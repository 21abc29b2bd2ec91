"""Tile geometry of large images: the tile grid, which view each prompt is decoded on, and masks pasted back.

No model here: windows, prompt extents and the change of frame between a view and the full image.

Frames: a ``Window`` is a rectangle of the full image in (row, col) pixels, end exclusive; its *input frame*
is the model input it becomes after resizing to ``input_size`` (h, w) (the unpadded model input, as in
``ovsam_model.prompts``). Prompts are (x, y) pixels of the full image, as everywhere in ``ovsam_model``.

The routing rule (``route``), in order:

1. a prompt whose extent (its box, or the bounding box of its real points, or both) lies whole inside one or
   more grid tiles is decoded on the tile where it has the most margin to a tile edge that is not an image
   edge (ties: the lowest tile index);
2. a prompt no grid tile holds but which fits in one tile is decoded on a tile-sized window centred on it
   (clamped inside the image), at the tiling's scale;
3. a prompt larger than a tile is decoded on a downscaled view of its region: its extent enlarged on every
   side by ``REGION_CONTEXT`` (12.5 %) of its longer side, clamped inside the image, resized so that its longer
   side is the model's input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

# "auto" tiles an image whose longer side exceeds this many model inputs (smaller ones are encoded whole).
AUTO_FACTOR = 1.5
# Default overlap between neighbouring tiles, as a fraction of the tile side: every object up to this size
# lies whole inside some tile (64 px for a 256 px model input, 256 px for 1024).
DEFAULT_OVERLAP_FRACTION = 0.25
# Context added around a prompt larger than a tile, per side, as a fraction of its longer side.
REGION_CONTEXT = 0.125
# Output rows upsampled per step when masks are pasted back (bounds the float work of a huge region).
PASTE_ROWS = 1024


@dataclass(frozen=True)
class TileSpec:
    """How ``OVSAMPredictor`` tiles a large image (``tiling="auto"`` is ``TileSpec()``).

    tile_size: tile side in view pixels; None (default) is the model's input size, the only size it takes.
    overlap: view pixels shared by neighbouring tiles; None (default) is ``tile_size // 4``, so that any object
        up to that size lies whole inside some tile. At most half a tile.
    scale: the image is seen at this resolution before tiling (> 0; 0.5 views it at half size, for objects
        much larger than the model's sweet spot; 2 at double size, for tiny ones). A tile covers
        ``tile_size / scale`` image pixels.
    min_factor: tile only images whose longer side, at ``scale``, exceeds ``min_factor`` tile sides (>= 1);
        smaller images are encoded whole, exactly as without tiling.
    """

    tile_size: int | None = None
    overlap: int | None = None
    scale: float = 1.0
    min_factor: float = AUTO_FACTOR

    def resolved(self, model_size: int) -> TileSpec:
        """This spec checked against a model of input side ``model_size``, with its defaults filled in."""
        if self.tile_size is not None and (_not_int(self.tile_size) or self.tile_size != model_size):
            raise ValueError(
                f"tile_size {self.tile_size!r} is not this model's input size ({model_size} px): tiles are "
                "encoded at the model's input size; leave tile_size=None, or use scale to view the image "
                "at another resolution."
            )
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a number > 0 (1 = native resolution), got {self.scale!r}.")
        if round(model_size / self.scale) < 1:
            raise ValueError(f"scale {self.scale} is too large: a tile would cover less than one pixel.")
        overlap = int(model_size * DEFAULT_OVERLAP_FRACTION) if self.overlap is None else self.overlap
        if _not_int(overlap) or not 0 <= overlap <= model_size // 2:
            raise ValueError(
                f"overlap must be a whole number of pixels from 0 to half a tile ({model_size // 2}), "
                f"got {self.overlap!r}."
            )
        if not (isinstance(self.min_factor, (int, float)) and self.min_factor >= 1):
            raise ValueError(f"min_factor must be a number >= 1 (tile sides), got {self.min_factor!r}.")
        return replace(self, tile_size=model_size, overlap=int(overlap), scale=float(self.scale))

    @property
    def side(self) -> int:
        """Tile side in image pixels (resolved specs only)."""
        assert self.tile_size is not None
        return max(1, round(self.tile_size / self.scale))

    @property
    def stride(self) -> int:
        """Step between tile origins in image pixels (resolved specs only)."""
        assert self.tile_size is not None and self.overlap is not None
        return max(1, round((self.tile_size - self.overlap) / self.scale))

    def tiles(self, image_size: tuple[int, int]) -> bool:
        """Whether an image of (H, W) is tiled under this (resolved) spec."""
        assert self.tile_size is not None
        return max(image_size) * self.scale > self.min_factor * self.tile_size


def resolve_tiling(tiling: object, model_size: int) -> TileSpec | None:
    """``OVSAMPredictor``'s tiling argument ("auto", "off" or a ``TileSpec``) resolved for the model's input
    size; None for "off"."""
    if not (isinstance(tiling, TileSpec) or tiling in ("auto", "off")):
        raise ValueError(f'tiling must be "auto", "off" or a TileSpec(...), got {tiling!r}.')
    if tiling == "off":
        return None
    return (TileSpec() if tiling == "auto" else tiling).resolved(model_size)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Window:
    """A rectangle of the full image, rows y0:y1 and columns x0:x1 (end exclusive), seen by the model as an
    unpadded input of ``input_size`` (h, w) pixels (longer side at most the model's input size)."""

    y0: int
    x0: int
    y1: int
    x1: int
    input_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(rows, cols) of image pixels."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.y1, self.x1

    def xy_scale(self) -> np.ndarray:
        """(sx, sy): input-frame pixels per image pixel."""
        return np.array([self.input_size[1] / self.size[1], self.input_size[0] / self.size[0]], np.float32)

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) (x, y) full-image pixels -> the input frame of this window."""
        return (np.asarray(xy, np.float32) - np.array([self.x0, self.y0], np.float32)) * self.xy_scale()


def view_input_size(size: tuple[int, int], scale: float, model_size: int) -> tuple[int, int]:
    """(h, w) of a (rows, cols) region seen at ``scale``, longer side capped at the model's input size."""
    h, w = size
    factor = min(scale, model_size / max(h, w))
    return max(1, min(model_size, int(h * factor + 0.5))), max(1, min(model_size, int(w * factor + 0.5)))


def tile_starts(length: int, side: int, stride: int) -> list[int]:
    """Origins of tiles of ``side`` along an axis of ``length`` pixels: every ``stride``, the last one clamped
    so that it ends at the image edge (one tile of the whole axis when it is shorter than a tile)."""
    if length <= side:
        return [0]
    count = math.ceil((length - side) / stride) + 1
    return sorted({min(i * stride, length - side) for i in range(count)})


def tile_grid(image_size: tuple[int, int], spec: TileSpec) -> list[Window]:
    """The grid of a (resolved) spec over an image of (H, W), row-major; tiles at the edges stay inside."""
    height, width = image_size
    side, stride = spec.side, spec.stride
    assert spec.tile_size is not None
    windows = []
    for y0 in tile_starts(height, side, stride):
        for x0 in tile_starts(width, side, stride):
            y1, x1 = min(y0 + side, height), min(x0 + side, width)
            windows.append(
                Window(y0, x0, y1, x1, view_input_size((y1 - y0, x1 - x0), spec.scale, spec.tile_size))
            )
    return windows


def prompt_extents(
    points: np.ndarray | None, point_labels: np.ndarray | None, boxes: np.ndarray | None
) -> np.ndarray:
    """(N, 4) XYXY extent of each prompt (validated, full-image frame): its box and its real points."""
    parts = []
    if boxes is not None:
        parts.append(np.asarray(boxes, np.float64))
    if points is not None and point_labels is not None:
        real = np.asarray(point_labels) >= 0
        xs = np.where(real, points[..., 0], np.nan)
        ys = np.where(real, points[..., 1], np.nan)
        parts.append(np.stack([np.nanmin(xs, 1), np.nanmin(ys, 1), np.nanmax(xs, 1), np.nanmax(ys, 1)], 1))
    extents = parts[0]
    for other in parts[1:]:
        low, high = np.minimum(extents[:, :2], other[:, :2]), np.maximum(extents[:, 2:], other[:, 2:])
        extents = np.concatenate([low, high], 1)
    return extents


def margin(extent: np.ndarray, window: Window, image_size: tuple[int, int]) -> float:
    """Smallest distance (image px) from an XYXY extent to an edge of ``window`` that is not an image edge;
    negative when the extent sticks out of the window, infinite when every side is an image edge."""
    height, width = image_size
    x0, y0, x1, y1 = (float(v) for v in extent)
    sides = [
        (x0 - window.x0, window.x0 == 0),
        (y0 - window.y0, window.y0 == 0),
        (window.x1 - x1, window.x1 == width),
        (window.y1 - y1, window.y1 == height),
    ]
    distances = [d if not at_edge else (math.inf if d >= 0 else d) for d, at_edge in sides]
    return min(distances)


def grid_bounds(grid: list[Window]) -> np.ndarray:
    """(T, 4) int64 (y0, x0, y1, x1) of the tiles of a grid."""
    return np.array([w.bounds for w in grid], np.int64).reshape(-1, 4)


def grid_margins(extent: np.ndarray, bounds: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """``margin`` of an XYXY extent to every tile of (T, 4) ``bounds`` at once: (T,) float64."""
    x0, y0, x1, y1 = (float(v) for v in extent)
    distances = np.stack([x0 - bounds[:, 1], y0 - bounds[:, 0], bounds[:, 3] - x1, bounds[:, 2] - y1], 1)
    edges = np.stack(
        [bounds[:, 1] == 0, bounds[:, 0] == 0, bounds[:, 3] == image_size[1], bounds[:, 2] == image_size[0]],
        1,
    )
    distances = np.where(edges & (distances >= 0), np.inf, distances.astype(np.float64))
    return distances.min(axis=1)


def route(
    extent: np.ndarray,
    grid: list[Window],
    image_size: tuple[int, int],
    spec: TileSpec,
    bounds: np.ndarray | None = None,
) -> tuple[int, Window]:
    """The view a prompt of XYXY ``extent`` is decoded on (see the module docstring): (grid index, window),
    index -1 for a window made for this prompt. bounds: ``grid_bounds(grid)``, when the caller keeps it."""
    margins = grid_margins(extent, grid_bounds(grid) if bounds is None else bounds, image_size)
    best = int(np.argmax(margins))
    if margins[best] >= 0:
        return best, grid[best]
    assert spec.tile_size is not None
    x0, y0, x1, y1 = (float(v) for v in extent)
    side = spec.side
    if x1 - x0 <= side and y1 - y0 <= side:
        return -1, _window_around((y0 + y1) / 2, (x0 + x1) / 2, side, side, image_size, spec)
    pad = REGION_CONTEXT * max(x1 - x0, y1 - y0)
    top, left = max(0, math.floor(y0 - pad)), max(0, math.floor(x0 - pad))
    bottom, right = min(image_size[0], math.ceil(y1 + pad)), min(image_size[1], math.ceil(x1 + pad))
    size = (bottom - top, right - left)
    return -1, Window(
        top, left, bottom, right, view_input_size(size, spec.tile_size / max(size), spec.tile_size)
    )


def _window_around(
    cy: float, cx: float, rows: int, cols: int, image_size: tuple[int, int], spec: TileSpec
) -> Window:
    """A rows x cols window centred on (cy, cx), shifted to lie inside the image."""
    height, width = image_size
    rows, cols = min(rows, height), min(cols, width)
    y0 = int(min(max(0, round(cy - rows / 2)), height - rows))
    x0 = int(min(max(0, round(cx - cols / 2)), width - cols))
    assert spec.tile_size is not None
    return Window(y0, x0, y0 + rows, x0 + cols, view_input_size((rows, cols), spec.scale, spec.tile_size))


def paste_bounds(low_res: torch.Tensor, window: Window, model_size: int) -> tuple[int, int, int, int] | None:
    """Rows r0:r1 and columns c0:c1 of ``window`` (window pixels) that can hold mask pixels of logits
    [M, L, L] (padded input frame), or None when every logit is <= 0. Bilinear upsampling is positive only
    next to a positive logit, so the positive cells widened by one cell bound the mask exactly."""
    positive = (low_res > 0).any(dim=0)
    if not bool(positive.any()):
        return None
    side = low_res.shape[-1]
    rows = torch.nonzero(positive.any(dim=1)).flatten()
    cols = torch.nonzero(positive.any(dim=0)).flatten()
    bounds = []
    for first, last, inp, out in (
        (int(rows[0]), int(rows[-1]), window.input_size[0], window.size[0]),
        (int(cols[0]), int(cols[-1]), window.input_size[1], window.size[1]),
    ):
        factor = model_size / side * out / inp  # window pixels per low-res cell
        lo = math.floor((first - 0.5) * factor - 0.5)
        hi = math.ceil((last + 1.5) * factor - 0.5) + 1
        bounds.append((max(0, lo), min(out, hi)))
    (r0, r1), (c0, c1) = bounds
    return r0, r1, c0, c1


def paste_logits(
    low_res: torch.Tensor, window: Window, model_size: int, bounds: tuple[int, int, int, int]
) -> torch.Tensor:
    """Logits [M, L, L] (padded input frame of ``window``) upsampled bilinearly to window pixels, rows r0:r1
    and columns c0:c1 only: [M, r1 - r0, c1 - c0] float32 (one step from the low-resolution grid, borders
    clamped as ``F.interpolate`` does)."""
    r0, r1, c0, c1 = bounds
    (h_in, w_in), (rows, cols) = window.input_size, window.size
    xs = (torch.arange(c0, c1, dtype=torch.float32) + 0.5) * (w_in / cols) * (2 / model_size) - 1
    logits = low_res.float()[None]
    parts = []
    for start in range(r0, r1, PASTE_ROWS):
        stop = min(r1, start + PASTE_ROWS)
        ys = (torch.arange(start, stop, dtype=torch.float32) + 0.5) * (h_in / rows) * (2 / model_size) - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].to(logits.device)
        parts.append(
            F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        )
    return torch.cat(parts, dim=1).cpu()


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, np.integer))
