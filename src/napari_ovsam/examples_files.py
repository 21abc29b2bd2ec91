"""Examples in files: saved and loaded by the user, written next to an exported COCO file, and carried by a
labels layer's metadata; no Qt, no napari.

Format: ``ExampleSet.save`` / ``ExampleSet.load`` (checksummed safetensors, ``ovsam_model.exemplars``). Next to
``<name>.json`` the COCO writer puts ``<name>.examples.safetensors``; the JSON's ``ovsam`` section names it
(``examples``: ``file`` and ``objects``, the (label id, slice index) of its first rows; the rows after them
are examples loaded from files, tied to no object), so that reopening the labels brings back which objects
are examples. A layer's ``metadata['ovsam']['examples']`` holds its :class:`~napari_ovsam.examples.LabelExamples`
in a session, or that entry of a COCO file it was opened from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ovsam_model.exemplars import SUFFIX, ExampleSet

from .examples import METADATA_KEY, LabelExamples, model_of, predictor_examples


def save_examples(session: Any, path: str | Path) -> int:
    """Write the examples the model names from (every attached labels array's) to ``path``; their number.
    A ValueError when there are none."""
    model_of(session)
    examples = predictor_examples(session.predictor, session.targets)
    if examples is None:
        raise ValueError("There are no examples to save yet: commit or rename a few objects first.")
    examples.save(path)
    return len(examples)


def load_examples(session: Any, path: str | Path) -> int:
    """Add the examples of a file to the labels being annotated (they persist with them); their number.
    A ValueError (nothing changed) for a missing, corrupted or foreign file, another model's examples, or
    examples loaded into these labels already."""
    model, layout = model_of(session)
    if session.target is None:
        raise ValueError("Choose an image first: loaded examples are kept with its labels.")
    examples = ExampleSet.load(path)
    examples.check_compatible(model, layout)
    for earlier in session.target.examples.loaded:
        if earlier.class_names == examples.class_names and np.array_equal(
            earlier.features, examples.features
        ):
            raise ValueError(f"The examples of {Path(path).name} are loaded into these labels already.")
    added = session.target.examples.load(examples)
    session.sync_examples()
    return added


def side_file(coco_path: str | Path) -> Path:
    """The examples file written next to an exported COCO file: ``<name>.examples.safetensors``."""
    path = Path(coco_path)
    return path.with_name(path.stem + SUFFIX) if path.suffix.lower() == ".json" else Path(str(path) + SUFFIX)


def write_side_file(book: LabelExamples, table: pd.DataFrame, coco_path: str | Path) -> dict[str, Any] | None:
    """Write the examples of ``book`` (of the model that made the latest) next to a COCO file; returns the
    entry the COCO file's ``ovsam`` section keeps (the file's name and the (label id, slice) of its first
    rows), or None when there are no examples (nothing is written)."""
    latest = book.latest_model()
    if latest is None:
        return None
    examples, keys = book.export(table, *latest)
    if not len(examples):
        return None
    path = examples.save(side_file(coco_path))
    return {"file": path.name, "objects": [[int(k[0]), [int(i) for i in k[1]]] for k in keys]}


def layer_examples(metadata: Any) -> tuple[LabelExamples | None, str | None]:
    """The examples a labels layer carries in ``metadata['ovsam']['examples']``: the bookkeeping put there
    in this session, or the file next to the COCO file it was opened from (as ``write_side_file`` named
    it). Returns (examples or None, a message when the file could not be read: nothing is loaded then)."""
    ovsam = metadata.get("ovsam") if isinstance(metadata, dict) else None
    if not isinstance(ovsam, dict):
        return None, None
    value = ovsam.get(METADATA_KEY)
    if value is None or isinstance(value, LabelExamples):
        return value, None
    try:
        return _from_side_file(value, ovsam.get("source_path")), None
    except ValueError as error:
        return None, f"The labels' examples were not loaded: {error}"


def _from_side_file(entry: Any, source: Any) -> LabelExamples:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not source:
        raise ValueError("their entry in the COCO file is damaged; teach the classes again or load a file.")
    examples = ExampleSet.load(Path(str(source)).parent / Path(entry["file"]).name)
    objects = entry.get("objects") or []
    try:
        keys = [(int(label_id), tuple(int(i) for i in index)) for label_id, index in objects]
    except (TypeError, ValueError):
        raise ValueError("their object list in the COCO file is damaged; re-export the labels.") from None
    if len(keys) > len(examples):
        raise ValueError(f"the COCO file names {len(keys)} objects for {len(examples)} examples; re-export.")
    book = LabelExamples()
    book.add_vectors(keys, examples.features[: len(keys)], examples.model, examples.layout)
    book.learnt = {k[0] for k in keys}
    rest = list(range(len(keys), len(examples)))
    book.load(
        ExampleSet(
            examples.features[rest], [examples.class_names[i] for i in rest], examples.model, examples.layout
        )
    )
    return book
