"""Checkpoints: one strict loader for every weights format, and this package's own checkpoint format.

Formats, recognised by their keys (``detect_format``):
- ``ovsam``: ours, a dict with the key ``"ovsam_checkpoint"`` (``save_checkpoint``); it rebuilds its model.
- ``sam``: segment-anything ``sam_vit_*.pth`` (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
- ``sam2clip``: the released OV-SAM adapter (``neck_student.*``).
- ``clip2sam``: the released OV-SAM head (``mask_decoder.*`` + ``fpn_neck.*``), and the two files of the
  official demo Space (``mask_decoder.*`` only; ``fpn_neck.*`` + top-level ``roi_conv.*``).

Foreign keys are renamed by explicit rules (``SAM_RULES``, ``SAM2CLIP_RULES``, ``CLIP2SAM_RULES``); a key
that no rule knows is an error. Which module a file fills depends on the config (``modules_from``): the
default ``ovsam_rn50x16`` takes SAM's own multimask decoder, ``ovsam_rn50x16_official`` the released
single-token one.

Loading is strict: every tensor of a filled module must come from the file, with the model's shape; otherwise
a ``ValueError`` lists the missing / unexpected / mis-shaped keys grouped by module, and nothing is loaded.
Files are read with ``torch.load(weights_only=True, map_location="cpu")``: a file that could run code is
refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import OVSAMConfig
from .hub import resolve_source

if TYPE_CHECKING:
    from .modeling.ovsam import OVSAM

logger = logging.getLogger(__name__)

FORMAT_KEY = "ovsam_checkpoint"
FORMAT_VERSION = 1
CLIP_CHILDREN = ("backbone", "clip_text")  # the model children open_clip restores from a pretrained tag
SOURCE_KINDS = ("sam", "sam2clip", "clip2sam", "ovsam")  # the keys of a config's ``weights`` dict
OWN_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
# Config fields that do not change what the weights mean (ignored when matching one of our checkpoints).
NOT_ARCHITECTURE = ("name", "description", "weights", "clip.pretrained", "clip.frozen", "fusion")
_MAX_PER_GROUP = 6
_MAX_LINES = 40

State = dict[str, torch.Tensor]
PathLike = str | Path
Rules = tuple[tuple[re.Pattern[str], str, str], ...]


def _rules(*rules: tuple[str, str, str]) -> Rules:
    return tuple((re.compile(pattern), target, key) for pattern, target, key in rules)


# (key pattern, target module of OVSAM, key inside it): fullmatch, first rule wins, backreferences allowed.
SAM_RULES = _rules((r"(image_encoder|prompt_encoder|mask_decoder)\.(.+)", r"\1", r"\2"))
SAM2CLIP_RULES = _rules((r"neck_student\.(.+)", "neck", r"\1"))
CLIP2SAM_RULES = _rules(
    (r"mask_decoder\.mask_decoder\.(.+)", "mask_decoder", r"\1"),
    # The label token sits in SAM's IoU-token slot (first in the token sequence): it loads into ``iou_token``.
    (r"mask_decoder\.label_token\.weight", "mask_decoder", "iou_token.weight"),
    (r"mask_decoder\.label_mlp\.(.+)", "label_mlp", r"\1"),
    # Top-level ``roi_conv``: the demo Space's FPN file, whose roi_conv replaces the head's.
    (r"(?:mask_decoder\.)?roi_conv\.0\.conv\.weight", "region_head", "roi_conv.0.weight"),
    (r"fpn_neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)", "fpn", r"\1.\2.\3"),
)


# ------------------------------------------------------------------------------------------ reading files
def load_file(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")``, memory-mapped where the file allows it.

    Raises:
        ValueError: not a PyTorch file, or one holding objects other than tensors and plain containers
            (refused: unpickling those could run code).
    """
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
        # Files in the legacy (non-zip) serialisation cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Cannot read {path} as a weights file with weights_only=True (it is not a PyTorch file, or it "
            f"holds pickled objects that could run code, which are refused): {error}"
        ) from error


def strip_wrapper_prefixes(key: str) -> str:
    """Drop the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) parts of a key."""
    if key.startswith("module."):
        key = key[len("module.") :]
    return key.replace("_orig_mod.", "")


