"""The options of a fine-tuning run (``FinetuneOptions``) and the training-stack config they become.

What trains: stage ``clip2sam`` of ``ovsam_model.train`` (mask decoder, FPN and region head; the CLIP trunk
and the SAM2CLIP adapter stay frozen). ``train_trunk`` chooses stage ``end2end`` instead (everything but the
text tower), for models whose trunk was trained here (the ``demo`` model); a frozen pretrained trunk stays
frozen either way (``train.engine.trainable_parameters``).

The loss follows the shipped ``demo`` model's fine-tuning recipe (benchmarks/README.md): dense mask losses,
prompts named from the box of their predicted mask, clicks from the parts that hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..train.clip2sam import Clip2SamLossConfig
from ..train.options import DataOptions, ModelOptions, OptimOptions, RunOptions, TrainConfig
from .dataset import DEFAULT_HOLDOUT, MIN_OBJECTS, MIN_PER_CLASS

# Steps of batch 4 (16 prompts per image): the demo model took 0.6 s a step on 2 CPU cores with the machine
# nearly to itself (benchmarks/bench_finetune.py --quick), so 400 steps are about 4 minutes; the same machine
# shared with 3 other jobs took 5-6 s a step, and the time budget below then ends the run in time, keeping
# what it learnt by then.
DEFAULT_STEPS = 400
# Training seconds after which the run stops and keeps its weights: the scoring, example learning, loading
# and saving around it took 70 s for the demo model on a busy 2-core machine, so the whole run fits 10 minutes.
DEFAULT_MAX_SECONDS = 450.0
STEPS_PER_EPOCH = 25  # images are listed repeatedly so that an epoch (a resume-state save) is this long


@dataclass
class FinetuneOptions:
    """One fine-tuning run (see the module docstring); every field has a default."""

    steps: int = DEFAULT_STEPS  # optimiser steps
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # training time budget (None: no limit)
    batch_size: int = 4  # images per step
    num_prompts: int = 16  # prompts per image (box and click)
    box_fraction: float = 0.5  # share of box prompts
    # A new class's text embedding lies close to the known ones' (cosine 0.98 for the demo's untrained text
    # tower), so naming needs a fast-moving head: 100 steps at 1e-3 with cls_weight 5 named 47 % of held-out
    # new-class objects right, 108 steps at 1e-4 with cls_weight 2 27 % (benchmarks/README.md).
    lr: float = 1e-3
    cls_weight: float = 5.0  # weight of the naming (cross-entropy) loss beside the mask losses (5 + 5)
    warmup_steps: int = 20
    train_trunk: bool = False  # stage end2end: the image trunk and adapter train too (not if pretrained)
    holdout_fraction: float = DEFAULT_HOLDOUT  # share of each class's objects scored, not trained on
    min_per_class: int = MIN_PER_CLASS
    min_objects: int = MIN_OBJECTS
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads in the training process (None: torch's default)
    seed: int = 0

    def check(self) -> None:
        """One ``ValueError`` listing every bad value."""
        rules = [
            ("steps", self.steps >= 1, "at least 1"),
            ("max_seconds", self.max_seconds is None or self.max_seconds > 0, "positive (or None)"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("num_prompts", self.num_prompts >= 1, "at least 1"),
            ("box_fraction", 0 <= self.box_fraction <= 1, "between 0 and 1"),
            ("lr", self.lr > 0, "positive"),
            ("cls_weight", self.cls_weight >= 0, "0 or more"),
            ("warmup_steps", self.warmup_steps >= 0, "0 or more"),
            ("holdout_fraction", 0 <= self.holdout_fraction < 1, "in [0, 1)"),
            ("min_per_class", self.min_per_class >= 1, "at least 1"),
            ("min_objects", self.min_objects >= 1, "at least 1"),
            ("threads", self.threads is None or self.threads >= 1, "at least 1"),
        ]
        bad = [f"{name} must be {rule} (got {getattr(self, name)!r})" for name, ok, rule in rules if not ok]
        if bad:
            raise ValueError("Fine-tuning options: " + "; ".join(bad) + ".")

    @property
    def stage(self) -> str:
        return "end2end" if self.train_trunk else "clip2sam"


def repeats_for(num_images: int, batch_size: int) -> int:
    """How often each training image is listed so that an epoch has about ``STEPS_PER_EPOCH`` steps."""
    return max(1, -(-STEPS_PER_EPOCH * batch_size // max(1, num_images)))


def train_config(
    options: FinetuneOptions,
    *,
    model_config: Path,
    init_checkpoint: Path,
    train_ann: Path,
    output_dir: Path,
    steps_per_epoch: int = STEPS_PER_EPOCH,
) -> TrainConfig:
    """The ``ovsam_model.train`` config of the run: the model from ``model_config`` (a JSON file) with the
    weights of ``init_checkpoint``, the COCO file ``train_ann``, outputs into ``output_dir``. The learning
    rate falls x0.1 at 2/3 and 11/12 of the steps (stage clip2sam's step schedule) or follows a cosine
    (end2end)."""
    epochs = options.steps / max(1, steps_per_epoch)
    return TrainConfig(
        stage=options.stage,
        model=ModelOptions(name=str(model_config), init_checkpoints=[str(init_checkpoint)]),
        data=DataOptions(
            train_ann=str(train_ann),
            num_prompts=options.num_prompts,
            box_fraction=options.box_fraction,
            resize_ratio=(0.75, 1.25),
            workers=0,
        ),
        optim=OptimOptions(
            epochs=10**6,  # the run length is max_steps
            max_steps=options.steps,
            batch_size=options.batch_size,
            lr=options.lr,
            warmup_iters=options.warmup_steps,
            lr_steps=[max(1, round(epochs * 2 / 3)), max(1, round(epochs * 11 / 12))],
            grad_clip=1.0,
        ),
        loss=Clip2SamLossConfig(
            cls_weight=options.cls_weight,
            num_points=0,
            roi_from_prediction=True,
            roi_min_iou=0.0,
            roi_clean_clicks=True,
        ),
        run=RunOptions(
            output_dir=str(output_dir),
            device=options.device,
            threads=options.threads,
            seed=options.seed,
            log_every=1,
            val_every=0,
        ),
    )
