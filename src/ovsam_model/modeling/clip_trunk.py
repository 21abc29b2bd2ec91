"""The CLIP image trunk as a multi-scale feature extractor, plus its own region classifier.

Wraps an open_clip ``visual`` tower. For OpenAI ModifiedResNets the trunk is stem + layer1..4 and the region
classifier is the attention pool; for timm towers (ConvNeXt) the trunk is timm's stem + stages and the region
classifier is timm's pooled head followed by open_clip's projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align


class CLIPTrunk(nn.Module):
    """Multi-scale CLIP image features C2..C5 (strides 4/8/16/32) and frozen-CLIP region embeddings.

    Args:
        visual: open_clip's image tower (``ModifiedResNet`` or ``TimmModel``).
        kind: "modified_resnet" or "timm".
        region_pool_size: RoIAlign output size fed to the region classifier (12 for RN50x16: the attention
            pool's positional embedding is 12x12).
        frozen: freeze all parameters and keep the module in eval mode (BatchNorm uses running statistics).
    """

    def __init__(self, visual: nn.Module, *, kind: str, region_pool_size: int, frozen: bool = True) -> None:
        super().__init__()
        if kind not in ("modified_resnet", "timm"):
            raise ValueError(f"Unknown CLIP trunk kind '{kind}'; use 'modified_resnet' or 'timm'.")
        self.visual: Any = visual  # open_clip tower: ModifiedResNet or TimmModel
        self.kind = kind
        self.region_pool_size = region_pool_size
        self.frozen = frozen
        if frozen:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def train(self, mode: bool = True) -> CLIPTrunk:
        super().train(mode)
        if self.frozen:
            self.visual.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: [B, 3, H, W] normalised -> [C2, C3, C4, C5], each [B, C_i, H / s_i, W / s_i]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.kind == "modified_resnet":
                x = self.visual.stem(images)
                features = []
                for layer in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                    x = layer(x)
                    features.append(x)
                return features
            trunk = self.visual.trunk
            return list(trunk.forward_intermediates(images, indices=4, intermediates_only=True))

    def region_maps(self, top_features: torch.Tensor) -> torch.Tensor:
        """What ``region_embeddings`` pools, computed once per image.

        For ModifiedResNets: the attention pool's query/key/value projections (weights only, no bias) applied
        to every C5 position, [B, 3C, h, w]. RoIAlign is linear, so pooling these maps gives exactly the
        projections of the pooled features, and each prompt then costs one RoIAlign and one attention query
        instead of three C x C projections of every RoI bin. For timm towers: C5 itself.
        """
        if self.kind != "modified_resnet":
            return top_features
        weight, _ = self._qkv_projection()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return torch.einsum("oc,bchw->bohw", weight, top_features)

    def _qkv_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention pool's stacked q/k/v weights [3C, C] and the projected positional embedding plus
        biases [1 + s*s, 3C]; kept while the trunk is frozen (recomputing them per prompt costs more than the
        whole mask decoder at RN50x16 size)."""
        pool = self.visual.attnpool
        params = (pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight, pool.positional_embedding)
        # device, dtype and in-place version counters: loading new weights invalidates the cache
        key = (params[0].device, params[0].dtype, *(p._version for p in params))
        cached = getattr(self, "_qkv_cache", None)
        if self.frozen and cached is not None and cached[0] == key:
            return cached[1], cached[2]
        weight = torch.cat([pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight])
        bias = torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias])
        positions = pool.positional_embedding @ weight.T + bias
        if self.frozen:
            self._qkv_cache = (key, weight.detach(), positions.detach())
        return weight, positions

    def region_embeddings(self, maps: torch.Tensor, rois: torch.Tensor, stride: int) -> torch.Tensor:
        """CLIP's own embedding of image regions.

        Args:
            maps: ``region_maps(C5)``, [B, 3C, h, w] (ModifiedResNet) or [B, C5, h, w] (timm).
            rois: [N, 5] (batch index, x0, y0, x1, y1) in input-image pixels.
            stride: the stride of the maps (32).

        Returns:
            [N, D] region embeddings (not normalised), D = CLIP embedding size. For ModifiedResNets this equals
            ``attnpool(roi_align(C5, rois))`` (the attention pool's output token).
        """
        size = self.region_pool_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            pooled = roi_align(
                maps, rois, (size, size), spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True
            )
            if self.kind == "modified_resnet":
                return self._attention_pool(pooled)
            return self.visual.head(self.visual.trunk.forward_head(pooled))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """CLIP's own head (attention pool, or timm pooling + projection) on raw pooled C5 [N, C5, s, s] -> [N, D]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.kind == "modified_resnet":
                return self.visual.attnpool(pooled)
            return self.visual.head(self.visual.trunk.forward_head(pooled))

    def _attention_pool(self, pooled: torch.Tensor) -> torch.Tensor:
        """open_clip's AttentionPool2d output token from pooled q/k/v maps [N, 3C, s, s] -> [N, D]."""
        pool = self.visual.attnpool
        n, three_c = pooled.shape[:2]
        c = three_c // 3
        tokens = pooled.flatten(2).transpose(1, 2)  # [N, s*s, 3C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # the mean token first
        tokens = tokens + self._qkv_projection()[1].to(tokens.dtype)
        heads = pool.num_heads
        q = tokens[:, :1, :c].reshape(n, 1, heads, c // heads).transpose(1, 2)
        k = tokens[:, :, c : 2 * c].reshape(n, -1, heads, c // heads).transpose(1, 2)
        v = tokens[:, :, 2 * c :].reshape(n, -1, heads, c // heads).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # [N, heads, 1, C / heads]
        return pool.c_proj(out.transpose(1, 2).reshape(n, c))
