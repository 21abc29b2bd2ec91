"""``python -m ovsam_model.demo``: segment and name the objects of a sample image from the command line.

The sample is a synthetic fluorescence image (the demo model's classes: nucleus, rod, ring, cluster) with its
ground truth, so the run also reports how well each object was segmented (IoU) and named. Prompts are what a
user would give: each object's box, then one click inside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image  # Pillow comes with scikit-image

from .build import build_ovsam
from .cli_parser import OneLineErrorParser
from .data.synthetic import CLASS_NAMES, generate_image
from .evaluation.gt_prompts import gt_prompts, mask_ious
from .image import to_model_rgb
from .predictor import OVSAMPredictor


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m ovsam_model.demo", description=__doc__)
    p.add_argument("--model", default="demo", help="model config name or checkpoint file (default: demo)")
    p.add_argument(
        "--vocabulary", nargs="+", default=None, help="class names (default: the model's own vocabulary)"
    )
    p.add_argument("--seed", type=int, default=7, help="which sample image to generate")
    p.add_argument("--size", type=int, default=256, help="sample image side in pixels")
    p.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    p.add_argument("--out", default="ovsam_demo.png", help="where to write the overlay picture")
    return p


def overlay(image: np.ndarray, masks: np.ndarray, names: list[str]) -> np.ndarray:
    """RGB uint8 picture of the image with each mask tinted in its own colour (names are printed, not drawn)."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    palette = np.array(
        [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]], np.float32
    )
    for i, mask in enumerate(masks):
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * palette[i % len(palette)]
    return rgb.clip(0, 255).astype(np.uint8)


MIN_SIZE, MAX_SIZE = 64, 4096  # the sample's objects are 12-60 px: smaller images cannot hold them


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        parser.error(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {args.size}.")
    if args.seed < 0:
        parser.error(f"--seed must be 0 or more, got {args.seed}.")
    out_dir = Path(args.out).expanduser().resolve().parent
    if not out_dir.is_dir():
        parser.error(f"--out {args.out}: the folder {out_dir} does not exist; create it or write elsewhere.")
    try:
        return _run(args)
    except (FileNotFoundError, ValueError) as error:  # unknown model, missing weights, bad vocabulary, device
        parser.error(str(error))


def _run(args: argparse.Namespace) -> dict[str, float]:
    sample = generate_image(np.random.default_rng(args.seed), args.size, (6, 10))
    model = build_ovsam(args.model, device=args.device)
    predictor = OVSAMPredictor(model)
    if args.vocabulary:
        predictor.set_vocabulary(args.vocabulary)
    if predictor.vocabulary is None:
        raise ValueError("This model has no vocabulary of its own: pass --vocabulary name [name ...].")
    predictor.set_image(sample.image)
    names = predictor.vocabulary.names

    summary = {}
    for kind in ("box", "point"):
        prompts = gt_prompts(sample.masks, kind)
        result = predictor.predict(prompts.get("points"), prompts.get("point_labels"), prompts.get("boxes"))
        ious = mask_ious(result.masks[:, 0], sample.masks)
        truth = [CLASS_NAMES[c] for c in sample.labels]
        print(f"\n{kind} prompts  ({model.config.name}, vocabulary: {', '.join(names)})")
        print(f"{'object':>6}  {'true class':<10}  {'named':<10}  {'score':>5}  {'IoU':>5}")
        for i, (t, n, s, iou) in enumerate(zip(truth, result.class_names, result.scores, ious)):
            print(f"{i + 1:>6}  {t:<10}  {n:<10}  {s:5.2f}  {iou:5.2f}")
        accuracy = float(np.mean([t == n for t, n in zip(truth, result.class_names)]))
        print(f"mean IoU {ious.mean():.3f}, named correctly {100 * accuracy:.0f}%")
        summary[f"{kind}_miou"], summary[f"{kind}_acc"] = float(ious.mean()), accuracy
        if kind == "box":
            picture = overlay(to_model_rgb(sample.image)[..., 0], result.masks[:, 0], result.class_names)
            Image.fromarray(picture).save(args.out)
            print(f"overlay written to {Path(args.out).resolve()}")
    return summary


if __name__ == "__main__":
    main()
