"""SAM2CLIP: turns the CLIP trunk's multi-scale features into a SAM-style image embedding.

Parameter names follow the released ``neck_student.*`` layout, so the released adapter loads without renaming.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Block
from torch import nn

from ..config import AdapterConfig

# (kind, kernel) that brings stride 4/8/16/32 features to stride 16.
_LEVEL_PROJECTIONS = (("conv", 4), ("conv", 2), ("conv", 1), ("deconv", 2))


class PatchEmbed(nn.Module):
    """One level's projection to the adapter width at stride 16 (``projection`` keeps the released name)."""

    def __init__(self, in_chans: int, embed_dim: int, kind: str, kernel: int) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if kind == "deconv" else nn.Conv2d
        self.projection = conv(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class SAM2CLIPAdapter(nn.Module):
    pos_embed: torch.Tensor

    """[C2, C3, C4, C5] -> image embedding [B, out_chans, S/16, S/16] for the SAM mask decoder.

    Sum over levels of (patch embedding + learned level embedding), plus SAM's absolute position embedding
    (a buffer: copied from a SAM image encoder, never trained), then SAM ViT blocks and SAM's neck.
    """

    def __init__(self, in_channels: tuple[int, ...], grid_size: int, config: AdapterConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(c, dim, kind, k) for c, (kind, k) in zip(in_channels, _LEVEL_PROJECTIONS, strict=True)
        )
        self.level_encoding = nn.Embedding(len(in_channels), dim)
        nn.init.normal_(self.level_encoding.weight)
        self.register_buffer("pos_embed", torch.zeros(1, grid_size, grid_size, dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=dim,
                num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                act_layer=nn.GELU,
                use_rel_pos=True,
                rel_pos_zero_init=True,
                window_size=0 if i in config.global_attn_indexes else config.window_size,
                input_size=(grid_size, grid_size),
            )
            for i in range(config.depth)
        )
        out = config.out_chans
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = sum(
            embed(f) + self.level_encoding.weight[i][:, None, None]
            for i, (embed, f) in enumerate(zip(self.patch_embeds, features, strict=True))
        )
        x = x.permute(0, 2, 3, 1) + self.pos_embed  # channels-last [B, h, w, dim], as SAM's blocks expect
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
