"""Segment everything on one 1024x1024 image: ``AutomaticAnnotator`` with ``ovsam_rn50x16`` against
segment_anything's ``SamAutomaticMaskGenerator`` with ViT-H and its default 32x32 grid, on the CPU.

Each variant runs in its own child process (one after the other, so they do not share the cores) from a fresh
image, encoding included, and reports its wall time, the grid points it decoded and its peak resident memory.
Random weights everywhere (the costs of the encoders and decoders do not depend on them); what does depend on
the weights is how many proposals pass the filters and how many grid points fall inside accepted objects, so
ours also runs in its worst case: every point decoded (``skip_empty=False``) and every proposal kept by the
filters, ranked, refined from its box and painted (all thresholds off), which bounds what any weights can cost.

    python benchmarks/bench_automatic_speed.py [--size 1024] [--points-per-side 32] [--no-sam]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3
VARIANTS = {
    "ours": {},  # the annotator's defaults
    "ours, worst case (every point decoded, every proposal kept)": {
        "skip_empty": False,
        "min_iou": 0.0,
        "min_stability": 0.0,
        "min_score": 0.0,
        "max_background": 1.0,
    },
}


def child(variant: str, size: int, per_side: int) -> None:
    import numpy as np
    import torch

    from common import blob_image, random_ovsam, random_sam

    image = blob_image(size)
    if variant == "sam":
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(random_sam("vit_h"), points_per_side=per_side)
        rgb = np.repeat((image / image.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
        start = time.perf_counter()
        masks = generator.generate(rgb)
        elapsed, decoded, found = time.perf_counter() - start, per_side**2, len(masks)
    else:
        from ovsam_model.automatic import AutomaticAnnotator
        from ovsam_model.predictor import OVSAMPredictor

        model = random_ovsam("ovsam_rn50x16")
        predictor = OVSAMPredictor(model)
        text = torch.nn.functional.normalize(torch.randn(80, 2, model.config.embed_dim), dim=-1)
        predictor.set_vocabulary([f"class {i}" for i in range(80)], text_embeddings=text)
        annotator = AutomaticAnnotator(predictor, points_per_side=per_side, **VARIANTS[variant])
        start = time.perf_counter()
        found = len(annotator.annotate(image))
        elapsed, decoded = time.perf_counter() - start, annotator.decoded_points
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "decoded": decoded, "objects": found, "peak": peak}))


def run_child(variant: str, size: int, per_side: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--size",
            str(size),
            "--points-per-side",
            str(per_side),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--no-sam", action="store_true", help="skip SamAutomaticMaskGenerator (minutes on a CPU)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.size, args.points_per_side)
        return
    from common import machine

    print(f"{args.size}x{args.size} image, {args.points_per_side}x{args.points_per_side} grid; {machine()}")
    rows = {name: run_child(name, args.size, args.points_per_side) for name in VARIANTS}
    if not args.no_sam:
        rows["SAM ViT-H SamAutomaticMaskGenerator"] = run_child("sam", args.size, args.points_per_side)
    sam = rows.get("SAM ViT-H SamAutomaticMaskGenerator")
    print(f"{'variant':64s} {'seconds':>8s} {'decoded':>8s} {'objects':>8s} {'peak GiB':>9s} {'vs SAM':>7s}")
    for name, row in rows.items():
        ratio = f"{row['seconds'] / sam['seconds']:.2f}x" if sam else "-"
        print(
            f"{name:64s} {row['seconds']:8.1f} {row['decoded']:8d} {row['objects']:8d} "
            f"{row['peak'] / GIB:9.2f} {ratio:>7s}"
        )


if __name__ == "__main__":
    main()
