"""Our own checkpoint format: the trainable weights plus the model config, vocabulary and metadata, so a
checkpoint rebuilds its model (``build_ovsam(path)``).

Version 2 (written now) is a safetensors file, no pickle at all:
- tensors ``state_dict.<key>`` (the model's state dict, see ``save_checkpoint`` for what is left out) and
  ``text_embeddings`` ([K, P, D], when the vocabulary has them);
- string metadata ``ovsam_checkpoint`` ("2"), ``config``, ``vocabulary`` and ``metadata`` (JSON texts), and
  ``sha256``, the checksum over all of it (``files.checksum``): a changed byte is an error on load.
Version 1 (older files) is a ``torch.save`` dict ``{"ovsam_checkpoint": 1, "config", "state_dict",
"vocabulary", "text_embeddings", "metadata"}``, read with ``weights_only=True``. Both decode to that dict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import OVSAMConfig
from ..vocabulary import Vocabulary, as_vocabulary
from .files import PathLike, State, state_dict_of, write_safetensors
from .strict import Assignment, apply_assignments

if TYPE_CHECKING:
    from ..modeling.ovsam import OVSAM

logger = logging.getLogger(__name__)

FORMAT_KEY = "ovsam_checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CLIP_CHILDREN = ("backbone", "clip_text")  # the model children open_clip restores from a pretrained tag
# Config fields that do not change what the weights mean (ignored when matching one of our checkpoints).
NOT_ARCHITECTURE = ("name", "description", "weights", "clip.pretrained", "clip.frozen", "fusion")
_STATE_PREFIX = "state_dict."
_JSON_ENTRIES = ("config", "vocabulary", "metadata")
DISTRIBUTION = "napari-ovsam"  # the installed distribution whose version a checkpoint records


def _package_version() -> str:
    """The installed package's version (read from its metadata: importing the ``ovsam_model`` package root
    here would make an import cycle through its lazy exports)."""
    try:
        return package_metadata.version(DISTRIBUTION)
    except package_metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class CheckpointExtras:
    """What one of our checkpoints carries besides weights (``model.checkpoint_extras`` after loading).

    vocabulary: the ``Vocabulary`` saved with the model, or None.
    text_embeddings: [K, P, D] float32 CPU tensor for that vocabulary, or None.
    """

    config_name: str
    vocabulary: Any = None
    text_embeddings: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- writing
def _clip_source(model: OVSAM) -> str | None:
    """The pretrained tag or file the model's CLIP weights came from (None: random, or trained here)."""
    return getattr(model, "clip_pretrained", model.config.clip.pretrained)


def _external_children(model: OVSAM) -> tuple[str, ...]:
    """Children that open_clip restores from the pretrained tag, hence not stored: the text tower, and the
    image trunk while it stays frozen."""
    if _clip_source(model) is None:
        return ()
    return CLIP_CHILDREN if model.config.clip.frozen else ("clip_text",)


def _stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.half() if half and tensor.is_floating_point() else tensor.clone()


def save_checkpoint(
    model: OVSAM,
    path: PathLike,
    *,
    vocabulary: Any = None,
    text_embeddings: torch.Tensor | None = None,
    metadata: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write one of our checkpoints (format version 2, safetensors; atomically). Returns the path.

    The content is the safetensors format whatever the file's name (``.safetensors`` is the natural suffix).
    The state dict has every tensor except the CLIP parts that open_clip restores from the config's
    pretrained tag (``clip_text``, and ``backbone`` while frozen); a model with random or trained CLIP stores
    them too, and its stored config says ``clip.pretrained = None``.

    Args:
        vocabulary: a ``Vocabulary`` or a list of class entries ("name, synonym, ...").
        text_embeddings: [K, P, D] text embeddings of that vocabulary.
        metadata: JSON-like extra information (training run, data, ...); other values are stored as text.
        half: store floating tensors as float16 (loading casts them back to the model's dtype).
    """
    external = _external_children(model)
    tensors = {
        _STATE_PREFIX + k: _stored(v, half)
        for k, v in model.state_dict().items()
        if k.split(".")[0] not in external
    }
    if text_embeddings is not None:
        tensors["text_embeddings"] = _stored(text_embeddings, half)
    config = model.config.to_dict()
    config["clip"]["pretrained"] = _clip_source(model)
    info = {"package_version": _package_version(), "torch": str(torch.__version__)} | (metadata or {})
    entries = {
        FORMAT_KEY: str(FORMAT_VERSION),
        "config": json.dumps(config),
        "vocabulary": json.dumps(None if vocabulary is None else as_vocabulary(vocabulary).to_dict()),
        "metadata": json.dumps(info, default=str),  # JSON-like only: other values become their str()
    }
    return write_safetensors(path, tensors, entries)


# ------------------------------------------------------------------------------------------------- reading
def decode_safetensors(tensors: State, metadata: Mapping[str, str], where: str) -> dict[str, Any]:
    """The checkpoint dict (layout of version 1) of a version-2 file's tensors and metadata."""
    data: dict[str, Any] = {FORMAT_KEY: _version(metadata[FORMAT_KEY], where)}
    for key in _JSON_ENTRIES:
        if key in metadata:
            try:
                data[key] = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: its '{key}' entry is not valid JSON ({error}).") from error
    if any(name.startswith(_STATE_PREFIX) for name in tensors):
        data["state_dict"] = {
            name[len(_STATE_PREFIX) :]: value
            for name, value in tensors.items()
            if name.startswith(_STATE_PREFIX)
        }
    data["text_embeddings"] = tensors.get("text_embeddings")
    return data


def _version(value: Any, where: str) -> int:
    try:
        version = int(value)
    except (TypeError, ValueError):
        version = -1
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{where} is an OV-SAM checkpoint of format version {value!r}; this package reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Update the package, or write the file again."
        )
    return version


def check_own(data: Mapping[str, Any], where: str, *, need_config: bool = True) -> None:
    """A checkpoint dict has a readable version, a state dict and (``need_config``) a config, else a
    ``ValueError`` that says what the file is and what is missing."""
    version = _version(data[FORMAT_KEY], where)
    wanted = ("state_dict", "config") if need_config else ("state_dict",)
    for key in wanted:
        if not isinstance(data.get(key), Mapping):
            found = "has no" if data.get(key) is None else "has a broken"
            hint = (
                " Without it the model cannot be rebuilt from the file alone: pass the config it was made "
                f"with, build_ovsam('<config name>', checkpoint='{where}')."
                if key == "config" and isinstance(data.get("state_dict"), Mapping)
                else " The file is incomplete: write it again with save_checkpoint()."
            )
            raise ValueError(
                f"{where} is an OV-SAM checkpoint (format version {version}) but {found} '{key}' entry "
                f"({'the model config' if key == 'config' else 'the weights'}).{hint}"
            )


def stored_config(data: Mapping[str, Any], where: str) -> OVSAMConfig:
    """The model config stored in a checkpoint dict (checked by ``check_own``)."""
    try:
        return OVSAMConfig.from_dict(dict(data["config"]))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: the model config stored in this checkpoint is not valid: {error}"
        ) from error


