"""SAM2CLIP: turns the CLIP trunk's multi-scale features into a SAM-style image embedding.

Parameter names follow the released ``neck_student.*`` layout, so the released adapter loads without renaming.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Attention, Block, add_decomposed_rel_pos
from torch import nn

from ..config import AdapterConfig

# Per embedding stride: (kind, kernel) that brings the stride 4/8/16/32 features to it.
_LEVEL_PROJECTIONS = {
    16: (("conv", 4), ("conv", 2), ("conv", 1), ("deconv", 2)),
    8: (("conv", 2), ("conv", 1), ("deconv", 2), ("deconv", 4)),
}


# Heads per step in global-attention blocks: a 64x64 grid has 4,096 tokens, so all 16 heads at once would
# materialise several 1 GiB attention tensors; four at a time gives the same result with a quarter of the memory.
GLOBAL_ATTENTION_HEADS_PER_STEP = 4


class HeadChunkedAttention(Attention):
    """segment_anything's ``Attention`` (same parameters, same result), computed a few heads at a time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        outputs = []
        for start in range(0, b * self.num_heads, GLOBAL_ATTENTION_HEADS_PER_STEP):
            part = slice(start, start + GLOBAL_ATTENTION_HEADS_PER_STEP)
            attn = (q[part] * self.scale) @ k[part].transpose(-2, -1)
            if self.use_rel_pos:
                attn = add_decomposed_rel_pos(attn, q[part], self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
            outputs.append(attn.softmax(dim=-1) @ v[part])
        out = torch.cat(outputs).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


class PatchEmbed(nn.Module):
    """One level's projection to the adapter width at the embedding stride (``projection`` keeps the released
    name)."""

    def __init__(self, in_chans: int, embed_dim: int, kind: str, kernel: int) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if kind == "deconv" else nn.Conv2d
        self.projection = conv(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class SAM2CLIPAdapter(nn.Module):
    """[C2, C3, C4, C5] -> image embedding [B, out_chans, S/stride, S/stride] for the SAM mask decoder.

    Sum over levels of (patch embedding + learned level embedding), plus SAM's absolute position embedding
    (a buffer: copied from a SAM image encoder, never trained), then SAM ViT blocks and SAM's neck.
    """

    pos_embed: torch.Tensor

    def __init__(self, in_channels: tuple[int, ...], grid_size: int, config: AdapterConfig) -> None:
        super().__init__()
        if config.stride not in _LEVEL_PROJECTIONS:
            raise ValueError(
                f"Adapter stride {config.stride} is not supported; use one of {sorted(_LEVEL_PROJECTIONS)}."
            )
        dim = config.embed_dim
        projections = _LEVEL_PROJECTIONS[config.stride]
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(c, dim, kind, k) for c, (kind, k) in zip(in_channels, projections, strict=True)
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
        for block in self.blocks:
            if block.window_size == 0:  # global attention over the whole grid
                block.attn.__class__ = HeadChunkedAttention
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
