"""The example-related methods of ``OVSAMPredictor`` (learn, forget, save, load; naming with examples)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint import model_fingerprint
from ..prediction import Prediction
from .features import SHAPE_FEATURE_NAMES
from .fusion import FusionSettings, class_union
from .learning import (
    NO_PIXELS,
    ExemplarNaming,
    Reader,
    as_object_masks,
    check_new_names,
    crop_features,
    embedding_width,
    feature_layout,
    masks_and_names,
    object_features,
    renamed,
)
from .store import ExampleSet


class ExamplesMixin:
    """Exemplar naming for a predictor that has ``model``, ``vocabulary``, ``original_size``, ``tiles`` and
    ``set_image``; ``_pixels`` is the image set (or None when only its embedding was restored)."""

    model: Any
    vocabulary: Any
    original_size: tuple[int, int] | None
    tiles: Any
    _pixels: Any = None
    _naming: ExemplarNaming | None = None
    _fingerprint: str | None = None
    #: How text and examples are fused (``exemplars.fusion.FusionSettings``); assign a new one to change it.
    exemplar_settings: FusionSettings = FusionSettings()

    def set_image(self, image: Any, contrast_limits: Sequence[float] | None = None) -> None:
        raise NotImplementedError  # the predictor's own

    # ------------------------------------------------------------------ state
    @property
    def model_fingerprint(self) -> str:
        """``ovsam_model.fingerprint.model_fingerprint`` of the model (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def examples(self) -> ExampleSet:
        """The examples taught so far (an immutable ``ExampleSet``; empty at first)."""
        if self._naming is not None:
            return self._naming.examples
        width = embedding_width(self.model) + len(SHAPE_FEATURE_NAMES)
        return ExampleSet.empty(self.model_fingerprint, feature_layout(self.model), width)

    @property
    def class_names(self) -> list[str]:
        """The names objects are named from: the vocabulary's, then classes that have examples only."""
        vocabulary = [] if self.vocabulary is None else list(self.vocabulary.names)
        return class_union(vocabulary, self.examples.classes)

    def set_examples(self, examples: ExampleSet | None) -> None:
        """Name from these examples (None or an empty set: from the text alone); they must be this model's."""
        if examples is None or len(examples) == 0:
            self._naming = None
            return
        examples.check_compatible(self.model_fingerprint, feature_layout(self.model))
        self._naming = ExemplarNaming(examples, self.exemplar_settings)

    # ------------------------------------------------------------------ teach
    def example_features(self, masks: Any) -> np.ndarray:
        """float32 (N, F) features of bool masks (N, H, W), (H, W) or ``CompactMasks`` on the image set."""
        if self.original_size is None:
            raise ValueError("No image is set: call predictor.set_image(image) first.")
        return object_features(self, masks, self._pixel_reader())

    def learn_examples(
        self, image: Any, masks: Any, class_names: Any, *, contrast_limits: Sequence[float] | None = None
    ) -> int:
        """Add examples from ``image`` (encoded now unless it is the image set): bool masks (N, H, W) with a
        class name each, or an integer label image (H, W) with {label id: name} (or names of its non-zero ids
        in ascending order). Returns how many were added."""
        masks, names = masks_and_names(masks, class_names)
        names = check_new_names(names)
        if image is not self._pixels or self.original_size is None:
            self.set_image(image, contrast_limits)
        return self.add_examples(self.example_features(masks), names)

    def add_examples(self, features: np.ndarray, class_names: Sequence[str]) -> int:
        """Add examples from features computed before (``example_features``); returns how many."""
        names = list(class_names)
        self.set_examples(self.examples.add(features, names))  # the new set checks the names
        return len(names)

    def forget_examples(self, class_names: Iterable[str] | None = None) -> int:
        """Drop the examples of ``class_names`` (None: all); returns how many were dropped."""
        before = self.examples
        names = (
            None if class_names is None else [class_names] if isinstance(class_names, str) else class_names
        )
        self.set_examples(before.without(names))
        return len(before) - len(self.examples)

    def save_examples(self, path: str | Path) -> Path:
        """Write the examples to ``path`` (see ``ExampleSet.save``; ``.examples.safetensors`` by convention)."""
        return self.examples.save(path)

    def load_examples(self, path: str | Path) -> int:
        """Add the examples of a file written by ``save_examples`` (refused when another model made them)."""
        loaded = ExampleSet.load(path)
        loaded.check_compatible(self.model_fingerprint, feature_layout(self.model))
        self.set_examples(ExampleSet.concat([self.examples, loaded]))
        return len(loaded)

    # ------------------------------------------------------------------ name
    def _name_with_examples(self, prediction: Prediction, top_k: int) -> Prediction:
        """Rename a text-only prediction (made with top_k = K) from text and examples fused."""
        assert self._naming is not None and self.vocabulary is not None
        vocabulary = list(self.vocabulary.names)
        text = prediction.probabilities(len(vocabulary))
        fused, unknown, names = self.fuse_examples(text, prediction.masks)
        return renamed(prediction, fused, unknown, names, top_k)

    def fuse_examples(self, text: np.ndarray, masks: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(float32 (n, C + 1) probabilities over ``class_names`` (background last), bool (n,) unknown, the
        C names) of objects with text probabilities (n, K + 1) and these masks, on the image set."""
        assert self.vocabulary is not None
        vocabulary = list(self.vocabulary.names)
        if self._naming is None:
            return np.asarray(text, np.float32), np.zeros(len(text), bool), vocabulary
        if len(text):
            features = self._features_or_zeros(masks)
        else:
            features = np.zeros((0, self.examples.features.shape[1]), np.float32)
        return self._naming.probabilities(self, text, features)

    def _features_or_zeros(self, masks: Any) -> np.ndarray:
        """Features of each mask; an empty mask (nothing segmented) gets the examples' mean (no opinion)."""
        assert self.original_size is not None
        objects = as_object_masks(masks, self.original_size)
        out = np.repeat(self.examples.features.mean(axis=0, keepdims=True), len(objects), axis=0)
        filled = [i for i, (crop, _) in enumerate(objects) if crop.size]
        if filled:
            out[filled] = crop_features(self, [objects[i] for i in filled], self._pixel_reader())
        return out.astype(np.float32)

    def _pixel_reader(self) -> Reader:
        """``read(rows, cols)``: the pixels of the image set there; a ValueError when they are not known."""
        pixels = self._pixels
        if pixels is None:
            raise ValueError(NO_PIXELS)
        return lambda rows, cols: np.asarray(pixels[rows, cols])
