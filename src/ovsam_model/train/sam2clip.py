"""Stage ``sam2clip``: distil a SAM image encoder's embedding into the adapter (MSE), with a disk cache of
teacher features in fp16 (safetensors) so later epochs skip the teacher."""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from ..checkpoint.files import read_safetensors, write_safetensors
from ..hub import resolve_source
from ..modeling.ovsam import OVSAM

logger = logging.getLogger(__name__)

SAM_TEACHERS = ("vit_h", "vit_l", "vit_b", "tiny")


def build_teacher(kind: str, model: OVSAM, sam_checkpoint: str | None = None) -> nn.Module:
    """A frozen SAM image encoder producing [B, C, S/16, S/16] like the student.

    kind: "vit_h" / "vit_l" / "vit_b" (segment_anything's encoders, weights from ``sam_checkpoint``), or
    "tiny": a small random ViT encoder of the student's size, for tests and smoke runs.
    """
    if kind not in SAM_TEACHERS:
        raise ValueError(f"Unknown teacher '{kind}'; choose one of {', '.join(SAM_TEACHERS)}.")
    config = model.config
    if config.adapter.stride != 16:
        raise ValueError(
            f"SAM teachers give stride-16 embeddings; the student '{config.name}' has adapter stride "
            f"{config.adapter.stride}. Train it with --stage end2end instead."
        )
    encoder: Any
    if kind == "tiny":
        encoder = ImageEncoderViT(
            img_size=config.image_size,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=2,
            out_chans=config.adapter.out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        )
    else:
        if sam_checkpoint is None:
            sam_checkpoint = str(resolve_source(f"sam_{kind}"))
        encoder = sam_model_registry[kind](checkpoint=sam_checkpoint).image_encoder
    if (config.adapter.out_chans, config.image_size) != (encoder.neck[0].out_channels, encoder.img_size):
        raise ValueError(
            f"Teacher '{kind}' gives {encoder.neck[0].out_channels} channels at {encoder.img_size} px; the student "
            f"'{config.name}' needs {config.adapter.out_chans} at {config.image_size} px."
        )
    encoder.requires_grad_(False)
    return encoder.eval()


class TeacherCache:
    """Teacher embeddings on disk, one fp16 safetensors file per image key, checksummed and written
    atomically (safe across ranks). A damaged or foreign entry is a miss (with a warning) and is rewritten."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha1(key.encode()).hexdigest()}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        feature = None
        if path.is_file():
            try:
                tensors, metadata = read_safetensors(path)
            except ValueError as error:
                logger.warning("Teacher cache entry %s is damaged (%s); computing it again.", path, error)
            else:
                feature = tensors.get("feature") if metadata.get("key") == key else None
        if feature is None:
            self.misses += 1
            return None
        self.hits += 1
        return feature

    def put(self, key: str, feature: torch.Tensor) -> None:
        write_safetensors(
            self._path(key), {"feature": feature.detach().to("cpu", torch.float16)}, {"key": key}
        )


@torch.no_grad()
def teacher_features(
    teacher: nn.Module, inputs: torch.Tensor, keys: list[str], cache: TeacherCache | None
) -> torch.Tensor:
    """Teacher embeddings of a preprocessed batch [B, 3, S, S], read from / written to ``cache``."""
    found = [cache.get(k) if cache is not None else None for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    if missing:
        computed = teacher(inputs[missing])
        for j, i in enumerate(missing):
            found[i] = computed[j]
            if cache is not None:
                cache.put(keys[i], computed[j])
    return torch.stack([f.to(inputs.device, torch.float32) for f in found])  # type: ignore[union-attr]


def image_key(item: dict[str, Any]) -> str:
    """Cache key of a dataset item: its file, plus the slice for stack entries."""
    return f"{item['path']}#{item.get('slice_index')}"


def sam2clip_loss(
    model: OVSAM, teacher: nn.Module, batch: list[dict[str, Any]], cache: TeacherCache | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between the adapter's embedding and the teacher's (padding included, as in the paper)."""
    inputs = model.preprocess([item["image"].to(model.device) for item in batch])
    target = teacher_features(teacher, inputs, [image_key(item) for item in batch], cache)
    student = model.neck(model.backbone(inputs))
    loss = F.mse_loss(student, target)
    return loss, {"loss": loss.item(), "loss_mse": loss.item()}
