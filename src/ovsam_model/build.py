"""Build OV-SAM models from configs: ``build_ovsam(name_or_config, checkpoint=..., device=...)``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from .clip_configs import register_clip_configs
from .config import OVSAMConfig, load_config
from .device import resolve_device
from .modeling.clip2sam import FPN, RegionHead
from .modeling.clip_trunk import CLIPTrunk
from .modeling.ovsam import OVSAM, NoIoUHead
from .modeling.sam2clip import SAM2CLIPAdapter

PathLike = str | Path


@contextmanager
def _quiet_random_init(quiet: bool) -> Iterator[None]:
    """Silence open_clip's "initialized randomly" warning where random CLIP weights are intended (the tiny
    config; the demo model, whose weights come from its own checkpoint right after)."""
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _build_clip(config: OVSAMConfig, pretrained: str | None) -> tuple[nn.Module, Any]:
    register_clip_configs()
    try:
        # OpenAI's weights were trained with QuickGELU in the text tower; open_clip wants to be told.
        with _quiet_random_init(pretrained is None):
            clip_model = open_clip.create_model(
                config.clip.model_name,
                pretrained=pretrained,
                device="cpu",
                force_quick_gelu=pretrained == "openai",
            )
    except RuntimeError as error:
        if pretrained is None:
            raise
        from .hub import clip_weights_error

        raise clip_weights_error(config.clip.model_name, pretrained, error) from error
    tokenizer = open_clip.get_tokenizer(config.clip.model_name)
    return clip_model, tokenizer


def _build_decoder(config: OVSAMConfig) -> tuple[PromptEncoder, MaskDecoder, MLP | None]:
    dim = config.adapter.out_chans
    grid = config.embedding_size
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=16,
    )
    dec = config.decoder
    mask_decoder = MaskDecoder(
        num_multimask_outputs=dec.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=dec.transformer_depth,
            embedding_dim=dim,
            mlp_dim=dec.transformer_mlp_dim,
            num_heads=dec.transformer_heads,
        ),
        transformer_dim=dim,
        iou_head_depth=dec.iou_head_depth,
        iou_head_hidden_dim=dec.iou_head_hidden_dim,
    )
    label_mlp = None
    if dec.label_token:
        # The released head: the label token takes the IoU token's place (same slot, loaded into
        # ``iou_token``); there is no IoU head, and the label MLP is stored but unused.
        mask_decoder.iou_prediction_head = NoIoUHead()
        label_mlp = MLP(dim, dim, config.embed_dim, 3)
    return prompt_encoder, mask_decoder, label_mlp


def assemble(config: OVSAMConfig, clip_pretrained: str | None = None) -> OVSAM:
    """Build the modules of ``config`` with random weights, except the CLIP weights named by
    ``clip_pretrained`` (an open_clip tag or a local file; default: the config's own tag)."""
    pretrained = clip_pretrained if clip_pretrained is not None else config.clip.pretrained
    if pretrained in ("", "none"):
        pretrained = None  # explicitly random CLIP weights
    clip_model: Any
    clip_model, tokenizer = _build_clip(config, pretrained)
    backbone = CLIPTrunk(
        clip_model.visual,
        kind=config.clip.trunk,
        region_pool_size=config.clip.region_pool_size,
        frozen=config.clip.frozen,
    )
    clip_model.visual = nn.Identity()  # the text tower stays; the image tower lives in the backbone
    prompt_encoder, mask_decoder, label_mlp = _build_decoder(config)
    model = OVSAM(
        config,
        backbone=backbone,
        neck=SAM2CLIPAdapter(config.clip.channels, config.embedding_size, config.adapter),
        fpn=FPN(config.clip.channels, config.head.fpn_channels),
        region_head=RegionHead(config.head.fpn_channels, config.embed_dim),
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        clip_text=clip_model,
        tokenizer=tokenizer,
        label_mlp=label_mlp,
    )
    model.clip_pretrained = pretrained  # type: ignore[assignment]
    return model


def build_ovsam(
    name_or_config: str | PathLike | dict | OVSAMConfig,
    *,
    checkpoint: PathLike | list[PathLike] | None = None,
    sam_checkpoint: PathLike | None = None,
    clip_pretrained: str | None = None,
    device: str | torch.device = "auto",
    download: bool = True,
) -> OVSAM:
    """Build an OV-SAM model and load its weights.

    Args:
        name_or_config: a bundled config name (see ``list_models()``), a JSON path, a dict, an ``OVSAMConfig``,
            or a checkpoint file written by this package (it carries its own config).
        checkpoint: OV-SAM weights: one of our checkpoints, or the released files (``sam2clip_*.pth``,
            ``clip2sam_*.pth``; a list loads several). Default: the config's named sources, downloaded to the
            cache (or found there) when ``download`` is True.
        sam_checkpoint: a SAM ``sam_vit_*.pth`` file (prompt encoder; decoder for the multimask configs).
        clip_pretrained: open_clip tag or local file for the CLIP weights (default: the config's tag).
        device: "auto" (cuda > mps > cpu), "cuda", "mps" or "cpu".
        download: fetch missing named sources; False raises an error that says what to put where.

    The ``tiny`` config has random weights and needs no files.
    """
    from .checkpoint import is_own_checkpoint, load_pretrained_sources, read_own_checkpoint

    if isinstance(name_or_config, (str, Path)) and is_own_checkpoint(name_or_config):
        config, state = read_own_checkpoint(name_or_config)
        model = assemble(config, clip_pretrained)
        from .checkpoint import load_own_state

        load_own_state(model, state)
    else:
        config = load_config(name_or_config)
        model = assemble(config, clip_pretrained)
        load_pretrained_sources(
            model, checkpoint=checkpoint, sam_checkpoint=sam_checkpoint, download=download
        )
    model.eval()
    return model.to(resolve_device(device))
