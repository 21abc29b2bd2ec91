"""The work of one slice, wherever it runs: in this process, or in a Dask worker.

A task gets a :class:`SliceRef` and an :class:`AnnotatorSpec` (plain values: a few hundred bytes), reads its
slice from disk and annotates it with the process's one annotator, built on the first task and kept for the
next ones (:func:`annotator_for`): one model per worker process, loaded once. The result holds the slice's
COCO annotations (RLE masks) and, when asked for, its label image.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..automatic import AutomaticAnnotator
from ..build import build_ovsam
from ..predictor import OVSAMPredictor
from ..vocabulary import Vocabulary
from .inputs import SliceRef

# One annotator per process; the lock keeps two threads of one worker from building or using it at once.
_LOCK = threading.Lock()
_CACHED: dict[str, Any] = {"key": None, "annotator": None}


@dataclass(frozen=True)
class AnnotatorSpec:
    """How to build and run the annotator: the model, its vocabulary, the annotator's settings.

    model: a model name or config/checkpoint path (as ``build_ovsam`` takes); checkpoint: weights file or
    None; device: "auto", "cpu", "cuda", ...; vocabulary: the classes as text (one per line, synonyms after
    commas) or None for the model's own; settings: ``AutomaticAnnotator`` keyword arguments as (name, value)
    pairs; classes: names to keep ("find all") or None; contrast_limits: (low, high) or None (the
    predictor's per-image percentile rule).
    """

    model: str
    checkpoint: str | None = None
    device: str = "auto"
    vocabulary: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    classes: tuple[str, ...] | None = None
    contrast_limits: tuple[float, float] | None = None

    def options(self) -> dict[str, Any]:
        """What decides the result (all but the device), as JSON values: what a resumed run must repeat."""
        options = asdict(self)
        del options["device"]
        options["settings"] = dict(self.settings)
        return options

    def model_key(self) -> tuple[Any, ...]:
        return (self.model, self.checkpoint, self.device, self.vocabulary, self.settings)


@dataclass
class SliceResult:
    """What a task sends back: ``index`` of its slice, its COCO annotations (one per object, ids from 1,
    image id ``index + 1``) and its int32 (H, W) label image (None unless asked for)."""

    index: int
    annotations: list[dict[str, Any]]
    labels: np.ndarray | None = None


def annotator_for(spec: AnnotatorSpec) -> AutomaticAnnotator:
    """This process's annotator for ``spec`` (built now if it is the first or another spec's; the previous
    one is dropped: one model per process). Call with ``_LOCK`` held."""
    key = spec.model_key()
    if _CACHED["key"] != key:
        _CACHED.update(key=None, annotator=None)  # free the old model before building the new one
        predictor = OVSAMPredictor(build_ovsam(spec.model, checkpoint=spec.checkpoint, device=spec.device))
        if spec.vocabulary is not None:
            predictor.set_vocabulary(Vocabulary.from_text(spec.vocabulary))
        if predictor.vocabulary is None:
            raise ValueError(
                f"The model {spec.model!r} has no vocabulary of its own: give one with --vocabulary "
                "classes.txt (one class per line, synonyms after commas)."
            )
        _CACHED.update(key=key, annotator=AutomaticAnnotator(predictor, **dict(spec.settings)))
    return _CACHED["annotator"]


def vocabulary_names(spec: AnnotatorSpec) -> list[str]:
    """The class names the annotator names objects with (builds this process's annotator)."""
    with _LOCK:
        return list(annotator_for(spec).predictor.vocabulary.names)


def annotate_slice(ref: SliceRef, spec: AnnotatorSpec, want_labels: bool = False) -> SliceResult:
    """Read slice ``ref`` and annotate it (the Dask task; also what a run in one process calls)."""
    image = ref.read()
    with _LOCK:
        annotator = annotator_for(spec)
        classes = list(spec.classes) if spec.classes is not None else None
        instances = annotator.annotate(image, classes=classes, contrast_limits=spec.contrast_limits)
    return SliceResult(
        index=ref.index,
        annotations=instances.to_coco(ref.index + 1),
        labels=instances.labels.astype(np.int32, copy=False) if want_labels else None,
    )