def extras_of(data: Mapping[str, Any], where: str = "checkpoint") -> CheckpointExtras:
    """Vocabulary, text embeddings and metadata of a checkpoint dict."""
    vocabulary = None
    if data.get("vocabulary") is not None:
        try:
            vocabulary = Vocabulary.from_dict(data["vocabulary"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{where}: the vocabulary stored in this checkpoint is not valid: {error}"
            ) from error
    embeddings = data.get("text_embeddings")
    return CheckpointExtras(
        config_name=str((data.get("config") or {}).get("name", "")),
        vocabulary=vocabulary,
        text_embeddings=None if embeddings is None else embeddings.float().clone(),  # not the mmap
        metadata=dict(data.get("metadata") or {}),
    )


# ------------------------------------------------------------------------------------------------- loading
def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(stored: OVSAMConfig, config: OVSAMConfig) -> list[tuple[str, Any, Any]]:
    """Architecture fields that differ, as ``(field, stored value, model value)``; the fields in
    ``NOT_ARCHITECTURE`` (names, weight sources, CLIP's pretrained tag, freezing, fusion) are skipped."""
    a, b = _flatten(stored.to_dict()), _flatten(config.to_dict())

    def relevant(key: str) -> bool:
        return not any(key == skip or key.startswith(skip + ".") for skip in NOT_ARCHITECTURE)

    keys = sorted(k for k in a.keys() | b.keys() if relevant(k) and a.get(k) != b.get(k))
    return [(k, a.get(k), b.get(k)) for k in keys]


def _check_same_architecture(stored: OVSAMConfig, config: OVSAMConfig) -> None:
    diffs = config_differences(stored, config)
    if not diffs:
        return
    theirs = ", ".join(f"{k}={v}" for k, v, _ in diffs[:6])
    ours = ", ".join(f"{k}={v}" for k, _, v in diffs[:6])
    more = f" and {len(diffs) - 6} more differences" if len(diffs) > 6 else ""
    raise ValueError(
        f"The checkpoint is for config '{stored.name}' ({theirs}), the model is '{config.name}' "
        f"({ours}){more}: another architecture. Build the model from the checkpoint itself: "
        "build_ovsam(path)."
    )


def child_assignments(model: OVSAM, state: Mapping[str, torch.Tensor], origin: str) -> list[Assignment]:
    """Per-child assignments of a whole-model state dict (ours, or a bare ``OVSAM.state_dict()``); the CLIP
    children may be absent (open_clip restored them from the pretrained tag)."""
    by_child: dict[str, State] = {}
    for key, value in state_dict_of(state, origin).items():
        child, _, rest = key.partition(".")
        by_child.setdefault(child, {})[rest] = value
    children = [name for name, module in model.named_children() if module.state_dict()]
    unknown = sorted(set(by_child) - set(children))
    if unknown:
        raise ValueError(f"{origin} has weights for modules this model lacks: {unknown}.")
    assignments = []
    for name in children:
        if name not in by_child and name in CLIP_CHILDREN:
            if _clip_source(model) is None:
                logger.warning(
                    "%s does not store %s and this model's CLIP is random: it stays so.", origin, name
                )
            continue
        assignments.append(Assignment(name, by_child.get(name, {}), origin))
    return assignments


def own_assignments(model: OVSAM, data: Mapping[str, Any], origin: str) -> list[Assignment]:
    """Per-child assignments of one of our checkpoints, once it is known to fit the model's architecture."""
    check_own(data, origin)
    _check_same_architecture(stored_config(data, origin), model.config)
    return child_assignments(model, data["state_dict"], origin)


def load_own_state(model: OVSAM, data: Mapping[str, Any], origin: str = "checkpoint") -> None:
    """Load one of our checkpoints (the dict from ``read_own_checkpoint``) into ``model`` strictly, and set
    ``model.checkpoint_extras`` (vocabulary, text embeddings, metadata).

    Raises:
        ValueError: the checkpoint is for another architecture (differences named), or keys do not match.
    """
    apply_assignments(model, own_assignments(model, data, origin), model.config.name)
    setattr(model, "checkpoint_extras", extras_of(data, origin))  # noqa: B010 (a plain attribute, not a submodule)
