"""CLIP2SAM: FPN over the CLIP features, RoIAlign at the mmdet level, conv + mean -> region embedding.

Also the open-vocabulary classifier (cosine with text embeddings, max over synonyms, zero background) and the
geometric-mean fusion with the frozen CLIP's own region score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

FPN_STRIDES = (4, 8, 16, 32)


class FPN(nn.Module):
    """Feature pyramid (P2..P5, all ``out_channels``): 1x1 laterals, nearest top-down sum, 3x3 outputs."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]


def map_roi_levels(rois: torch.Tensor, num_levels: int, finest_scale: float) -> torch.Tensor:
    """mmdet's level rule: floor(log2(sqrt(w * h) / finest_scale + 1e-6)) clamped to [0, num_levels - 1].

    rois: [N, 5] (batch index, x0, y0, x1, y1). Returns [N] int64 level indices.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def multilevel_roi_align(
    features: list[torch.Tensor],
    rois: torch.Tensor,
    output_size: int,
    finest_scale: float,
    *,
    gather: bool | None = None,
) -> torch.Tensor:
    """RoIAlign each RoI on its own pyramid level. features: P2..P5; rois: [N, 5] -> [N, C, s, s].

    gather (default: on CUDA): pool every RoI on every level and keep its own level's result instead of
    selecting each level's RoIs first. Same result, more pooling, but no host synchronisation, so the
    decoding of a few prompts can be captured in a CUDA graph.
    """
    levels = map_roi_levels(rois, len(features), finest_scale)
    if gather is None:
        gather = rois.is_cuda
    if gather:
        out = None
        for level, (feature, stride) in enumerate(zip(features, FPN_STRIDES, strict=False)):
            pooled = roi_align(
                feature, rois, (output_size, output_size), 1.0 / stride, sampling_ratio=0, aligned=True
            )
            out = pooled if out is None else torch.where((levels == level)[:, None, None, None], pooled, out)
        assert out is not None
        return out
    out = features[0].new_zeros(rois.shape[0], features[0].shape[1], output_size, output_size)
    for level, (feature, stride) in enumerate(zip(features, FPN_STRIDES, strict=False)):
        index = torch.nonzero(levels == level).squeeze(1)
        if index.numel() == 0:
            continue
        out[index] = roi_align(
            feature, rois[index], (output_size, output_size), 1.0 / stride, sampling_ratio=0, aligned=True
        )
    return out


class RegionHead(nn.Module):
    """RoI features -> region embedding: 1x1 conv (released name ``roi_conv.0``) + ReLU, mean over bins."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.roi_conv = nn.Sequential(nn.Conv2d(in_channels, embed_dim, 1, bias=False), nn.ReLU(inplace=True))

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        return self.roi_conv(roi_features).mean(dim=(2, 3))


def class_logits(embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    """Open-vocabulary logits with a background column.

    Args:
        embeddings: [N, D] region embeddings (any norm).
        text_embeddings: [K, P, D] unit-norm text embeddings (P synonyms per class, padded by repetition).
        scale: logit scale (100).

    Returns:
        [N, K + 1] logits: scale x cosine, max over synonyms; the last column (background) is 0.
    """
    embeddings = F.normalize(embeddings, dim=-1)
    cosine = torch.einsum("nd,kpd->nkp", embeddings, text_embeddings.to(embeddings.dtype)).amax(dim=-1)
    return torch.cat([scale * cosine, cosine.new_zeros(cosine.shape[0], 1)], dim=1)


def fuse_probabilities(
    head_logits: torch.Tensor,
    clip_logits: torch.Tensor | None,
    seen: torch.Tensor,
    *,
    alpha_seen: float,
    beta_unseen: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Geometric-mean fusion q^(1-a) c^a (a = alpha for seen classes and background, beta otherwise).

    Args:
        head_logits, clip_logits: [N, K + 1]; clip_logits None = no fusion.
        seen: [K] bool, classes seen in training.
        valid: [N] bool; rows where it is False (empty predicted mask) use the head alone.

    Returns:
        [N, K + 1] probabilities (normalised to sum to 1 per row).
    """
    log_q = head_logits.log_softmax(dim=-1)
    if clip_logits is None:
        return log_q.exp()
    log_c = clip_logits.log_softmax(dim=-1)
    seen_or_background = torch.cat([seen.to(torch.bool), seen.new_ones(1, dtype=torch.bool)]).to(log_q.device)
    weight = torch.where(seen_or_background, alpha_seen, beta_unseen).to(log_q.dtype)
    weight = weight.expand_as(log_q)
    if valid is not None:
        weight = weight * valid.to(log_q.dtype)[:, None]
    fused = (1 - weight) * log_q + weight * log_c
    return fused.softmax(dim=-1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Boxes of binary masks: [N, H, W] bool -> [N, 4] XYXY with exclusive max ([x0, y0, x1 + 1, y1 + 1]).

    Empty masks give [0, 0, 0, 0].
    """
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros(0, 4, dtype=torch.float32)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    h, w = masks.shape[-2:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    empty = ~rows.any(dim=1)
    return boxes.masked_fill(empty[:, None], 0.0)  # no boolean indexing: no host synchronisation on a GPU
