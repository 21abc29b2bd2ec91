"""Which format a loaded file has, and the explicit key rules that map the foreign formats onto our modules.

Formats (``detect_format``):
- ``ovsam``: ours (``own.py``); it rebuilds its model.
- ``ovsam_state_dict``: a bare ``OVSAM.state_dict()`` (our module names, no config): it loads into a model
  whose config is known (``build_ovsam(config, checkpoint=file)``).
- ``sam``: segment-anything ``sam_vit_*.pth`` (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``).
- ``sam2clip``: the released OV-SAM adapter (``neck_student.*``).
- ``clip2sam``: the released OV-SAM head (``mask_decoder.*`` + ``fpn_neck.*``), and the two files of the
  official demo Space (``mask_decoder.*`` only; ``fpn_neck.*`` + top-level ``roi_conv.*``).

Foreign keys are renamed by explicit rules (``SAM_RULES``, ``SAM2CLIP_RULES``, ``CLIP2SAM_RULES``); a key that
no rule knows is an error. Which modules a file fills depends on the config (``modules_from``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..config import OVSAMConfig
from .files import State, state_dict_of
from .own import FORMAT_KEY
from .strict import grouped

SOURCE_KINDS = ("sam", "sam2clip", "clip2sam", "ovsam")  # the keys of a config's ``weights`` dict
BARE_STATE = "ovsam_state_dict"
# The children of ``OVSAM``; the first group exists only in our model (not in a SAM file).
OVSAM_ONLY_CHILDREN = frozenset({"backbone", "neck", "fpn", "region_head", "clip_text", "label_mlp"})
OVSAM_CHILDREN = OVSAM_ONLY_CHILDREN | {"prompt_encoder", "mask_decoder"}

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


def detect_format(data: Any, where: str) -> str:
    """One of ``SOURCE_KINDS`` or ``BARE_STATE`` for a loaded file (see the module docstring), else a
    ``ValueError`` that says what the file looks like."""
    if isinstance(data, Mapping) and FORMAT_KEY in data:
        return "ovsam"
    prefixes = {key.split(".", 1)[0] for key in state_dict_of(data, where)}
    if "image_encoder" in prefixes:
        return "sam"
    if prefixes & OVSAM_ONLY_CHILDREN and prefixes <= OVSAM_CHILDREN:
        return BARE_STATE
    if "prompt_encoder" in prefixes and prefixes <= {"prompt_encoder", "mask_decoder"}:
        return "sam"
    if "neck_student" in prefixes:
        return "sam2clip"
    if prefixes and prefixes <= {"mask_decoder", "fpn_neck", "roi_conv"}:
        return "clip2sam"
    raise ValueError(
        f"{where} is not an OV-SAM, SAM or released OV-SAM checkpoint (top-level keys: "
        f"{sorted(prefixes)[:10]}); is it a checkpoint for another architecture?"
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
        lines = "\n  ".join(grouped("", "unknown", unknown))
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


REMAPPERS = {"sam": remap_sam, "sam2clip": remap_released_sam2clip, "clip2sam": remap_released_clip2sam}


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
