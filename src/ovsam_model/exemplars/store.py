"""``ExampleSet``: the objects a user has taught, as feature vectors with their class names.

A value type (every change returns a new set), so that a predictor and its copies in worker threads can share
one without locks. Files: checksummed safetensors (``ovsam_model.tensorfile``), no pickle. The tensor
``features`` is float32 (N, F); the metadata holds ``format`` (``EXAMPLES_FORMAT``), ``model`` (the
fingerprint of the model whose region embeddings the features hold, ``ovsam_model.fingerprint``),
``layout`` (the feature layout: embedding widths and shape-feature names) and ``class_names`` (N names, JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..tensorfile import read_safetensors, write_safetensors

EXAMPLES_FORMAT = "ovsam-examples/1"
SUFFIX = ".examples.safetensors"


def check_class_name(name: object) -> str:
    """A class name stripped of outer whitespace; a ValueError for an empty one or one that is not text."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"A class name must be non-empty text, got {name!r}: give each example its class.")
    if "," in name:
        raise ValueError(
            f"The class name {name!r} holds a comma, which separates synonyms in a vocabulary: drop it."
        )
    return " ".join(name.split())


class ExampleSet:
    """N examples: float32 features (N, F), a class name each, for the model with fingerprint ``model``.

    layout: a string naming the feature layout (``exemplars.learning.feature_layout``); sets of different
    layouts or models cannot be mixed.
    """

    def __init__(
        self,
        features: np.ndarray,
        class_names: Sequence[str],
        model: str,
        layout: str,
    ) -> None:
        features = np.asarray(features, np.float32)
        if features.ndim != 2:
            raise ValueError(f"Example features must be (N, F), got shape {features.shape}.")
        names = [check_class_name(n) for n in class_names]
        if len(names) != len(features):
            raise ValueError(f"{len(names)} class names for {len(features)} examples: give one per example.")
        if not np.isfinite(features).all():
            raise ValueError("Example features hold NaN or infinite values: recompute them from the masks.")
        self.features = features
        self.features.setflags(write=False)
        self.class_names: tuple[str, ...] = tuple(names)
        self.model = str(model)
        self.layout = str(layout)

    @classmethod
    def empty(cls, model: str, layout: str, width: int) -> ExampleSet:
        return cls(np.zeros((0, width), np.float32), [], model, layout)

    def __len__(self) -> int:
        return len(self.class_names)

    @property
    def classes(self) -> list[str]:
        """The classes that have examples, in the order their first example came."""
        return list(dict.fromkeys(self.class_names))

    def counts(self) -> dict[str, int]:
        """Examples per class, in first-seen order."""
        out: dict[str, int] = {}
        for name in self.class_names:
            out[name] = out.get(name, 0) + 1
        return out

    def labels(self) -> np.ndarray:
        """int64 (N,) index of each example's class in ``classes``."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[n] for n in self.class_names], np.int64)

    def add(self, features: np.ndarray, class_names: Sequence[str]) -> ExampleSet:
        """A new set with these examples appended (features (n, F) of this set's layout)."""
        features = np.asarray(features, np.float32).reshape(len(class_names), -1)
        if features.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"These examples have {features.shape[1]} features, the set has {self.features.shape[1]}: "
                "they were computed by another model or version; compute them with this predictor."
            )
        return ExampleSet(
            np.concatenate([self.features, features]),
            [*self.class_names, *class_names],
            self.model,
            self.layout,
        )

    def without(self, class_names: Iterable[str] | None = None) -> ExampleSet:
        """A new set without the examples of ``class_names`` (None: without any)."""
        if class_names is None:
            return ExampleSet(self.features[:0], [], self.model, self.layout)
        drop = {check_class_name(n) for n in class_names}
        keep = [i for i, n in enumerate(self.class_names) if n not in drop]
        return ExampleSet(self.features[keep], [self.class_names[i] for i in keep], self.model, self.layout)

    @classmethod
    def concat(cls, sets: Sequence[ExampleSet]) -> ExampleSet:
        """One set of several of the same model and layout (at least one set)."""
        if not sets:
            raise ValueError("concat needs at least one ExampleSet.")
        first = sets[0]
        for other in sets[1:]:
            first.check_compatible(other.model, other.layout)
        return cls(
            np.concatenate([s.features for s in sets]),
            [n for s in sets for n in s.class_names],
            first.model,
            first.layout,
        )

    def check_compatible(self, model: str, layout: str) -> None:
        """A ValueError unless these examples were made by ``model`` with feature ``layout``."""
        if model != self.model:
            raise ValueError(
                f"These examples were made with another model ({self.model}), not {model}: region "
                "embeddings of one model mean nothing to another. Load the model they were made with, or "
                "teach this model again from your labels."
            )
        if layout != self.layout:
            raise ValueError(
                f"These examples have the feature layout {self.layout}, this version computes {layout}: "
                "teach the classes again from your labels."
            )

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the set to ``path`` (atomically; ``SUFFIX`` is the usual ending). Returns the path."""
        metadata = {
            "format": EXAMPLES_FORMAT,
            "model": self.model,
            "layout": self.layout,
            "class_names": json.dumps(list(self.class_names)),
        }
        tensors = {"features": torch.from_numpy(np.ascontiguousarray(self.features).copy())}
        return write_safetensors(Path(path).expanduser(), tensors, metadata, algorithm="sha256")

    @classmethod
    def load(cls, path: str | Path) -> ExampleSet:
        """Read a set written by ``save``; a ValueError names a missing, corrupted or foreign file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"No examples file at {path}: choose a file written by save_examples.")
        try:
            tensors, metadata = read_safetensors(path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{path} is not a readable examples file ({error}): it is corrupted or of another kind; "
                "save the examples again."
            ) from error
        if metadata.get("format") != EXAMPLES_FORMAT or "features" not in tensors:
            raise ValueError(
                f"{path} is not an examples file of this version (format {metadata.get('format')!r}, "
                f"expected {EXAMPLES_FORMAT!r}): choose a file written by save_examples."
            )
        try:
            names = json.loads(metadata["class_names"])
            return cls(tensors["features"].numpy(), names, metadata["model"], metadata["layout"])
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path}: its examples metadata is damaged ({error}); save them again."
            ) from error
