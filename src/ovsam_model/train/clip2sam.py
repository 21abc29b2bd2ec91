"""Stage ``clip2sam`` (and ``end2end``): the decoder + CLIP2SAM objective on COCO-format instance data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from ..modeling.ovsam import OVSAM, ImageFeatures
from ..postprocess import keep_prompted_components
from .losses import classification_loss, mask_iou, mask_losses


@dataclass
class Clip2SamLossConfig:
    """Weights and options of the CLIP2SAM objective (defaults: the official recipe)."""

    cls_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    iou_weight: float = 1.0  # MSE of the IoU head (decoders that have one)
    background_weight: float = 0.1
    num_points: int = 12544
    # Name prompts from the box of the predicted mask where it overlaps the GT box (box IoU >= roi_min_iou),
    # as at inference, instead of always from the GT box (the official recipe, a train/test mismatch).
    roi_from_prediction: bool = False
    roi_min_iou: float = 0.5
    # With roi_from_prediction: a click's box is that of the parts of its mask that hold the click, as the
    # predictor names clicks (``postprocess.keep_prompted_components``).
    roi_clean_clicks: bool = False


def _pad_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """[M, h, w] bool -> [M, 1, S, S] float, zero-padded bottom/right like the image."""
    h, w = masks.shape[-2:]
    return F.pad(masks.float(), (0, size - w, 0, size - h))[:, None]


def _decode_losses(
    model: OVSAM,
    features: ImageFeatures,
    prompt: dict[str, torch.Tensor],
    targets: torch.Tensor,
    cfg: Clip2SamLossConfig,
    *,
    is_box: bool,
) -> dict[str, torch.Tensor]:
    """Mask (+ IoU) losses of one prompt kind on one image; point prompts train the best of the multimask
    outputs (ambiguity), box prompts the single-mask output."""
    if is_box:
        decoded = model.decode(features, boxes=prompt["boxes"], multimask_output=False)
    else:
        decoded = model.decode(
            features, points=prompt["points"], point_labels=prompt["point_labels"], multimask_output=True
        )
    logits = decoded.low_res_logits  # [n, M, h, w]
    n, m = logits.shape[:2]
    repeated = targets[:, None].expand(-1, m, -1, -1, -1).reshape(n * m, 1, *targets.shape[-2:])
    bce, dice = mask_losses(logits.reshape(n * m, 1, *logits.shape[-2:]), repeated, cfg.num_points)
    total = (cfg.mask_weight * bce + cfg.dice_weight * dice).view(n, m)
    best = total.argmin(dim=1)
    rows = torch.arange(n, device=logits.device)
    out = {"bce": bce.view(n, m)[rows, best], "dice": dice.view(n, m)[rows, best]}
    if cfg.roi_from_prediction:
        chosen = logits.detach()[rows, best]
        if cfg.roi_clean_clicks and not is_box:
            size = model.config.image_size
            chosen = keep_prompted_components(
                chosen[:, None], prompt["points"], prompt["point_labels"], size
            )[:, 0]
        out["pred_boxes"] = model.region_rois(chosen)[0]
    if model.has_iou_head:
        actual = mask_iou(logits.detach(), targets)
        out["iou"] = F.mse_loss(decoded.iou, actual, reduction="none").mean(dim=1)
    return out


def _training_rois(
    gt_boxes: torch.Tensor, predicted: torch.Tensor | None, min_iou: float = 0.5
) -> torch.Tensor:
    """GT boxes [n, 4] (the paper), or predicted-mask boxes where they agree with the GT (box IoU >= min_iou;
    an empty predicted mask never does)."""
    if predicted is None:
        return gt_boxes
    valid = predicted[:, 2] > predicted[:, 0]
    agree = (box_iou(predicted, gt_boxes).diagonal() >= min_iou) & valid
    return torch.where(agree[:, None], predicted, gt_boxes)


@dataclass
class _PromptLosses:
    """Per-prompt mask losses of a batch, and what naming each prompt needs (its RoI, image, class)."""

    parts: dict[str, list[torch.Tensor]]
    rois: list[torch.Tensor]
    batch_index: list[torch.Tensor]
    labels: list[torch.Tensor]


def _prompt_losses(
    model: OVSAM, features: ImageFeatures, batch: list[dict[str, Any]], cfg: Clip2SamLossConfig
) -> _PromptLosses:
    device, size = model.device, model.config.image_size
    out = _PromptLosses({"bce": [], "dice": [], "iou": []}, [], [], [])
    for i, item in enumerate(batch):
        image_features = features.select(i)
        masks = _pad_masks(item["masks"].to(device), size)
        prompts = {k: v.to(device) for k, v in item["prompts"].items()}
        for kind, target_key in (("boxes", "box_targets"), ("points", "point_targets")):
            targets = prompts[target_key]
            if targets.numel() == 0:
                continue
            losses = _decode_losses(
                model, image_features, prompts, masks[targets], cfg, is_box=kind == "boxes"
            )
            gt_boxes = item["boxes"].to(device)[targets]
            out.rois.append(_training_rois(gt_boxes, losses.pop("pred_boxes", None), cfg.roi_min_iou))
            for key, value in losses.items():
                out.parts[key].append(value)
            out.batch_index.append(torch.full((len(targets),), i, device=device))
            out.labels.append(item["labels"].to(device)[targets])
    return out


def clip2sam_loss(
    model: OVSAM,
    batch: list[dict[str, Any]],
    text_embeddings: torch.Tensor,
    cfg: Clip2SamLossConfig,
    class_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch of dataset items (see ``CocoInstanceDataset``; train mode, with ``prompts``).

    text_embeddings: [K, P, D]; class_mask: [K] bool, classes allowed in the training softmax (the
    seen-only classifier); None = all. Returns (scalar loss, float logs).
    """
    device = model.device
    features = model.encode_image([item["image"].to(device) for item in batch])
    prompts = _prompt_losses(model, features, batch, cfg)
    head_embed, _ = model.region_embeddings(
        features, torch.cat(prompts.rois), torch.cat(prompts.batch_index), with_clip=False
    )
    logits = model.head_logits(head_embed, text_embeddings)
    if class_mask is not None:
        allowed = torch.cat([class_mask.to(device), class_mask.new_ones(1).to(device)])
        logits = logits.masked_fill(~allowed, float("-inf"))
    labels = torch.cat(prompts.labels)
    cls = classification_loss(logits, labels, cfg.background_weight)
    bce = torch.cat(prompts.parts["bce"]).mean()
    dice = torch.cat(prompts.parts["dice"]).mean()
    loss = cfg.cls_weight * cls + cfg.mask_weight * bce + cfg.dice_weight * dice
    logs = {"loss_cls": cls.item(), "loss_mask": bce.item(), "loss_dice": dice.item()}
    if prompts.parts["iou"]:
        iou = torch.cat(prompts.parts["iou"]).mean()
        loss = loss + cfg.iou_weight * iou
        logs["loss_iou"] = iou.item()
    with torch.no_grad():
        logs["acc"] = (logits.argmax(dim=1) == labels).float().mean().item()
    logs["loss"] = loss.item()
    return loss, logs
