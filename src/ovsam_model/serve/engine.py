"""The server's model owner: one thread runs every model call, from a bounded queue, batching prompts.

Images and vocabularies are known by content: an image's id is the plugin's cache key for its pixels and
contrast limits (``embedding_cache.content_hash``), a vocabulary's id a hash of its classes and flags. Encoded
images are kept on the model's device in a least-recently-used store with a byte budget, and (with a cache
folder) written in the plugin's on-disk cache format, so that a restarted server, another replica or a napari
session on the same file system finds them again. Nothing else is state: any number of clients share the
encoded images, and replicas can stand behind a load balancer.

Requests queue for the model thread; a full queue is refused at once (``Busy``) rather than grown. Prompt
requests waiting for the same image, vocabulary and options are decoded together in one call (their prompts
concatenated), which is where many clients on one GPU gain over one client at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..fingerprint import model_fingerprint
from ..prediction import CompactMasks, Prediction
from ..vocabulary import Vocabulary

DEFAULT_MEMORY_BYTES = 4 * 1024**3
DEFAULT_QUEUE = 64
MAX_HELD = 64  # vocabularies and example sets each (least recently used dropped)
MAX_MERGED_PROMPTS = 256
BOUND = "_served_ids"  # the attribute of a predictor that names the vocabulary and examples set on it
# Image ids are content hashes (32 hex digits): anything else is unknown, and never becomes a file name.
_IMAGE_ID = re.compile(r"[0-9a-f]{32}")


class Busy(RuntimeError):
    """The queue is full: the client should retry after ``retry_after`` seconds."""

    def __init__(self, waiting: int, retry_after: float) -> None:
        super().__init__(f"The server is busy ({waiting} requests waiting); retry in {retry_after:g} s.")
        self.retry_after = retry_after


class UnknownId(LookupError):
    """An image or vocabulary id the server does not hold (e.g. after a restart): send it again."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(
            f"The server holds no {kind} with id {key}: upload it again (a restarted server forgets "
            "what it held in memory)."
        )
        self.kind, self.key = kind, key


def image_id(image: np.ndarray, contrast_limits: Sequence[float] | None) -> str:
    """The id of an image on the server: the plugin's embedding-cache content hash (its disk key too)."""
    from ..embedding_cache import content_hash

    return content_hash(image, contrast_limits)


