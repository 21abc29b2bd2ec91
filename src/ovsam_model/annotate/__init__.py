"""Batch annotation: every object of many images and stacks, segmented and named into one COCO file, in this
process or on a Dask cluster (``python -m ovsam_model.annotate``; see :mod:`ovsam_model.annotate.cli`)."""

from .inputs import SliceRef, collect_slices
from .work import AnnotatorSpec, SliceResult, annotate_slice

__all__ = ["AnnotatorSpec", "SliceRef", "SliceResult", "annotate_slice", "collect_slices"]
