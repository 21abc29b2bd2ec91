"""Segment and name everything: the automatic protocol's figures beside the targets, and a threshold search.

Measure (default): ``evaluate --protocol automatic`` (``ovsam_model.evaluation.automatic``) on the held-out
synthetic split (val of seed 11, which no training or tuning run saw) with the ``demo`` model, printed as one
table with the targets beside the figures: class-aware mask AP >= 0.45 and AP50 >= 0.70; class-agnostic AP >=
2.5x the Otsu + watershed baseline's; "find all <class>" recall >= 0.85 at precision >= 0.85 for every class;
naming the true labels >= 95 % right.

Tune (``--tune``): a grid over the annotator's min_iou, min_stability, max_background and nms_iou on the
*tuning* split (val of seed 0; the held-out split is refused), scored by class-aware mask AP (class-agnostic AP
printed beside it). Each image is decoded once for the whole grid (``CachedDecoder``): the thresholds are
re-applied to the remembered decodes. Prints the best settings and the flags that set them.

    python -m ovsam_model.data.synthetic --out work-data/fresh --num-train 0 --num-val 100 --seed 11
    python -m ovsam_model.data.synthetic --out work-data/synth --num-train 0 --num-val 100 --seed 0
    python benchmarks/bench_automatic_quality.py [--ann work-data/fresh/val.json] [--model demo] [--max-images N]
    python benchmarks/bench_automatic_quality.py --tune [--ann work-data/synth/val.json] [--max-images 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ovsam_model.evaluation.automatic import AutomaticSettings, evaluate_automatic, instance_results
from ovsam_model.evaluation.cli import add_automatic_arguments, automatic_settings
from ovsam_model.evaluation.decode_cache import CachedDecoder
from ovsam_model.evaluation.mask_ap import MaskAPEvaluator, label_to_category
from ovsam_model.evaluation.report import automatic_tables
from ovsam_model.evaluation.runner import OVSAMMethod, load_data

HELD_OUT_SEED, TUNING_SEED = 11, 0
DEFAULT_ANN = {"measure": "work-data/fresh/val.json", "tune": "work-data/synth/val.json"}
AP_TARGET, AP50_TARGET, BASELINE_RATIO = 0.45, 0.70, 2.5
FIND_ALL_TARGET, NAMING_TARGET = 0.85, 0.95
# 48 settings: about 0.3-0.8 s each per image on remembered decodes (two CPU cores), so 20 images take ~10 min.
GRID = {
    "min_iou": (0.0, 0.2, 0.4, 0.6),
    "min_stability": (0.75, 0.9),
    "max_background": (0.3, 0.5, 0.8),
    "nms_iou": (0.3, 0.6),
}


# ------------------------------------------------------------------------------------------------ measure
def target_rows(result: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    """(figure, value, target, met) of the automatic protocol's result (class-aware NMS)."""
    aware = result["class_aware_nms"]["class_aware"]
    agnostic = result["class_aware_nms"]["class_agnostic"]["AP"]
    baseline = result["otsu_watershed"]["class_agnostic"]["AP"]
    rows: list[tuple[str, float | None, str, bool | None]] = [
        ("class-aware mask AP", aware["AP"], f">= {AP_TARGET}", aware["AP"] >= AP_TARGET),
        ("class-aware mask AP50", aware["AP50"], f">= {AP50_TARGET}", aware["AP50"] >= AP50_TARGET),
        (
            "class-agnostic mask AP",
            agnostic,
            f">= {BASELINE_RATIO} x {baseline:.3f} = {BASELINE_RATIO * baseline:.3f}",
            agnostic >= BASELINE_RATIO * baseline,
        ),
        ("Otsu + watershed AP (class-agnostic)", baseline, "(baseline)", None),
    ]
    for name, counts in result["find_all"].items():
        recall = counts["recall_at_precision"]
        met = recall is not None and recall >= FIND_ALL_TARGET
        rows.append(
            (
                f"find all {name}: recall at precision >= {FIND_ALL_TARGET}",
                recall,
                f">= {FIND_ALL_TARGET}",
                met,
            )
        )
    named = result["naming"]["named_right"]
    rows.append(
        ("naming the true labels", named, f">= {NAMING_TARGET}", named is not None and named >= NAMING_TARGET)
    )
    return rows


def print_targets(rows: list[tuple[str, float | None, str, bool | None]]) -> None:
    print("| figure | value | target | met |\n|---|---|---|---|")
    for name, value, target, met in rows:
        shown = "–" if value is None else f"{value:.3f}"
        verdict = "" if met is None else ("yes" if met else "**no**")
        print(f"| {name} | {shown} | {target} | {verdict} |")


