"""Large slices in the session: read and encoded tile by tile, only where prompts are; no Qt, no napari.

A slice is *tiled* when the predictor's tiling (``OVSAMPredictor(model, tiling="auto")``) tiles its (H, W):
its longer side exceeds the model input by the predictor's margin (1.5 inputs by default). Smaller slices keep
the whole-image path of the session unchanged.

A tiled slice is seen through a lazy :class:`SliceView` (only the regions the predictor asks for are read) by
one predictor copy per slice (:class:`TiledSlice`), shared by the worker and the GUI thread under its lock:

- the worker (:func:`iter_prepare`) restores the tiles the prompts need from the embedding cache, or encodes
  them with ``predictor.prepare_tiles`` and stores each grid tile's state under
  ``(model fingerprint, predictor.tile_key(index))``: a content key, so reopening the image (another session,
  another process sharing the cache folder) encodes nothing;
- the GUI thread (:func:`predict_objects` with ``worker=False``) decodes on tiles that are kept, restoring
  grid tiles from the cache's memory only, and never encodes: a prompt that needs a tile which is not there
  raises :class:`TilesNeeded`, and the caller runs :func:`iter_prepare` in a worker first.

A slice of at most ``EAGER_TILES`` tiles is encoded whole, tile by tile, when it comes into view
(:func:`iter_prepare_all`); precompute covers every tile of the slices it is given
(:func:`iter_precompute_tiles`, resumable: verified entries are skipped). Views made for one prompt (a prompt
larger than a tile, or across tiles beyond their overlap; ``ovsam_model.tiling.route``) are kept by the
predictor only, never cached.

Frames: prompts are :class:`~napari_ovsam.prompts.ObjectPrompt` (x, y) pixels of the slice; masks come back
as :class:`~napari_ovsam.results.CroppedMasks` ((row, col) crops with their offsets in the slice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ovsam_model.prompts import normalize_prompts
from ovsam_model.tiled import prompt_routes

from .cache import CacheKey, EmbeddingCache
from .prompts import ObjectPrompt, batch_prompts
from .results import CroppedMasks

Route = tuple[int, Any]  # (grid tile index, or -1 for a view made for one prompt; its Window)
# A slice of at most this many tiles (e.g. 256 px under a 128 px model) is encoded whole, tile by tile, when
# it comes into view, as a small image is: its first prompt waits for nothing. Larger ones: where prompts are.
EAGER_TILES = 9


class TilesNeeded(RuntimeError):
    """Prompts on a tiled slice need tiles that are not encoded (nor in the cache's memory): run
    ``AnnotationSession.iter_tiles(slice_index, objects)`` in a worker, then decode again."""

    def __init__(self, slice_index: tuple[int, ...], objects: Sequence[ObjectPrompt], missing: int) -> None:
        super().__init__(f"{missing} tile(s) of slice {slice_index} must be encoded first.")
        self.slice_index, self.objects, self.missing = tuple(slice_index), list(objects), missing


class SliceView:
    """One (H, W) or (H, W, C) slice of a (..., H, W[, C]) array-like (zarr, dask, a tifffile zarr store),
    read only where it is sliced: ``view[r0:r1, c0:c1]`` reads that region of the slice."""

    def __init__(self, data: Any, index: tuple[int, ...]) -> None:
        self.data, self.index = data, tuple(int(i) for i in index)
        self.shape = tuple(int(s) for s in data.shape[len(self.index) :])
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.data[(*self.index, *key)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def slice_view(data: Any, index: tuple[int, ...]) -> Any:
    """The slice ``index`` of an image without reading it: a numpy view, or a :class:`SliceView`."""
    if isinstance(data, np.ndarray):
        return data[tuple(index)] if index else data
    return SliceView(data, index)


def tiles_slices_of(predictor: Any, size: tuple[int, int]) -> bool:
    """Whether ``predictor`` tiles a slice of (H, W) (False for predictors without tiling, or tiling off)."""
    spec = getattr(predictor, "tiling", None)
    return spec is not None and bool(spec.tiles((int(size[0]), int(size[1]))))


@dataclass
class TiledSlice:
    """The predictor of one tiled slice (its image set: nothing encoded yet), the lock its users share, and
    the content keys of its grid tiles known so far (index -> ``predictor.tile_key(index)``)."""

    predictor: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: dict[int, str] = field(default_factory=dict)
    prepared: tuple[Any, ...] | None = None  # the windows of the last worker preparation

    @classmethod
    def open(cls, predictor: Any, view: Any, contrast_limits: Any) -> TiledSlice:
        """Set the slice on ``predictor`` (a copy of the session's): reads a contrast sample, encodes nothing."""
        predictor.set_image(view, contrast_limits=contrast_limits)
        return cls(predictor)

    @property
    def grid_size(self) -> int:
        return len(self.predictor.tile_grid)


def object_routes(predictor: Any, objects: Sequence[ObjectPrompt]) -> list[Route]:
    """(tile index or -1, window) of the view each object is decoded on (``tiling.route``), in order."""
    routes: list[Route] = [(-1, None)] * len(objects)
    for members, kwargs in batch_prompts(objects):
        prompts = normalize_prompts(
            kwargs["points"], kwargs["point_labels"], kwargs["boxes"], predictor.original_size
        )
        for i, route in zip(members, prompt_routes(predictor.tiles, prompts)):
            routes[int(i)] = route
    return routes


def _groups(routes: list[Route]) -> dict[Any, list[int]]:
    """Objects per view, views in order of first use."""
    groups: dict[Any, list[int]] = {}
    for i, (_, window) in enumerate(routes):
        groups.setdefault(window, []).append(i)
    return groups


def _restore(tiled: TiledSlice, index: int, window: Any, lookup: Callable[[CacheKey], Any], fp: str) -> bool:
    """Whether the view is kept by the predictor, after restoring a grid tile from the cache if it is there."""
    predictor = tiled.predictor
    if window in predictor.tiles:
        return True
    if index < 0 or index not in tiled.keys:
        return False
    state = lookup((fp, tiled.keys[index]))
    if state is None:
        return False
    predictor.set_tile_embedding(index, state)
    return window in predictor.tiles


def iter_prepare(
    tiled: TiledSlice,
    objects: Sequence[ObjectPrompt],
    cache: EmbeddingCache,
    cache_lock: threading.Lock,
    fingerprint: str,
) -> Generator[tuple[int, int, str], None, int]:
    """Worker: make every view the objects are decoded on ready, from the cache or by encoding it; yields
    ``(done, total, message)`` before each encoding ("Encoding tile 3 of 64…"); returns the views encoded."""
    predictor, encoded = tiled.predictor, 0
    with tiled.lock:
        routes = object_routes(predictor, objects)
    groups = _groups(routes)
    grid = tiled.grid_size

    def lookup(key: CacheKey) -> Any:
        with cache_lock:
            return cache.get(key)  # a disk hit is read into memory here, not on the GUI thread

    for done, (window, members) in enumerate(groups.items()):
        index = routes[members[0]][0]
        with tiled.lock:
            if index >= 0 and index not in tiled.keys:
                tiled.keys[index] = predictor.tile_key(index)  # reads the tile (no encoding)
            if _restore(tiled, index, window, lookup, fingerprint):
                continue
        what = f"tile {index + 1} of {grid}" if index >= 0 else f"a view around a prompt ({grid} tiles)"
        yield done, len(groups), f"Encoding {what}…"
        with tiled.lock:
            predictor.prepare_tiles(**batch_prompts([objects[members[0]]])[0][1])
            state = predictor.get_tile_embedding(index) if index >= 0 else None
        encoded += 1
        if state is not None:
            with cache_lock:
                cache.put((fingerprint, tiled.keys[index]), state)
    tiled.prepared = tuple(groups)
    return encoded


@dataclass
class TiledPrediction:
    """What :func:`predict_objects` decoded: per object its cropped mask, scores and alternatives."""

    masks: CroppedMasks
    scores: np.ndarray
    iou: np.ndarray
    topk_names: list[list[str]]
    topk_scores: list[np.ndarray]
    encoded: int = 0  # views encoded for it (worker only)
    background: np.ndarray | None = None  # float32 (N,) probability of the background class


def predict_objects(
    tiled: TiledSlice,
    objects: Sequence[ObjectPrompt],
    slice_index: tuple[int, ...],
    cache: EmbeddingCache,
    cache_lock: threading.Lock,
    fingerprint: str,
    *,
    top_k: int,
    worker: bool,
    names_from: Any = None,
) -> TiledPrediction:
    """Decode and name objects on a tiled slice, view by view (each view restored just before it is used).

    worker=False (GUI thread): never waits for the lock nor encodes; raises :class:`TilesNeeded` when a view
    is not ready. worker=True: prepares what is missing first (:func:`iter_prepare`). names_from: the
    predictor whose vocabulary names the objects (the session's: the slice's copy was made before the user
    may have changed it)."""
    encoded = 0
    if worker:
        encoded = drain(iter_prepare(tiled, objects, cache, cache_lock, fingerprint))
        tiled.lock.acquire()
    elif not tiled.lock.acquire(blocking=False):  # the worker is encoding a tile of this slice
        raise TilesNeeded(slice_index, objects, 0)
    try:
        if names_from is not None:  # the vocabulary as it is now (set_vocabulary rebinds these three)
            for name in ("vocabulary", "text_embeddings", "seen"):
                setattr(tiled.predictor, name, getattr(names_from, name))
        prediction = _decode(tiled, objects, slice_index, cache, cache_lock, fingerprint, top_k)
    finally:
        tiled.lock.release()
    prediction.encoded = encoded
    return prediction


def _decode(
    tiled: TiledSlice,
    objects: Sequence[ObjectPrompt],
    slice_index: tuple[int, ...],
    cache: EmbeddingCache,
    cache_lock: threading.Lock,
    fingerprint: str,
    top_k: int,
) -> TiledPrediction:
    predictor = tiled.predictor
    routes = object_routes(predictor, objects)
    groups = _groups(routes)

    def lookup(key: CacheKey) -> Any:
        with cache_lock:
            return cache.peek(key)  # memory only: the GUI thread reads no file

    missing = [w for w, m in groups.items() if not _restore(tiled, routes[m[0]][0], w, lookup, fingerprint)]
    if missing:
        if tiled.prepared == tuple(groups):  # just prepared, and still not all kept: they do not fit
            raise ValueError(
                f"These {len(objects)} prompts need {len(groups)} tiles at once, more than the predictor's "
                "tile memory holds: segment fewer objects at once (or raise tile_cache_bytes)."
            )
        raise TilesNeeded(slice_index, objects, len(missing))
    n = len(objects)
    crops: list[np.ndarray] = [np.zeros((0, 0), bool)] * n
    offsets = np.zeros((n, 2), np.int64)
    scores, iou, background = (np.zeros(n, np.float32) for _ in range(3))
    topk_names: list[list[str]] = [[] for _ in range(n)]
    topk_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    for window, members in groups.items():
        if not _restore(tiled, routes[members[0]][0], window, lookup, fingerprint):
            raise TilesNeeded(slice_index, objects, 1)  # dropped by the tile memory meanwhile
        group = [objects[i] for i in members]
        for rows, kwargs in batch_prompts(group):
            prediction = predictor.predict(**kwargs, multimask_output=False, top_k=top_k)
            for row, j in enumerate(rows):
                i = members[int(j)]
                crops[i] = prediction.masks.crops[row][0]
                offsets[i] = prediction.masks.offsets[row]
                scores[i], iou[i] = prediction.scores[row], prediction.iou[row, 0]
                topk_names[i] = list(prediction.topk_names[row])
                topk_scores[i] = np.asarray(prediction.topk_scores[row], np.float32)
                if prediction.background is not None:
                    background[i] = prediction.background[row]
    masks = CroppedMasks(crops, offsets, predictor.original_size)
    return TiledPrediction(masks, scores, iou, topk_names, topk_scores, background=background)


def iter_prepare_all(
    tiled: TiledSlice, cache: EmbeddingCache, cache_lock: threading.Lock, fingerprint: str
) -> Generator[tuple[int, int, str], None, int]:
    """Worker: every grid tile of a small grid (see ``EAGER_TILES``) ready, from the cache or encoded and
    cached; yields ``(done, total, message)`` before each encoding; returns the number encoded."""
    predictor, encoded, total = tiled.predictor, 0, tiled.grid_size
    for index in range(total):
        with tiled.lock:
            tiled.keys[index] = key = predictor.tile_key(index)
            with cache_lock:
                state = cache.get((fingerprint, key))
            if state is not None:
                predictor.set_tile_embedding(index, state)
                continue
        yield index, total, f"Encoding tile {index + 1} of {total}…"
        with tiled.lock:
            state = predictor.get_tile_embedding(index)
        encoded += 1
        with cache_lock:
            cache.put((fingerprint, key), state)
    return encoded


def drain(steps: Generator[Any, None, Any]) -> Any:
    """Run a job generator to its end (outside a job runner) and return its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def iter_precompute_tiles(
    predictor: Any,
    views: Sequence[Any],
    contrast_limits: Any,
    cache: EmbeddingCache,
    cache_lock: threading.Lock,
    fingerprint: str,
) -> Iterator[tuple[int, int, bool]]:
    """Worker (precompute): every grid tile of each slice (lazy views, one after the other on ``predictor``)
    into the cache, skipping verified entries; yields ``(done, total, computed)`` counted in tiles."""
    done = 0
    for view in views:
        predictor.set_image(view, contrast_limits=contrast_limits)
        total = len(views) * len(predictor.tile_grid)
        for _, _, computed in iter_tile_states(predictor, cache, cache_lock, fingerprint):
            done += 1
            yield done, total, computed


def iter_tile_states(
    predictor: Any, cache: EmbeddingCache, cache_lock: threading.Lock, fingerprint: str
) -> Iterator[tuple[int, int, bool]]:
    """Worker (precompute): every grid tile of the image set on ``predictor`` into the cache, skipping tiles
    whose entry verifies (resumable); yields ``(done, total, computed)`` after each tile."""
    total = len(predictor.tile_grid)
    for index in range(total):
        key = (fingerprint, predictor.tile_key(index))  # reads the tile once
        with cache_lock:
            cached = key in cache
        if not cached:
            state = predictor.get_tile_embedding(index)
            with cache_lock:
                cache.put(key, state)
        yield index + 1, total, not cached
