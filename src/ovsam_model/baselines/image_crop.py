"""Image-crop baseline (OV-SAM paper, Fig. 2 (a)): CLIP encodes the image cut out around each SAM mask."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from .common import SamClipBaseline

DEFAULT_CROP_SCALE = 1.2  # context around the mask box for the image crop (1.0 = the tight box)


class ImageCropBaseline(SamClipBaseline):
    """Image-crop baseline: CLIP encodes the image cut out around each SAM mask.

    Args (besides ``SamClipBaseline``'s):
        crop_scale: side of the square crop / longest side of the mask box (>= 1; 1.2 keeps a little
            context, as CLIP saw whole objects with their surroundings in training).
        mask_background: set the pixels outside the mask to CLIP's mean colour (the "segment" variant).
    """

    def __init__(
        self,
        sam: Sam,
        clip_model: nn.Module,
        tokenizer,
        *,
        crop_scale: float = DEFAULT_CROP_SCALE,
        mask_background: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(sam, clip_model, tokenizer, **kwargs)
        if crop_scale < 1:
            raise ValueError(f"crop_scale must be >= 1, got {crop_scale}.")
        self.crop_scale = float(crop_scale)
        self.mask_background = mask_background
        self._image: torch.Tensor | None = None  # [3, H, W] CLIP-normalised, on the CPU

    def _set_clip_image(self, rgb: torch.Tensor) -> None:
        self._image = (rgb / 255.0 - self.clip_mean) / self.clip_std

    def _reset_clip_image(self) -> None:
        self._image = None

    def _clip_state(self) -> dict[str, Any]:
        assert self._image is not None
        return {"clip_image": self._image.numpy()}

    def _set_clip_state(self, state: dict[str, Any]) -> None:
        self._image = torch.as_tensor(np.asarray(state["clip_image"]), dtype=torch.float32)

    def crop_windows(self, boxes: torch.Tensor) -> torch.Tensor:
        """Square integer windows [n, 4] XYXY (original frame, may reach outside the image) around boxes."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = ((boxes[:, 2:] - boxes[:, :2]).amax(dim=1) * self.crop_scale).clamp(min=1)
        start = torch.floor(centre - side[:, None] / 2)
        return torch.cat([start, start + torch.ceil(side)[:, None]], dim=1).long()

    def _region_embeddings(
        self, boxes: torch.Tensor, mask_logits: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        assert self._image is not None
        size = self.clip_input_size
        crops = torch.empty(len(boxes), 3, size, size)
        keep = self._masks_for_crops(mask_logits, valid) if self.mask_background else None
        for i, window in enumerate(self.crop_windows(boxes.cpu()).tolist()):
            crop = crop_padded(self._image, window)
            if keep is not None:
                crop = crop * crop_padded(keep[i : i + 1], window)
            crops[i] = F.interpolate(
                crop[None], (size, size), mode=self.clip_interpolation, align_corners=False, antialias=True
            )[0]
        return self.clip_model.encode_image(crops.to(self.device), normalize=True)

    def _masks_for_crops(self, mask_logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[n, H, W] float keep-masks (1 inside) at the original size; empty masks keep everything."""
        assert self.original_size is not None and self.input_size is not None
        up = self.sam.postprocess_masks(mask_logits[:, None], self.input_size, self.original_size)[:, 0]
        return torch.where(valid[:, None, None], up > 0, True).float().cpu()


def crop_padded(image: torch.Tensor, window: list[int]) -> torch.Tensor:
    """image [C, H, W] cut to ``window`` (x0, y0, x1, y1), zero-filled where it leaves the image."""
    x0, y0, x1, y1 = window
    h, w = image.shape[1:]
    out = image.new_zeros(image.shape[0], y1 - y0, x1 - x0)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out
