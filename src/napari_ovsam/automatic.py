"""Segment everything and name existing labels in the plugin: no Qt, no napari.

:func:`iter_segment_everything` runs ``ovsam_model.automatic.AutomaticAnnotator`` on a slice, every slice of
the stack, or the region of a slice in view; :func:`iter_name_labels` names every label of another labels
array (``ovsam_model.automatic.name_labels``). Both are worker jobs (they may run the image encoder): they
yield ``(done, total, message)`` and return :class:`~napari_ovsam.proposals.Proposals`, one
:class:`~napari_ovsam.results.ObjectResults` per slice with cropped masks, for the preview, fitted to the
labels already there for the commit mode. Nothing is written until ``proposals.commit_slices`` paints them
all as one undoable step (``AnnotationSession.commit_all``): stopping a job early leaves the labels as they
were.

Frames: masks are (row, col) pixels of a slice; a region is (row0, row1, col0, col1), half-open, in slice
pixels; slices are named by their leading indices (``()`` for 2D).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ovsam_model.automatic import (
    AutomaticAnnotator,
    Instances,
    annotator_defaults,
    class_indices,
    name_labels,
)

from .painting import PaintMode
from .proposals import NamedResults, Proposals, fit_to_labels
from .results import CroppedMasks, ObjectResults, SliceIndex
from .tiles import slice_view

if TYPE_CHECKING:
    from .session import AnnotationSession

Steps = Generator[tuple[int, int, str], None, "Proposals"]
Region = tuple[int, int, int, int]
# The largest label id a labels layer may hold to be named: ids go into the features table, whose numbers
# are exact up to 2^53 (float64).
MAX_SOURCE_ID = 2**53
PROGRESS_STEPS = 1000  # progress units per slice


class Cancelled(Exception):
    """Raised in the annotator's progress callback to stop it (the job was cancelled)."""


_DEFAULTS = annotator_defaults()


@dataclass
class AutomaticSettings:
    """The annotator's settings (see ``AutomaticAnnotator``, whose defaults they take); what the widget exposes."""

    points_per_side: int = _DEFAULTS["points_per_side"]
    points_per_batch: int = _DEFAULTS["points_per_batch"]
    min_iou: float = _DEFAULTS["min_iou"]
    min_stability: float = _DEFAULTS["min_stability"]
    min_score: float = _DEFAULTS["min_score"]
    max_background: float = _DEFAULTS["max_background"]
    nms_iou: float = _DEFAULTS["nms_iou"]
    min_area: int = _DEFAULTS["min_area"]

    def annotator(self, predictor: Any, top_k: int) -> AutomaticAnnotator:
        return AutomaticAnnotator(predictor, **dataclasses.asdict(self), top_k=top_k)


# ---------------------------------------------------------------------------------------------- jobs


def parse_classes(text: str, names: Sequence[str]) -> list[str] | None:
    """The classes of a "find all" field ("nucleus, rod"; empty: None, every class); a ValueError names a
    class the vocabulary lacks."""
    wanted = [c.strip() for c in text.replace(";", ",").split(",") if c.strip()]
    if not wanted:
        return None
    class_indices(list(names), wanted)
    return wanted


def iter_segment_everything(
    session: AnnotationSession,
    slices: Sequence[SliceIndex],
    *,
    classes: Sequence[str] | None = None,
    region: Region | None = None,
    settings: AutomaticSettings | None = None,
    mode: PaintMode = "keep",
) -> Steps:
    """Worker: every object of each slice (or of its ``region``), named from the vocabulary (``classes``:
    only these), fitted to the labels for the commit ``mode`` (``proposals.fit_to_labels``). Yields
    ``(done, total, message)``; returns the :class:`Proposals`."""
    settings = settings or AutomaticSettings()
    found: dict[SliceIndex, ObjectResults] = {}
    total = len(slices) * PROGRESS_STEPS
    for n, slice_index in enumerate(slices):
        where = f"slice {slice_index[-1]} ({n + 1} of {len(slices)})" if slice_index else "the image"
        yield n * PROGRESS_STEPS, total, f"Segment everything: encoding {where}…"
        predictor, offset = _slice_predictor(session, tuple(slice_index), region)
        call = partial(settings.annotator(predictor, session.top_k).annotate, None, classes)
        instances = yield from _iter_call(call, n, total, f"Segment everything, {where}")
        results = instances_results(session, instances, tuple(slice_index), offset)
        results = fit_to_labels(results, session.target, mode)
        if len(results):
            found[tuple(slice_index)] = results
    return Proposals(found, "Segment everything", len(slices))


