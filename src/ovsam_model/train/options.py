"""The options of a training run, as typed dataclasses (the command line is parsed once into a ``TrainConfig``),
and their checks: everything that can be known before the output folder is touched is checked here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..device import resolve_device
from ..hub import find_source
from .clip2sam import Clip2SamLossConfig
from .sam2clip import SAM_TEACHERS

STAGES = ("clip2sam", "end2end", "sam2clip")
PRECISIONS = ("fp32", "bf16", "fp16")
BASE_CLASS_SPLITS = ("ovcoco", "lvis")


@dataclass(frozen=True)
class StageDefaults:
    """Official defaults of a stage: epochs, gradient-clip norm and learning-rate schedule."""

    epochs: int
    grad_clip: float
    schedule: str  # "cosine" or "step" (see ``engine.Schedule``)


STAGE_DEFAULTS = {
    "sam2clip": StageDefaults(epochs=24, grad_clip=5.0, schedule="cosine"),
    "clip2sam": StageDefaults(epochs=12, grad_clip=0.01, schedule="step"),
    "end2end": StageDefaults(epochs=12, grad_clip=1.0, schedule="cosine"),
}


@dataclass
class ModelOptions:
    """Which model trains and what it starts from."""

    name: str = "ovsam_rn50x16"  # config name or JSON path
    init_checkpoints: list[str] = field(default_factory=list)  # weights to start from (files or source names)
    from_scratch: bool = False  # random init of everything but the CLIP weights
    sam_checkpoint: str | None = None  # SAM sam_vit_*.pth (prompt encoder, teacher)
    clip_pretrained: str | None = None  # open_clip tag or file; "none" for random


@dataclass
class DataOptions:
    """Training / validation data and prompt sampling."""

    train_ann: str | None = None  # COCO/LVIS instance JSON (clip2sam, end2end)
    train_images: str | None = None  # image root of train_ann (default: its folder)
    val_ann: str | None = None
    val_images: str | None = None
    images: str | None = None  # image folder or SA-1B layout (sam2clip)
    image_list: str | None = None  # text file listing images under ``images``
    base_classes: str | None = None  # "ovcoco" or "lvis": base classes only
    num_prompts: int = 40  # prompts per image
    box_fraction: float = 21 / 40  # share of box prompts
    box_jitter: float = 0.0  # box noise, fraction of the box size
    points_per_prompt: int = 1
    background_prompts: int = 0  # extra prompts per image on empty areas (objectness; 0 = none)
    background_margin: float = 8.0  # least distance (pixels at the model's input size) to every object
    resize_ratio: tuple[float, float] = (0.9, 2.0)  # random resize range
    workers: int = 2  # data loader workers per process


@dataclass
class OptimOptions:
    """Optimiser and schedule; ``epochs`` and ``grad_clip`` are the stage's defaults unless given."""

    epochs: int = 12
    max_steps: int | None = None  # stop after this many optimiser steps
    batch_size: int = 2  # images per process
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iters: int = 500
    lr_steps: list[int] = field(default_factory=lambda: [8, 11])  # epochs of x0.1 (step schedule)
    grad_clip: float = 0.01
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (CUDA)


@dataclass
class TeacherOptions:
    """The SAM teacher of stage sam2clip."""

    kind: str = "vit_h"  # one of ``SAM_TEACHERS``
    cache: str | None = None  # folder for fp16 teacher features


@dataclass
class RunOptions:
    """Where the run writes, how often, and on which device."""

    output_dir: str = "runs/train"
    overwrite: bool = False  # replace the outputs of an earlier run in output_dir
    resume: bool = False  # continue from output_dir's resume state
    device: str = "auto"
    threads: int | None = None  # torch CPU threads
    seed: int = 0
    log_every: int = 10  # steps between metrics lines
    save_every_steps: int = 0  # steps between resume states (0: at epoch ends and on interrupt only)
    val_every: int = 1  # epochs between validations (0: never)
    val_max_images: int = 50
    save_half: bool = False  # store the final checkpoint in fp16


