"""CLIP2SAM losses: class cross-entropy with a down-weighted background, point-sampled mask BCE and dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample [N, C, H, W] maps at [N, P, 2] normalised (x, y) in [0, 1] -> [N, C, P] (bilinear)."""
    grid = 2.0 * coords[:, :, None, :] - 1.0
    return F.grid_sample(inputs, grid, align_corners=False)[..., 0]


@torch.no_grad()
def uncertain_points(
    logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0, importance_ratio: float = 0.75
) -> torch.Tensor:
    """PointRend importance sampling on [N, 1, h, w] logits -> [N, num_points, 2] coords in [0, 1].

    Draws ``oversample_ratio * num_points`` random points, keeps the ``importance_ratio`` share closest to the
    decision boundary (smallest |logit|), and fills the rest with fresh random points.
    """
    n = logits.shape[0]
    sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, coords)[:, 0].abs()
    num_uncertain = int(importance_ratio * num_points)
    index = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = coords.gather(1, index[..., None].expand(-1, -1, 2))
    random = torch.rand(n, num_points - num_uncertain, 2, device=logits.device)
    return torch.cat([chosen, random], dim=1)


def mask_losses(
    logits: torch.Tensor, targets: torch.Tensor, num_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask BCE and dice on importance-sampled points, or densely on the logit grid.

    logits: [N, 1, h, w] low-resolution logits over the padded input frame; targets: [N, 1, S, S] float masks
    over the same frame. num_points > 0: PointRend sampling of that many points (the paper's 12,544 at 1024 px);
    num_points <= 0: every logit against the area-averaged target (for small inputs, where a few thousand
    random points would rarely land on a small object). Returns ([N] BCE, [N] dice loss).
    """
    if num_points > 0:
        coords = uncertain_points(logits, num_points)
        point_logits = point_sample(logits, coords)[:, 0]
        point_targets = point_sample(targets, coords)[:, 0]
    else:
        point_logits = logits.flatten(1)
        point_targets = F.adaptive_avg_pool2d(targets, (logits.shape[-2], logits.shape[-1])).flatten(1)
    bce = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="none").mean(dim=1)
    probs = point_logits.sigmoid()
    dice = 1 - (2 * (probs * point_targets).sum(1) + 1) / (probs.sum(1) + point_targets.sum(1) + 1)
    return bce, dice


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    background_weight: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over K + 1 columns (background last, weight ``background_weight``), averaged by the sum
    of the targets' class weights. logits: [N, K + 1]; targets: [N] in 0..K; row_weights: [N] weights of the
    rows instead of their targets' class weights (e.g. background prompts weighted apart)."""
    weight = torch.ones(logits.shape[1], device=logits.device, dtype=logits.dtype)
    weight[-1] = background_weight
    if row_weights is not None:
        rows = F.cross_entropy(logits, targets, reduction="none")
        return (rows * row_weights).sum() / row_weights.sum().clamp(min=1e-6)
    loss = F.cross_entropy(logits, targets, weight=weight, reduction="sum")
    return loss / weight[targets].sum().clamp(min=1e-6)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of thresholded [N, M, h, w] logits with [N, 1, S, S] targets resized to (h, w) -> [N, M]."""
    small = F.interpolate(targets, logits.shape[-2:], mode="bilinear", align_corners=False) > 0.5
    pred = logits > 0
    inter = (pred & small).flatten(2).sum(-1).float()
    union = (pred | small).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1)