def examples_id(examples: Any) -> str:
    """The id of an ``ExampleSet``: a hash of its features, class names, model and layout."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([list(examples.class_names), examples.model, examples.layout]).encode())
    digest.update(np.ascontiguousarray(examples.features, np.float32).tobytes())
    return digest.hexdigest()


def vocabulary_id(vocabulary: Vocabulary) -> str:
    text = json.dumps({"synonyms": vocabulary.synonyms, "seen": vocabulary.seen}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class ImageEntry:
    """An encoded image: whole (``features`` on the device) or tiled (its own predictor, tiles encoded where
    prompts are)."""

    original_size: tuple[int, int]
    input_size: tuple[int, int] | None
    features: Any = None
    predictor: Any = None
    pixels: np.ndarray | None = None
    nbytes: int = 0

    def describe(self, key: str) -> dict[str, Any]:
        return {
            "id": key,
            "original_size": list(self.original_size),
            "input_size": None if self.input_size is None else list(self.input_size),
            "tiled": self.predictor is not None,
        }


@dataclass
class Job:
    """One request for the model thread; ``merge`` groups prompt jobs that can be decoded together."""

    run: Callable[[], Any]
    merge: tuple[Any, ...] | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    finished: float = 0.0


class Engine:
    """Owns the predictor (see the module docstring).

    predictor: an ``OVSAMPredictor``. cache_dir: a folder in the plugin's embedding-cache format (shared with
    napari sessions and other replicas), or None. memory_bytes: budget of the encoded images kept in memory (on
    the model's device); least recently used are dropped. max_queue: requests waiting before new ones are
    refused with ``Busy``.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        cache_dir: str | None = None,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        max_queue: int = DEFAULT_QUEUE,
    ) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.fingerprint = model_fingerprint(self.model)
        self.memory_bytes = int(memory_bytes)
        self.max_queue = int(max_queue)
        self.store = None
        if cache_dir is not None:
            from ..embedding_cache import EmbeddingCache

            self.store = EmbeddingCache(max_items=1, store_path=cache_dir, max_bytes=0)
        self.images: OrderedDict[str, ImageEntry] = OrderedDict()
        self.vocabularies: OrderedDict[str, tuple[Vocabulary, torch.Tensor]] = OrderedDict()
        self.example_sets: OrderedDict[str, Any] = OrderedDict()
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self.stats = {"requests": 0, "model_calls": 0, "merged_prompts": 0, "encoded": 0, "from_disk": 0}
        self._thread = threading.Thread(target=self._loop, name="ovsam-model", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ queue

    def submit(self, run: Callable[[], Any], merge: tuple[Any, ...] | None = None, **payload: Any) -> Job:
        job = Job(run, merge, payload)
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise Busy(len(self._pending), 1.0)
            self._pending.append(job)
            self.stats["requests"] += 1
            self._cv.notify()
        return job

    @property
    def queued(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self._pending.popleft()
                group = [job]
                if job.merge is not None:
                    group += self._take_mergeable(job)
            group = [j for j in group if j.future.set_running_or_notify_cancel()]  # timed-out ones are gone
            if not group:
                continue
            started = time.perf_counter()
            for j in group:
                j.started = started
            try:
                if len(group) == 1:
                    outcomes: list[tuple[Any, BaseException | None]] = [(group[0].run(), None)]
                else:
                    outcomes = self._run_merged(group)
            except BaseException as failure:  # noqa: BLE001 - every request gets its own answer
                outcomes = [(None, failure)] * len(group)
            self.stats["model_calls"] += 1
            finished = time.perf_counter()
            for j, (result, error) in zip(group, outcomes):
                j.finished = finished
                if error is not None:
                    j.future.set_exception(error)
                else:
                    j.future.set_result(result)

    def _take_mergeable(self, first: Job) -> list[Job]:
        taken: list[Job] = []
        kept: deque[Job] = deque()
        total = first.payload["count"]
        while self._pending:
            job = self._pending.popleft()
            if job.merge == first.merge and total + job.payload["count"] <= MAX_MERGED_PROMPTS:
                taken.append(job)
                total += job.payload["count"]
            else:
                kept.append(job)
        self._pending = kept
        return taken

    # ------------------------------------------------------------------------------------------ images

    def known_image(self, key: str) -> ImageEntry | None:
        """The entry of an image held in memory (never reads a file: safe outside the model thread)."""
        return self.images.get(key)

    def on_disk(self, key: str) -> bool:
        return (
            self.store is not None
            and bool(_IMAGE_ID.fullmatch(key))
            and (self.fingerprint, key) in self.store
        )

    def add_image(
        self, key: str, image: np.ndarray, contrast_limits: Sequence[float] | None
    ) -> tuple[ImageEntry, bool]:
        """Model thread: encode an image (unless held or on disk); returns its entry and whether it was encoded."""
        entry = self.images.get(key)
        if entry is not None:
            self.images.move_to_end(key)
            return entry, False
        entry = self._from_disk(key, image)
        encoded = entry is None
        if entry is None:
            entry = self._encode(key, image, contrast_limits)
        self._remember(key, entry)
        return entry, encoded

    def _encode(self, key: str, image: np.ndarray, contrast_limits: Sequence[float] | None) -> ImageEntry:
        predictor = self.predictor
        size = (int(image.shape[0]), int(image.shape[1]))
        if predictor.tiling is not None and predictor.tiling.tiles(size):
            tiled = copy.copy(predictor)
            tiled.set_image(image, contrast_limits)
            nbytes = image.nbytes + int(tiled.tile_cache_bytes)
            return ImageEntry(size, None, predictor=tiled, pixels=image, nbytes=nbytes)
        predictor.set_image(image, contrast_limits)
        self.stats["encoded"] += 1
        entry = self._whole_entry(image)
        if self.store is not None:
            self.store.put((self.fingerprint, key), predictor.get_image_embedding())
            self.store.clear_memory()
        return entry

    def _from_disk(self, key: str, image: np.ndarray | None) -> ImageEntry | None:
        if self.store is None or not _IMAGE_ID.fullmatch(key):
            return None
        state = self.store.get((self.fingerprint, key))
        self.store.clear_memory()
        if state is None:
            return None
        self.predictor.set_image_embedding(state, image=image)
        self.stats["from_disk"] += 1
        return self._whole_entry(image)

    def _whole_entry(self, image: np.ndarray | None) -> ImageEntry:
        """The entry of the image the predictor holds whole now (encoded, or read from disk)."""
        predictor = self.predictor
        assert predictor.original_size is not None
        nbytes = _feature_bytes(predictor.features) + (0 if image is None else image.nbytes)
        return ImageEntry(
            predictor.original_size, predictor.input_size, predictor.features, None, image, nbytes
        )

    def _remember(self, key: str, entry: ImageEntry) -> None:
        self.images[key] = entry
        self.images.move_to_end(key)
        while len(self.images) > 1 and sum(e.nbytes for e in self.images.values()) > self.memory_bytes:
            self.images.popitem(last=False)

    def _entry(self, key: str) -> ImageEntry:
        """Model thread: the image's entry, from memory or from the disk cache; ``UnknownId`` otherwise."""
        entry = self.images.get(key)
        if entry is None:
            entry = self._from_disk(key, None)
            if entry is None:
                raise UnknownId("image", key)
            self._remember(key, entry)
        self.images.move_to_end(key)
        return entry

    # ------------------------------------------------------------------------------------------ vocabularies

    def add_vocabulary(self, vocabulary: Vocabulary) -> str:
        """Model thread: encode a vocabulary's text (unless held); returns its id."""
        key = vocabulary_id(vocabulary)
        if key not in self.vocabularies:
            from ..text import vocabulary_embeddings

            vocabulary, embeddings = vocabulary_embeddings(vocabulary, self.model.text_encoder)
            self.vocabularies[key] = (vocabulary, embeddings.to(self.predictor.device))
            while len(self.vocabularies) > MAX_HELD:
                self.vocabularies.popitem(last=False)
        self.vocabularies.move_to_end(key)
        return key

    # ------------------------------------------------------------------------------------------ examples

    def add_examples(self, examples: Any) -> str:
        """Keep an ``ExampleSet`` of this model (checked); returns its id (a hash of its content)."""
        from ..exemplars.learning import feature_layout

        examples.check_compatible(self.fingerprint, feature_layout(self.model))
        key = examples_id(examples)
        self.example_sets[key] = examples
        self.example_sets.move_to_end(key)
        while len(self.example_sets) > MAX_HELD:
            self.example_sets.popitem(last=False)
        return key

    # ------------------------------------------------------------------------------------------ binding

    def bind(self, key: str, vocabulary: str | None, examples: str | None = None) -> Any:
        """Model thread: the predictor holding image ``key``, with the vocabulary and examples of these ids set
        (``UnknownId`` for an id the server does not hold)."""
        entry = self._entry(key)
        if vocabulary is not None and vocabulary not in self.vocabularies:
            raise UnknownId("vocabulary", vocabulary)
        if examples is not None and examples not in self.example_sets:
            raise UnknownId("examples", examples)
        if examples is not None and entry.pixels is None and entry.predictor is None:
            raise UnknownId("image", key)  # read back from disk without its pixels, which examples measure
        predictor = entry.predictor
        if predictor is None:
            predictor = self.predictor
            if predictor.features is not entry.features:
                predictor.set_image_features(
                    entry.features, entry.original_size, entry.input_size, entry.pixels
                )
        # (vocabulary id, examples id) the predictor holds: kept on it, so that a copy (a tiled image's
        # predictor) inherits the marker together with what it marks
        bound = getattr(predictor, BOUND, (None, None))
        if vocabulary is not None and (bound[0] != vocabulary or predictor.vocabulary is None):
            vocab, embeddings = self.vocabularies[vocabulary]
            predictor.set_vocabulary(vocab, text_embeddings=embeddings)
        if bound[1] != examples:
            predictor.set_examples(None if examples is None else self.example_sets[examples])
        setattr(predictor, BOUND, (vocabulary if vocabulary is not None else bound[0], examples))
        return predictor

    # ------------------------------------------------------------------------------------------ prompts

    def _run_merged(self, group: list[Job]) -> list[tuple[Any, BaseException | None]]:
        """Decode the prompts of several jobs (same image, vocabulary, options) in one call, then split."""
        first = group[0].payload
        parts = [j.payload for j in group]

        def cat(name: str) -> np.ndarray | None:
            values = [p[name] for p in parts]
            return None if values[0] is None else np.concatenate(values)

        try:
            predictor = self.bind(first["image"], first["vocabulary"], first["examples"])
            merged = predictor.predict(
                cat("points"), cat("point_labels"), cat("boxes"),
                multimask_output=first["multimask_output"], top_k=first["top_k"],
            )  # fmt: skip
        except BaseException:  # noqa: BLE001 - decode them one by one: each gets its own answer or error
            return [_outcome(j.run) for j in group]
        self.stats["merged_prompts"] += sum(p["count"] for p in parts)
        counts = [p["count"] for p in parts]
        return [(part, None) for part in split_prediction(merged, counts)]


def _outcome(run: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return run(), None
    except BaseException as error:  # noqa: BLE001
        return None, error


def split_prediction(prediction: Prediction, counts: Sequence[int]) -> list[Prediction]:
    """A prediction of concatenated prompts, back into one per request (``counts`` prompts each)."""
    out, start = [], 0
    for n in counts:
        rows = slice(start, start + n)
        masks = prediction.masks
        if isinstance(masks, CompactMasks):
            part_masks: Any = CompactMasks(
                masks.crops[rows], masks.offsets[rows], masks.image_size, masks.masks_per_object
            )
        else:
            part_masks = masks[rows]
        out.append(
            Prediction(
                masks=part_masks,
                iou=prediction.iou[rows],
                class_ids=prediction.class_ids[rows],
                class_names=prediction.class_names[rows],
                scores=prediction.scores[rows],
                topk_ids=prediction.topk_ids[rows],
                topk_scores=prediction.topk_scores[rows],
                topk_names=prediction.topk_names[rows],
                low_res_logits=prediction.low_res_logits[rows],
                tiles=None if prediction.tiles is None else prediction.tiles[rows],
                background=None if prediction.background is None else prediction.background[rows],
                unknown=None if prediction.unknown is None else prediction.unknown[rows],
            )
        )
        start += n
    return out


def _feature_bytes(features: Any) -> int:
    return int(sum(t.numel() * t.element_size() for t in features.tensors().values()))