def state_dict_of(data: Any, where: str) -> State:
    """The flat tensor dict of a loaded file: unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips
    wrapper prefixes; anything but tensors is an error."""
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if isinstance(data, torch.Tensor):
        raise ValueError(
            f"{where} holds one tensor of shape {list(data.shape)}, not a state dict of weights (like the "
            "official demo's class-embedding file): it is not a checkpoint."
        )
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} holds a {type(data).__name__}, not a state dict of weights.")
    others = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"{where} is not a state dict: entries {others[:8]} are not tensors.")
    return {strip_wrapper_prefixes(str(k)): v for k, v in data.items()}


def detect_format(data: Any, where: str) -> str:
    """One of ``SOURCE_KINDS`` for a loaded file (see the module docstring), else a ``ValueError``."""
    if isinstance(data, Mapping) and FORMAT_KEY in data:
        return "ovsam"
    prefixes = {key.split(".", 1)[0] for key in state_dict_of(data, where)}
    if prefixes & {"image_encoder", "prompt_encoder"}:
        return "sam"
    if "neck_student" in prefixes:
        return "sam2clip"
    if prefixes and prefixes <= {"mask_decoder", "fpn_neck", "roi_conv"}:
        return "clip2sam"
    hint = ""
    if prefixes & {"backbone", "neck", "fpn", "region_head", "clip_text"}:
        hint = " It looks like a bare OV-SAM state dict: write checkpoints with save_checkpoint()."
    raise ValueError(
        f"{where} is not an OV-SAM, SAM or released OV-SAM checkpoint (top-level keys: "
        f"{sorted(prefixes)[:10]}); is it a checkpoint for another architecture?{hint}"
    )


