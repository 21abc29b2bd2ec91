"""The CLIP image trunk as a multi-scale feature extractor, plus its own region classifier.

Wraps an open_clip ``visual`` tower. For OpenAI ModifiedResNets the trunk is stem + layer1..4 and the region
classifier is the attention pool; for timm towers (ConvNeXt) the trunk is timm's stem + stages and the region
classifier is timm's pooled head followed by open_clip's projection.
"""

from __future__ import annotations

import torch
from typing import Any

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

    def region_embeddings(self, top_features: torch.Tensor, rois: torch.Tensor, stride: int) -> torch.Tensor:
        """CLIP's own embedding of image regions.

        Args:
            top_features: C5, [B, C5, h, w].
            rois: [N, 5] (batch index, x0, y0, x1, y1) in input-image pixels.
            stride: the stride of ``top_features`` (32).

        Returns:
            [N, D] region embeddings (not normalised), D = CLIP embedding size.
        """
        size = self.region_pool_size
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            pooled = roi_align(
                top_features, rois, (size, size), spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True
            )
            if self.kind == "modified_resnet":
                return self.visual.attnpool(pooled)
            return self.visual.head(self.visual.trunk.forward_head(pooled))
