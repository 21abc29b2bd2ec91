"""Build OV-SAM models from configs: ``build_ovsam(name_or_config, checkpoint=..., device=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from .checkpoint import OWN_SUFFIXES, load_own_state, load_pretrained_sources, read_own_checkpoint
from .clip_build import RANDOM_TAGS, create_clip
from .config import OVSAMConfig, list_models, load_config
from .device import resolve_device
from .modeling.clip2sam import FPN, RegionHead
from .modeling.clip_trunk import CLIPTrunk
from .modeling.ovsam import OVSAM, NoIoUHead
from .modeling.sam2clip import SAM2CLIPAdapter

PathLike = str | Path


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
    if pretrained in RANDOM_TAGS:
        pretrained = None  # explicitly random CLIP weights
    clip_model: Any
    clip_model, tokenizer = create_clip(config.clip.model_name, pretrained)
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
    checkpoint: PathLike | Sequence[PathLike] | None = None,
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
    if _is_weights_file(name_or_config):
        config, state = read_own_checkpoint(name_or_config)  # type: ignore[arg-type]
        model = assemble(config, clip_pretrained)
        load_own_state(model, state, origin=str(name_or_config))
    else:
        config = load_config(name_or_config)
        model = assemble(config, clip_pretrained)
        load_pretrained_sources(
            model, checkpoint=checkpoint, sam_checkpoint=sam_checkpoint, download=download
        )
    model.eval()
    return model.to(resolve_device(device))


def _is_weights_file(name_or_config: Any) -> bool:
    """True for a path meant as a checkpoint file (an existing file other than a JSON config, or a path with a
    weights suffix, existing or not: ``read_own_checkpoint`` then says that it does not exist)."""
    if not isinstance(name_or_config, (str, Path)):
        return False
    path = Path(name_or_config).expanduser()
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder, not a model: pass a config name ({', '.join(list_models())}), a JSON config "
            "or a checkpoint file (e.g. the model.safetensors a training run writes)."
        )
    return path.suffix in OWN_SUFFIXES or (path.is_file() and path.suffix != ".json")