def remap(state: Mapping[str, torch.Tensor], rules: Rules, format_name: str) -> dict[str, State]:
    """Rename the keys of a foreign file by ``rules``: ``{target module: {key inside it: tensor}}``.

    Raises:
        ValueError: keys that no rule knows (listed by module).
    """
    out: dict[str, State] = {}
    unknown: list[str] = []
    for key, value in state.items():
        for pattern, target, new_key in rules:
            match = pattern.fullmatch(key)
            if match:
                out.setdefault(match.expand(target), {})[match.expand(new_key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        lines = "\n  ".join(_grouped("", "unknown", unknown))
        raise ValueError(f"Keys that are not part of the {format_name} format:\n  {lines}")
    return out


def remap_sam(state: Mapping[str, torch.Tensor]) -> dict[str, State]:
    """A SAM file -> ``image_encoder`` (the stage-1 teacher), ``prompt_encoder``, ``mask_decoder``."""
    return remap(state, SAM_RULES, "SAM")


def remap_released_sam2clip(state: Mapping[str, torch.Tensor]) -> dict[str, State]:
    """The released ``sam2clip_*.pth`` -> ``neck`` (our adapter keeps the released names)."""
    return remap(state, SAM2CLIP_RULES, "released SAM2CLIP")


def remap_released_clip2sam(state: Mapping[str, torch.Tensor]) -> dict[str, State]:
    """The released ``clip2sam_*.pth`` (or a demo-Space head or FPN file) -> ``mask_decoder`` (single-token
    SAM decoder; its ``iou_token`` is the released label token), ``label_mlp``, ``region_head``, ``fpn``."""
    return remap(state, CLIP2SAM_RULES, "released CLIP2SAM")


_REMAPPERS = {"sam": remap_sam, "sam2clip": remap_released_sam2clip, "clip2sam": remap_released_clip2sam}


def modules_from(kind: str, config: OVSAMConfig) -> tuple[str, ...]:
    """The model modules that a source of ``kind`` fills under ``config`` (``ovsam``: it checks itself)."""
    decoder = config.decoder
    if kind == "sam":
        sam_layout = decoder.num_multimask_outputs == 3 and not decoder.label_token
        return ("prompt_encoder", "mask_decoder") if sam_layout else ("prompt_encoder",)
    if kind == "sam2clip":
        return ("neck",)
    if kind == "clip2sam":
        released = ("mask_decoder", "label_mlp") if decoder.label_token else ()
        return (*released, "fpn", "region_head")
    if kind == "ovsam":
        return ()
    raise ValueError(f"Unknown weights source kind '{kind}' in config '{config.name}'; use {SOURCE_KINDS}.")


# --------------------------------------------------------------------------------------------- strict core
def _split_key(where: str, key: str) -> tuple[str, str]:
    """(module group, rest of the key): ``where`` + the first key part, plus a ModuleList index."""
    parts = key.split(".")
    head = 2 if len(parts) > 2 and parts[1].isdigit() else 1
    head = min(head, len(parts) - 1)
    group = ".".join(p for p in (where, *parts[:head]) if p)
    return group or "(model)", ".".join(parts[head:])


def _grouped(where: str, label: str, keys: Iterable[str]) -> list[str]:
    """Lines like 'neck.blocks.0: missing attn.rel_pos_h, attn.rel_pos_w', one per module group."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        group, rest = _split_key(where, key)
        groups.setdefault(group, []).append(rest)
    lines = []
    for group, rests in groups.items():
        more = f" (+{len(rests) - _MAX_PER_GROUP} more)" if len(rests) > _MAX_PER_GROUP else ""
        lines.append(f"{group}: {label} {', '.join(rests[:_MAX_PER_GROUP])}{more}")
    return lines


def state_problems(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` for ``module``, as lines grouped by module."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    lines = _grouped(where, "missing", missing) + _grouped(where, "unexpected", unexpected)
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            group, rest = _split_key(where, key)
            file_shape, model_shape = list(value.shape), list(expected[key].shape)
            lines.append(f"{group}: {rest} has shape {file_shape} in the file, {model_shape} in the model")
    return lines


def _raise_problems(problems: list[str], context: str) -> None:
    if not problems:
        return
    shown = problems[:_MAX_LINES]
    if len(problems) > _MAX_LINES:
        shown.append(f"... and {len(problems) - _MAX_LINES} more")
    hint = ""
    if any(" has shape " in line for line in problems):
        hint = "\nMis-shaped tensors usually mean a file for another architecture than this config."
    raise ValueError(f"Cannot load {context} strictly (nothing was loaded):\n  " + "\n  ".join(shown) + hint)


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Load ``state`` into ``module`` strictly (floating tensors are cast to the module's dtype).

    Raises:
        ValueError: missing, unexpected or mis-shaped keys, named by module (``where``: the module's path).
    """
    _raise_problems(state_problems(module, state, where), f"weights into '{where or 'the model'}'")
    module.load_state_dict(dict(state), strict=True)


@dataclass
class _Assignment:
    """``state`` goes into the model's submodule ``target``; ``origin`` names the file for messages."""

    target: str
    state: State
    origin: str


def _apply(model: OVSAM, assignments: list[_Assignment]) -> None:
    """Check every assignment first (one error listing all problems), then load them in order."""
    problems: list[str] = []
    for item in assignments:
        lines = state_problems(model.get_submodule(item.target), item.state, item.target)
        problems += [f"{line}  [{item.origin}]" for line in lines]
    _raise_problems(problems, f"weights into config '{model.config.name}'")
    for item in assignments:
        model.get_submodule(item.target).load_state_dict(item.state, strict=True)
        logger.info("Loaded %s from %s", item.target, item.origin)


# ------------------------------------------------------------------------------------------- own format
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


def _clip_source(model: OVSAM) -> str | None:
    """The pretrained tag or file the model's CLIP weights came from (None: random, or trained here)."""
    return getattr(model, "clip_pretrained", model.config.clip.pretrained)


def _external_children(model: OVSAM) -> tuple[str, ...]:
    """Children that open_clip restores from the pretrained tag, hence not stored: the text tower, and the
    image trunk while it stays frozen."""
    if _clip_source(model) is None:
        return ()
    return CLIP_CHILDREN if model.config.clip.frozen else ("clip_text",)


def save_checkpoint(
    model: OVSAM,
    path: PathLike,
    *,
    vocabulary: Any = None,
    text_embeddings: torch.Tensor | None = None,
    metadata: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write one of our checkpoints (atomically: a temporary file renamed into place). Returns the path.

    The file holds ``{"ovsam_checkpoint": 1, "config", "state_dict", "vocabulary", "text_embeddings",
    "metadata"}``. The state dict has every tensor except the CLIP parts that open_clip restores from the
    config's pretrained tag (``clip_text``, and ``backbone`` while frozen); a model with random or trained
    CLIP stores them too, and its stored config says ``clip.pretrained = None``.

    Args:
        vocabulary: a ``Vocabulary`` or a list of class entries ("name, synonym, ...").
        text_embeddings: [K, P, D] text embeddings of that vocabulary.
        metadata: JSON-like extra information (training run, data, ...); other values are stored as text.
        half: store floating tensors as float16 (loading casts them back to the model's dtype).
    """
    path = Path(path)
    external = _external_children(model)
    state = {k: _stored(v, half) for k, v in model.state_dict().items() if k.split(".")[0] not in external}
    config = model.config.to_dict()
    config["clip"]["pretrained"] = _clip_source(model)
    from . import __version__

    data = {
        FORMAT_KEY: FORMAT_VERSION,
        "config": config,
        "state_dict": state,
        "vocabulary": _vocabulary_dict(vocabulary),
        "text_embeddings": None if text_embeddings is None else _stored(text_embeddings, half),
        "metadata": _plain(
            {"package_version": __version__, "torch": str(torch.__version__)} | (metadata or {})
        ),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(data, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    """JSON-like metadata only (other values become their ``str()``): weights_only loading reads it."""
    return json.loads(json.dumps(metadata, default=str))


def _stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.half() if half and tensor.is_floating_point() else tensor.clone()


def _vocabulary_dict(vocabulary: Any) -> dict[str, Any] | None:
    if vocabulary is None:
        return None
    from .vocabulary import as_vocabulary

    return as_vocabulary(vocabulary).to_dict()


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
    """(stored config, the whole checkpoint dict) of one of our checkpoints."""
    data = load_file(Path(path).expanduser())
    if not (isinstance(data, Mapping) and FORMAT_KEY in data):
        raise ValueError(f"{path} is not an OV-SAM checkpoint from save_checkpoint (no '{FORMAT_KEY}' key).")
    if data[FORMAT_KEY] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {data[FORMAT_KEY]}; this package reads {FORMAT_VERSION}."
        )
    return OVSAMConfig.from_dict(dict(data["config"])), dict(data)


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


def _own_assignments(model: OVSAM, data: Mapping[str, Any], origin: str) -> list[_Assignment]:
    """Per-child assignments of one of our checkpoints, once it is known to fit the model's architecture."""
    _check_same_architecture(OVSAMConfig.from_dict(dict(data["config"])), model.config)
    by_child: dict[str, State] = {}
    for key, value in state_dict_of(data["state_dict"], origin).items():
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
            continue  # open_clip restored it from the pretrained tag
        assignments.append(_Assignment(name, by_child.get(name, {}), origin))
    return assignments


def _extras(data: Mapping[str, Any]) -> CheckpointExtras:
    vocabulary = None
    if data.get("vocabulary") is not None:
        from .vocabulary import Vocabulary

        vocabulary = Vocabulary.from_dict(data["vocabulary"])
    embeddings = data.get("text_embeddings")
    return CheckpointExtras(
        config_name=str(data["config"].get("name", "")),
        vocabulary=vocabulary,
        text_embeddings=None if embeddings is None else embeddings.float().clone(),  # not the mmap
        metadata=dict(data.get("metadata") or {}),
    )


def load_own_state(model: OVSAM, data: Mapping[str, Any], origin: str = "checkpoint") -> None:
    """Load one of our checkpoints (the dict from ``read_own_checkpoint``) into ``model`` strictly, and set
    ``model.checkpoint_extras`` (vocabulary, text embeddings, metadata).

    Raises:
        ValueError: the checkpoint is for another architecture (differences named), or keys do not match.
    """
    _apply(model, _own_assignments(model, data, origin))
    setattr(model, "checkpoint_extras", _extras(data))  # noqa: B010 (a plain attribute, not a submodule)


# ------------------------------------------------------------------------------------ pretrained sources
@dataclass
class _Source:
    """A file that was read: path, format (one of ``SOURCE_KINDS``), content (state dict, or our dict)."""

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
    return _Source(path, kind, data if kind == "ovsam" else state_dict_of(data, str(path)))


def read_foreign(name_or_path: PathLike, download: bool = True) -> tuple[str, dict[str, State]]:
    """Read a SAM or released OV-SAM file: (its format, ``{target module: state}`` after key remapping).

    E.g. ``read_foreign("sam_vit_h")[1]["image_encoder"]`` is the SAM teacher's state, ready for
    ``load_into(encoder, state, where="teacher")``.
    """
    source = _read_source(name_or_path, download)
    if source.kind == "ovsam":
        raise ValueError(
            f"{source.path} is one of our checkpoints: use read_own_checkpoint() or build_ovsam()."
        )
    return source.kind, _REMAPPERS[source.kind](source.data)


def _foreign_assignments(source: _Source, config: OVSAMConfig) -> list[_Assignment]:
    """The parts of a foreign file that ``config`` takes; the parts it leaves out by design are logged."""
    remapped = _REMAPPERS[source.kind](source.data)
    wanted = modules_from(source.kind, config)
    for target in sorted(set(remapped) - set(wanted)):
        count = len(remapped[target])
        logger.debug(
            "%s: %s (%d tensors) unused by design in '%s'", source.origin, target, count, config.name
        )
    return [_Assignment(t, remapped[t], source.origin) for t in wanted if t in remapped]


def _collect_sources(
    config: OVSAMConfig,
    checkpoint: PathLike | list[PathLike] | None,
    sam_checkpoint: PathLike | None,
    download: bool,
    use_config_sources: bool = True,
) -> list[_Source]:
    """The SAM file, then the config's named sources that no given file replaces, then the given files."""
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
    given = {source.kind for source in explicit}
    named: list[_Source] = []
    missing: list[str] = []
    if use_config_sources and "ovsam" not in given:  # one of our checkpoints is complete by itself
        for kind, name in config.weights.items():
            modules_from(kind, config)  # rejects unknown kinds
            if (kind == "sam" and sam is not None) or (kind != "sam" and kind in given):
                continue
            try:
                source = _read_source(name, download)
            except FileNotFoundError as error:  # report every missing file at once
                missing.append(f"- {error}")
                continue
            if source.kind != kind:
                raise ValueError(f"The '{kind}' source '{name}' of '{config.name}' is a {source.kind} file.")
            named.append(source)
    if missing:
        raise FileNotFoundError(f"Weights of config '{config.name}' are missing:\n" + "\n".join(missing))
    named.sort(key=lambda s: SOURCE_KINDS.index(s.kind))
    return ([sam] if sam else []) + named + explicit


def load_pretrained_sources(
    model: OVSAM,
    *,
    checkpoint: PathLike | list[PathLike] | None = None,
    sam_checkpoint: PathLike | None = None,
    download: bool = True,
    use_config_sources: bool = True,
) -> dict[str, str]:
    """Fill ``model`` from its config's named weight sources and/or the given files, strictly.

    Args:
        model: a freshly assembled ``OVSAM``.
        checkpoint: files or source names: ours, released sam2clip / clip2sam, demo-Space files. A given file
            replaces the config's named source of the same kind; later files override earlier ones.
        sam_checkpoint: a SAM ``sam_vit_*.pth`` file or name (default: the config's ``sam`` source, if any).
        download: allow downloading named sources into the cache.
        use_config_sources: also load the config's named sources (``config.weights``) that no given file
            replaces; False loads only the given files (e.g. SAM alone before training from scratch).

    Returns:
        {module: origin} for every module that was filled.

    Raises:
        ValueError: a file in the wrong argument, keys that do not match (all listed, by module), or a module
            the config expects from a source that no file filled (e.g. a demo-Space head file without its FPN
            file). Nothing is loaded then.
        FileNotFoundError: a source that is neither local nor downloadable (the message says where to put it).
    """
    config = model.config
    sources = _collect_sources(config, checkpoint, sam_checkpoint, download, use_config_sources)
    assignments: list[_Assignment] = []
    for source in sources:
        if source.kind == "ovsam":
            assignments += _own_assignments(model, source.data, source.origin)
        else:
            assignments += _foreign_assignments(source, config)
    if not any(source.kind == "ovsam" for source in sources):
        kinds = {source.kind for source in sources} | (set(config.weights) if use_config_sources else set())
        required = {module for kind in kinds for module in modules_from(kind, config)}
        unfilled = sorted(required - {item.target for item in assignments})
        if unfilled:
            files = [str(s.path) for s in sources]
            raise ValueError(
                f"No weights file filled {unfilled} of config '{config.name}' (files: {files}); add the file "
                "that holds them (e.g. the FPN file that goes with a demo-Space head file)."
            )
    _apply(model, assignments)
    for source in sources:
        if source.kind == "ovsam":
            setattr(model, "checkpoint_extras", _extras(source.data))  # noqa: B010
    return {item.target: item.origin for item in assignments}
