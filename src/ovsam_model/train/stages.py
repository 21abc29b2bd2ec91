"""What each stage trains on, its loss, its validation and what it saves."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling.ovsam import OVSAM


@dataclass
class Stage:
    dataset: torch.utils.data.Dataset
    loss_fn: Callable[[OVSAM, list[dict[str, Any]]], tuple[torch.Tensor, dict[str, float]]]
    save: Callable[[OVSAM, Path, dict[str, Any]], None]
    validate: Callable[[OVSAM], dict[str, Any]] | None = None
    extra: nn.Module | None = None


def setup_stage(args: argparse.Namespace, model: OVSAM) -> Stage:
    if args.stage == "sam2clip":
        return _sam2clip_stage(args, model)
    return _clip2sam_stage(args, model)


def _sam2clip_stage(args: argparse.Namespace, model: OVSAM) -> Stage:
    from ..data.folders import ImageFolderDataset
    from .sam2clip import TeacherCache, build_teacher, sam2clip_loss

    if not args.images:
        raise ValueError("--stage sam2clip needs --images (an image folder or an SA-1B layout).")
    dataset = ImageFolderDataset(args.images, image_size=model.config.image_size, list_file=args.image_list)
    teacher = build_teacher(args.teacher, model, args.sam_checkpoint).to(model.device)
    pos_embed = getattr(teacher, "pos_embed", None)
    if args.from_scratch and pos_embed is not None and pos_embed.shape == model.neck.pos_embed.shape:
        with torch.no_grad():
            model.neck.pos_embed.copy_(pos_embed)  # SAM's absolute positions, frozen in the adapter
    cache = TeacherCache(args.teacher_cache) if args.teacher_cache else None

    def save(m: OVSAM, path: Path, metadata: dict[str, Any]) -> None:
        from ..checkpoint import save_checkpoint

        save_checkpoint(m, path, metadata=metadata, half=args.save_half)

    return Stage(dataset, lambda m, b: sam2clip_loss(m, teacher, b, cache), save, extra=teacher)


def _base_classes(args: argparse.Namespace) -> set[str] | None:
    if args.base_classes is None:
        return None
    if args.base_classes == "ovcoco":
        from ..data.splits import OVCOCO_BASE

        return set(OVCOCO_BASE)
    if args.base_classes == "lvis":
        from ..data.coco import read_coco_json
        from ..data.splits import lvis_split

        return set(lvis_split(read_coco_json(args.train_ann)["categories"])[0])
    raise ValueError(f"Unknown --base-classes '{args.base_classes}'; use ovcoco or lvis.")


def _clip2sam_stage(args: argparse.Namespace, model: OVSAM) -> Stage:
    from ..data.coco import CocoInstanceDataset
    from ..text import encode_vocabulary
    from ..vocabulary import Vocabulary
    from .clip2sam import Clip2SamLossConfig, clip2sam_loss

    if not args.train_ann:
        raise ValueError(f"--stage {args.stage} needs --train-ann (a COCO/LVIS instance JSON).")
    size = model.config.image_size
    base = _base_classes(args)  # read before the dataset, which drops the novel instances while loading
    dataset = CocoInstanceDataset(
        args.train_ann,
        args.train_images,
        keep_classes=base,
        image_size=size,
        train=True,
        resize_ratio=tuple(args.resize_ratio),
        num_prompts=args.num_prompts,
        box_prompt_fraction=args.box_fraction,
        box_jitter=args.box_jitter,
        points_per_prompt=args.points_per_prompt,
        seed=args.seed,
    )
    names = dataset.class_names
    seen = [base is None or n in base for n in names]
    vocabulary = Vocabulary(names, seen=seen)
    text_embeddings = encode_vocabulary(vocabulary, model.text_encoder).to(model.device)
    class_mask = torch.tensor(seen, device=model.device) if args.seen_only_classifier else None
    cfg = Clip2SamLossConfig(
        cls_weight=args.cls_weight,
        mask_weight=args.mask_weight,
        dice_weight=args.dice_weight,
        background_weight=args.background_weight,
        num_points=args.num_points,
        roi_from_prediction=args.roi_from_prediction,
        roi_min_iou=args.roi_min_iou,
        roi_clean_clicks=args.roi_clean_clicks,
    )

    def loss_fn(m: OVSAM, batch: list[dict[str, Any]]):
        return clip2sam_loss(m, batch, text_embeddings, cfg, class_mask)

    validate = None
    if args.val_ann:
        val = CocoInstanceDataset(
            args.val_ann,
            args.val_images,
            class_names=names,
            image_size=size,
            train=False,
            ignore_unknown_categories=True,
        )
        validate = _validator(val, vocabulary, text_embeddings, base, args.val_max_images)

    def save(m: OVSAM, path: Path, metadata: dict[str, Any]) -> None:
        from ..checkpoint import save_checkpoint

        metadata = {**metadata, "trained_classes": [n for n, s in zip(names, seen) if s]}
        save_checkpoint(
            m,
            path,
            vocabulary=vocabulary,
            text_embeddings=text_embeddings.cpu(),
            metadata=metadata,
            half=args.save_half,
        )

    return Stage(dataset, loss_fn, save, validate)


def _validator(dataset, vocabulary, text_embeddings, base, max_images) -> Callable[[OVSAM], dict[str, Any]]:
    from ..evaluation.gt_prompts import evaluate_gt_prompts
    from ..predictor import OVSAMPredictor

    novel = [] if base is None else [n for n in dataset.class_names if n not in base]

    def validate(model: OVSAM) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        predictor = OVSAMPredictor(model)
        predictor.set_vocabulary(vocabulary, text_embeddings=text_embeddings)
        out = {}
        for kind in ("box", "point"):
            metrics = evaluate_gt_prompts(
                predictor, dataset, prompt=kind, novel_classes=novel, max_images=max_images
            )
            out.update({f"{kind}_{k}": v for k, v in metrics.items()})
        model.train(was_training)
        return out

    return validate
