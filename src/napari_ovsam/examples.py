"""Teaching the model from the user's labels: which objects are examples, and their features; no Qt, no napari.

Per labels target, :class:`LabelExamples` keeps the feature vector of every committed object
(``predictor.example_features`` of its painted mask, computed at commit on the slice's embedding, which is
there anyway), keyed by (label id, slice index) and tagged with the model fingerprint and feature layout that
computed it; the label ids that are *examples* (committed, renamed, or marked reviewed while "learn from my
labels" is on); and examples loaded from files, tied to no object. An example's class is its object's
``class_name`` in the features table, read whenever the example set is built: a rename, a pick among the
alternatives, or an undo that puts a row back take effect with no bookkeeping of their own, and objects named
``unknown`` (or nothing) are no examples.

:class:`Teaching` is the session's side: the learn toggle, the class given to the next commits, the classes
added by name (that have no example yet), and the listeners told when examples change.

Masks are bool (H, W) in (row, col) pixels of a slice; slices are named by their leading indices (``()`` in
2D). Files (saved, loaded, next to an exported COCO file, in a layer's metadata):
:mod:`napari_ovsam.examples_files`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ovsam_model.exemplars import ExampleSet
from ovsam_model.exemplars.store import check_class_name
from ovsam_model.prediction import CompactMasks, crop_to_pixels
from ovsam_model.prompts import normalize_prompts
from ovsam_model.tiled import prompt_routes

from .naming import UNKNOWN_CLASS
from .painting import CommitRecord
from .results import SliceIndex

ObjectKey = tuple[int, SliceIndex]  # (label id, slice index)
FEATURE_CHUNK = 16  # full-size masks built at once to compute features (16 x 1536^2 bool: 38 MB)
METADATA_KEY = "examples"  # layer.metadata['ovsam'][METADATA_KEY]: the layer's LabelExamples


@dataclass
class Vector:
    """One object's features on one slice: float32 (F,), for the model ``model`` with feature ``layout``."""

    values: np.ndarray
    model: str
    layout: str


def supports_examples(predictor: Any) -> bool:
    """Whether a predictor names from examples (the OV-SAM predictor; not a baseline or a test stand-in)."""
    return all(hasattr(predictor, name) for name in ("example_features", "set_examples", "examples"))


def example_class(name: Any) -> str | None:
    """An object's class as an example, or None when its name teaches nothing (empty, ``unknown``). A name
    with synonyms after commas ("mitotic, dividing", the vocabulary's convention) teaches its first one."""
    first = (name if isinstance(name, str) else "").split(",")[0]
    text = " ".join(first.split())
    return None if not text or text.casefold() == UNKNOWN_CLASS else text


