"""Segment and name everything (``AutomaticAnnotator``), name existing labels (``name_labels``); both give
``Instances``: a non-overlapping label image with a class name, scores and alternatives per object."""

from .annotator import AutomaticAnnotator, annotator_defaults, class_indices
from .instances import Instances, coco_categories, empty_instances
from .labels import name_labels

__all__ = [
    "AutomaticAnnotator",
    "Instances",
    "annotator_defaults",
    "class_indices",
    "coco_categories",
    "empty_instances",
    "name_labels",
]
