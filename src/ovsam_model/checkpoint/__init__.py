"""Checkpoints: one strict loader for every weights format, and this package's own checkpoint format.

- ``files``: reading PyTorch files (``weights_only=True``) and checksummed safetensors files.
- ``foreign``: which format a file has, and the named key rules of the foreign formats (SAM, released OV-SAM).
- ``own``: our own format (safetensors + JSON metadata + checksum; older ``torch.save`` files still read).
- ``strict``: strict loading, with errors that list missing / unexpected / mis-shaped keys by module.
- ``sources``: filling a model from given files and its config's named sources.

Loading is strict: every tensor of a filled module must come from the file, with the model's shape; otherwise
a ``ValueError`` lists the problems and nothing is loaded. No file is ever unpickled with code: PyTorch files
go through ``torch.load(weights_only=True)``, our own files are safetensors.
"""

from .files import read_safetensors, state_dict_of, strip_wrapper_prefixes, write_safetensors
from .foreign import (
    BARE_STATE,
    CLIP2SAM_RULES,
    SAM2CLIP_RULES,
    SAM_RULES,
    SOURCE_KINDS,
    detect_format,
    modules_from,
    remap,
    remap_released_clip2sam,
    remap_released_sam2clip,
    remap_sam,
)
from .own import (
    CLIP_CHILDREN,
    FORMAT_KEY,
    FORMAT_VERSION,
    NOT_ARCHITECTURE,
    CheckpointExtras,
    config_differences,
    load_own_state,
    save_checkpoint,
)
from .sources import (
    OWN_SUFFIXES,
    is_own_checkpoint,
    load_file,
    load_pretrained_sources,
    read_foreign,
    read_own_checkpoint,
)
from .strict import load_into, state_problems

__all__ = [
    "BARE_STATE",
    "CLIP2SAM_RULES",
    "CLIP_CHILDREN",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "NOT_ARCHITECTURE",
    "OWN_SUFFIXES",
    "SAM2CLIP_RULES",
    "SAM_RULES",
    "SOURCE_KINDS",
    "CheckpointExtras",
    "config_differences",
    "detect_format",
    "is_own_checkpoint",
    "load_file",
    "load_into",
    "load_own_state",
    "load_pretrained_sources",
    "modules_from",
    "read_foreign",
    "read_own_checkpoint",
    "read_safetensors",
    "remap",
    "remap_released_clip2sam",
    "remap_released_sam2clip",
    "remap_sam",
    "save_checkpoint",
    "state_dict_of",
    "state_problems",
    "strip_wrapper_prefixes",
    "write_safetensors",
]
