"""``AnnotationSession``: the plugin's state and logic without Qt or napari (the widget is a view on it).

It holds the predictor, the vocabulary and its ``unknown`` threshold, the embedding cache, the current image
(a possibly lazy array, read one slice at a time) and the labels being written (:class:`LabelsTarget`: the
labels array, its features table, the undo history and where class names are drawn).

Threads: everything may run on the GUI thread except :meth:`ensure_embedding`, :meth:`iter_precompute` and
:meth:`iter_propagate`, which run the image encoder and belong in a worker. Each of those uses its own shallow
copy of the predictor (the model is shared, the per-image state is not), the cache is guarded by a lock, and
writes to the labels take a lock that :meth:`commit` and :meth:`undo` refuse to wait for (:class:`SessionBusy`).

Coordinates: slices are named by ``slice_index``, the tuple of leading (non-spatial) indices of the image
layer (``()`` for 2D); masks are (H, W) in (row, col); prompts cross into the model's (x, y) frame only in
:mod:`napari_ovsam.conversions`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import CommitGroup, LabelsTarget, ObjectResults, SliceIndex
from .cache import CacheKey, EmbeddingCache, make_key, model_fingerprint
from .coco_io import UNKNOWN_CLASS
from .conversions import GroupRule, ObjectPrompt, batch_prompts, collect_prompts
from .labels import PaintMode
from .precompute import precompute_stack

if TYPE_CHECKING:
    from .propagation import PropagationSettings, PropagationStep

__all__ = [
    "AnnotationSession",
    "CommitGroup",
    "EmbeddingInfo",
    "LabelsTarget",
    "ObjectResults",
    "SessionBusy",
]


class SessionBusy(RuntimeError):
    """Raised when the labels are being written by a background job (e.g. a propagation)."""


@dataclass
class EmbeddingInfo:
    """What :meth:`AnnotationSession.ensure_embedding` did: ``computed`` is False on a cache hit."""

    key: CacheKey
    computed: bool
    seconds: float


class AnnotationSession:
    """Prompts -> named objects -> labels, with an embedding cache and undo; see the module docstring.

    Args:
        predictor: an ``OVSAMPredictor`` (or None until a model is loaded).
        cache: the embedding cache (default: 16 slices in memory).
        unknown_threshold: objects whose class score is below it are named ``unknown``.
        top_k: alternatives kept per object. group: the prompt grouping rule (see ``conversions``).
    """

    def __init__(
        self,
        predictor: Any = None,
        *,
        cache: EmbeddingCache | None = None,
        unknown_threshold: float = 0.0,
        top_k: int = 5,
        group: GroupRule = "refine",
    ) -> None:
        self.cache = cache if cache is not None else EmbeddingCache(max_items=16)
        self.unknown_threshold = float(unknown_threshold)
        self.top_k = top_k
        self.group: GroupRule = group
        self.encoder_runs = 0
        self.predictor: Any = None
        self.fingerprint = ""
        self.image: Any = None
        self.rgb = False
        self.contrast_limits: tuple[float, float] | None = None
        self.target: LabelsTarget | None = None
        self._keys: dict[SliceIndex, CacheKey] = {}
        self._failures: dict[SliceIndex, str] = {}  # slices whose embedding failed in this setting
        self._restored: CacheKey | None = None
        self._cache_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        if predictor is not None:
            self.set_predictor(predictor)

    # ------------------------------------------------------------------------------------------ model

    def set_predictor(self, predictor: Any, fingerprint: str | None = None) -> None:
        """Use another model; the labels, their history and the cache (keyed per model) are kept."""
        self.predictor = predictor
        self.fingerprint = fingerprint or model_fingerprint(predictor.model)
        self._keys.clear()
        self._failures.clear()
        self._restored = None

    def _require_predictor(self) -> Any:
        if self.predictor is None:
            raise RuntimeError("No model is loaded: load one first.")
        return self.predictor

    def job_predictor(self) -> Any:
        """A shallow copy of the predictor for a worker thread: same model and vocabulary, own image state."""
        return copy.copy(self._require_predictor())

    # ------------------------------------------------------------------------------------------ vocabulary

    @property
    def vocabulary(self) -> Any:
        return None if self.predictor is None else self.predictor.vocabulary

    def encode_vocabulary(self, vocabulary: Any) -> Any:
        """Text embeddings [K, P, D] of a vocabulary with the model's text tower (slow: run in a worker)."""
        from ovsam_model.vocabulary import as_vocabulary, encode_vocabulary

        return encode_vocabulary(as_vocabulary(vocabulary), self._require_predictor().model.text_encoder)

    def set_vocabulary(self, vocabulary: Any, *, text_embeddings: Any = None) -> None:
        """Name the next objects from ``vocabulary`` (a ``Vocabulary``, its text, or a list of entries).

        Objects already committed keep their names.
        """
        from ovsam_model.vocabulary import as_vocabulary

        self._require_predictor().set_vocabulary(as_vocabulary(vocabulary), text_embeddings=text_embeddings)

    # ------------------------------------------------------------------------------------------ image

    def set_image(
        self, data: Any, *, rgb: bool = False, contrast_limits: Sequence[float] | None = None
    ) -> None:
        """Annotate another image: (..., H, W) or (..., H, W, C) with ``rgb``; kept lazy, read by slice."""
        if isinstance(data, (list, tuple)):  # a multiscale pyramid: full resolution
            data = data[0]
        if data.ndim - int(rgb) < 2:
            raise ValueError(f"An image needs two spatial axes; got shape {data.shape} (rgb={rgb}).")
        self.image, self.rgb = data, bool(rgb)
        self._keys.clear()
        self._failures.clear()
        self._restored = None
        self.set_contrast_limits(contrast_limits)

    def set_contrast_limits(self, contrast_limits: Sequence[float] | None) -> None:
        """Contrast used to map slices to the model input (None: per-slice percentiles); part of cache keys."""
        limits = None if contrast_limits is None else (float(contrast_limits[0]), float(contrast_limits[1]))
        if limits != self.contrast_limits:
            self.contrast_limits = limits
            self._keys.clear()
            self._failures.clear()
            self._restored = None

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of a labels array for the image: its shape without the colour axis."""
        shape = tuple(int(s) for s in self._require_image().shape)
        return shape[:-1] if self.rgb else shape

    @property
    def leading_shape(self) -> tuple[int, ...]:
        return self.labels_shape[:-2]

    def _require_image(self) -> Any:
        if self.image is None:
            raise RuntimeError("No image is set: choose an image layer first.")
        return self.image

    def read_slice(self, slice_index: SliceIndex) -> np.ndarray:
        """The (H, W) or (H, W, C) pixels of one slice; only that slice is read from a lazy array."""
        index = tuple(int(i) for i in slice_index)
        if len(index) != len(self.leading_shape):
            raise ValueError(f"slice_index {index} does not fit an image of shape {self.labels_shape}.")
        return np.asarray(self._require_image()[index] if index else self._require_image())

    # ------------------------------------------------------------------------------------------ embeddings

    def embedding_ready(self, slice_index: SliceIndex) -> bool:
        """Whether the slice's embedding is known to be cached (never reads pixels: safe on the GUI thread)."""
        key = self._keys.get(tuple(slice_index))
        if key is None:
            return False
        with self._cache_lock:
            return key in self.cache

    def embedding_failure(self, slice_index: SliceIndex) -> str | None:
        """Why embedding the slice failed in the current setting (model, image, contrast), or None."""
        return self._failures.get(tuple(slice_index))

    def forget_failures(self) -> None:
        """Try failed slices again (the user asked, or changed something the failure may depend on)."""
        self._failures.clear()

    def ensure_embedding(self, slice_index: SliceIndex, predictor: Any = None) -> EmbeddingInfo:
        """Read the slice, and embed it unless the cache has it (worker thread: may run the image encoder).

        A failure is remembered (see :meth:`embedding_failure`) until the setting changes or
        :meth:`forget_failures`, so that a caller does not retry an image the model cannot take.
        """
        slice_index = tuple(int(i) for i in slice_index)
        # What this computation is for; the GUI may switch model, image or contrast while it runs.
        setting = (self.fingerprint, self.image, self.contrast_limits)
        try:
            return self._embed(slice_index, setting, predictor)
        except Exception as error:
            if self._is_current(setting):
                self._failures[slice_index] = str(error) or type(error).__name__
            raise

    def _is_current(self, setting: tuple[Any, ...]) -> bool:
        fingerprint, data, limits = setting
        return self.fingerprint == fingerprint and self.image is data and self.contrast_limits == limits

    def _embed(self, slice_index: SliceIndex, setting: tuple[Any, ...], predictor: Any) -> EmbeddingInfo:
        started = time.perf_counter()
        encoder = predictor if predictor is not None else self.job_predictor()
        image = self.read_slice(slice_index)
        key = make_key(setting[0], image, setting[2])
        with self._cache_lock:
            # A hit on disk is read into memory here, in the worker, so the first prompt reads no file.
            cached = self.cache.get(key) is not None
        if not cached:
            encoder.set_image(image, contrast_limits=setting[2])
            state = encoder.get_image_embedding()
            with self._cache_lock:
                self.cache.put(key, state)
            self.encoder_runs += 1
        if self._is_current(setting):
            self._keys[slice_index] = key  # else the key names a setting that is gone
        return EmbeddingInfo(key, not cached, time.perf_counter() - started)

    def restore_embedding(self, slice_index: SliceIndex, predictor: Any = None) -> Any:
        """Load the cached embedding of a slice into ``predictor`` (default: the session's); returns it."""
        predictor = predictor if predictor is not None else self._require_predictor()
        key = self._keys.get(tuple(slice_index))
        if predictor is self.predictor and key is not None and key == self._restored:
            return predictor
        with self._cache_lock:
            state = None if key is None else self.cache.get(key)
        if state is None:
            raise RuntimeError(f"The embedding of slice {slice_index} is not computed yet.")
        predictor.set_image_embedding(state)
        if predictor is self.predictor:
            self._restored = key
        return predictor

    def stack_view(self, slice_index: SliceIndex) -> _AxisView:
        """The slices along the last leading axis through ``slice_index`` (the z axis of (..., Z, H, W))."""
        if not self.leading_shape:
            raise ValueError("The image is 2D: it has no stack axis.")
        return _AxisView(self._require_image(), tuple(slice_index)[:-1], self.leading_shape[-1])

    def iter_precompute(self, slice_index: SliceIndex, start: int = 0, stop: int | None = None) -> Iterator:
        """Embed the stack slices ``start..stop-1`` (along z through ``slice_index``), skipping cached ones.

        Yields ``(done, total, computed)`` after each slice; stopping the iteration cancels cleanly (what is
        stored stays, so running it again resumes).
        """
        view = self.stack_view(slice_index)
        indices = range(len(view))[slice(start, stop)]
        predictor = self.job_predictor()
        cache = _LockedCache(self.cache, self._cache_lock)
        for done, z in enumerate(indices, start=1):
            computed = precompute_stack(
                view, predictor, cache, start=z, stop=z + 1,
                contrast_limits=self.contrast_limits, fingerprint=self.fingerprint,
            )  # fmt: skip
            self.encoder_runs += computed
            yield done, len(indices), bool(computed)

    def precompute(
        self,
        slice_index: SliceIndex,
        start: int = 0,
        stop: int | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Run :meth:`iter_precompute` to the end (or until ``should_stop()``); returns the slices embedded."""
        computed = 0
        for done, total, new in self.iter_precompute(slice_index, start, stop):
            computed += int(new)
            if progress is not None:
                progress(done, total)
            if should_stop is not None and should_stop():
                break
        return computed

    # ------------------------------------------------------------------------------------------ prompts

    def segment(
        self,
        points_data: np.ndarray,
        point_labels: np.ndarray,
        shapes_data: Sequence[np.ndarray],
        shape_types: Sequence[str],
        slice_index: SliceIndex,
    ) -> ObjectResults:
        """Prompt layers' data -> named objects on one slice (see ``conversions.collect_prompts``)."""
        height, width = self.labels_shape[-2:]
        prompt_set = collect_prompts(
            points_data, point_labels, shapes_data, shape_types,
            slice_index=tuple(slice_index) or None, image_hw=(height, width), group=self.group,
        )  # fmt: skip
        results = self.predict(prompt_set.objects, slice_index)
        results.messages = prompt_set.messages + results.messages
        return results

    def predict(
        self, objects: Sequence[ObjectPrompt], slice_index: SliceIndex, predictor: Any = None
    ) -> ObjectResults:
        """Decode and name object prompts on a slice whose embedding is cached (see :meth:`ensure_embedding`)."""
        started = time.perf_counter()
        slice_index = tuple(slice_index)
        height, width = self.labels_shape[-2:]
        if not objects:
            return ObjectResults.empty(slice_index, (height, width))
        predictor = self.restore_embedding(slice_index, predictor)
        n = len(objects)
        masks = np.zeros((n, height, width), dtype=bool)
        scores, iou = np.zeros(n, np.float32), np.zeros(n, np.float32)
        topk_names: list[list[str]] = [[] for _ in range(n)]
        topk_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n
        for members, kwargs in batch_prompts(objects):
            prediction = predictor.predict(**kwargs, multimask_output=False, top_k=self.top_k)
            for row, i in enumerate(members):
                masks[i] = prediction.masks[row, 0]
                scores[i], iou[i] = prediction.scores[row], prediction.iou[row, 0]
                topk_names[i] = list(prediction.topk_names[row])
                topk_scores[i] = np.asarray(prediction.topk_scores[row], np.float32)
        names = [self.name_for(k[0] if k else UNKNOWN_CLASS, s) for k, s in zip(topk_names, scores)]
        return ObjectResults(
            slice_index, masks, names, scores, iou, topk_names, np.stack(topk_scores), list(objects),
            latency_ms=1000 * (time.perf_counter() - started),
        )  # fmt: skip

    def name_for(self, class_name: str, score: float) -> str:
        """The name an object gets: its best class, or ``unknown`` below the threshold."""
        return UNKNOWN_CLASS if float(score) < self.unknown_threshold else class_name

    # ------------------------------------------------------------------------------------------ labels

    def attach_labels(self, labels: Any, features: Any = None) -> LabelsTarget:
        """Write into ``labels`` (e.g. a Labels layer's data) from now on; returns its target, to come back to
        these labels (history included) with :meth:`use_target`."""
        self.target = LabelsTarget(labels, features)
        return self.target

    def use_target(self, target: LabelsTarget) -> None:
        self.target = target

    def drop_target(self, target: LabelsTarget) -> None:
        """The labels of ``target`` are gone (e.g. their layer was deleted): stop writing into them; their
        undo history goes with them."""
        if self.target is target:
            self.target = None

    def _require_target(self) -> LabelsTarget:
        if self.target is None:
            raise RuntimeError("No labels to write into: attach a labels array first.")
        return self.target

    def commit(self, results: ObjectResults, mode: PaintMode = "keep") -> CommitGroup | None:
        """Paint objects into the labels as one undoable step (see ``LabelsTarget.commit``)."""
        with self._write_lock():
            return self._require_target().commit(results, mode)

    def undo(self) -> CommitGroup | None:
        """Undo the last commit or propagation: labels, features and name anchors; None if there is none."""
        with self._write_lock():
            return self._require_target().undo()

    def rename(self, label_id: int, class_name: str) -> None:
        """Rename an object by hand (marks it reviewed)."""
        with self._write_lock():
            self._require_target().rename(label_id, class_name)

    def _write_lock(self) -> _NonBlockingLock:
        return _NonBlockingLock(self._labels_lock)

    # ------------------------------------------------------------------------------------------ stacks

    def iter_propagate(
        self, label_ids: Sequence[int], slice_index: SliceIndex, settings: PropagationSettings
    ) -> Iterator[PropagationStep]:
        """Carry objects from ``slice_index`` to the neighbouring slices (worker thread); see
        :mod:`napari_ovsam.propagation`. Everything painted is one undoable step, also when stopped early."""
        from .propagation import propagate_objects

        with self._write_lock():
            yield from propagate_objects(self, self._require_target(), label_ids, slice_index, settings)


class _NonBlockingLock:
    """``with`` a lock that raises :class:`SessionBusy` instead of waiting."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            raise SessionBusy("The labels are being written by a running job; wait for it or cancel it.")

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class _AxisView:
    """Slices ``data[(*prefix, z)]`` for z in range(n): a lazy (n, H, W[, C]) view for precompute_stack."""

    def __init__(self, data: Any, prefix: SliceIndex, n: int) -> None:
        self.data, self.prefix, self.n = data, prefix, n
        self.shape = (n,)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, z: int) -> np.ndarray:
        return np.asarray(self.data[(*self.prefix, int(z))])


class _LockedCache:
    """The two cache operations ``precompute_stack`` uses, each under the session's cache lock."""

    def __init__(self, cache: EmbeddingCache, lock: threading.Lock) -> None:
        self.cache, self.lock = cache, lock

    def __contains__(self, key: object) -> bool:
        with self.lock:
            return key in self.cache

    def put(self, key: CacheKey, state: dict[str, Any]) -> None:
        with self.lock:
            self.cache.put(key, state)
