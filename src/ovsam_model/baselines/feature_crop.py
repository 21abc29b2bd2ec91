"""Feature-crop baseline (OV-SAM paper, Fig. 2 (b)): the CLIP trunk encodes the image once; each mask crops
its features."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn
from torchvision.ops import roi_align

from ..modeling.clip_trunk import CLIPTrunk
from .common import SamClipBaseline

_CLIP_STRIDE = 32


class FeatureCropBaseline(SamClipBaseline):
    """Feature-crop baseline: the CLIP trunk encodes the image once; each mask crops its features.

    Args (besides ``SamClipBaseline``'s):
        trunk_kind: "modified_resnet" or "timm" (default: read from the CLIP image tower).
        image_size: longest side the CLIP trunk sees (default: SAM's input size, 1024 for the real models).
        mask_features: zero the RoI bins outside the mask before CLIP's head (False: the plain box RoI).
    """

    def __init__(
        self,
        sam: Sam,
        clip_model: nn.Module,
        tokenizer,
        *,
        trunk_kind: str | None = None,
        image_size: int | None = None,
        mask_features: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(sam, clip_model, tokenizer, **kwargs)
        kind = trunk_kind or clip_trunk_kind(clip_model)
        # The attention pool's positional embedding has (CLIP input size / 32)^2 + 1 rows: RoIs match it.
        pool = self.clip_input_size // _CLIP_STRIDE
        self.trunk = CLIPTrunk(
            cast(nn.Module, clip_model.visual), kind=kind, region_pool_size=pool, frozen=True
        )
        self.image_size = int(image_size or sam.image_encoder.img_size)
        self.mask_features = mask_features
        self._clip_top: torch.Tensor | None = None  # [1, C5, h, w]
        self._scale: tuple[float, float] = (1.0, 1.0)  # (x, y): CLIP input frame / original frame

    def _set_clip_image(self, rgb: torch.Tensor) -> None:
        h, w = rgb.shape[1:]
        size = ResizeLongestSide.get_preprocess_shape(h, w, self.image_size)
        image = F.interpolate(rgb[None], size, mode="bilinear", align_corners=False, antialias=True)[0]
        image = (image.clamp(0, 255) / 255.0 - self.clip_mean) / self.clip_std
        pad_h, pad_w = (-size[0]) % _CLIP_STRIDE, (-size[1]) % _CLIP_STRIDE  # exact stride-32 grid
        image = F.pad(image, (0, pad_w, 0, pad_h))
        self._clip_top = self.trunk(image[None].to(self.device))[-1]
        self._scale = (size[1] / w, size[0] / h)

    def _reset_clip_image(self) -> None:
        self._clip_top = None

    def _clip_state(self) -> dict[str, Any]:
        assert self._clip_top is not None
        return {"clip_top": self._clip_top[0].float().cpu().numpy(), "clip_scale": self._scale}

    def _set_clip_state(self, state: dict[str, Any]) -> None:
        top = torch.as_tensor(np.asarray(state["clip_top"]), dtype=torch.float32, device=self.device)
        self._clip_top = top[None]
        sx, sy = state["clip_scale"]
        self._scale = (float(sx), float(sy))

    def _region_embeddings(
        self, boxes: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        assert self._clip_top is not None
        sx, sy = self._scale
        scaled = boxes.to(self.device) * torch.tensor([sx, sy, sx, sy], device=self.device)
        rois = torch.cat([scaled.new_zeros(len(scaled), 1), scaled], dim=1)
        if not self.mask_features:
            return self.trunk.region_embeddings(self.trunk.region_maps(self._clip_top), rois, _CLIP_STRIDE)
        pool = self.trunk.region_pool_size
        pooled = roi_align(
            self._clip_top, rois, (pool, pool), 1.0 / _CLIP_STRIDE, sampling_ratio=0, aligned=True
        )
        inside = self._mask_bins(boxes.to(self.device), mask_logits, pool)
        pooled = pooled * torch.where(valid[:, None, None, None], inside, 1.0)
        return self.trunk.head(pooled)

    def _mask_bins(self, boxes: torch.Tensor, mask_logits: torch.Tensor, pool: int) -> torch.Tensor:
        """Fraction of each RoI bin inside the mask: [n, 1, pool, pool], from the low-res SAM masks."""
        assert self.original_size is not None and self.input_size is not None
        sam_scale = torch.tensor(self.input_size[::-1] * 2, device=boxes.device) / torch.tensor(
            self.original_size[::-1] * 2, device=boxes.device
        )
        index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
        rois = torch.cat([index, boxes * sam_scale], dim=1)  # in the SAM input frame
        low_res_scale = mask_logits.shape[-1] / self.sam.image_encoder.img_size
        masks = (mask_logits[:, None] > 0).float()
        return roi_align(masks, rois, (pool, pool), low_res_scale, sampling_ratio=2, aligned=True)


def clip_trunk_kind(clip_model: nn.Module) -> str:
    """ "modified_resnet" for OpenAI ResNet CLIPs, "timm" for timm towers (ConvNeXt); else a ValueError."""
    name = type(getattr(clip_model, "visual", None)).__name__
    if name == "ModifiedResNet":
        return "modified_resnet"
    if name == "TimmModel":
        return "timm"
    raise ValueError(f"The feature-crop baseline needs a convolutional CLIP image tower, got {name}.")
