"""What each stage trains on, its loss, its validation and what it saves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import save_checkpoint
from ..data.coco import CocoInstanceDataset, read_coco_json
from ..data.folders import ImageFolderDataset
from ..data.splits import OVCOCO_BASE, lvis_split
from ..evaluation.gt_prompts import evaluate_gt_prompts
from ..modeling.ovsam import OVSAM
from ..predictor import OVSAMPredictor
from ..text import encode_vocabulary
from ..vocabulary import Vocabulary
from .clip2sam import clip2sam_loss
from .options import TrainConfig
from .sam2clip import TeacherCache, build_teacher, sam2clip_loss

LossFn = Callable[[OVSAM, list[dict[str, Any]]], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Stage:
    """A stage's training data, loss, final save, optional validation and extra module (the teacher)."""

    dataset: Dataset
    loss_fn: LossFn
    save: Callable[[OVSAM, Path, dict[str, Any]], None]
    validate: Callable[[OVSAM], dict[str, Any]] | None = None
    extra: nn.Module | None = None


def setup_stage(config: TrainConfig, model: OVSAM) -> Stage:
    """The ``Stage`` of ``config.stage`` for ``model`` (reads the data; raises ``ValueError`` on bad data)."""
    if config.stage == "sam2clip":
        return _sam2clip_stage(config, model)
    return _clip2sam_stage(config, model)


def _sam2clip_stage(config: TrainConfig, model: OVSAM) -> Stage:
    data = config.data
    if not data.images:
        raise ValueError("--stage sam2clip needs --images (an image folder or an SA-1B layout).")
    dataset = ImageFolderDataset(data.images, image_size=model.config.image_size, list_file=data.image_list)
    teacher = build_teacher(config.teacher.kind, model, config.model.sam_checkpoint).to(model.device)
    pos_embed = getattr(teacher, "pos_embed", None)
    if config.model.from_scratch and pos_embed is not None and pos_embed.shape == model.neck.pos_embed.shape:
        with torch.no_grad():
            model.neck.pos_embed.copy_(pos_embed)  # SAM's absolute positions, frozen in the adapter
    cache = TeacherCache(config.teacher.cache) if config.teacher.cache else None

    def save(m: OVSAM, path: Path, metadata: dict[str, Any]) -> None:
        save_checkpoint(m, path, metadata=metadata, half=config.run.save_half)

    return Stage(dataset, lambda m, b: sam2clip_loss(m, teacher, b, cache), save, extra=teacher)


def _base_classes(config: TrainConfig) -> set[str] | None:
    split = config.data.base_classes
    if split is None:
        return None
    if split == "ovcoco":
        return set(OVCOCO_BASE)
    if split == "lvis" and config.data.train_ann:
        return set(lvis_split(read_coco_json(config.data.train_ann)["categories"])[0])
    raise ValueError(f"Unknown --base-classes '{split}'; use ovcoco or lvis (with --train-ann).")


def _clip2sam_stage(config: TrainConfig, model: OVSAM) -> Stage:
    data = config.data
    if not data.train_ann:
        raise ValueError(f"--stage {config.stage} needs --train-ann (a COCO/LVIS instance JSON).")
    base = _base_classes(config)  # read before the dataset, which drops the novel instances while loading
    dataset = CocoInstanceDataset(
        data.train_ann,
        data.train_images,
        keep_classes=base,
        image_size=model.config.image_size,
        train=True,
        resize_ratio=data.resize_ratio,
        num_prompts=data.num_prompts,
        box_prompt_fraction=data.box_fraction,
        box_jitter=data.box_jitter,
        points_per_prompt=data.points_per_prompt,
        background_prompts=data.background_prompts,
        background_margin=data.background_margin,
        seed=config.run.seed,
    )
    names = dataset.class_names
    seen = [base is None or n in base for n in names]
    vocabulary = Vocabulary(names, seen=seen)
    text_embeddings = encode_vocabulary(vocabulary, model.text_encoder).to(model.device)
    class_mask = torch.tensor(seen, device=model.device) if config.seen_only_classifier else None

    def loss_fn(m: OVSAM, batch: list[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        return clip2sam_loss(m, batch, text_embeddings, config.loss, class_mask)

    validate = None
    if data.val_ann:
        val = CocoInstanceDataset(
            data.val_ann,
            data.val_images,
            class_names=names,
            image_size=model.config.image_size,
            train=False,
            ignore_unknown_categories=True,
        )
        validate = _validator(val, vocabulary, text_embeddings, base, config.run.val_max_images)

    def save(m: OVSAM, path: Path, metadata: dict[str, Any]) -> None:
        metadata = {**metadata, "trained_classes": [n for n, s in zip(names, seen) if s]}
        embeddings = text_embeddings.cpu()
        half = config.run.save_half
        save_checkpoint(
            m, path, vocabulary=vocabulary, text_embeddings=embeddings, metadata=metadata, half=half
        )

    return Stage(dataset, loss_fn, save, validate)


def _validator(
    dataset: CocoInstanceDataset,
    vocabulary: Vocabulary,
    text_embeddings: torch.Tensor,
    base: set[str] | None,
    max_images: int,
) -> Callable[[OVSAM], dict[str, Any]]:
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