@dataclass
class LabelExamples:
    """The examples of one labels array (see the module docstring). ``vectors``: every committed object's
    features per slice; ``learnt``: the label ids that are examples; ``loaded``: sets from files."""

    vectors: dict[ObjectKey, Vector] = field(default_factory=dict)
    learnt: set[int] = field(default_factory=set)
    loaded: list[ExampleSet] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.vectors) + sum(len(s) for s in self.loaded)

    def add_vectors(self, keys: Sequence[ObjectKey], values: np.ndarray, model: str, layout: str) -> None:
        for key, row in zip(keys, np.asarray(values, np.float32)):
            self.vectors[key] = Vector(row, model, layout)

    def has_vector(self, label_id: int, model: str, layout: str) -> bool:
        """Whether the object has features of ``model`` (and ``layout``) on some slice."""
        return any(
            key[0] == int(label_id) and (v.model, v.layout) == (model, layout)
            for key, v in self.vectors.items()
        )

    def example_set(self, table: pd.DataFrame, model: str, layout: str) -> ExampleSet:
        """The examples of ``model`` and ``layout``: the learnt objects' vectors under their current class
        names (``table``: the features table), then the loaded sets of that model."""
        return self.export(table, model, layout)[0]

    def export(self, table: pd.DataFrame, model: str, layout: str) -> tuple[ExampleSet, list[ObjectKey]]:
        """:meth:`example_set` and the objects of its first rows (the loaded examples follow them)."""
        names = _class_names(table)
        keys = [
            key
            for key, vector in self.vectors.items()
            if key[0] in self.learnt
            and names.get(key[0])
            and (vector.model, vector.layout) == (model, layout)
        ]
        own = [self.vectors[k].values for k in keys]
        width = len(own[0]) if own else _width(self.loaded, model, layout)
        result = ExampleSet(
            np.stack(own) if own else np.zeros((0, width), np.float32),
            [names[k[0]] for k in keys],
            model,
            layout,
        )
        loaded = [s for s in self.loaded if (s.model, s.layout) == (model, layout) and len(s)]
        return (ExampleSet.concat([result, *loaded]) if loaded else result), keys

    def latest_model(self) -> tuple[str, str] | None:
        """(model, layout) of the vector or loaded set added last (what a file next to the labels holds)."""
        if self.vectors:
            last = next(reversed(self.vectors.values()))
            return last.model, last.layout
        return (self.loaded[-1].model, self.loaded[-1].layout) if self.loaded else None

    def foreign_count(self, table: pd.DataFrame, model: str, layout: str) -> int:
        """How many examples belong to another model (or feature layout): kept, not used."""
        names = _class_names(table)
        own = sum(
            1
            for key, vector in self.vectors.items()
            if key[0] in self.learnt
            and names.get(key[0])
            and (vector.model, vector.layout) != (model, layout)
        )
        return own + sum(len(s) for s in self.loaded if (s.model, s.layout) != (model, layout))

    def forget_class(self, class_name: str, table: pd.DataFrame) -> int:
        """Stop using the objects of ``class_name`` and its loaded examples as examples; the number
        dropped. The objects keep their names and features (renaming one later teaches again)."""
        names = _class_names(table)
        ids = {i for i in self.learnt if names.get(i) == class_name}
        dropped = sum(1 for key in self.vectors if key[0] in ids)
        self.learnt -= ids
        kept = []
        for examples in self.loaded:
            rest = examples.without([class_name])
            dropped += len(examples) - len(rest)
            if len(rest):
                kept.append(rest)
        self.loaded = kept
        return dropped

    def merge(self, other: LabelExamples) -> None:
        """Take in the examples of ``other`` (of the same labels, e.g. read from their file): its vectors
        of objects that have none here, its example ids, its loaded sets."""
        for key, vector in other.vectors.items():
            self.vectors.setdefault(key, vector)
        self.learnt |= other.learnt
        self.loaded += [s for s in other.loaded if not any(s is mine for mine in self.loaded)]

    def load(self, examples: ExampleSet) -> int:
        """Add examples read from a file (tied to no object); the number added."""
        if len(examples):
            self.loaded.append(examples)
        return len(examples)


def _class_names(table: pd.DataFrame) -> dict[int, str]:
    """label id -> its class name as an example (objects whose name teaches nothing are left out)."""
    out: dict[int, str] = {}
    for label_id, name in zip(table["index"].tolist(), table["class_name"].tolist()):
        cls = example_class(name)
        if cls is not None:
            out[int(label_id)] = cls
    return out


def _width(sets: Iterable[ExampleSet], model: str, layout: str) -> int:
    return next((s.features.shape[1] for s in sets if s.model == model and s.layout == layout), 0)


# ---------------------------------------------------------------------------------------------- features


def record_masks(record: CommitRecord, label_ids: Sequence[int], image_hw: tuple[int, int]) -> np.ndarray:
    """bool (n, H, W) full-size masks of what ``record`` painted for each of ``label_ids``."""
    r0, r1, c0, c1 = record.bbox
    masks = np.zeros((len(label_ids), *image_hw), bool)
    for row, label_id in enumerate(label_ids):
        crop = np.zeros(record.changed.shape, bool)
        crop[record.changed] = record.new_values == label_id
        masks[row, r0:r1, c0:c1] = crop
    return masks


