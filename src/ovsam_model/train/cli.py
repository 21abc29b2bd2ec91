"""``python -m ovsam_model.train``: SAM2CLIP distillation, CLIP2SAM training, or end-to-end (demo) training.

Examples:
    python -m ovsam_model.train --stage sam2clip --model ovsam_rn50x16 --images data/sa1b --teacher vit_h \\
        --output-dir runs/sam2clip
    python -m ovsam_model.train --stage clip2sam --model ovsam_rn50x16 --train-ann coco/train.json \\
        --train-images coco/train2017 --base-classes ovcoco --seen-only-classifier --output-dir runs/clip2sam
    torchrun --nproc_per_node 8 -m ovsam_model.train --stage clip2sam ...
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..build import assemble, build_ovsam
from ..config import load_config
from ..device import resolve_device
from .engine import Schedule, StageLoss, Trainer, init_distributed, is_main, trainable_parameters

# Official defaults per stage: (epochs, grad clip, schedule).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sam2clip": {"epochs": 24, "grad_clip": 5.0, "schedule": "cosine"},
    "clip2sam": {"epochs": 12, "grad_clip": 0.01, "schedule": "step"},
    "end2end": {"epochs": 12, "grad_clip": 1.0, "schedule": "cosine"},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ovsam_model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--output-dir", required=True, help="where checkpoints and metrics.jsonl go")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty output dir")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    data = p.add_argument_group("data")
    data.add_argument("--train-ann", help="COCO/LVIS instance JSON (clip2sam, end2end)")
    data.add_argument("--train-images", help="image root for --train-ann (default: its folder)")
    data.add_argument("--val-ann", help="COCO JSON for periodic validation")
    data.add_argument("--val-images", help="image root for --val-ann")
    data.add_argument("--images", help="image folder or SA-1B layout (sam2clip)")
    data.add_argument("--image-list", help="text file listing images under --images (sam2clip)")
    data.add_argument(
        "--base-classes",
        default=None,
        help="'ovcoco' or 'lvis': train on base classes only (novel instances removed)",
    )
    data.add_argument("--num-prompts", type=int, default=40, help="prompts per image")
    data.add_argument("--box-fraction", type=float, default=21 / 40, help="share of box prompts")
    data.add_argument("--box-jitter", type=float, default=0.0, help="box noise, fraction of box size")
    data.add_argument("--points-per-prompt", type=int, default=1, help="positive points per point prompt")
    data.add_argument(
        "--resize-ratio",
        type=float,
        nargs=2,
        default=(0.9, 2.0),
        help="random resize range (0.1 2.0 for LVIS)",
    )
    data.add_argument("--workers", type=int, default=2, help="data loader workers per process")
    opt = p.add_argument_group("optimisation (official defaults)")
    opt.add_argument("--epochs", type=int, default=None, help="default 24 (sam2clip) / 12 (clip2sam)")
    opt.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    opt.add_argument("--batch-size", type=int, default=2, help="images per process")
    opt.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    opt.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    opt.add_argument("--warmup-iters", type=int, default=500, help="linear warm-up iterations")
    opt.add_argument("--lr-steps", type=int, nargs="*", default=[8, 11], help="epochs of x0.1 (clip2sam)")
    opt.add_argument("--grad-clip", type=float, default=None, help="max grad L2 norm (5.0 / 0.01)")
    opt.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast")
    loss = p.add_argument_group("clip2sam losses")
    loss.add_argument("--cls-weight", type=float, default=2.0, help="class cross-entropy weight")
    loss.add_argument("--mask-weight", type=float, default=5.0, help="point-sampled BCE weight")
    loss.add_argument("--dice-weight", type=float, default=5.0, help="dice weight")
    loss.add_argument("--background-weight", type=float, default=0.1, help="CE weight of background")
    loss.add_argument("--num-points", type=int, default=12544, help="sampled points per mask")
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
    dist_group = p.add_argument_group("sam2clip teacher")
    dist_group.add_argument("--teacher", default="vit_h", help="vit_h | vit_l | vit_b | tiny")
    dist_group.add_argument("--teacher-cache", default=None, help="dir for fp16 teacher features")
    run = p.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--log-every", type=int, default=10, help="steps between metrics lines")
    run.add_argument("--val-every", type=int, default=1, help="epochs between validations (0 = never)")
    run.add_argument("--val-max-images", type=int, default=50, help="images per validation")
    run.add_argument("--save-half", action="store_true", help="store the final checkpoint in fp16")
    return p


def prepare_output_dir(path: Path, *, overwrite: bool, resume: bool, main: bool) -> None:
    """Refuse to write into a non-empty directory unless resuming or told to overwrite."""
    if resume:
        if not (path / "last.pt").is_file():
            raise FileNotFoundError(f"--resume: no {path / 'last.pt'} to continue from.")
        return
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Output directory {path} is not empty; pass --overwrite to replace it or --resume to continue."
            )
        if main:
            shutil.rmtree(path)
    if main:
        path.mkdir(parents=True, exist_ok=True)


def build_model(args: argparse.Namespace, device: torch.device):
    if args.from_scratch:
        model = assemble(load_config(args.model), args.clip_pretrained)
        if args.sam_checkpoint:
            from ..checkpoint import load_pretrained_sources

            load_pretrained_sources(
                model,
                checkpoint=None,
                sam_checkpoint=args.sam_checkpoint,
                download=True,
                use_config_sources=False,
            )
        return model.to(device)
    return build_ovsam(
        args.model,
        checkpoint=args.init_checkpoint,
        sam_checkpoint=args.sam_checkpoint,
        clip_pretrained=args.clip_pretrained,
        device=device,
    )


def make_loader(dataset, args: argparse.Namespace, rank: int, world: int):
    from ..data.coco import collate_instances

    sampler: DistributedSampler | None = (
        DistributedSampler(dataset, world, rank, shuffle=True, seed=args.seed) if world > 1 else None
    )
    generator = torch.Generator().manual_seed(args.seed)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate_instances,
        drop_last=True,
        generator=generator,
        persistent_workers=args.workers > 0,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    defaults = STAGE_DEFAULTS[args.stage]
    args.epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    args.grad_clip = args.grad_clip if args.grad_clip is not None else defaults["grad_clip"]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    output_dir = Path(args.output_dir)
    prepare_output_dir(output_dir, overwrite=args.overwrite, resume=args.resume, main=is_main(rank))
    if world > 1:
        torch.distributed.barrier()

    from .stages import setup_stage

    model = build_model(args, device)
    stage = setup_stage(args, model)
    named = trainable_parameters(model, "end2end" if args.stage == "end2end" else args.stage)
    loader = make_loader(stage.dataset, args, rank, world)
    steps_per_epoch = len(loader)
    total = args.max_steps or args.epochs * steps_per_epoch
    schedule = Schedule(
        total_steps=total,
        warmup_steps=min(args.warmup_iters, max(1, total // 10)),
        kind=defaults["schedule"],
        milestones=tuple(e * steps_per_epoch for e in args.lr_steps),
    )
    trainer = Trainer(
        StageLoss(model, stage.loss_fn, stage.extra),
        named,
        output_dir=output_dir,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=schedule,
        grad_clip=args.grad_clip,
        precision=args.precision,
        rank=rank,
        world_size=world,
        log_every=args.log_every,
    )
    if args.resume:
        trainer.load_resume(output_dir / "last.pt")
    if is_main(rank):
        trainer.log(
            {
                "event": "start",
                "stage": args.stage,
                "model": model.config.name,
                "world_size": world,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total,
                "resumed_at": trainer.state.step,
            }
        )
    results: dict[str, Any] = {}
    while trainer.state.epoch < args.epochs and trainer.state.step < total:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(trainer.state.epoch)
        if hasattr(stage.dataset, "set_epoch"):
            stage.dataset.set_epoch(trainer.state.epoch)
        trainer.train_epoch(loader, num_batches=steps_per_epoch, max_steps=total)
        trainer.state.epoch += 1
        trainer.save_resume()
        if (
            is_main(rank)
            and stage.validate is not None
            and args.val_every
            and (trainer.state.epoch % args.val_every == 0 or trainer.state.step >= total)
        ):
            results = stage.validate(model)
            trainer.log({"event": "val", "epoch": trainer.state.epoch, "step": trainer.state.step, **results})
    if is_main(rank):
        stage.save(
            model,
            output_dir / "model.pt",
            {"stage": args.stage, "steps": trainer.state.step, "epochs": trainer.state.epoch, "val": results},
        )
        trainer.log({"event": "done", "step": trainer.state.step, "checkpoint": str(output_dir / "model.pt")})
    if world > 1:
        trainer.check_replicas_in_sync()
        torch.distributed.destroy_process_group()
    return results
