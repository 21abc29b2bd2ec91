"""Building the baselines: a ``segment_anything`` SAM (official weights, or a tiny random one for tests), an
open_clip CLIP, and ``build_baseline``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from ..checkpoint import load_into, read_foreign
from ..clip_build import RANDOM_TAGS, create_clip
from ..device import resolve_device
from .common import SamClipBaseline
from .feature_crop import FeatureCropBaseline
from .image_crop import ImageCropBaseline

BASELINE_KINDS = ("image_crop", "feature_crop")
SAM_ARCHS = ("vit_h", "vit_l", "vit_b", "tiny")


def build_tiny_sam(image_size: int = 128) -> Sam:
    """A ~60k-parameter random ``Sam`` (ViT 2 blocks x 32 channels, 32-d prompts) for tests and CI."""
    embed = 32
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=16,
            embed_dim=embed,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=embed,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=embed,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2),
            transformer_dim=embed,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    ).eval()


def build_sam(arch: str, checkpoint: str | Path | None = None, *, download: bool = True) -> Sam:
    """A ``segment_anything`` SAM: "vit_h" / "vit_l" / "vit_b" with weights from ``checkpoint`` (a file or
    source name; default the official ``sam_<arch>`` file, downloaded to the cache), or "tiny" (random
    weights unless ``checkpoint`` is given). Loading is strict (``ovsam_model.checkpoint``)."""
    if arch not in SAM_ARCHS:
        raise ValueError(f"Unknown SAM '{arch}'; use one of {SAM_ARCHS}.")
    source = checkpoint if checkpoint is not None else (None if arch == "tiny" else f"sam_{arch}")
    parts = None
    if source is not None:  # read (or fail to find) the file before building a large random model
        kind, parts = read_foreign(source, download=download)
        if kind != "sam":
            raise ValueError(f"{source} is a {kind} file, not a SAM sam_vit_*.pth file.")
    sam = build_tiny_sam() if arch == "tiny" else sam_model_registry[arch]()
    if parts is not None:
        for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
            load_into(getattr(sam, name), parts.get(name, {}), where=name)
    return sam.eval()


def build_clip(model_name: str, pretrained: str | None) -> tuple[nn.Module, Any, str | None]:
    """open_clip model (eval mode) + tokenizer + the name keying its text-embedding cache (None for random or
    local-file weights, whose cache key is then a hash of the text tower)."""
    model, tokenizer = create_clip(model_name, pretrained)
    tag = None if pretrained in RANDOM_TAGS else pretrained
    named = tag is not None and "/" not in tag and not tag.endswith((".pt", ".pth", ".bin"))
    return model.eval(), tokenizer, f"{model_name}/{tag}" if named else None


def build_baseline(
    kind: str,
    *,
    sam: str = "vit_h",
    sam_checkpoint: str | Path | None = None,
    clip_model: str = "RN50x16",
    clip_pretrained: str | None = "openai",
    device: str | torch.device = "auto",
    download: bool = True,
    **options: Any,
) -> SamClipBaseline:
    """Build a combined SAM + CLIP baseline.

    Args:
        kind: "image_crop" or "feature_crop".
        sam: "vit_h", "vit_l", "vit_b" (official weights) or "tiny" (random, for tests).
        sam_checkpoint: SAM file or source name (default: the official file of ``sam``).
        clip_model: open_clip architecture (``RN50x16``; this package's ``ovsam-tiny-RN`` for tests).
        clip_pretrained: open_clip tag or local file; "none" = random weights.
        device: "auto" (cuda > mps > cpu), "cuda", "mps" or "cpu".
        download: allow downloading the SAM file into the cache.
        options: passed to the baseline (``crop_scale``, ``mask_background``, ``image_size``,
            ``mask_features``, ``chunk_size``, ``clean_masks``).
    """
    classes = {"image_crop": ImageCropBaseline, "feature_crop": FeatureCropBaseline}
    if kind not in classes:
        raise ValueError(f"Unknown baseline '{kind}'; use one of {BASELINE_KINDS}.")
    target = resolve_device(device)
    sam_model = build_sam(sam, sam_checkpoint, download=download).to(target)
    clip, tokenizer, clip_name = build_clip(clip_model, clip_pretrained)
    return classes[kind](sam_model, clip.to(target), tokenizer, clip_name=clip_name, **options)
