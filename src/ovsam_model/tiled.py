"""Lazy tiles of a large image for ``OVSAMPredictor``: regions read on demand, encoded the first time a prompt
needs them, kept in an LRU within a byte budget; and the tiled predict path (each prompt on its view).

The image is any (H, W) or (H, W, C) array with ``shape``, ``dtype`` and slicing: numpy, zarr, dask, or a
tifffile ``aszarr`` store opened with zarr. Only the windows prompts touch are read; nothing reads the whole
image. One contrast rule serves every tile (``ovsam_model.image``): the given contrast limits, else limits
estimated once per image (``image_contrast_limits``), so that neighbouring tiles see the same grey levels.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .image import DEFAULT_PERCENTILES, check_contrast_limits, check_image, contrast_limits_of, to_model_rgb
from .modeling.ovsam import OVSAM, ImageFeatures
from .prediction import CompactMasks, Prediction, TorchPrediction, to_prediction
from .prompts import NumpyPrompts, PromptSet
from .tiling import (
    TileSpec,
    Window,
    grid_bounds,
    paste_bounds,
    paste_logits,
    prompt_extents,
    route,
    tile_grid,
)

# Tile features kept in memory by default: 3 tiles of ovsam_rn50x16 (137 MiB each), 600 of demo (0.85 MiB).
DEFAULT_TILE_CACHE_BYTES = 512 * 1024**2
# Contrast limits of a lazy image: from SAMPLE_GRID x SAMPLE_GRID patches of SAMPLE_SIDE pixels on an even grid
# (at most 4.2 million pixels, read from at most 64 places: never the whole image).
SAMPLE_GRID, SAMPLE_SIDE = 8, 256
# Pixels of a numpy image's strided sample, and the block side of the sparse-image rule (``sample_limits``).
SAMPLE_PIXELS, BLOCK = 4_000_000, 64

# Largest image encoded whole (tiling="off"): its float RGB model input alone would take 3 GiB.
MAX_WHOLE_PIXELS = 2**28

TileCallback = Callable[[int, Window], None]


class TileDecoder(Protocol):
    """What the tiled path needs of ``OVSAMPredictor`` (a protocol, so that this module does not import it)."""

    model: OVSAM
    clean_masks: bool
    chunk_size: int

    @property
    def device(self) -> torch.device: ...

    def predict_torch(
        self, features: ImageFeatures, prompts: PromptSet, *, multimask_output: bool = False
    ) -> TorchPrediction: ...


def as_image(image: Any) -> Any:
    """A numpy array, or an array-like read by slicing (a numpy dtype, a shape) kept as it is; else np.asarray."""
    try:
        if isinstance(image, np.ndarray) or (np.dtype(image.dtype) and hasattr(image, "__getitem__")):
            return image
    except (AttributeError, TypeError):
        pass
    return np.asarray(image)


def check_cache_bytes(value: object) -> int:
    """The tile cache budget as a whole number of bytes >= 0, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"tile_cache_bytes must be a whole number of bytes >= 0, got {value!r}.")
    return int(value)


def check_whole_size(size: tuple[int, int]) -> None:
    """Refuse an image too large to be encoded whole (tiling off), with the way to segment it."""
    if size[0] * size[1] > MAX_WHOLE_PIXELS:
        raise ValueError(
            f"This {size[1]}x{size[0]} image is too large to encode whole: use tiling='auto' (the default) "
            "and pass it as a zarr or dask array (e.g. tifffile.imread(path, aszarr=True) opened with zarr), "
            "so that only the tiles prompts touch are read."
        )


def image_size_of(image: Any) -> tuple[int, int]:
    """(H, W) of an image array or array-like, checked by the contrast rule's shape and dtype rules (no read)."""
    shape, dtype = tuple(int(s) for s in image.shape), np.dtype(image.dtype)
    check_image(np.broadcast_to(np.zeros((), dtype), shape))  # the same checks on a view that holds no pixels
    return shape[0], shape[1]


