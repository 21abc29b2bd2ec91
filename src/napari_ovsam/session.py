"""``AnnotationSession``: the plugin's state and logic without Qt or napari (the widget is a view on it).

It holds the predictor, the vocabulary and its ``unknown`` threshold, the embedding cache, the current image
(a possibly lazy array, read one slice at a time) and the labels of every image annotated so far
(:class:`LabelsTarget`: the labels array, its features table, the undo history and where class names are
drawn); one of them is the :attr:`~AnnotationSession.target` being written.

Large slices (those the predictor tiles, see :mod:`napari_ovsam.tiles`) are read and encoded tile by tile where
prompts are: :meth:`segment` on the GUI thread raises :class:`~napari_ovsam.tiles.TilesNeeded` when a prompt
needs a tile that is not encoded, and :meth:`iter_tiles` encodes it in a worker; their masks come back cropped
(:class:`~napari_ovsam.results.CroppedMasks`) and are painted object by object.

Threads: everything may run on the GUI thread except :meth:`ensure_embedding`, :meth:`iter_precompute`,
:meth:`iter_tiles` and :meth:`iter_propagate`, which run the image encoder and belong in a worker. Each of
those uses its own shallow copy of the predictor (the model is shared, the per-image state is not; a tiled
slice's copy is shared under its lock), the cache is guarded by a lock, and writes to the labels take a lock
that :meth:`commit` and :meth:`undo` refuse to wait for (:class:`SessionBusy`).

Coordinates: slices are named by ``slice_index``, the tuple of leading (non-spatial) indices of the image
layer (``()`` for 2D); masks are (H, W) in (row, col); prompts cross into the model's (x, y) frame only in
:mod:`napari_ovsam.prompts`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovsam_model.text import encode_vocabulary
from ovsam_model.vocabulary import as_vocabulary

from .cache import CacheKey, EmbeddingCache, make_key, model_fingerprint
from .examples import Teaching, learn_commit, learn_object, predictor_examples, supports_examples
from .naming import UNKNOWN_CLASS, name_for
from .painting import PaintMode
from .prompts import GroupRule, ObjectPrompt, batch_prompts, collect_prompts
from .propagation import PropagationSettings, PropagationStep, propagate_objects
from .proposals import background_of, commit_slices, without_background
from .results import ObjectResults, SliceIndex
from .targets import CommitGroup, LabelsTarget
from .tiles import (
    EAGER_TILES,
    TiledSlice,
    TilesNeeded,
    drain,
    iter_precompute_tiles,
    iter_prepare,
    iter_prepare_all,
    predict_objects,
    slice_view,
    tiles_slices_of,
)
from .validation import (
    check_contrast_limits,
    check_image,
    check_labels,
    check_multiscale,
    check_settings,
    check_slice_index,
    check_threshold,
)

__all__ = ["AnnotationSession", "EmbeddingInfo", "SessionBusy", "TilesNeeded"]
MAX_TILED_SLICES = 2  # tiled slices whose predictor (and its encoded tiles) is kept


class SessionBusy(RuntimeError):
    """Raised when the labels are being written by a background job (e.g. a propagation)."""


@dataclass
class EmbeddingInfo:
    """What :meth:`AnnotationSession.ensure_embedding` did: ``computed`` is False on a cache hit; ``tiles``:
    the tile count of a tiled slice, else 0 (a slice of more than ``tiles.EAGER_TILES`` tiles has none
    encoded yet: its tiles are encoded where prompts are)."""

    key: CacheKey
    computed: bool
    seconds: float
    tiles: int = 0


class AnnotationSession:
    """Prompts -> named objects -> labels, with an embedding cache and undo; see the module docstring.

    Args:
        predictor: an ``OVSAMPredictor`` (or None until a model is loaded).
        cache: the embedding cache (default: 16 slices in memory).
        unknown_threshold: objects whose class score is below it are named ``unknown``.
        top_k: alternatives kept per object. group: the prompt grouping rule (see ``prompts.group_points``).
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
        self.top_k, self._unknown_threshold = check_settings(
            top_k=top_k, unknown_threshold=unknown_threshold, group=group
        )
        self.group: GroupRule = group
        self.encoder_runs = 0
        self.predictor: Any = None
        self.fingerprint = ""
        self.image: Any = None
        self.rgb = False
        self.contrast_limits: tuple[float, float] | None = None
        self.target: LabelsTarget | None = None
        self._targets: list[LabelsTarget] = []  # every attached labels array, with its history
        self._keys: dict[SliceIndex, CacheKey] = {}
        self._tiled: OrderedDict[SliceIndex, TiledSlice] = OrderedDict()  # tiled slices, last used last
        self._failures: dict[SliceIndex, str] = {}  # slices whose embedding failed in this setting
        self._restored: CacheKey | None = None
        self._cache_lock = threading.Lock()
        self._labels_lock = threading.Lock()
        self.teaching = Teaching()  # learn from my labels, the class for the next commits (examples.py)
        if predictor is not None:
            self.set_predictor(predictor)

    # ------------------------------------------------------------------------------------------ model

    def set_predictor(self, predictor: Any, fingerprint: str | None = None) -> None:
        """Use another model; the labels, their history and the cache (keyed per model) are kept."""
        self.predictor = predictor
        self.fingerprint = fingerprint or model_fingerprint(predictor.model)
        self._forget_embeddings()
        self.sync_examples()

    def _forget_embeddings(self) -> None:
        """The model, image or contrast changed: what was known of the slices' embeddings is gone."""
        self._keys.clear()
        self._tiled.clear()
        self._failures.clear()
        self._restored = None

    def _require_predictor(self) -> Any:
        if self.predictor is None:
            raise RuntimeError("No model is loaded: load one first.")
        return self.predictor

    def job_predictor(self) -> Any:
        """A shallow copy of the predictor for a worker thread: same model and vocabulary, own image state."""
        return copy.copy(self._require_predictor())

    @property
    def unknown_threshold(self) -> float:
        """Objects whose best class probability is below it are named ``unknown`` (in [0, 1])."""
        return self._unknown_threshold

    @unknown_threshold.setter
    def unknown_threshold(self, value: float) -> None:
        self._unknown_threshold = check_threshold(value)

    # ------------------------------------------------------------------------------------------ vocabulary

    @property
    def vocabulary(self) -> Any:
        """The predictor's ``Vocabulary`` (None until a model is loaded)."""
        return None if self.predictor is None else self.predictor.vocabulary

    def encode_vocabulary(self, vocabulary: Any) -> Any:
        """Text embeddings [K, P, D] of a vocabulary with the model's text tower (slow: run in a worker); None
        for a served model, whose server encodes the text when the vocabulary is set."""
        predictor = self._require_predictor()
        if getattr(predictor, "remote", False):
            # the server encodes it now, in this worker; set_vocabulary then finds it there
            copy.copy(predictor).set_vocabulary(as_vocabulary(vocabulary))
            return None
        return encode_vocabulary(as_vocabulary(vocabulary), predictor.model.text_encoder)

    def set_vocabulary(self, vocabulary: Any, *, text_embeddings: Any = None) -> None:
        """Name the next objects from ``vocabulary`` (a ``Vocabulary``, its text, or a list of entries).

        Objects already committed keep their names.
        """
        self._require_predictor().set_vocabulary(as_vocabulary(vocabulary), text_embeddings=text_embeddings)
        self.teaching.changed()  # the classes objects are named from changed

    # ------------------------------------------------------------------------------------------ image

    def set_image(
        self, data: Any, *, rgb: bool = False, contrast_limits: Sequence[float] | None = None
    ) -> None:
        """Annotate another image: (..., H, W) or (..., H, W, C) with ``rgb``; kept lazy, read by slice (or
        tile by tile, for slices the predictor tiles). A multiscale image (a sequence of levels, full resolution
        first, as napari's multiscale layers hold them) is annotated at level 0, after checking the levels."""
        if isinstance(data, Sequence) and not isinstance(data, str):  # a multiscale pyramid: full resolution
            data = check_multiscale(data, rgb)
        check_image(data, rgb)
        self.image, self.rgb = data, bool(rgb)
        self._forget_embeddings()
        self.set_contrast_limits(contrast_limits)

    def clear_image(self) -> None:
        """No image is annotated (the chosen layer cannot be); the labels and their history are kept."""
        self.image = None
        self._forget_embeddings()

    def set_contrast_limits(self, contrast_limits: Sequence[float] | None) -> None:
        """Contrast used to map slices to the model input (None: per-slice percentiles); part of cache keys."""
        limits = check_contrast_limits(contrast_limits)
        if limits != self.contrast_limits:
            self.contrast_limits = limits
            self._forget_embeddings()

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of a labels array for the image: its shape without the colour axis."""
        shape = tuple(int(s) for s in self._require_image().shape)
        return shape[:-1] if self.rgb else shape

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """The image's leading (non-spatial) axes: ``(Z,)`` for a (Z, H, W) stack, ``()`` for 2D."""
        return self.labels_shape[:-2]

    @property
    def tiled(self) -> bool:
        """Whether the predictor tiles the image's slices (read and encoded tile by tile where prompts are)."""
        return self.image is not None and tiles_slices_of(self.predictor, self.labels_shape[-2:])  # type: ignore[arg-type]

    def _require_image(self) -> Any:
        if self.image is None:
            raise RuntimeError("No image is set: choose an image layer first.")
        return self.image

    def read_slice(self, slice_index: SliceIndex) -> np.ndarray:
        """The (H, W) or (H, W, C) pixels of one slice; only that slice is read from a lazy array."""
        index = check_slice_index(slice_index, self.leading_shape, self.labels_shape)
        return np.asarray(self._require_image()[index] if index else self._require_image())

    # ------------------------------------------------------------------------------------------ embeddings

    def embedding_ready(self, slice_index: SliceIndex) -> bool:
        """Whether the slice's embedding is known to be cached (never reads pixels: safe on the GUI thread)."""
        if self.tiled:  # its tiles are encoded where prompts are (see iter_tiles)
            return tuple(slice_index) in self._tiled
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
        :meth:`forget_failures`, so that a caller does not retry an image the model cannot take. A tiled
        slice is opened (a contrast sample read, see :mod:`napari_ovsam.tiles`); one of at most
        ``tiles.EAGER_TILES`` tiles has them all encoded now, a larger one none (they follow the prompts).
        """
        return drain(self.iter_embedding(slice_index, predictor))

    def iter_embedding(
        self, slice_index: SliceIndex, predictor: Any = None
    ) -> Generator[tuple[int, int, str], None, EmbeddingInfo]:
        """:meth:`ensure_embedding` as a worker job: yields ``(done, total, message)`` before each tile it
        encodes ("Encoding tile 3 of 9…"); returns the :class:`EmbeddingInfo`."""
        slice_index = tuple(int(i) for i in slice_index)
        # What this computation is for; the GUI may switch model, image or contrast while it runs.
        setting = (self.fingerprint, self.image, self.contrast_limits)
        try:
            if self.tiled:
                return (yield from self._embed_tiled(slice_index, setting))
            return self._embed(slice_index, setting, predictor, load=True)
        except Exception as error:
            if self._is_current(setting):
                self._failures[slice_index] = str(error) or type(error).__name__
            raise

    def _is_current(self, setting: tuple[Any, ...]) -> bool:
        fingerprint, data, limits = setting
        return self.fingerprint == fingerprint and self.image is data and self.contrast_limits == limits

    def _embed(
        self, slice_index: SliceIndex, setting: tuple[Any, ...], predictor: Any, *, load: bool
    ) -> EmbeddingInfo:
        """Embed a slice unless cached; ``load``: bring a disk hit into memory (for the next prompt)."""
        started = time.perf_counter()
        encoder = predictor if predictor is not None else self.job_predictor()
        image = self.read_slice(slice_index)
        key = make_key(setting[0], image, setting[2])
        with self._cache_lock:
            # A hit on disk is read into memory here, in the worker, so the first prompt reads no file.
            cached = (self.cache.get(key) is not None) if load else key in self.cache
        if not cached:
            encoder.set_image(image, contrast_limits=setting[2])
            state = encoder.get_image_embedding()
            with self._cache_lock:
                self.cache.put(key, state)
            self.encoder_runs += 1
        if self._is_current(setting):
            self._keys[slice_index] = key  # else the key names a setting that is gone
        return EmbeddingInfo(key, not cached, time.perf_counter() - started)

    def _embed_tiled(
        self, slice_index: SliceIndex, setting: tuple[Any, ...]
    ) -> Generator[tuple[int, int, str], None, EmbeddingInfo]:
        started = time.perf_counter()
        tiled = self._open_tiled(slice_index, setting)
        encoded = 0
        if tiled.grid_size <= EAGER_TILES:  # a few tiles: all of them now, as a small image
            encoded = yield from iter_prepare_all(tiled, self.cache, self._cache_lock, setting[0])
            self.encoder_runs += encoded
        key = (setting[0], f"tiled{slice_index}")
        return EmbeddingInfo(key, encoded > 0, time.perf_counter() - started, tiled.grid_size)

    def _open_tiled(self, slice_index: SliceIndex, setting: tuple[Any, ...]) -> TiledSlice:
        """The tiled slice's predictor, its image set on a lazy view of the slice (worker: reads a contrast
        sample; nothing is encoded)."""
        slice_index = check_slice_index(slice_index, self.leading_shape, self.labels_shape)
        tiled = self._tiled.get(slice_index)
        if tiled is not None:
            return tiled
        tiled = TiledSlice.open(self.job_predictor(), slice_view(setting[1], slice_index), setting[2])
        if self._is_current(setting):
            self._tiled[slice_index] = tiled
            while len(self._tiled) > MAX_TILED_SLICES:
                self._tiled.popitem(last=False)
        return tiled

    def tiled_slice(self, slice_index: SliceIndex) -> TiledSlice | None:
        """The open tiled slice (its predictor holds the tiles decoded last), or None."""
        return self._tiled.get(tuple(slice_index))

    def restore_tiles(self, tiled: TiledSlice, routes: Sequence[tuple[int, Any]]) -> None:
        """Bring the grid tiles of ``routes`` ((tile index, window) pairs) that the embedding cache holds in
        memory back into the tiled slice's predictor (GUI thread: no file is read, nothing is encoded)."""
        for index, window in routes:
            if window in tiled.predictor.tiles or index < 0 or index not in tiled.keys:
                continue
            with self._cache_lock:
                state = self.cache.peek((self.fingerprint, tiled.keys[index]))
            if state is not None:
                tiled.predictor.set_tile_embedding(index, state)

    def iter_tiles(
        self, slice_index: SliceIndex, objects: Sequence[ObjectPrompt]
    ) -> Generator[tuple[int, int, str], None, int]:
        """Worker: make the tiles ``objects`` are decoded on ready (from the cache, else encoded and cached);
        yields ``(done, total, message)`` before each encoding; returns the number of views encoded."""
        setting = (self.fingerprint, self.image, self.contrast_limits)
        tiled = self._open_tiled(tuple(slice_index), setting)
        encoded = yield from iter_prepare(tiled, objects, self.cache, self._cache_lock, setting[0])
        self.encoder_runs += encoded
        return encoded

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
        if supports_examples(predictor):  # naming from examples measures objects on the pixels
            predictor.set_image_embedding(state, image=self.read_slice(tuple(slice_index)))
        else:
            predictor.set_image_embedding(state)
        if predictor is self.predictor:
            self._restored = key
        return predictor

    def iter_precompute(self, slice_index: SliceIndex, start: int = 0, stop: int | None = None) -> Iterator:
        """Embed the stack slices ``start..stop-1`` (along the last leading axis, z of (..., Z, H, W), through
        ``slice_index``), skipping cached ones (worker thread).

        Yields ``(done, total, computed)`` after each slice; stopping the iteration cancels cleanly (what is
        stored stays, so running it again resumes). A tiled image: every tile of the slice (2D) or of each slice
        of the range, counted in tiles.
        """
        if self.tiled:
            lead = tuple(int(i) for i in slice_index)[:-1]
            slices = (
                [(*lead, z) for z in range(self.leading_shape[-1])[start:stop]]
                if self.leading_shape
                else [()]
            )
            views = [slice_view(self._require_image(), index) for index in slices]
            for step in iter_precompute_tiles(
                self.job_predictor(),
                views,
                self.contrast_limits,
                self.cache,
                self._cache_lock,
                self.fingerprint,
            ):
                self.encoder_runs += int(step[2])
                yield step
            return
        if not self.leading_shape:
            raise ValueError("The image is 2D: it has no stack axis.")
        prefix = tuple(int(i) for i in slice_index)[:-1]
        indices = range(self.leading_shape[-1])[slice(start, stop)]
        predictor = self.job_predictor()
        setting = (self.fingerprint, self.image, self.contrast_limits)
        for done, z in enumerate(indices, start=1):
            info = self._embed((*prefix, z), setting, predictor, load=False)
            yield done, len(indices), info.computed

    # ------------------------------------------------------------------------------------------ prompts

    def segment(
        self,
        points_data: np.ndarray,
        point_labels: np.ndarray,
        shapes_data: Sequence[np.ndarray],
        shape_types: Sequence[str],
        slice_index: SliceIndex,
    ) -> ObjectResults:
        """Prompt layers' data -> named objects on one slice (see ``prompts.collect_prompts``)."""
        height, width = self.labels_shape[-2:]
        prompt_set = collect_prompts(
            points_data, point_labels, shapes_data, shape_types,
            slice_index=tuple(slice_index) or None, image_hw=(height, width), group=self.group,
        )  # fmt: skip
        results = without_background(self.predict(prompt_set.objects, slice_index))
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
        if self.tiled:
            return self._predict_tiled(objects, slice_index, worker=predictor is not None, started=started)
        predictor = self.restore_embedding(slice_index, predictor)
        n = len(objects)
        masks = np.zeros((n, height, width), dtype=bool)
        scores, iou, background = (np.zeros(n, np.float32) for _ in range(3))
        topk_names: list[list[str]] = [[] for _ in range(n)]
        topk_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n
        for members, kwargs in batch_prompts(objects):
            prediction = predictor.predict(**kwargs, multimask_output=False, top_k=self.top_k)
            for row, i in enumerate(members):
                masks[i], background[i] = prediction.masks[row, 0], background_of(prediction, row)
                scores[i], iou[i] = prediction.scores[row], prediction.iou[row, 0]
                topk_names[i] = list(prediction.topk_names[row])
                topk_scores[i] = np.asarray(prediction.topk_scores[row], np.float32)
        names = [self.name_for(k[0] if k else UNKNOWN_CLASS, float(s)) for k, s in zip(topk_names, scores)]
        return ObjectResults(
            slice_index, masks, names, scores, iou, topk_names, np.stack(topk_scores), list(objects),
            latency_ms=1000 * (time.perf_counter() - started), background=background,
        )  # fmt: skip

    def _predict_tiled(
        self, objects: Sequence[ObjectPrompt], slice_index: SliceIndex, *, worker: bool, started: float
    ) -> ObjectResults:
        """``predict`` on a tiled slice: cropped masks; on the GUI thread, TilesNeeded if a tile is missing."""
        tiled = self._tiled.get(slice_index)
        if tiled is None and not worker:
            raise TilesNeeded(slice_index, objects, 0)
        if tiled is None:
            tiled = self._open_tiled(slice_index, (self.fingerprint, self.image, self.contrast_limits))
        if supports_examples(tiled.predictor):
            self._share_examples(tiled)
        out = predict_objects(
            tiled, objects, slice_index, self.cache, self._cache_lock, self.fingerprint,
            top_k=self.top_k, worker=worker, names_from=self.predictor,
        )  # fmt: skip
        self.encoder_runs += out.encoded
        names = [
            self.name_for(k[0] if k else UNKNOWN_CLASS, float(s)) for k, s in zip(out.topk_names, out.scores)
        ]
        return ObjectResults(
            slice_index, out.masks, names, out.scores, out.iou, out.topk_names, np.stack(out.topk_scores),
            list(objects), latency_ms=1000 * (time.perf_counter() - started), background=out.background,
        )  # fmt: skip

    def name_for(self, class_name: str, score: float) -> str:
        """The name an object gets: its best class, or ``unknown`` below the threshold."""
        return name_for(class_name, score, self.unknown_threshold)

    # ------------------------------------------------------------------------------------------ labels

    def attach_labels(self, labels: Any, features: Any = None) -> LabelsTarget:
        """Write into ``labels`` (e.g. a Labels layer's data) from now on and return its target. Attaching an
        array attached before comes back to its target, undo history included (``features``, a table the
        user may have edited, is taken in); a new array gets a new target."""
        target = self.target_of(labels)
        if target is None:
            check_labels(labels, self.labels_shape if self.image is not None else None)
            target = LabelsTarget(labels, features)
            self._targets.append(target)
        elif features is not None:
            target.adopt_features(features)
        self.target = target
        return target

    def target_of(self, labels: Any) -> LabelsTarget | None:
        """The target of a labels array attached before, or None."""
        return next((t for t in self._targets if t.labels is labels), None)

    def detach_labels(self, labels: Any) -> bool:
        """Forget the target of ``labels`` (their layer was deleted): its undo history goes with it, and
        nothing is written there any more. True if there was one."""
        kept = [t for t in self._targets if t.labels is not labels]
        found = len(kept) < len(self._targets)
        self._targets = kept
        if self.target is not None and self.target.labels is labels:
            self.target = None
        if found:
            self.sync_examples()
        return found

    def propagation_start(
        self, selected: int | None, current_slice: SliceIndex
    ) -> tuple[list[int], SliceIndex] | None:
        """What "Segment through stack" carries: the ``selected`` object from the slice in view if it is
        there (else from its first slice), or the objects of the last commit from their slice; None if none."""
        target = self._require_target()
        if selected is not None:
            slices = target.slices_of(selected)
            if not slices:
                return None
            return [int(selected)], tuple(current_slice) if tuple(current_slice) in slices else slices[0]
        return target.last_commit()

    def _require_target(self) -> LabelsTarget:
        if self.target is None:
            raise RuntimeError("No labels to write into: attach a labels array first.")
        return self.target

    def commit(self, results: ObjectResults, mode: PaintMode = "keep") -> CommitGroup | None:
        """Paint objects into the labels as one undoable step (see ``LabelsTarget.commit``), named
        ``teaching.commit_class`` if one is chosen; they become examples (see :mod:`napari_ovsam.examples`)."""
        with self._write_lock():
            target = self._require_target()
            group = target.commit(self.teaching.named(results), mode)
            learn_commit(self, target, group)
        self.sync_examples()
        return group

    def commit_all(self, results: Sequence[ObjectResults], mode: PaintMode = "keep") -> CommitGroup | None:
        """Paint the objects of several slices as one undoable step (see ``proposals.commit_slices``)."""
        with self._write_lock():
            target = self._require_target()
            group = commit_slices(target, results, mode)
            learn_commit(self, target, group)
        self.sync_examples()
        return group

    def undo(self) -> CommitGroup | None:
        """Undo the last commit or propagation: labels, features and name anchors; None if there is none."""
        with self._write_lock():
            group = self._require_target().undo()
        self.sync_examples()
        return group

    def rename(self, label_id: int, class_name: str) -> None:
        """Rename an object by hand (marks it reviewed); it becomes an example of its new class."""
        with self._write_lock():
            target = self._require_target()
            target.rename(label_id, class_name)
            learn_object(self, target, label_id)
        self.sync_examples()

    def mark_reviewed(self, label_id: int, reviewed: bool = True) -> None:
        """Mark an object reviewed (its name accepted as it is); like :meth:`rename`, not an undo step."""
        with self._write_lock():
            target = self._require_target()
            target.mark_reviewed(label_id, reviewed)
            if reviewed:
                learn_object(self, target, label_id)
        self.sync_examples()

    @property
    def targets(self) -> list[LabelsTarget]:
        """Every attached labels array's target (the images annotated so far)."""
        return list(self._targets)

    def sync_examples(self) -> None:
        """Give the predictor (and the tiled slices' copies) the examples of every attached labels array for
        its model, so the next objects are named from what the user taught; listeners are told."""
        if self.predictor is not None and hasattr(self.predictor, "set_examples"):
            self.predictor.set_examples(predictor_examples(self.predictor, self._targets))
            for tiled in self._tiled.values():
                self._share_examples(tiled)
        self.teaching.changed()

    def _share_examples(self, tiled: TiledSlice) -> None:
        """A tiled slice's predictor names from the session's examples; not while a worker uses it (it is
        given them before its next prediction)."""
        examples = self.predictor.examples
        if tiled.predictor.examples is not examples and tiled.lock.acquire(blocking=False):
            try:
                tiled.predictor.set_examples(examples)
            finally:
                tiled.lock.release()

    def _write_lock(self) -> _NonBlockingLock:
        return _NonBlockingLock(self._labels_lock)

    # ------------------------------------------------------------------------------------------ stacks

    def iter_propagate(
        self, label_ids: Sequence[int], slice_index: SliceIndex, settings: PropagationSettings
    ) -> Iterator[PropagationStep]:
        """Carry objects from ``slice_index`` to the neighbouring slices (worker thread); see
        :mod:`napari_ovsam.propagation`. Everything painted is one undoable step, also when stopped early."""
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
