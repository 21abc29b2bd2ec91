"""End to end for one image with 10 box prompts: OV-SAM vs the image-crop baseline (SAM ViT-H masks, then each
mask's crop encoded by CLIP RN50x16). Target: OV-SAM <= 0.35x the baseline's time.

Both run the full predictor path: set_image (encoding) + predict (10 boxes, masks at the original size, names
from an 80-class vocabulary). Random weights: cost does not depend on them.

    python benchmarks/bench_end_to_end.py [--rounds 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import open_clip
import torch

from common import interleaved, machine, random_ovsam, random_sam
from ovsam_model.baselines import ImageCropBaseline
from ovsam_model.predictor import OVSAMPredictor


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ovsam_rn50x16", help="OV-SAM config (random weights)")
    p.add_argument("--rounds", type=int, default=2, help="timed repetitions per side")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    x0, y0 = rng.uniform(0, 800, 10), rng.uniform(0, 600, 10)
    boxes = np.stack([x0, y0, x0 + rng.uniform(40, 200, 10), y0 + rng.uniform(40, 160, 10)], 1)
    names = [f"class {i}" for i in range(80)]

    model = random_ovsam(args.model)
    ovsam = OVSAMPredictor(model)
    text = torch.nn.functional.normalize(torch.randn(80, 1, model.config.embed_dim), dim=-1)
    ovsam.set_vocabulary(names, text_embeddings=text)

    clip = open_clip.create_model("RN50x16", pretrained=None).eval()
    baseline = ImageCropBaseline(random_sam("vit_h"), clip, open_clip.get_tokenizer("RN50x16"))
    baseline.set_vocabulary(names, text_embeddings=text)

    def run(predictor) -> None:
        predictor.set_image(image)
        predictor.predict(boxes=boxes)

    times = interleaved(
        {"ovsam": lambda: run(ovsam), "image_crop": lambda: run(baseline)},
        rounds=args.rounds,
        warmup=args.warmup,
    )
    ratio = times["ovsam"] / times["image_crop"]
    print(f"machine: {machine()}")
    print("one 1024x768 image, 10 box prompts, encode + segment + name")
    print(f"  OV-SAM {args.model}                          : {times['ovsam']:7.2f} s")
    print(f"  image-crop baseline (SAM ViT-H + CLIP RN50x16) : {times['image_crop']:7.2f} s")
    print(
        f"  ratio OV-SAM / baseline : {ratio:.3f}  (target <= 0.35: {'met' if ratio <= 0.35 else 'NOT met'})"
    )
    return {"ovsam_s": times["ovsam"], "image_crop_s": times["image_crop"], "ratio": ratio}


if __name__ == "__main__":
    main()