def image_contrast_limits(image: Any, contrast_limits: Sequence[float] | None) -> tuple[float, float] | None:
    """The limits every tile is mapped with: the given ones; None for uint8 and bool images (their own rule in
    ``to_model_rgb``); else estimated once from a sample (``sample_limits``): a numpy image strided to at most
    about 4 million pixels, a lazy one read at SAMPLE_GRID x SAMPLE_GRID patches of SAMPLE_SIDE px."""
    if contrast_limits is not None:
        return check_contrast_limits(contrast_limits)
    dtype = np.dtype(image.dtype)
    if dtype.kind == "b" or dtype == np.uint8:
        return None
    channels = slice(0, 3) if len(image.shape) == 3 and image.shape[2] >= 4 else slice(None)  # alpha: dropped
    if isinstance(image, np.ndarray):
        step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / SAMPLE_PIXELS))))
        return sample_limits([image[::step, ::step, channels] if image.ndim == 3 else image[::step, ::step]])
    height, width = image.shape[:2]
    patches = []
    for y in _sample_starts(height):
        for x in _sample_starts(width):
            patch = np.asarray(image[y : y + SAMPLE_SIDE, x : x + SAMPLE_SIDE])
            patches.append(patch[..., channels] if patch.ndim == 3 else patch)
    return sample_limits(patches)


