"""Exemplar naming: learn classes from a user's own objects, fused with the text-based naming.

``OVSAMPredictor.learn_examples`` / ``add_examples`` / ``forget_examples`` / ``save_examples`` /
``load_examples`` keep an ``ExampleSet``; once it holds examples, ``predict``, the automatic annotator and
``name_labels`` name objects from text and examples fused (``exemplars.fusion``). Features:
``exemplars.features`` (mask shape and intensity) with the region embeddings (``exemplars.learning``);
classifier: ``exemplars.classifier``.
"""

from .classifier import ExemplarClassifier
from .features import SHAPE_FEATURE_NAMES, shape_features
from .fusion import FusionSettings, class_union, fuse
from .learning import feature_layout
from .store import EXAMPLES_FORMAT, SUFFIX, ExampleSet

__all__ = [
    "EXAMPLES_FORMAT",
    "SHAPE_FEATURE_NAMES",
    "SUFFIX",
    "ExampleSet",
    "ExemplarClassifier",
    "FusionSettings",
    "class_union",
    "feature_layout",
    "fuse",
    "shape_features",
]