def iter_name_labels(
    session: AnnotationSession, source: Any, slices: Sequence[SliceIndex], mode: PaintMode = "keep"
) -> Steps:
    """Worker: name every label of ``source`` ((..., H, W) integer labels of the image's shape, never
    changed) on each slice, fitted to the labels for the commit ``mode``. Yields ``(done, total, message)``;
    returns the :class:`Proposals`."""
    check_source_labels(source, session.labels_shape)
    found: dict[SliceIndex, ObjectResults] = {}
    total = len(slices) * PROGRESS_STEPS
    for n, slice_index in enumerate(slices):
        labels = check_source_ids(np.asarray(source[tuple(slice_index)] if slice_index else source))
        where = f"slice {slice_index[-1]} ({n + 1} of {len(slices)})" if slice_index else "the image"
        if not labels.any():
            continue
        yield n * PROGRESS_STEPS, total, f"Name labels: encoding {where}…"
        predictor, _ = _slice_predictor(session, tuple(slice_index), None)
        call = partial(name_labels, predictor, labels, top_k=session.top_k)
        instances = yield from _iter_call(call, n, total, f"Name labels, {where}")
        results = instances_results(session, instances, tuple(slice_index), (0, 0), named=True)
        results = fit_to_labels(results, session.target, mode)
        if len(results):
            found[tuple(slice_index)] = results
    return Proposals(found, "Name labels", len(slices))


def _iter_call(
    call: Callable[..., Instances], n: int, total: int, what: str
) -> Generator[tuple[int, int, str], None, Instances]:
    """Run ``call(progress=...)`` in a helper thread and yield its progress reports as job steps of slice ``n``;
    closing this generator (a cancelled job) stops ``call`` at its next report."""
    reports: queue.Queue[tuple[int, int] | None] = queue.Queue()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def progress(done: int, count: int) -> None:
        if stop.is_set():
            raise Cancelled(what)
        reports.put((done, count))

    def run() -> None:
        try:
            outcome["value"] = call(progress=progress)
        except BaseException as error:  # handed to the job, in its thread
            outcome["error"] = error
        finally:
            reports.put(None)

    thread = threading.Thread(target=run, name="ovsam-automatic", daemon=True)
    thread.start()
    try:
        while (report := reports.get()) is not None:
            done, count = report
            step = n * PROGRESS_STEPS + done * PROGRESS_STEPS // max(count, 1)
            yield step, total, f"{what}: {done}/{count}…"
    finally:
        stop.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _slice_predictor(
    session: AnnotationSession, slice_index: SliceIndex, region: Region | None
) -> tuple[Any, tuple[int, int]]:
    """A predictor copy holding the slice (or its ``region``), and the (row, col) offset of what it holds.

    A whole slice encoded whole comes from the embedding cache (encoded and cached if missing); a tiled
    slice is set on a lazy view (tiles are encoded as the annotator reaches them); a region is encoded on
    its own (whole, or tiled if large)."""
    predictor = session.job_predictor()
    if region is None and not session.tiled:
        session.ensure_embedding(slice_index, predictor)
        return session.restore_embedding(slice_index, predictor), (0, 0)
    view = slice_view(session.image, slice_index)
    if region is not None:
        r0, r1, c0, c1 = region
        view = np.asarray(view[r0:r1, c0:c1])
    predictor.set_image(view, contrast_limits=session.contrast_limits)
    return predictor, (0, 0) if region is None else (region[0], region[2])


# ---------------------------------------------------------------------------------------------- results