def sample_limits(patches: Sequence[np.ndarray]) -> tuple[float, float]:
    """Contrast limits of a tiled image from sampled patches (H, W) or (H, W, C): low is the 0.5th percentile of
    all sampled pixels; high is the larger of their 99.5th percentile and the largest 99.5th percentile of a
    BLOCK x BLOCK block. On a dense image the two agree; on a sparse one (a few cells on a dark background,
    common in mosaics) the image-wide 99.5th percentile is background, which would saturate every object and
    stretch the background's noise over the whole range, while the blocks that hold objects see them."""
    values = np.concatenate([p.reshape(-1) for p in patches])
    lo, hi = contrast_limits_of(values.reshape(1, -1))  # as a (1, N) image: it may stride above 4M pixels
    for patch in patches:
        rows, cols = min(BLOCK, patch.shape[0]), min(BLOCK, patch.shape[1])
        h, w = patch.shape[0] // rows * rows, patch.shape[1] // cols * cols
        grid = patch[:h, :w].reshape(h // rows, rows, w // cols, -1).swapaxes(1, 2)
        blocks = grid.reshape(grid.shape[0] * grid.shape[1], -1)  # one row of pixels per block
        hi = max(hi, float(np.percentile(blocks, DEFAULT_PERCENTILES[1], axis=1).max()))
    return lo, hi


def _sample_starts(length: int) -> list[int]:
    if length <= SAMPLE_GRID * SAMPLE_SIDE:
        return list(range(0, length, SAMPLE_SIDE))[:SAMPLE_GRID]
    return [int(v) for v in np.linspace(0, length - SAMPLE_SIDE, SAMPLE_GRID)]


class TiledImage:
    """A large 2D image seen through the tile grid of a resolved ``TileSpec``; reads windows on demand.

    image: (H, W) or (H, W, C) array-like (read by slicing only). size: (H, W). grid: the tiles (``Window``s,
    row-major); bounds: their (T, 4) (y0, x0, y1, x1). contrast_limits: see ``image_contrast_limits``.
    reads: windows read so far.
    """

    def __init__(self, image: Any, spec: TileSpec, contrast_limits: Sequence[float] | None) -> None:
        self.image = image
        self.size = image_size_of(image)
        self.spec = spec
        self.grid = tile_grid(self.size, spec)
        self.bounds = grid_bounds(self.grid)
        self.contrast_limits = image_contrast_limits(image, contrast_limits)
        self.reads = 0

    def read(self, window: Window) -> np.ndarray:
        """The pixels of ``window`` ((rows, cols) or (rows, cols, C)), every k-th one when the window is more
        than 4x its model input (k keeps at least twice the input's resolution for the resizing)."""
        step = max(
            1, int(min(window.size[0] / window.input_size[0], window.size[1] / window.input_size[1]) // 2)
        )
        self.reads += 1
        return np.asarray(self.image[window.y0 : window.y1 : step, window.x0 : window.x1 : step])

    def model_input(self, pixels: np.ndarray, window: Window) -> torch.Tensor:
        """float [3, h, w] in 0..255 at the window's input size, by the image-wide contrast rule."""
        rgb = to_model_rgb(pixels, self.contrast_limits)
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        if tuple(rgb.shape[:2]) != window.input_size:
            tensor = F.interpolate(
                tensor, window.input_size, mode="bilinear", align_corners=False, antialias=True
            )
        return tensor[0].clamp_(0, 255)

    def key(self, pixels: np.ndarray, window: Window) -> str:
        """Content key of a view: its geometry, the scale, the contrast limits and a hash of its pixels."""
        digest = hashlib.blake2b(digest_size=16)
        header = (window.bounds, window.input_size, self.spec.scale, self.contrast_limits, pixels.dtype.str)
        digest.update(repr((header, pixels.shape)).encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
        return digest.hexdigest()


class TileCache:
    """Encoded views of one ``TiledImage``: encoded on first use, least recently used dropped past max_bytes
    (the most recent one is always kept). encodings: views encoded so far; encoding: (index, window) of the
    view being encoded, else None; notify(index, window) is called just before each encoding (index -1 for a
    view made for one prompt). Not thread-safe: use it from one thread at a time (a shallow copy of the
    predictor shares it; give a worker its own predictor and move states with get/set_tile_embedding)."""

    def __init__(
        self,
        tiled: TiledImage,
        encode: Callable[[torch.Tensor], ImageFeatures],
        max_bytes: int,
        notify: TileCallback,
    ) -> None:
        self.tiled = tiled
        self._encode = encode
        self.max_bytes = max_bytes
        self._notify = notify
        self._features: OrderedDict[Window, ImageFeatures] = OrderedDict()
        self._keys: dict[Window, str] = {}
        self._read: tuple[Window, np.ndarray] | None = None  # the pixels key() read last, for get() to use
        self.encodings = 0
        self.encoding: tuple[int, Window] | None = None

    def __contains__(self, window: Window) -> bool:
        return window in self._features

    def window(self, index: object) -> Window:
        """Tile ``index`` of the grid, else a ValueError naming the valid range."""
        grid = self.tiled.grid
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(grid):
            raise ValueError(
                f"Tile {index!r} is past the edge of this image's {len(grid)} tiles: give an index from 0 to "
                f"{len(grid) - 1} (predictor.tile_grid lists them)."
            )
        return grid[int(index)]

    def get(self, window: Window, index: int = -1) -> ImageFeatures:
        """The features of ``window``, encoding it when it is not kept."""
        if window in self._features:
            self._features.move_to_end(window)
            return self._features[window]
        if self._read is not None and self._read[0] == window:
            pixels = self._read[1]
        else:
            pixels = self.tiled.read(window)
        self._read = None
        self._keys[window] = self.tiled.key(pixels, window)
        tensor = self.tiled.model_input(pixels, window)
        del pixels
        self.encoding = (index, window)
        self._notify(index, window)
        try:
            features = self._encode(tensor)
        finally:
            self.encoding = None
        self.encodings += 1
        self.put(window, features)
        return features

    def put(self, window: Window, features: ImageFeatures) -> None:
        self._features[window] = features
        self._features.move_to_end(window)
        while len(self._features) > 1 and self.nbytes > self.max_bytes:
            self._features.popitem(last=False)

    def key(self, window: Window) -> str:
        """The content key of ``window`` (reads it once, the first time; an encoding right after uses that read)."""
        if window not in self._keys:
            pixels = self.tiled.read(window)
            self._keys[window] = self.tiled.key(pixels, window)
            self._read = (window, pixels)  # a cache miss encodes it next: no second read
        return self._keys[window]

    @property
    def nbytes(self) -> int:
        return sum(_feature_bytes(f) for f in self._features.values())


def _feature_bytes(features: ImageFeatures) -> int:
    tensors = list(features.tensors().values()) + (
        [features.clip_maps] if features.clip_maps is not None else []
    )
    return sum(t.numel() * t.element_size() for t in tensors)


def predict_tiled(
    predictor: TileDecoder,
    cache: TileCache,
    prompts: NumpyPrompts,
    names: Sequence[str],
    multimask_output: bool,
    top_k: int,
) -> Prediction:
    """Decode and name each prompt on its view (``tiling.route``) and paste its mask back: a ``Prediction``
    in the full-image frame with ``CompactMasks``; views are encoded at most once, in order of first use."""
    tiled, model_size = cache.tiled, predictor.model.config.image_size
    routes = prompt_routes(cache, prompts)
    groups: dict[Window, list[int]] = {}
    for i, (_, window) in enumerate(routes):
        groups.setdefault(window, []).append(i)
    n = len(routes)
    m = 3 if multimask_output and predictor.model.mask_decoder.num_multimask_outputs > 0 else 1
    side = 4 * predictor.model.config.embedding_size
    crops: list[np.ndarray] = [np.zeros((m, 0, 0), bool)] * n
    offsets = np.zeros((n, 2), np.int64)
    logits = torch.zeros(n, m, side, side, dtype=torch.float16)
    iou, probs = torch.zeros(n, m), torch.zeros(n, len(names) + 1)
    for window, group in groups.items():
        features = cache.get(window, routes[group[0]][0])
        for start in range(0, len(group), predictor.chunk_size):  # chunk by chunk: float logits of a few only
            members = group[start : start + predictor.chunk_size]
            part = predictor.predict_torch(
                features,
                _view_prompts(prompts, members, window, predictor.device),
                multimask_output=multimask_output,
            )
            for row, i in enumerate(members):
                box = prompts.boxes[i] if predictor.clean_masks and prompts.boxes is not None else None
                crops[i], offsets[i] = paste_mask(part.low_res_logits[row], window, model_size, box)
            logits[members] = part.low_res_logits.to(torch.float16).cpu()
            iou[members], probs[members] = part.iou.float().cpu(), part.probabilities.float().cpu()
    masks = CompactMasks(crops, offsets, tiled.size, m)
    result = to_prediction(masks, iou, logits, probs[:, :-1], names, top_k, background=probs[:, -1])
    result.tiles = np.array([index for index, _ in routes], np.int64)
    return result


def prompt_routes(cache: TileCache, prompts: NumpyPrompts) -> list[tuple[int, Window]]:
    """(grid index or -1, window) of the view each prompt is decoded on (``tiling.route``)."""
    tiled = cache.tiled
    extents = prompt_extents(prompts.points, prompts.point_labels, prompts.boxes)
    return [route(extent, tiled.grid, tiled.size, tiled.spec, tiled.bounds) for extent in extents]


def _view_prompts(
    prompts: NumpyPrompts, members: list[int], window: Window, device: torch.device
) -> PromptSet:
    """The prompts ``members`` in the input frame of ``window``."""
    points = labels = boxes = None
    if prompts.points is not None and prompts.point_labels is not None:
        points = torch.as_tensor(window.to_input(prompts.points[members]), device=device)
        labels = torch.as_tensor(prompts.point_labels[members], device=device)
    if prompts.boxes is not None:
        corners = window.to_input(prompts.boxes[members].reshape(-1, 2, 2)).reshape(-1, 4)
        boxes = torch.as_tensor(corners, device=device)
    return PromptSet(points, labels, boxes)


def paste_mask(
    low_res: torch.Tensor, window: Window, model_size: int, box: np.ndarray | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Logits [M, L, L] of one prompt decoded on ``window`` -> (bool (M, h, w) crop, (row, col) offset) in the
    full-image frame, cropped to the masks' bounding box; with a box (XYXY, full image), pixels outside it are
    off (the rule of ``postprocess.clip_masks_to_boxes``)."""
    m = low_res.shape[0]
    empty = (np.zeros((m, 0, 0), bool), (window.y0, window.x0))
    bounds = paste_bounds(low_res, window, model_size)
    if bounds is None:
        return empty
    r0, r1, c0, c1 = bounds
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        c0, c1 = max(c0, int(np.floor(x0)) - window.x0), min(c1, int(np.floor(x1)) + 1 - window.x0)
        r0, r1 = max(r0, int(np.floor(y0)) - window.y0), min(r1, int(np.floor(y1)) + 1 - window.y0)
    if r1 <= r0 or c1 <= c0:
        return empty
    mask = (paste_logits(low_res, window, model_size, (r0, r1, c0, c1)) > 0).numpy()
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    if rows.size == 0:
        return empty
    crop = np.ascontiguousarray(mask[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    return crop, (window.y0 + r0 + int(rows[0]), window.x0 + c0 + int(cols[0]))
