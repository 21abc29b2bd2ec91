"""Text-based and example-based class probabilities fused into one distribution over all known classes.

The classes: the vocabulary's (known by name) and, after them, the classes that have examples only
(``class_union``). Per object, with ``f`` the text probabilities over the vocabulary without the background
(renormalised) and ``p`` the exemplar classifier's over the classes with examples:

- a class with examples *and* a name: ``p(c) * (K f(c)) ** text_weight``: the text's opinion as a likelihood
  ratio against a uniform guess over its K classes multiplies the examples' (a product of experts);
- a class with examples only: ``p(c)`` (the text knows nothing of it: ratio 1);
- these are renormalised to share ``1 - m``, where ``m`` is the text's probability of the named classes
  that have no examples, which keep their text probabilities (the text prior of a class known by name);
- a class with neither is not offered.

The background probability is the text's, and the foreground shares ``1 - background`` as before, so scores
mean what they meant without examples. ``unknown``: the object is far from every example (novelty above
``unknown_distance``, see ``ExemplarClassifier.novelty``) and the classes without examples are unlikely
(``m < 0.5``): nothing fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .classifier import DEFAULT_C

# Chosen on a tuning split (synthetic seeds other than the benchmark's): the balance between new classes named
# right and known classes kept right (benchmarks/README.md, "Learn from my annotations").
DEFAULT_TEXT_WEIGHT = 0.5
DEFAULT_UNKNOWN_DISTANCE = 3.0
_EPS = 1e-6


@dataclass(frozen=True)
class FusionSettings:
    """text_weight: exponent of the text's likelihood ratio (0: the classifier alone decides among classes
    with examples); unknown_distance: novelty above which an object fits no example; embedding_weight,
    text_feature_weight (the blocks of the classifier's input, see ``exemplars.learning``) and c: the
    classifier's (see ``ExemplarClassifier``)."""

    text_weight: float = DEFAULT_TEXT_WEIGHT
    unknown_distance: float = DEFAULT_UNKNOWN_DISTANCE
    embedding_weight: float = 0.25
    text_feature_weight: float = 1.0
    c: float = DEFAULT_C

    def __post_init__(self) -> None:
        for name in ("text_weight", "unknown_distance", "embedding_weight", "text_feature_weight", "c"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"FusionSettings.{name} must be a finite number >= 0, got {value!r}.")


def class_union(vocabulary_names: Sequence[str], example_classes: Sequence[str]) -> list[str]:
    """The vocabulary's names, then the example classes it does not name (compared case-insensitively)."""
    known = {n.casefold() for n in vocabulary_names}
    extra = [c for c in example_classes if c.casefold() not in known]
    return [*vocabulary_names, *dict.fromkeys(extra)]


def fuse(
    text_probabilities: np.ndarray,
    vocabulary_names: Sequence[str],
    example_probabilities: np.ndarray,
    example_classes: Sequence[str],
    novelty: np.ndarray,
    settings: FusionSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (n, C + 1) probabilities over ``class_union`` with the background last, bool (n,) unknown).

    text_probabilities: (n, K + 1), background last; example_probabilities: (n, E) over example_classes;
    novelty: (n,).
    """
    text = np.asarray(text_probabilities, np.float64)
    k = len(vocabulary_names)
    if text.shape[1] != k + 1:
        raise ValueError(f"text probabilities have {text.shape[1]} columns for {k} classes + background.")
    names = class_union(vocabulary_names, example_classes)
    column = {n.casefold(): i for i, n in enumerate(names)}
    example_columns = np.array([column[c.casefold()] for c in example_classes], np.int64)
    background = text[:, -1]
    foreground = text[:, :k] / np.maximum(1.0 - background, _EPS)[:, None]
    ratio = np.ones((len(text), len(example_classes)))
    named = example_columns < k
    if named.any() and settings.text_weight > 0:
        ratio[:, named] = (k * foreground[:, example_columns[named]] + _EPS) ** settings.text_weight
    examples = np.asarray(example_probabilities, np.float64) * ratio
    examples /= np.maximum(examples.sum(axis=1, keepdims=True), _EPS)
    text_only = np.setdiff1d(np.arange(k), example_columns[named])
    text_mass = foreground[:, text_only].sum(axis=1)
    fused = np.zeros((len(text), len(names)))
    fused[:, text_only] = foreground[:, text_only]
    fused[:, example_columns] = (1.0 - text_mass)[:, None] * examples
    probabilities = np.concatenate([fused * (1.0 - background)[:, None], background[:, None]], axis=1)
    unknown = (np.asarray(novelty) > settings.unknown_distance) & (text_mass < 0.5)
    return probabilities.astype(np.float32), unknown
