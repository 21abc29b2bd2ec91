"""Reading any weights file and filling a model from files and its config's named sources, strictly."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import OVSAMConfig
from ..hub import resolve_source
from .files import PathLike, State, is_safetensors, load_torch_file, read_safetensors, state_dict_of
from .foreign import BARE_STATE, REMAPPERS, SOURCE_KINDS, detect_format, modules_from
from .own import (
    FORMAT_KEY,
    check_own,
    child_assignments,
    decode_safetensors,
    extras_of,
    own_assignments,
    stored_config,
)
from .strict import Assignment, apply_assignments

if TYPE_CHECKING:
    from ..modeling.ovsam import OVSAM

logger = logging.getLogger(__name__)

OWN_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_WHAT = {
    "sam": "a SAM checkpoint (segment-anything): pass it as sam_checkpoint= of a config, e.g. "
    "build_ovsam('ovsam_rn50x16', sam_checkpoint=path)",
    "sam2clip": "a released OV-SAM SAM2CLIP file: pass it as checkpoint= of a config, e.g. "
    "build_ovsam('ovsam_rn50x16', checkpoint=path)",
    "clip2sam": "a released OV-SAM CLIP2SAM file: pass it as checkpoint= of a config, e.g. "
    "build_ovsam('ovsam_rn50x16', checkpoint=path)",
    BARE_STATE: "a bare state dict of an OV-SAM model (OVSAM.state_dict(): our module names, but no config), "
    "so the model cannot be rebuilt from it alone: pass the config it was made with, "
    "build_ovsam('<config name>', checkpoint=path), or write it with save_checkpoint()",
}


def load_file(path: PathLike) -> Any:
    """The content of a weights file: our checkpoint dict (either format version), a safetensors state dict,
    or what ``torch.load(weights_only=True)`` gives.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a damaged file (checksum), or one that could run code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    if not is_safetensors(path):
        return load_torch_file(path)
    tensors, metadata = read_safetensors(path)
    return decode_safetensors(tensors, metadata, str(path)) if FORMAT_KEY in metadata else tensors


def is_own_checkpoint(path: Any) -> bool:
    """True for an existing file written by ``save_checkpoint``; anything else (config names too) is False."""
    if not isinstance(path, (str, Path)):
        return False
    path = Path(path).expanduser()
    if path.suffix not in OWN_SUFFIXES or not path.is_file():
        return False
    data = load_file(path)
    return isinstance(data, Mapping) and FORMAT_KEY in data


def read_own_checkpoint(path: PathLike) -> tuple[OVSAMConfig, dict[str, Any]]:
    """(stored config, the whole checkpoint dict) of one of our checkpoints.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not one of ours (the message says what it is and how to load it), is damaged,
            or lacks its config or weights (named).
    """
    where = str(Path(path).expanduser())
    data = load_file(where)
    if not (isinstance(data, Mapping) and FORMAT_KEY in data):
        kind = detect_format(data, where)
        raise ValueError(f"{where} is not an OV-SAM checkpoint with its own config: it is {_WHAT[kind]}.")
    check_own(data, where)
    return stored_config(data, where), dict(data)


@dataclass
class _Source:
    """A file that was read: path, format (``SOURCE_KINDS`` or ``BARE_STATE``), content (state dict, or our
    checkpoint dict)."""

    path: Path
    kind: str
    data: Any

    @property
    def origin(self) -> str:
        return f"{self.kind} file {self.path}"


def _read_source(name_or_path: PathLike, download: bool) -> _Source:
    path = resolve_source(name_or_path, download=download)
    data = load_file(path)
    kind = detect_format(data, str(path))
    if kind == "ovsam":
        check_own(data, str(path), need_config=False)
        if data.get("config") is None:  # only weights: they load into a model whose config is known
            return _Source(path, BARE_STATE, state_dict_of(data["state_dict"], str(path)))
        return _Source(path, kind, data)
    return _Source(path, kind, state_dict_of(data, str(path)))


def read_foreign(name_or_path: PathLike, download: bool = True) -> tuple[str, dict[str, State]]:
    """Read a SAM or released OV-SAM file: (its format, ``{target module: state}`` after key remapping).

    E.g. ``read_foreign("sam_vit_h")[1]["image_encoder"]`` is the SAM teacher's state, ready for
    ``load_into(encoder, state, where="teacher")``.
    """
    source = _read_source(name_or_path, download)
    if source.kind not in REMAPPERS:
        raise ValueError(
            f"{source.path} is one of our checkpoints: use read_own_checkpoint() or build_ovsam()."
        )
    return source.kind, REMAPPERS[source.kind](source.data)


def _assignments(model: OVSAM, source: _Source) -> list[Assignment]:
    """What ``source`` fills; for foreign files the parts the config leaves out by design are logged."""
    if source.kind == "ovsam":
        return own_assignments(model, source.data, source.origin)
    if source.kind == BARE_STATE:
        return child_assignments(model, source.data, source.origin)
    config = model.config
    remapped = REMAPPERS[source.kind](source.data)
    wanted = modules_from(source.kind, config)
    for target in sorted(set(remapped) - set(wanted)):
        count = len(remapped[target])
        logger.debug(
            "%s: %s (%d tensors) unused by design in '%s'", source.origin, target, count, config.name
        )
    return [Assignment(t, remapped[t], source.origin) for t in wanted if t in remapped]


