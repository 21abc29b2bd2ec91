"""Strict loading: every tensor of a filled module comes from the file, with the model's shape, or nothing is
loaded and one ``ValueError`` lists the missing / unexpected / mis-shaped keys grouped by module."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

State = dict[str, torch.Tensor]
_MAX_PER_GROUP = 6
_MAX_LINES = 40


def _split_key(where: str, key: str) -> tuple[str, str]:
    """(module group, rest of the key): ``where`` + the first key part, plus a ModuleList index."""
    parts = key.split(".")
    head = 2 if len(parts) > 2 and parts[1].isdigit() else 1
    head = min(head, len(parts) - 1)
    group = ".".join(p for p in (where, *parts[:head]) if p)
    return group or "(model)", ".".join(parts[head:])


def grouped(where: str, label: str, keys: Iterable[str]) -> list[str]:
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
    lines = grouped(where, "missing", missing) + grouped(where, "unexpected", unexpected)
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            group, rest = _split_key(where, key)
            file_shape, model_shape = list(value.shape), list(expected[key].shape)
            lines.append(f"{group}: {rest} has shape {file_shape} in the file, {model_shape} in the model")
    return lines


def raise_problems(problems: list[str], context: str) -> None:
    """One ``ValueError`` listing ``problems`` (at most ``_MAX_LINES`` lines); nothing when there are none."""
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
    raise_problems(state_problems(module, state, where), f"weights into '{where or 'the model'}'")
    module.load_state_dict(dict(state), strict=True)


@dataclass
class Assignment:
    """``state`` goes into the model's submodule ``target``; ``origin`` names the file for messages."""

    target: str
    state: State
    origin: str


def apply_assignments(model: nn.Module, assignments: list[Assignment], model_name: str) -> None:
    """Check every assignment first (one error listing all problems), then load them in order."""
    problems: list[str] = []
    for item in assignments:
        lines = state_problems(model.get_submodule(item.target), item.state, item.target)
        problems += [f"{line}  [{item.origin}]" for line in lines]
    raise_problems(problems, f"weights into config '{model_name}'")
    for item in assignments:
        model.get_submodule(item.target).load_state_dict(item.state, strict=True)
        logger.info("Loaded %s from %s", item.target, item.origin)
