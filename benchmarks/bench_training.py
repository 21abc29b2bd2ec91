"""Training throughput (images/s) of the CLIP2SAM / end-to-end step for the tiny and demo configs, measured
side by side on the same synthetic batches; with ``--stage2``, images/s and peak GPU memory of ovsam_rn50x16's
stage 2 at batch 2; and the teacher-feature cache of SAM2CLIP distillation: a second epoch over the same images
reads the fp16 cache instead of running the SAM teacher.

    python benchmarks/bench_training.py [--teacher vit_b] [--images 4]
    python benchmarks/bench_training.py --device cuda --stage2 --steps 10 --images 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import machine
from ovsam_model.build import assemble
from ovsam_model.config import load_config
from ovsam_model.data.coco import CocoInstanceDataset, collate_instances
from ovsam_model.data.synthetic import write_dataset
from ovsam_model.text import encode_vocabulary
from ovsam_model.train.clip2sam import Clip2SamLossConfig, clip2sam_loss
from ovsam_model.train.engine import autocast_context, build_optimizer, trainable_parameters
from ovsam_model.vocabulary import Vocabulary


def step_throughput(
    config_name: str,
    data: Path,
    batch_size: int,
    steps: int,
    *,
    stage: str = "end2end",
    device: str = "cpu",
    precision: str = "fp32",
    num_prompts: int = 16,
    cfg: Clip2SamLossConfig | None = None,
) -> tuple[float, float]:
    """Images per second of full optimiser steps (forward, backward, AdamW) of ``stage`` ("end2end" or
    "clip2sam"), and the peak GPU memory of those steps in GiB (NaN on the CPU)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    config = load_config(config_name)
    model = assemble(config, clip_pretrained="none").to(dev)
    dataset = CocoInstanceDataset(
        data / "train.json",
        image_size=config.image_size,
        num_prompts=num_prompts,
        resize_ratio=(0.75, 1.25) if stage == "end2end" else (0.9, 2.0),
    )
    text = encode_vocabulary(Vocabulary(dataset.class_names), model.text_encoder, use_cache=False).to(dev)
    named = trainable_parameters(model, stage)
    optimizer = build_optimizer(named, 1e-4, 0.05)
    cfg = cfg if cfg is not None else Clip2SamLossConfig(num_points=0)
    batches = [
        collate_instances([dataset[(i * batch_size + j) % len(dataset)] for j in range(batch_size)])
        for i in range(steps + 2)
    ]
    model.train()

    def step(batch) -> None:
        with autocast_context(precision, dev):
            loss, _ = clip2sam_loss(model, batch, text, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for batch in batches[:2]:  # warm-up (kernel selection, allocator)
        step(batch)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for batch in batches[2:]:
        step(batch)
    sync()
    rate = steps * batch_size / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return rate, peak


def distillation_gmacs(model, encoder, size: int = 1024) -> tuple[float, float]:
    """GMACs of the teacher's forward and of one student step (frozen trunk forward, adapter forward and
    backward) on one size x size image, counted by ``torch.utils.flop_counter`` on fake tensors (no compute).

    A teacher cache can at most remove the teacher: the second epoch is at best (teacher + student step) /
    student step times faster than the first.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn) -> float:
        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(1, 3, size, size)
            counter = FlopCounterMode(display=False)
            with counter:
                fn(x)
        return counter.get_total_flops() / 2e9

    teacher = count(encoder)
    student = count(lambda x: model.neck(model.backbone(x)).pow(2).mean().backward())
    model.zero_grad(set_to_none=True)
    return teacher, student


def teacher_cache_speedup(
    teacher: str, images: int, device: str = "cpu"
) -> tuple[float, float, float, float]:
    """Seconds of the first and second distillation epoch over ``images`` images (student ovsam_rn50x16,
    random weights; batch 1), and the GMACs of ``distillation_gmacs``."""
    from segment_anything import sam_model_registry

    from ovsam_model.train.sam2clip import TeacherCache, sam2clip_loss

    torch.manual_seed(0)
    dev = torch.device(device)
    model = assemble(load_config("ovsam_rn50x16"), clip_pretrained="none")
    named = trainable_parameters(model, "sam2clip")
    optimizer = build_optimizer(named, 1e-4, 0.05)
    # segment_anything's encoder with random weights: the real teacher loader needs the weights file, and the
    # cost does not depend on the weights.
    encoder = sam_model_registry[teacher](checkpoint=None).image_encoder.eval().requires_grad_(False)
    model.train()
    teacher_gmacs, student_gmacs = distillation_gmacs(model, encoder)
    model.to(dev)
    encoder.to(dev)
    batch = [
        [{"image": torch.rand(3, 1024, 768) * 255, "path": f"image{i}", "slice_index": None}]
        for i in range(images)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherCache(tmp)
        if dev.type == "cuda":  # warm-up outside the cache (kernel selection), then the two timed epochs
            for _ in range(2):
                loss, _ = sam2clip_loss(model, encoder, batch[0], None)
                loss.backward()
            optimizer.zero_grad()
        epochs = []
        for _ in range(2):
            start = time.perf_counter()
            for item in batch:
                loss, _ = sam2clip_loss(model, encoder, item, cache)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            epochs.append(time.perf_counter() - start)
    return epochs[0], epochs[1], teacher_gmacs, student_gmacs


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch-size", type=int, default=8, help="images per step (tiny and demo)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per config")
    p.add_argument(
        "--teacher", default="vit_h", help="SAM teacher for the cache benchmark (vit_b, vit_l, vit_h)"
    )
    p.add_argument("--images", type=int, default=3, help="images per distillation epoch")
    p.add_argument("--skip-distill", action="store_true", help="only the throughput part")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--stage2",
        action="store_true",
        help="also ovsam_rn50x16 stage 2 (clip2sam, official losses and 40 prompts per image) at batch 2 on "
        "1024 px images: images/s and peak GPU memory, in fp32 and bf16",
    )
    args = p.parse_args(argv)
    out: dict[str, float] = {}
    print(f"machine: {machine(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_dataset(Path(tmp) / "data", num_train=16, num_val=1, size=256, seed=0)
        rates = {
            name: step_throughput(name, paths["root"], args.batch_size, args.steps, device=args.device)[0]
            for name in ("tiny", "demo")
        }
        print(
            f"end-to-end training step (forward + backward + AdamW), batch {args.batch_size}, 16 prompts per"
            f" image, {args.device}"
        )
        for name, rate in rates.items():
            print(f"  {name:>5}: {rate:6.2f} images/s")
        print(f"  ratio tiny / demo: {rates['tiny'] / rates['demo']:.2f}")
        out.update({f"{k}_images_per_s": v for k, v in rates.items()})
        if args.stage2:
            big = write_dataset(Path(tmp) / "big", num_train=8, num_val=1, size=1024, seed=0)
            print(
                f"ovsam_rn50x16 stage 2 (clip2sam), batch 2, 40 prompts per image, 12,544 sampled points per"
                f" mask, {args.device}"
            )
            for precision in ("fp32", "bf16"):
                rate, peak = step_throughput(
                    "ovsam_rn50x16",
                    big["root"],
                    2,
                    args.steps,
                    stage="clip2sam",
                    device=args.device,
                    precision=precision,
                    num_prompts=40,
                    cfg=Clip2SamLossConfig(),
                )
                print(f"  {precision}: {rate:6.2f} images/s, peak memory {peak:.2f} GiB")
                out.update({f"stage2_{precision}_images_per_s": rate, f"stage2_{precision}_peak_gib": peak})
    if not args.skip_distill:
        first, second, teacher_gmacs, student_gmacs = teacher_cache_speedup(
            args.teacher, args.images, args.device
        )
        speedup = first / second
        ceiling = (teacher_gmacs + student_gmacs) / student_gmacs
        print(
            f"SAM2CLIP distillation, ovsam_rn50x16 student, SAM {args.teacher} teacher, {args.images} images,"
            f" {args.device}"
        )
        print(f"  epoch 1 (teacher runs, features cached in fp16): {first:7.2f} s")
        print(f"  epoch 2 (features read from the cache)          : {second:7.2f} s")
        print(f"  speed-up: {speedup:.2f}x (target >= 5x: {'met' if speedup >= 5 else 'NOT met'})")
        print(
            f"  per 1024x1024 image: teacher forward {teacher_gmacs:.0f} GMACs, student step (frozen trunk forward,"
            f" adapter forward + backward) {student_gmacs:.0f} GMACs: removing the teacher can speed an epoch up"
            f" at most {ceiling:.2f}x"
        )
        out.update(epoch1_s=first, epoch2_s=second, speedup=speedup, ceiling=ceiling)
    return out


if __name__ == "__main__":
    main()