def _given_sources(
    checkpoint: PathLike | Sequence[PathLike] | None, sam_checkpoint: PathLike | None, download: bool
) -> tuple[list[_Source], _Source | None]:
    """The files given as ``checkpoint=`` and ``sam_checkpoint=``, each checked to be in its argument."""
    items = [] if checkpoint is None else [checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint
    explicit = [_read_source(item, download) for item in items]
    for source in explicit:
        if source.kind == "sam":
            raise ValueError(
                f"{source.path} is a SAM checkpoint: pass it as sam_checkpoint=, not checkpoint=."
            )
    sam = _read_source(sam_checkpoint, download) if sam_checkpoint is not None else None
    if sam is not None and sam.kind != "sam":
        raise ValueError(f"sam_checkpoint={sam.path} is a {sam.kind} file, not a SAM sam_vit_*.pth file.")
    return explicit, sam


def _named_sources(config: OVSAMConfig, replaced: set[str], download: bool) -> list[_Source]:
    """The config's named sources whose kind no given file replaces; every missing file is named at once."""
    named: list[_Source] = []
    missing: list[str] = []
    for kind, name in config.weights.items():
        modules_from(kind, config)  # rejects unknown kinds
        if kind in replaced:
            continue
        try:
            source = _read_source(name, download)
        except FileNotFoundError as error:
            missing.append(f"- {error}")
            continue
        if source.kind != kind:
            raise ValueError(f"The '{kind}' source '{name}' of '{config.name}' is a {source.kind} file.")
        named.append(source)
    if missing:
        raise FileNotFoundError(f"Weights of config '{config.name}' are missing:\n" + "\n".join(missing))
    return sorted(named, key=lambda s: SOURCE_KINDS.index(s.kind))


def _check_all_filled(
    config: OVSAMConfig, sources: list[_Source], filled: set[str], use_config: bool
) -> None:
    """Every module that the sources' kinds (and the config's named kinds) should fill was filled."""
    if any(source.kind in ("ovsam", BARE_STATE) for source in sources):
        return  # a whole-model file is complete by itself
    kinds = {source.kind for source in sources} | (set(config.weights) if use_config else set())
    required = {module for kind in kinds for module in modules_from(kind, config)}
    unfilled = sorted(required - filled)
    if unfilled:
        files = [str(s.path) for s in sources]
        raise ValueError(
            f"No weights file filled {unfilled} of config '{config.name}' (files: {files}); add the file "
            "that holds them (e.g. the FPN file that goes with a demo-Space head file)."
        )


def load_pretrained_sources(
    model: OVSAM,
    *,
    checkpoint: PathLike | Sequence[PathLike] | None = None,
    sam_checkpoint: PathLike | None = None,
    download: bool = True,
    use_config_sources: bool = True,
) -> dict[str, str]:
    """Fill ``model`` from its config's named weight sources and/or the given files, strictly.

    Args:
        model: a freshly assembled ``OVSAM``.
        checkpoint: files or source names: ours, bare ``OVSAM.state_dict()`` files, released sam2clip /
            clip2sam, demo-Space files. A given file replaces the config's named source of the same kind;
            later files override earlier ones.
        sam_checkpoint: a SAM ``sam_vit_*.pth`` file or name (default: the config's ``sam`` source, if any).
        download: allow downloading named sources into the cache.
        use_config_sources: also load the config's named sources (``config.weights``) that no given file
            replaces; False loads only the given files (e.g. SAM alone before training from scratch).

    Returns:
        {module: origin} for every module that was filled.

    Raises:
        ValueError: a file in the wrong argument, keys that do not match (all listed, by module), a damaged
            file, or a module the config expects from a source that no file filled (e.g. a demo-Space head
            file without its FPN file). Nothing is loaded then.
        FileNotFoundError: a source that is neither local nor downloadable (the message says where to put it).
    """
    config = model.config
    explicit, sam = _given_sources(checkpoint, sam_checkpoint, download)
    given = {source.kind for source in explicit}
    named: list[_Source] = []
    if use_config_sources and not given & {"ovsam", BARE_STATE}:  # a whole-model file is complete by itself
        named = _named_sources(config, given | ({"sam"} if sam else set()), download)
    sources = ([sam] if sam else []) + named + explicit
    assignments = [item for source in sources for item in _assignments(model, source)]
    _check_all_filled(config, sources, {item.target for item in assignments}, use_config_sources)
    apply_assignments(model, assignments, config.name)
    for source in sources:
        if source.kind == "ovsam":
            setattr(model, "checkpoint_extras", extras_of(source.data, source.origin))  # noqa: B010
    return {item.target: item.origin for item in assignments}