def measure(args: argparse.Namespace, predictor: Any, data: Any, settings: AutomaticSettings) -> None:
    start = time.perf_counter()
    result = evaluate_automatic(
        predictor, data.dataset, settings=settings, max_images=args.max_images, progress=True
    )
    seconds = time.perf_counter() - start
    report = {"methods": {"ovsam": {"method": f"OV-SAM {args.model}", "results": {"automatic": result}}}}
    print("\n".join(automatic_tables(report)))
    print_targets(target_rows(result))
    images = result["class_aware_nms"]["class_aware"]["num_images"]
    print(f"\n{images} images in {seconds:.0f} s ({seconds / max(images, 1):.1f} s per image, all parts).")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------------------------------- tune
def grid_settings(base: AutomaticSettings) -> list[AutomaticSettings]:
    """``base`` with every combination of ``GRID``'s values."""
    names = list(GRID)
    return [replace(base, **dict(zip(names, values))) for values in itertools.product(*GRID.values())]


def tune(args: argparse.Namespace, predictor: Any, data: Any, base: AutomaticSettings) -> None:
    dataset = data.dataset
    seed = (dataset.coco.dataset.get("info") or {}).get("seed")
    if seed == HELD_OUT_SEED:
        sys.exit(f"{args.ann} is the held-out split (seed {HELD_OUT_SEED}): tune on the val split of seed 0.")
    category_of = label_to_category(dataset.category_to_label)
    settings = grid_settings(base)
    evaluators = [
        {agnostic: MaskAPEvaluator(dataset.coco, class_agnostic=agnostic) for agnostic in (False, True)}
        for _ in settings
    ]
    count = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    start = time.perf_counter()
    for index in tqdm(range(count), desc=f"{len(settings)} settings"):
        item = dataset.load_original(index)
        predictor.set_image(item["image"], contrast_limits=(0.0, 255.0))
        cached = CachedDecoder(predictor)
        for setting, by_match in zip(settings, evaluators):
            found = setting.annotator(cached).annotate()
            results = instance_results(found, int(item["image_id"]), category_of)
            for evaluator in by_match.values():
                evaluator.process_results(int(item["image_id"]), results)
    scored = []
    for setting, by_match in zip(settings, evaluators):
        aware, agnostic = by_match[False].evaluate(), by_match[True].evaluate()
        scored.append((aware["AP"], aware["AP50"], agnostic["AP"], setting))
    scored.sort(key=lambda s: -s[0])
    print(
        f"\n{count} images of {args.ann} (seed {seed}), {time.perf_counter() - start:.0f} s; "
        f"best 10 of {len(settings)} settings:"
    )
    print("| class-aware AP | AP50 | class-agnostic AP | " + " | ".join(GRID) + " |")
    print("|---" * (3 + len(GRID)) + "|")
    for ap, ap50, agnostic, setting in scored[:10]:
        values = " | ".join(str(getattr(setting, name)) for name in GRID)
        print(f"| {ap:.3f} | {ap50:.3f} | {agnostic:.3f} | {values} |")
    best = scored[0][3]
    flags = " ".join(f"--{name.replace('_', '-')} {getattr(best, name)}" for name in GRID)
    print(f"\nbest: {flags} (points_per_side {best.points_per_side}, min_score {best.min_score})")


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tune", action="store_true", help="search the thresholds on the tuning split")
    parser.add_argument(
        "--ann", default=None, help="COCO JSON (default: fresh split; --tune: seed-0 val split)"
    )
    parser.add_argument("--model", default="demo", help="OV-SAM config or checkpoint (default demo)")
    parser.add_argument("--checkpoint", default=None, help="weights file for --model")
    parser.add_argument("--max-images", type=int, default=None, help="first N images (--tune default 20)")
    add_automatic_arguments(parser)
    parser.add_argument("--output", default=None, help="write the protocol's result as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    mode = "tune" if args.tune else "measure"
    args.ann = args.ann or DEFAULT_ANN[mode]
    if args.tune and args.max_images is None:
        args.max_images = 20
    if not Path(args.ann).is_file():
        parser.error(f"{args.ann} does not exist; write it first (see --help for the command).")
    torch.set_grad_enabled(False)
    data = load_data(args.ann)
    checkpoint = (args.checkpoint,) if args.checkpoint else None
    predictor = OVSAMMethod(args.model, checkpoint, device=args.device).build()
    predictor.set_vocabulary(data.vocabulary)
    base = automatic_settings(parser, args)
    print(f"{mode}: {args.ann}, model {args.model}, {torch.get_num_threads()} torch threads; {base}")
    (tune if args.tune else measure)(args, predictor, data, base)


if __name__ == "__main__":
    main()
