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
    # Cross-entropy weight of the background prompts' rows (their target is the background column); None: the
    # background column's weight ``background_weight``.
    background_prompt_weight: float | None = None


# Half side (input-frame pixels at 1024 px) of the box that names a click whose mask came out empty: the
# predictor's own fallback (``predictor._EMPTY_MASK_HALF_BOX``).
EMPTY_MASK_HALF_BOX = 16.0


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
    background: bool = False,
) -> dict[str, torch.Tensor]:
    """Mask (+ IoU) losses of one prompt kind on one image; point prompts train the best of the multimask
    outputs (ambiguity), box prompts the single-mask output.

    ``background``: the prompts lie on empty areas (keys ``background_boxes`` / ``background_points``) and
    ``targets`` are empty masks: BCE against zeros only (dice is left out: on an empty target it only measures
    the predicted area, which the BCE already penalises), and the IoU head learns 0 for every output.
    """
    prefix = "background_" if background else ""
    if is_box:
        decoded = model.decode(features, boxes=prompt[f"{prefix}boxes"], multimask_output=False)
    else:
        points, labels = prompt[f"{prefix}points"], prompt[f"{prefix}point_labels"]
        decoded = model.decode(features, points=points, point_labels=labels, multimask_output=True)
    logits = decoded.low_res_logits  # [n, M, h, w]
    n, m = logits.shape[:2]
    repeated = targets[:, None].expand(-1, m, -1, -1, -1).reshape(n * m, 1, *targets.shape[-2:])
    bce, dice = mask_losses(logits.reshape(n * m, 1, *logits.shape[-2:]), repeated, cfg.num_points)
    total = cfg.mask_weight * bce + (0.0 if background else cfg.dice_weight * dice)
    best = total.view(n, m).argmin(dim=1)
    rows = torch.arange(n, device=logits.device)
    out = {"bce": bce.view(n, m)[rows, best]}
    if not background:
        out["dice"] = dice.view(n, m)[rows, best]
    if cfg.roi_from_prediction or background:
        out["pred_boxes"] = _predicted_boxes(model, logits.detach()[rows, best], prompt, cfg, prefix, is_box)
    if model.has_iou_head:
        actual = mask_iou(logits.detach(), targets)
        out["iou"] = F.mse_loss(decoded.iou, actual, reduction="none").mean(dim=1)
    return out


def _predicted_boxes(
    model: OVSAM,
    chosen: torch.Tensor,
    prompt: dict[str, torch.Tensor],
    cfg: Clip2SamLossConfig,
    prefix: str,
    is_box: bool,
) -> torch.Tensor:
    """The box each prompt is named from at inference: the box of its chosen [n, h, w] mask logits (a click's
    cleaned mask with ``roi_clean_clicks``). Background prompts: a box prompt is named by its own box; an
    empty mask of a click by a small box around the click (the predictor's fallback)."""
    if is_box and prefix:
        return prompt[f"{prefix}boxes"]
    fallback = None
    if not is_box:
        points, labels = prompt[f"{prefix}points"], prompt[f"{prefix}point_labels"]
        if cfg.roi_clean_clicks:
            size = model.config.image_size
            chosen = keep_prompted_components(chosen[:, None], points, labels, size)[:, 0]
        half = EMPTY_MASK_HALF_BOX * model.config.image_size / 1024
        fallback = torch.cat([points[:, 0] - half, points[:, 0] + half], dim=1)
    boxes, _ = model.region_rois(chosen, fallback_boxes=fallback if prefix else None)
    return boxes


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
    """Per-prompt mask losses of a batch, and what naming each prompt needs (its RoI, image, class, and
    whether it is a background prompt)."""

    parts: dict[str, list[torch.Tensor]]
    rois: list[torch.Tensor]
    batch_index: list[torch.Tensor]
    labels: list[torch.Tensor]
    background: list[torch.Tensor]

    def add(
        self,
        losses: dict[str, torch.Tensor],
        rois: torch.Tensor,
        image: int,
        labels: torch.Tensor,
        *,
        background: bool,
    ) -> None:
        for key, value in losses.items():
            self.parts[key].append(value)
        self.rois.append(rois)
        self.batch_index.append(torch.full((len(labels),), image, device=labels.device))
        self.labels.append(labels)
        self.background.append(torch.full((len(labels),), background, device=labels.device))


def _prompt_losses(
    model: OVSAM,
    features: ImageFeatures,
    batch: list[dict[str, Any]],
    cfg: Clip2SamLossConfig,
    num_classes: int,
) -> _PromptLosses:
    device, size = model.device, model.config.image_size
    out = _PromptLosses({"bce": [], "dice": [], "iou": []}, [], [], [], [])
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
            rois = _training_rois(gt_boxes, losses.pop("pred_boxes", None), cfg.roi_min_iou)
            out.add(losses, rois, i, item["labels"].to(device)[targets], background=False)
        for kind in ("boxes", "points"):
            count = prompts[f"background_{kind}"].shape[0] if f"background_{kind}" in prompts else 0
            if count == 0:
                continue
            empty = masks.new_zeros((count, 1, size, size))
            losses = _decode_losses(
                model, image_features, prompts, empty, cfg, is_box=kind == "boxes", background=True
            )
            labels = torch.full((count,), num_classes, device=device, dtype=torch.int64)
            out.add(losses, losses.pop("pred_boxes"), i, labels, background=True)
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
    prompts = _prompt_losses(model, features, batch, cfg, int(text_embeddings.shape[0]))
    head_embed, _ = model.region_embeddings(
        features, torch.cat(prompts.rois), torch.cat(prompts.batch_index), with_clip=False
    )
    logits = model.head_logits(head_embed, text_embeddings)
    if class_mask is not None:
        allowed = torch.cat([class_mask.to(device), class_mask.new_ones(1).to(device)])
        logits = logits.masked_fill(~allowed, float("-inf"))
    labels, background = torch.cat(prompts.labels), torch.cat(prompts.background)
    row_weights = None  # object rows weigh 1 (their targets are classes); background prompts' rows apart
    if cfg.background_prompt_weight is not None and background.any():
        row_weights = torch.where(background, cfg.background_prompt_weight, 1.0).to(logits.dtype)
    cls = classification_loss(logits, labels, cfg.background_weight, row_weights)
    bce = torch.cat(prompts.parts["bce"]).mean()
    dice = torch.cat(prompts.parts["dice"]).mean()
    loss = cfg.cls_weight * cls + cfg.mask_weight * bce + cfg.dice_weight * dice
    logs = {"loss_cls": cls.item(), "loss_mask": bce.item(), "loss_dice": dice.item()}
    if prompts.parts["iou"]:
        iou = torch.cat(prompts.parts["iou"]).mean()
        loss = loss + cfg.iou_weight * iou
        logs["loss_iou"] = iou.item()
    with torch.no_grad():
        right = logits.argmax(dim=1) == labels
        logs["acc"] = right[~background].float().mean().item()
        if background.any():
            logs["acc_background"] = right[background].float().mean().item()
    logs["loss"] = loss.item()
    return loss, logs