@dataclass
class TrainConfig:
    """One training run: the stage and every option, as parsed once from the command line."""

    stage: str
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    loss: Clip2SamLossConfig = field(default_factory=Clip2SamLossConfig)
    seen_only_classifier: bool = False  # mask unseen classes out of the training softmax
    teacher: TeacherOptions = field(default_factory=TeacherOptions)
    run: RunOptions = field(default_factory=RunOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Options a resumed run must share with the run it continues (dotted paths into ``TrainConfig.to_dict()``):
# they decide the model, what each step sees, and what the saved optimiser state means. The rest (epochs,
# max_steps, logging, validation, device, workers) may change between the two.
RESUME_MUST_MATCH = (
    "stage",
    "model.name",
    "model.init_checkpoints",
    "model.from_scratch",
    "model.clip_pretrained",
    "data.train_ann",
    "data.images",
    "data.image_list",
    "data.base_classes",
    "data.num_prompts",
    "data.box_fraction",
    "data.box_jitter",
    "data.points_per_prompt",
    "data.background_prompts",
    "data.background_margin",
    "data.resize_ratio",
    "optim.batch_size",
    "optim.lr",
    "optim.weight_decay",
    "optim.precision",
    "seen_only_classifier",
    "teacher.kind",
    "run.seed",
)


def _at(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None  # type: ignore[assignment]
    return list(data) if isinstance(data, tuple) else data


def _saved_at(saved: dict[str, Any], defaults: dict[str, Any], dotted: str) -> Any:
    """An option of a saved run; options added since that run was saved take their defaults (which keep the
    behaviour of before), so older runs still resume."""
    parent, _, name = dotted.rpartition(".")
    holder = _at(saved, parent) if parent else saved
    if isinstance(holder, dict) and name not in holder:
        return _at(defaults, dotted)
    return _at(saved, dotted)


def resume_differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The ``RESUME_MUST_MATCH`` options that differ, as 'option: saved -> now' lines."""
    now = config.to_dict()
    defaults = TrainConfig(stage=config.stage).to_dict()
    return [
        f"{key} was {_saved_at(saved, defaults, key)!r}, now {_at(now, key)!r}"
        for key in RESUME_MUST_MATCH
        if _saved_at(saved, defaults, key) != _at(now, key)
    ]


# -------------------------------------------------------------------------------------------------- checks
def _numbers(config: TrainConfig) -> list[str]:
    """Problems with numbers, as '--flag: what is wrong' texts."""
    d, o, r, loss = config.data, config.optim, config.run, config.loss
    rules: list[tuple[str, bool, str]] = [
        ("--epochs", o.epochs >= 1, "must be at least 1"),
        ("--max-steps", o.max_steps is None or o.max_steps >= 1, "must be at least 1"),
        ("--batch-size", o.batch_size >= 1, "must be at least 1"),
        ("--lr", o.lr > 0, "must be positive"),
        ("--weight-decay", o.weight_decay >= 0, "must be 0 or more"),
        ("--warmup-iters", o.warmup_iters >= 0, "must be 0 or more"),
        ("--lr-steps", all(e >= 0 for e in o.lr_steps), "epochs must be 0 or more"),
        ("--grad-clip", o.grad_clip > 0, "must be positive"),
        ("--num-prompts", d.num_prompts >= 1, "must be at least 1 (prompts per image)"),
        ("--box-fraction", 0 <= d.box_fraction <= 1, "must be between 0 and 1"),
        ("--box-jitter", d.box_jitter >= 0, "must be 0 or more"),
        ("--points-per-prompt", d.points_per_prompt >= 1, "must be at least 1"),
        ("--background-prompts", d.background_prompts >= 0, "must be 0 (none) or more"),
        ("--background-margin", d.background_margin >= 0, "must be 0 or more (pixels)"),
        ("--resize-ratio", 0 < d.resize_ratio[0] <= d.resize_ratio[1], "needs 0 < MIN <= MAX"),
        ("--workers", d.workers >= 0, "must be 0 or more"),
        ("--cls-weight", loss.cls_weight >= 0, "must be 0 or more"),
        ("--mask-weight", loss.mask_weight >= 0, "must be 0 or more"),
        ("--dice-weight", loss.dice_weight >= 0, "must be 0 or more"),
        ("--background-weight", loss.background_weight >= 0, "must be 0 or more"),
        (
            "--background-prompt-weight",
            loss.background_prompt_weight is None or loss.background_prompt_weight >= 0,
            "must be 0 or more",
        ),
        ("--num-points", loss.num_points >= 0, "must be 0 (dense: every logit) or more"),
        ("--roi-min-iou", 0 <= loss.roi_min_iou <= 1, "must be between 0 and 1"),
        ("--threads", r.threads is None or r.threads >= 1, "must be at least 1"),
        ("--log-every", r.log_every >= 1, "must be at least 1"),
        ("--save-every-steps", r.save_every_steps >= 0, "must be 0 (off) or more"),
        ("--val-every", r.val_every >= 0, "must be 0 (never) or more"),
        ("--val-max-images", r.val_max_images >= 1, "must be at least 1"),
    ]
    return [f"{flag} {message}" for flag, ok, message in rules if not ok]


def _existing(flag: str, value: str | None, kind: str) -> list[str]:
    if value is None:
        return []
    path = Path(value).expanduser()
    if kind == "file" and not path.is_file():
        return [f"{flag} {value}: no such file" + (" (it is a folder)" if path.is_dir() else "")]
    if kind == "dir" and not path.is_dir():
        return [f"{flag} {value}: no such folder" + (" (it is a file)" if path.is_file() else "")]
    return []


def _weights(flag: str, value: str | None) -> list[str]:
    """A weights argument is an existing file or a known source name."""
    if value is None or Path(value).expanduser().is_file() or find_source(value) is not None:
        return []
    return [f"{flag} {value}: no such file, and not a known weights source name"]


def _files(config: TrainConfig) -> list[str]:
    d, m = config.data, config.model
    problems = _existing("--train-ann", d.train_ann, "file") + _existing(
        "--train-images", d.train_images, "dir"
    )
    problems += _existing("--val-ann", d.val_ann, "file") + _existing("--val-images", d.val_images, "dir")
    problems += _existing("--images", d.images, "dir") + _existing("--image-list", d.image_list, "file")
    for item in m.init_checkpoints:
        problems += _weights("--init-checkpoint", item)
    problems += _weights("--sam-checkpoint", m.sam_checkpoint)
    cache = config.teacher.cache
    if cache is not None and Path(cache).exists() and not Path(cache).is_dir():
        problems.append(f"--teacher-cache {cache}: is a file, not a folder")
    output = Path(config.run.output_dir).expanduser()
    if output.exists() and not output.is_dir():
        problems.append(f"--output-dir {output}: is a file, not a folder")
    return problems


def _stage_needs(config: TrainConfig) -> list[str]:
    d = config.data
    if config.stage == "sam2clip":
        return [] if d.images else ["--stage sam2clip needs --images (an image folder or an SA-1B layout)"]
    problems = (
        [] if d.train_ann else [f"--stage {config.stage} needs --train-ann (a COCO/LVIS instance JSON)"]
    )
    if d.base_classes == "lvis" and not d.train_ann:
        problems.append("--base-classes lvis reads the LVIS frequency split from --train-ann")
    if config.run.resume and config.run.overwrite:
        problems.append("--resume continues a run and --overwrite replaces it: pass one of them")
    return problems


def check_config(config: TrainConfig) -> None:
    """Every problem that can be found without building the model or reading the data, in one ``ValueError``
    (one line: '; '-separated) naming the flags and what to change."""
    problems = _numbers(config) + _stage_needs(config) + _files(config)
    if config.model.from_scratch and config.model.init_checkpoints:
        problems.append(
            "--from-scratch starts from random weights: drop --init-checkpoint, or --from-scratch"
        )
    if config.optim.precision == "fp16" and config.run.device in ("cpu", "mps"):
        problems.append("--precision fp16 needs a CUDA device; use bf16 on the CPU")
    if config.teacher.kind not in SAM_TEACHERS:
        problems.append(f"--teacher {config.teacher.kind}: use one of {', '.join(SAM_TEACHERS)}")
    try:
        load_config(config.model.name)
    except (ValueError, TypeError, OSError) as error:
        problems.append(f"--model: {error}".rstrip("."))
    try:
        resolve_device(config.run.device)
    except (ValueError, RuntimeError) as error:
        reason = str(error).rstrip(".") if isinstance(error, ValueError) else "use auto, cuda, mps or cpu"
        problems.append(f"--device {config.run.device}: {reason}")
    if problems:
        raise ValueError("; ".join(problems) + ".")
