"""Objectness: does a model tell a prompt on empty background from a prompt on an object? Two models side by
side in one run (e.g. the demo model before and after training with ``--background-prompts``).

On each held-out image: background clicks and boxes placed on empty areas (the training sampler,
``ovsam_model.data.background.sample_background_prompts``, at the image's own resolution: points farther than
``--margin`` pixels from every object, boxes of the objects' sizes holding at most 10 % of any object; a fixed
seed, so both models get the same prompts), and one interior click and the box of each object (the GT-prompt
protocol's prompts). Each prompt is decoded as the automatic annotator decodes a grid point (3 candidates, the
one with the highest predicted IoU kept; boxes: the single mask) and named by the predictor.

Printed per model and prompt kind: the share of background prompts rejected (the background class is the
argmax of the K + 1 probabilities; or the background probability > 0.5, i.e. a foreground score < 0.5), the
same shares on object prompts (objects wrongly rejected), the mean predicted IoU on background and on objects,
and the AUC of separating objects from background by predicted IoU and by 1 - background probability.
``--automatic N``: also the mask AP (pycocotools, class-aware and class-agnostic) of ``AutomaticAnnotator``
with its defaults on the first N images.

    python benchmarks/bench_objectness.py --ann work-data/synth/val.json \\
        --before work-data/ovsam_demo_before.safetensors --after demo [--automatic 100]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from ovsam_model import AutomaticAnnotator, OVSAMPredictor, build_ovsam
from ovsam_model.data.background import sample_background_prompts
from ovsam_model.data.coco import CocoInstanceDataset
from ovsam_model.evaluation.gt_prompts import gt_prompts
from ovsam_model.vocabulary import Vocabulary


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def _prompts(masks: np.ndarray, rng: np.random.Generator, args: argparse.Namespace) -> dict[str, Any]:
    background = sample_background_prompts(
        masks,
        rng,
        num_prompts=args.clicks + args.boxes,
        box_fraction=args.boxes / max(1, args.clicks + args.boxes),
        margin=args.margin,
    )
    return {
        "background click": {"points": background["background_points"].numpy()},
        "background box": {"boxes": background["background_boxes"].numpy()},
        "object click": {"points": gt_prompts(masks, "point")["points"]},
        "object box": gt_prompts(masks, "box"),
    }


def _decode(predictor: OVSAMPredictor, prompt: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "points" in prompt:
        points = prompt["points"]
        if len(points) == 0:
            return {k: np.zeros(0) for k in ("iou", "background", "score")}
        result = predictor.predict(
            points=points, point_labels=np.ones(points.shape[:2]), multimask_output=True
        )
    else:
        if len(prompt["boxes"]) == 0:
            return {k: np.zeros(0) for k in ("iou", "background", "score")}
        result = predictor.predict(boxes=prompt["boxes"], multimask_output=False)
    return {"iou": result.iou[:, 0], "background": result.background, "score": result.scores}


def measure(
    predictor: OVSAMPredictor, dataset: CocoInstanceDataset, args: argparse.Namespace
) -> dict[str, Any]:
    """Per prompt kind: concatenated predicted IoU, background probability and named-class probability."""
    rng = np.random.default_rng(args.seed)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for index in range(min(args.images, len(dataset))):
        item = dataset.load_original(index)
        predictor.set_image(item["image"], contrast_limits=(0.0, 255.0))
        for kind, prompt in _prompts(item["masks"], rng, args).items():
            for key, value in _decode(predictor, prompt).items():
                out.setdefault(kind, {}).setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    return {kind: {k: np.concatenate(v) for k, v in parts.items()} for kind, parts in out.items()}


def summarise(values: dict[str, Any]) -> dict[str, float]:
    row: dict[str, float] = {}
    for kind, v in values.items():
        row[f"{kind}: n"] = float(len(v["iou"]))
        row[f"{kind}: background is argmax"] = float((v["background"] > v["score"]).mean())
        row[f"{kind}: foreground < 0.5"] = float((v["background"] > 0.5).mean())
        row[f"{kind}: mean predicted IoU"] = float(v["iou"].mean())
    for what in ("click", "box"):
        obj, bg = values[f"object {what}"], values[f"background {what}"]
        row[f"{what} prompts: AUC of predicted IoU"] = auc(obj["iou"], bg["iou"])
        row[f"{what} prompts: AUC of 1 - background"] = auc(1 - obj["background"], 1 - bg["background"])
    return row


def automatic_ap(
    predictor: OVSAMPredictor, dataset: CocoInstanceDataset, images: int, **options: float
) -> dict[str, float]:
    """Mask AP / AP50 of AutomaticAnnotator (its defaults, but ``options``), class-aware and class-agnostic,
    on the first images."""
    from pycocotools.cocoeval import COCOeval  # heavy optional dependency of this benchmark only

    annotator = AutomaticAnnotator(predictor, **options)
    names = {c["name"]: int(c["id"]) for c in dataset.categories}
    results: list[dict[str, Any]] = []
    ids: list[int] = []
    for index in range(min(images, len(dataset))):
        item = dataset.load_original(index)
        instances = annotator.annotate(item["image"], contrast_limits=(0.0, 255.0))
        results += instances.to_coco(item["image_id"], category_ids=names, first_id=len(results) + 1)
        ids.append(item["image_id"])
    out = {}
    for label, use_cats in (("class-aware", 1), ("class-agnostic", 0)):
        if not results:
            out[f"automatic {label} AP"] = out[f"automatic {label} AP50"] = 0.0
            continue
        evaluator = COCOeval(dataset.coco, dataset.coco.loadRes(results), iouType="segm")
        evaluator.params.imgIds, evaluator.params.useCats = ids, use_cats
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        out[f"automatic {label} AP"], out[f"automatic {label} AP50"] = map(float, evaluator.stats[:2])
    out["automatic objects per image"] = len(results) / max(1, len(ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ann", default="work-data/synth/val.json", help="held-out COCO JSON")
    parser.add_argument(
        "--before", default="work-data/ovsam_demo_before.safetensors", help="model or checkpoint"
    )
    parser.add_argument("--after", default="demo", help="model or checkpoint")
    parser.add_argument("--images", type=int, default=100, help="images measured")
    parser.add_argument("--clicks", type=int, default=20, help="background clicks per image")
    parser.add_argument("--boxes", type=int, default=10, help="background boxes per image")
    parser.add_argument("--margin", type=float, default=8.0, help="least distance (pixels) to every object")
    parser.add_argument("--automatic", type=int, default=0, metavar="N", help="mask AP on the first N images")
    parser.add_argument(
        "--min-iou", type=float, default=None, help="AutomaticAnnotator min_iou (default: its own)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = CocoInstanceDataset(args.ann, train=False, image_size=256)
    rows: dict[str, dict[str, float]] = {}
    for label, source in (("before", args.before), ("after", args.after)):
        predictor = OVSAMPredictor(build_ovsam(source, device="cpu"))
        predictor.set_vocabulary(Vocabulary(dataset.class_names))
        start = time.perf_counter()
        rows[label] = summarise(measure(predictor, dataset, args))
        if args.automatic:
            options = {} if args.min_iou is None else {"min_iou": args.min_iou}
            rows[label] |= automatic_ap(predictor, dataset, args.automatic, **options)
        rows[label]["seconds"] = time.perf_counter() - start
    print(f"{args.ann}: before = {args.before}, after = {args.after}")
    print("| measure | before | after |\n|---|---|---|")
    for key in rows["before"]:
        print(f"| {key} | {rows['before'][key]:.3f} | {rows['after'][key]:.3f} |")


if __name__ == "__main__":
    main()