def instances_results(
    session: AnnotationSession,
    instances: Instances,
    slice_index: SliceIndex,
    offset: tuple[int, int],
    *,
    named: bool = False,
) -> ObjectResults:
    """``Instances`` (of a slice, or of a region at ``offset``) as the slice's :class:`ObjectResults`:
    cropped masks, names (``unknown`` below the session's threshold), scores and alternatives."""
    height, width = session.labels_shape[-2:]
    crops, offsets, rows = [], [], []
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(instances.boxes).astype(np.int64)):
        crop = instances.labels[y0:y1, x0:x1] == instances.ids[i]
        if crop.any():
            crops.append(crop)
            offsets.append((y0 + offset[0], x0 + offset[1]))
            rows.append(i)
    index = np.asarray(rows, np.int64)
    k = instances.topk_scores.shape[1] if instances.topk_scores.ndim == 2 else 0
    values: dict[str, Any] = {
        "slice_index": tuple(slice_index),
        "masks": CroppedMasks(crops, np.asarray(offsets, np.int64).reshape(-1, 2), (height, width)),
        "class_names": [session.name_for(instances.class_names[i], float(instances.scores[i])) for i in rows],
        "scores": instances.scores[index].astype(np.float32),
        "iou": instances.iou[index].astype(np.float32),
        "topk_names": [list(instances.topk_names[i]) for i in rows],
        "topk_scores": instances.topk_scores[index].reshape(len(rows), k).astype(np.float32),
        "background": instances.background[index].astype(np.float32),
    }
    if named:
        return NamedResults(**values, source_ids=instances.ids[index].astype(np.int64))
    return ObjectResults(**values)


# ---------------------------------------------------------------------------------------------- inputs


def check_source_labels(source: Any, labels_shape: tuple[int, ...]) -> None:
    """A labels array to name: the image's shape (without colour) and integer (or bool) values, else a
    ValueError that says what to choose."""
    shape = tuple(int(s) for s in getattr(source, "shape", ()))
    if shape != tuple(labels_shape):
        raise ValueError(
            f"The labels have shape {shape} but the image {tuple(labels_shape)}: choose labels made for "
            "this image."
        )
    dtype = np.dtype(getattr(source, "dtype", np.float64))
    if dtype.kind != "b" and not np.issubdtype(dtype, np.integer):
        raise ValueError(
            f"The labels are {dtype}: choose integer labels (0 = background, one id per object); a "
            "probability map must be thresholded and labelled first."
        )


def check_source_ids(labels: np.ndarray) -> np.ndarray:
    """One slice of labels to name, its ids checked (>= 0 and at most ``MAX_SOURCE_ID``)."""
    if labels.size and labels.dtype.kind != "b":
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"The labels hold a negative id ({low}): ids are 0 (background) or more.")
        if high > MAX_SOURCE_ID:
            raise ValueError(
                f"The labels hold id {high}, above 2^53: renumber them first "
                "(skimage.segmentation.relabel_sequential)."
            )
    return labels


def visible_region(
    center: Sequence[float],
    zoom: float,
    canvas_hw: Sequence[int],
    scale: Sequence[float],
    translate: Sequence[float],
    image_hw: tuple[int, int],
) -> Region | None:
    """The (row0, row1, col0, col1) pixels of a slice seen in a 2D view, clipped to the image; None when
    none is in view. center: the camera's (..., y, x) world centre; zoom: screen pixels per world unit;
    canvas_hw: the canvas (height, width) in screen pixels; scale, translate: the image layer's last two
    axes (world units per pixel, world offset)."""
    centre = np.asarray(center, float)[-2:]
    half = np.asarray(canvas_hw, float)[-2:] / (2 * max(float(zoom), 1e-12))
    step, offset = np.asarray(scale, float)[-2:], np.asarray(translate, float)[-2:]
    # pixel i spans world translate + (i - 0.5 .. i + 0.5) * scale
    low = np.floor((centre - half - offset) / step + 0.5).astype(int)
    high = np.ceil((centre + half - offset) / step + 0.5).astype(int)
    low = np.clip(low, 0, image_hw)
    high = np.clip(high, 0, image_hw)
    if np.any(high <= low):
        return None
    return int(low[0]), int(high[0]), int(low[1]), int(high[1])
