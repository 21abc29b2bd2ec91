"""``python -m ovsam_model.train``: SAM2CLIP distillation, CLIP2SAM training, or end-to-end (demo) training.

Examples:
    python -m ovsam_model.train --stage sam2clip --model ovsam_rn50x16 --images data/sa1b --teacher vit_h \\
        --output-dir runs/sam2clip
    python -m ovsam_model.train --stage clip2sam --model ovsam_rn50x16 --train-ann coco/train.json \\
        --train-images coco/train2017 --base-classes ovcoco --seen-only-classifier --output-dir runs/clip2sam
    torchrun --nproc_per_node 8 -m ovsam_model.train --stage clip2sam ...

A run writes OUTPUT_DIR/model.safetensors (the trained model, loadable with build_ovsam(path)), metrics.jsonl,
the resume state last.pt and the marker ovsam_run.json. Ctrl-C saves the resume state at the current step;
--resume continues from it exactly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..cli_parser import OneLineErrorParser, fail
from .clip2sam import Clip2SamLossConfig
from .options import (
    BASE_CLASS_SPLITS,
    PRECISIONS,
    STAGE_DEFAULTS,
    DataOptions,
    ModelOptions,
    OptimOptions,
    RunOptions,
    TeacherOptions,
    TrainConfig,
)
from .outputs import RESUME_STATE
from .run import train
from .sam2clip import SAM_TEACHERS

EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stage",
        choices=sorted(STAGE_DEFAULTS),
        required=True,
        help="sam2clip: distil the adapter; clip2sam: decoder + naming head; end2end: everything "
        "but the text tower (the from-scratch demo model)",
    )
    p.add_argument("--model", default="ovsam_rn50x16", help="model config name or JSON path")
    p.add_argument(
        "--init-checkpoint",
        action="append",
        default=None,
        help="weights to start from (repeatable); default: the config's pretrained sources",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="random init of everything but the CLIP weights (and the CLIP too if its tag is none)",
    )
    p.add_argument("--sam-checkpoint", default=None, help="SAM sam_vit_*.pth (prompt encoder, teacher)")
    p.add_argument("--clip-pretrained", default=None, help="open_clip tag or file; 'none' for random")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", required=True, help="where the model, metrics.jsonl and last.pt go")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's outputs in --output-dir (only the files a run writes; a folder that is "
        "not a run's output is refused)",
    )
    p.add_argument("--resume", action="store_true", help=f"continue exactly from OUTPUT_DIR/{RESUME_STATE}")
    p.add_argument(
        "--save-every-steps",
        type=int,
        default=0,
        metavar="N",
        help=f"also save the resume state {RESUME_STATE} every N steps (default 0: at epoch ends and on Ctrl-C)",
    )
    p.add_argument("--save-half", action="store_true", help="store the final checkpoint in fp16")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--train-ann", help="COCO/LVIS instance JSON (clip2sam, end2end)")
    data.add_argument("--train-images", help="image root for --train-ann (default: its folder)")
    data.add_argument("--val-ann", help="COCO JSON for periodic validation")
    data.add_argument("--val-images", help="image root for --val-ann")
    data.add_argument("--images", help="image folder or SA-1B layout (sam2clip)")
    data.add_argument("--image-list", help="text file listing images under --images (sam2clip)")
    data.add_argument(
        "--base-classes",
        choices=BASE_CLASS_SPLITS,
        default=None,
        help="train on base classes only (novel instances removed)",
    )
    data.add_argument("--num-prompts", type=int, default=40, help="prompts per image (at least 1)")
    data.add_argument("--box-fraction", type=float, default=21 / 40, help="share of box prompts (0 to 1)")
    data.add_argument("--box-jitter", type=float, default=0.0, help="box noise, fraction of box size")
    data.add_argument("--points-per-prompt", type=int, default=1, help="positive points per point prompt")
    data.add_argument(
        "--background-prompts",
        type=int,
        default=0,
        metavar="N",
        help="also N prompts per image on empty areas (points and boxes, --box-fraction of them boxes), "
        "trained to an empty mask, the background class and IoU 0, so the model learns objectness "
        "(default 0: none)",
    )
    data.add_argument(
        "--background-margin",
        type=float,
        default=8.0,
        help="least distance in pixels (at the model's input size) from a background point to every object",
    )
    data.add_argument(
        "--resize-ratio",
        type=float,
        nargs=2,
        default=(0.9, 2.0),
        help="random resize range (0.1 2.0 for LVIS)",
    )
    data.add_argument("--workers", type=int, default=2, help="data loader workers per process")


def _add_optim_args(p: argparse.ArgumentParser) -> None:
    opt = p.add_argument_group("optimisation (official defaults)")
    opt.add_argument(
        "--epochs", type=int, default=None, help="default 24 (sam2clip) / 12 (clip2sam, end2end)"
    )
    opt.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    opt.add_argument("--batch-size", type=int, default=2, help="images per process (at most the image count)")
    opt.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    opt.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    opt.add_argument("--warmup-iters", type=int, default=500, help="linear warm-up iterations")
    opt.add_argument("--lr-steps", type=int, nargs="*", default=[8, 11], help="epochs of x0.1 (clip2sam)")
    opt.add_argument("--grad-clip", type=float, default=None, help="max grad L2 norm (5.0 / 0.01 / 1.0)")
    opt.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast (fp16: CUDA only)")


def _add_loss_args(p: argparse.ArgumentParser) -> None:
    loss = p.add_argument_group("clip2sam losses")
    loss.add_argument("--cls-weight", type=float, default=2.0, help="class cross-entropy weight")
    loss.add_argument("--mask-weight", type=float, default=5.0, help="point-sampled BCE weight")
    loss.add_argument("--dice-weight", type=float, default=5.0, help="dice weight")
    loss.add_argument("--background-weight", type=float, default=0.1, help="CE weight of background")
    loss.add_argument(
        "--background-prompt-weight",
        type=float,
        default=None,
        help="CE weight of the --background-prompts' rows (default: --background-weight)",
    )
    loss.add_argument(
        "--num-points", type=int, default=12544, help="sampled points per mask (0: every logit, dense)"
    )
    loss.add_argument(
        "--roi-from-prediction",
        action="store_true",
        help="name prompts from the predicted mask's box where it matches the GT box (as at inference) "
        "instead of always from the GT box",
    )
    loss.add_argument(
        "--roi-min-iou",
        type=float,
        default=0.5,
        help="with --roi-from-prediction: least box IoU with the GT box for the predicted box to be used",
    )
    loss.add_argument(
        "--roi-clean-clicks",
        action="store_true",
        help="with --roi-from-prediction: name a click from the parts of its mask that hold the click, as the "
        "predictor does",
    )
    loss.add_argument(
        "--seen-only-classifier",
        action="store_true",
        help="mask unseen classes out of the training softmax (instead of negatives)",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    teacher = p.add_argument_group("sam2clip teacher")
    teacher.add_argument(
        "--teacher", default="vit_h", choices=SAM_TEACHERS, help="SAM image encoder to distil"
    )
    teacher.add_argument("--teacher-cache", default=None, help="dir for fp16 teacher features")
    run = p.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--log-every", type=int, default=10, help="steps between metrics lines")
    run.add_argument("--val-every", type=int, default=1, help="epochs between validations (0 = never)")
    run.add_argument("--val-max-images", type=int, default=50, help="images per validation")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog="python -m ovsam_model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for add in (
        _add_model_args,
        _add_output_args,
        _add_data_args,
        _add_optim_args,
        _add_loss_args,
        _add_run_args,
    ):
        add(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The typed ``TrainConfig`` of parsed arguments (the stage's defaults fill --epochs / --grad-clip)."""
    defaults = STAGE_DEFAULTS[args.stage]
    return TrainConfig(
        stage=args.stage,
        model=ModelOptions(
            name=args.model,
            init_checkpoints=list(args.init_checkpoint or []),
            from_scratch=args.from_scratch,
            sam_checkpoint=args.sam_checkpoint,
            clip_pretrained=args.clip_pretrained,
        ),
        data=DataOptions(
            **{name: getattr(args, name) for name in ("train_ann", "train_images", "val_ann", "val_images")},
            **{name: getattr(args, name) for name in ("images", "image_list", "base_classes", "num_prompts")},
            **{name: getattr(args, name) for name in ("box_fraction", "box_jitter", "points_per_prompt")},
            background_prompts=args.background_prompts,
            background_margin=args.background_margin,
            resize_ratio=(args.resize_ratio[0], args.resize_ratio[1]),
            workers=args.workers,
        ),
        optim=OptimOptions(
            epochs=defaults.epochs if args.epochs is None else args.epochs,
            grad_clip=defaults.grad_clip if args.grad_clip is None else args.grad_clip,
            **{name: getattr(args, name) for name in ("max_steps", "batch_size", "lr", "weight_decay")},
            **{name: getattr(args, name) for name in ("warmup_iters", "lr_steps", "precision")},
        ),
        loss=Clip2SamLossConfig(
            **{
                name: getattr(args, name)
                for name in ("cls_weight", "mask_weight", "dice_weight", "num_points")
            },
            **{
                name: getattr(args, name)
                for name in ("roi_from_prediction", "roi_min_iou", "roi_clean_clicks")
            },
            background_weight=args.background_weight,
            background_prompt_weight=args.background_prompt_weight,
        ),
        seen_only_classifier=args.seen_only_classifier,
        teacher=TeacherOptions(kind=args.teacher, cache=args.teacher_cache),
        run=RunOptions(
            **{
                name: getattr(args, name)
                for name in ("output_dir", "overwrite", "resume", "device", "threads")
            },
            **{name: getattr(args, name) for name in ("seed", "log_every", "save_every_steps", "val_every")},
            val_max_images=args.val_max_images,
            save_half=args.save_half,
        ),
    )


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse ``argv`` (default: ``sys.argv[1:]``) once into a ``TrainConfig``."""
    return config_from_args(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``python -m ovsam_model.train``; returns the last validation results.

    Bad options, data or output folders end the process with one line on stderr and status 2 (nothing is
    written then); Ctrl-C saves the resume state and ends it with status 130.
    """
    parser = build_parser()
    config = config_from_args(parser.parse_args(argv))
    try:
        return train(config)
    except KeyboardInterrupt:
        state = Path(config.run.output_dir) / RESUME_STATE
        saved = (
            f"the resume state is in {state}; continue with --resume" if state.is_file() else "nothing saved"
        )
        print(f"Interrupted: {saved}.", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (ValueError, OSError) as error:
        fail(parser.prog, str(error))