def compute_vectors(
    predictor: Any, masks: Callable[[Sequence[int]], np.ndarray], ids: Sequence[int]
) -> np.ndarray:
    """float32 (n, F) features of the objects ``ids`` on the image set in ``predictor``; ``masks(chunk)``
    gives the (len(chunk), H, W) masks of a chunk of them (built chunk by chunk to bound memory)."""
    parts = [
        np.asarray(predictor.example_features(masks(ids[i : i + FEATURE_CHUNK])), np.float32)
        for i in range(0, len(ids), FEATURE_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------------------------------------- session side


class Teaching:
    """What the user decided about teaching (see the module docstring).

    learn: "learn from my labels" (commits, renames and reviews make examples). commit_class: the class
    the next prompted commits get instead of the model's name (None: the model's). added: classes added by
    name, in order (shown until they have examples, and offered for commits).
    """

    def __init__(self) -> None:
        self.learn = True
        self.commit_class: str | None = None
        self.added: list[str] = []
        self.problem = ""  # why the last objects could not become examples ("" when they could)
        self.listeners: list[Callable[[], None]] = []

    def add_class(self, name: Any, known: Iterable[str]) -> str:
        """Add a class by name; a ValueError for an empty name or one already known (``known`` and
        the classes added before, compared case-insensitively). Returns the cleaned name."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("Type a class name first: an empty name names nothing.")
        clean = check_class_name(name)
        if clean.casefold() == UNKNOWN_CLASS:
            raise ValueError(
                f"'{UNKNOWN_CLASS}' is what objects are called when nothing fits: choose another name."
            )
        taken = {n.casefold() for n in [*known, *self.added]}
        if clean.casefold() in taken:
            raise ValueError(f"There is a class '{clean}' already: give the new class another name.")
        self.added.append(clean)
        return clean

    def set_commit_class(self, name: str | None) -> None:
        """Name the next prompted commits ``name`` (None: the model's names)."""
        self.commit_class = None if name is None else check_class_name(name)

    def named(self, results: Any) -> Any:
        """``results`` named ``commit_class`` (a copy), or as they are when none is chosen."""
        if self.commit_class is None or not len(results):
            return results
        return dataclasses.replace(results, class_names=[self.commit_class] * len(results))

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener()


# ---------------------------------------------------------------------------------------------- learning


def learn_commit(session: Any, target: Any, group: Any) -> None:
    """After ``group`` was committed into ``target``: the features of each object it painted (on slices
    whose embedding is ready; tiled slices have none), the objects made examples if learning is on, and
    marked reviewed if the user named them (``Teaching.commit_class``). What it added is kept on the group
    (``example_keys``, ``learnt_ids``) for its undo."""
    if group is None:
        return
    session.teaching.problem = ""
    book: LabelExamples = target.examples
    predictor = session.predictor
    if supports_examples(predictor) and group.one_slice:
        _learn_tiled(session, book, group)
    elif supports_examples(predictor) and not session.tiled:
        model, layout = predictor.examples.model, predictor.examples.layout
        image_hw = tuple(session.labels_shape[-2:])
        for record in group.records:
            ids = [i for i in record.label_ids if (int(i), record.slice_index) not in book.vectors]
            if not ids or not session.embedding_ready(record.slice_index):
                continue
            session.restore_embedding(record.slice_index)
            masks = functools.partial(record_masks, record, image_hw=image_hw)
            vectors = _measured(session, compute_vectors, predictor, masks, ids)
            if vectors is None:
                continue
            keys = [(int(i), record.slice_index) for i in ids]
            book.add_vectors(keys, vectors, model, layout)
            group.example_keys.extend(keys)
    if session.teaching.commit_class is not None:
        for label_id in group.added_ids:
            target.mark_reviewed(label_id)
    if session.teaching.learn:
        new = {int(i) for i in group.added_ids} - book.learnt
        book.learnt |= new
        group.learnt_ids = tuple(sorted(new))


def _learn_tiled(session: Any, book: LabelExamples, group: Any) -> None:
    """:func:`learn_commit` on a tiled slice (one record per object): the features of the objects whose
    tile the slice's predictor holds, or the embedding cache in memory (nothing is encoded or read from
    disk on the GUI thread; the others get none)."""
    slice_index = group.records[0].slice_index
    tiled = session.tiled_slice(slice_index)
    if tiled is None or not tiled.lock.acquire(blocking=False):  # a worker is encoding one of its tiles
        return
    try:
        predictor = tiled.predictor
        objects = [(i, *_tight_crop(r, i)) for r in group.records for i in r.label_ids]
        objects = [o for o in objects if o[1].size]
        boxes = np.array([[c, r, c + m.shape[1], r + m.shape[0]] for _, m, (r, c) in objects], np.float32)
        routes = prompt_routes(
            predictor.tiles, normalize_prompts(None, None, boxes.reshape(-1, 4), predictor.original_size)
        )
        session.restore_tiles(tiled, routes)
        ready = [o for o, (_, window) in zip(objects, routes) if window in predictor.tiles]
        if len(ready) < len(objects):
            session.teaching.problem = (
                f"{len(objects) - len(ready)} object(s) of this large image lie on views not in memory (across "
                "tiles): they teach nothing."
            )
        if not ready:
            return
        masks = CompactMasks(
            [m[None] for _, m, _ in ready], np.array([o for *_, o in ready]), predictor.original_size, 1
        )
        values = _measured(session, predictor.example_features, masks)
        if values is None:
            return
        keys = [(int(i), slice_index) for i, _, _ in ready]
        book.add_vectors(keys, values, predictor.examples.model, predictor.examples.layout)
        group.example_keys.extend(keys)
    finally:
        tiled.lock.release()


def _tight_crop(record: CommitRecord, label_id: int) -> tuple[np.ndarray, tuple[int, int]]:
    """bool (h, w) of what ``record`` painted for ``label_id``, cropped to it, and its (row, col) offset."""
    painted = np.zeros(record.changed.shape, bool)
    painted[record.changed] = record.new_values == label_id
    return crop_to_pixels(painted, (int(record.bbox[0]), int(record.bbox[2])))


def learn_object(session: Any, target: Any, label_id: int) -> None:
    """A renamed or reviewed object becomes an example (learning on); its features are computed now if the
    commit had none for it (e.g. labels opened from a file), on its slices whose embedding is ready."""
    if not session.teaching.learn:
        return
    session.teaching.problem = ""
    book: LabelExamples = target.examples
    book.learnt.add(int(label_id))
    predictor = session.predictor
    if not supports_examples(predictor) or session.tiled:
        return
    model, layout = predictor.examples.model, predictor.examples.layout
    if book.has_vector(label_id, model, layout):
        return
    slices = target.slices_of(label_id) or ([()] if not session.leading_shape else [])
    for slice_index in slices:
        if not session.embedding_ready(slice_index):
            continue
        mask = np.asarray(target.labels[(*slice_index, slice(None), slice(None))]) == int(label_id)
        if not mask.any():
            continue
        session.restore_embedding(slice_index)
        values = _measured(session, predictor.example_features, mask[None])
        if values is None:
            continue
        book.add_vectors([(int(label_id), tuple(slice_index))], values, model, layout)


def _measured(session: Any, compute: Callable[..., np.ndarray], *args: Any) -> np.ndarray | None:
    """``compute(*args)``, or None when the predictor cannot measure these objects (its ValueError is kept in
    ``teaching.problem`` for the Teach panel): they are then no examples, and the commit stands."""
    try:
        return np.asarray(compute(*args), np.float32)
    except ValueError as error:
        session.teaching.problem = f"Some objects could not be measured as examples: {error}"
        return None


def unlearn(book: LabelExamples, group: Any) -> None:
    """Undo what :func:`learn_commit` added for ``group``."""
    for key in getattr(group, "example_keys", ()):
        book.vectors.pop(key, None)
    book.learnt -= set(getattr(group, "learnt_ids", ()))


def predictor_examples(predictor: Any, targets: Sequence[Any]) -> ExampleSet | None:
    """The examples of every target for ``predictor``'s model (None when it has none or cannot learn)."""
    if not supports_examples(predictor):
        return None
    model, layout = predictor.examples.model, predictor.examples.layout
    sets = [t.examples.example_set(t.features, model, layout) for t in targets]
    sets = [s for s in sets if len(s)]
    return ExampleSet.concat(sets) if sets else None


# ---------------------------------------------------------------------------------------------- the session's examples


def model_of(session: Any) -> tuple[str, str]:
    """(fingerprint, feature layout) of the session's model; a ValueError when it has none or cannot learn."""
    predictor = session.predictor
    if predictor is None:
        raise ValueError("No model is loaded: load one first (examples belong to a model).")
    if not supports_examples(predictor):
        raise ValueError("This model cannot learn from examples: choose an OV-SAM model (demo, ovsam_*).")
    return predictor.examples.model, predictor.examples.layout


def class_counts(session: Any) -> list[tuple[str, int, str]]:
    """(class, examples, kind) for the Teach panel: the vocabulary's classes ("vocabulary"), then classes
    with examples only ("examples"), then classes added by name that have none yet ("added")."""
    counts: dict[str, int] = {}
    if supports_examples(session.predictor):
        model, layout = model_of(session)
        for target in session.targets:
            for name, n in target.examples.example_set(target.features, model, layout).counts().items():
                counts[name] = counts.get(name, 0) + n
    vocabulary = list(session.vocabulary.names) if session.vocabulary is not None else []
    folded = {n.casefold(): n for n in counts}
    rows = [(n, counts.pop(folded.get(n.casefold(), n), 0), "vocabulary") for n in vocabulary]
    rows += [(n, c, "examples") for n, c in counts.items()]
    seen = {r[0].casefold() for r in rows}
    rows += [(n, 0, "added") for n in session.teaching.added if n.casefold() not in seen]
    return rows


def foreign_count(session: Any) -> int:
    """Examples of the attached labels that another model made (kept, not used)."""
    if not supports_examples(session.predictor):
        return 0
    model, layout = model_of(session)
    return sum(t.examples.foreign_count(t.features, model, layout) for t in session.targets)


def forget_class(session: Any, class_name: str) -> int:
    """Drop every example of ``class_name`` (objects keep their names); an added class goes too. Returns
    how many examples were dropped."""
    dropped = sum(t.examples.forget_class(class_name, t.features) for t in session.targets)
    session.teaching.added = [n for n in session.teaching.added if n != class_name]
    if session.teaching.commit_class == class_name:
        session.teaching.commit_class = None
    session.sync_examples()
    return dropped
