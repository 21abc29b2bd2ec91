"""Data for training and evaluation: COCO/LVIS instances, unlabelled image folders, stacks, synthetic data.

Image reading goes through :func:`load_image`; conversion to model input through
:func:`ovsam_model.image.to_model_rgb`. The public names load their modules on first use, so that importing a
light submodule (``ovsam_model.data.splits``, e.g. for a vocabulary preset) does not pay for torch and
pycocotools.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

_EXPORTS = {
    "OVCOCO_BASE": "splits",
    "OVCOCO_EXCLUDED": "splits",
    "OVCOCO_NOVEL": "splits",
    "lvis_split": "splits",
    "CocoInstanceDataset": "coco",
    "collate_instances": "coco",
    "interior_point": "coco",
    "read_coco_json": "coco",
    "ImageFolderDataset": "folders",
    "sample_prompts": "prompts",
    "Stack": "stacks",
    "iter_slices": "stacks",
    "load_image": "stacks",
    "open_stack": "stacks",
}
__all__ = [
    "CocoInstanceDataset",
    "ImageFolderDataset",
    "OVCOCO_BASE",
    "OVCOCO_EXCLUDED",
    "OVCOCO_NOVEL",
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

if TYPE_CHECKING:
    from .coco import CocoInstanceDataset, collate_instances, interior_point, read_coco_json
    from .folders import ImageFolderDataset
    from .prompts import sample_prompts
    from .splits import OVCOCO_BASE, OVCOCO_EXCLUDED, OVCOCO_NOVEL, lvis_split
    from .stacks import Stack, iter_slices, load_image, open_stack

__getattr__ = lazy_getattr(__name__, _EXPORTS)
