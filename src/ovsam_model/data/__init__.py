"""Data for training and evaluation: COCO/LVIS instances, unlabelled image folders, stacks, synthetic data.

Image reading goes through :func:`load_image`; conversion to model input through
:func:`ovsam_model.image.to_model_rgb`.
"""

from ovsam_model.data.coco import (
    CocoInstanceDataset,
    collate_instances,
    interior_point,
    read_coco_json,
)
from ovsam_model.data.folders import ImageFolderDataset
from ovsam_model.data.prompts import sample_prompts
from ovsam_model.data.splits import OVCOCO_BASE, OVCOCO_EXCLUDED, OVCOCO_NOVEL, lvis_split
from ovsam_model.data.stacks import Stack, iter_slices, load_image, open_stack

__all__ = [
    "OVCOCO_BASE",
    "OVCOCO_EXCLUDED",
    "OVCOCO_NOVEL",
    "CocoInstanceDataset",
    "ImageFolderDataset",
    "Stack",
    "collate_instances",
    "interior_point",
    "iter_slices",
    "load_image",
    "lvis_split",
    "open_stack",
    "read_coco_json",
    "sample_prompts",
]
