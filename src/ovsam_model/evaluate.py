"""``python -m ovsam_model.evaluate``: OV-SAM and the SAM + CLIP baselines on COCO/LVIS-format data.

Protocols (repeat ``--protocol`` or list several):
    gt-box    every ground-truth instance prompted by its box: mIoU and accuracy (the paper's Table 1)
    gt-point  ... by one interior point (distance-transform centre): the official protocol
    det-box   a detector's boxes (``--detections``, COCO results JSON) as prompts: mask AP via COCOeval

Examples:
    python -m ovsam_model.evaluate --model ovsam_rn50x16 --ann coco/instances_val2017.json \\
        --images coco/val2017 --split ovcoco --output report.json --markdown report.md
    python -m ovsam_model.evaluate --compare --model ovsam_rn50x16 --sam vit_h --clip-model RN50x16 \\
        --ann coco/instances_val2017.json --images coco/val2017 --split ovcoco \\
        --protocol gt-box gt-point det-box --detections detic_val2017.json --markdown compare.md

With ``--split`` the numbers are also split into base and novel classes (OV-COCO 48/17, with the 15 excluded
COCO classes left out of data and vocabulary as in the official evaluation; LVIS common+frequent / rare).
IoU and accuracy are per instance, averaged over all instances; the JSON keeps IoU and AP on 0..1 and accuracy
in %, the markdown shows them all in %.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

PROTOCOLS = ("gt-box", "gt-point", "det-box")
DEFAULT_PROTOCOLS = ("gt-box", "gt-point")
SPLITS = ("none", "ovcoco", "lvis")
BASELINES = ("image_crop", "feature_crop")
GT_COLUMNS = (
    ("miou", "mIoU"),
    ("acc", "Acc"),
    ("base_iou", "IoU base"),
    ("novel_iou", "IoU novel"),
    ("base_acc", "Acc base"),
    ("novel_acc", "Acc novel"),
    ("count", "instances"),
)
AP_COLUMNS = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("APs", "APs"),
    ("APm", "APm"),
    ("APl", "APl"),
    ("AP_base", "AP base"),
    ("AP_novel", "AP novel"),
    ("APr", "APr"),
    ("APc", "APc"),
    ("APf", "APf"),
    ("num_detections", "masks"),
)
# Metrics on 0..1 that the markdown shows in %.
FRACTIONS = {
    "miou",
    "base_iou",
    "novel_iou",
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AP_base",
    "AP_novel",
    "APr",
    "APc",
    "APf",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ovsam_model.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_argument_group("what to evaluate")
    model.add_argument(
        "--model",
        default="ovsam_rn50x16",
        help="OV-SAM config name, JSON path, or one of our checkpoint files",
    )
    model.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="OV-SAM weights files (repeatable; default: the config's named sources)",
    )
    model.add_argument(
        "--no-fusion",
        action="store_true",
        help="OV-SAM without the frozen-CLIP score fusion (the trained head alone)",
    )
    model.add_argument(
        "--raw-masks",
        action="store_true",
        help="masks as the decoders give them, for OV-SAM and the baselines alike (no clean-up by the prompts; "
        "see ovsam_model.postprocess)",
    )
    model.add_argument(
        "--baseline", choices=BASELINES, default=None, help="evaluate a SAM + CLIP baseline instead of OV-SAM"
    )
    model.add_argument(
        "--compare",
        action="store_true",
        help="evaluate OV-SAM (--model) and both baselines, side by side in one report",
    )
    model.add_argument(
        "--sam",
        default="vit_h",
        choices=("vit_h", "vit_l", "vit_b", "tiny"),
        help="the baselines' SAM (tiny: random weights, for tests)",
    )
    model.add_argument(
        "--sam-checkpoint",
        default=None,
        help="SAM sam_vit_*.pth file (baselines; OV-SAM's prompt encoder / decoder source)",
    )
    model.add_argument("--clip-model", default="RN50x16", help="the baselines' open_clip architecture")
    model.add_argument(
        "--clip-pretrained",
        default="openai",
        help="the baselines' open_clip tag or weights file; 'none' = random weights",
    )
    data = p.add_argument_group("data")
    data.add_argument("--ann", required=True, help="COCO/LVIS instance JSON (ground truth)")
    data.add_argument("--images", default=None, help="image root of --ann (default: the JSON's folder)")
    data.add_argument(
        "--protocol",
        action="extend",
        nargs="+",
        choices=PROTOCOLS,
        default=None,
        help="gt-box, gt-point and/or det-box (repeatable; default: gt-box gt-point)",
    )
    data.add_argument("--detections", default=None, help="detector results JSON (COCO format) for det-box")
    data.add_argument(
        "--score-mode",
        choices=("detector", "detector_x_class"),
        default="detector",
        help="det-box mask score: the detector's (default, as the official code) or x class prob",
    )
    data.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="det-box: the highest-scoring detections kept per image, and COCOeval's maxDets (300 for LVIS)",
    )
    data.add_argument(
        "--split",
        choices=SPLITS,
        default="none",
        help="base/novel split: ovcoco (48/17), lvis (frequent+common / rare) or none",
    )
    data.add_argument(
        "--vocabulary",
        default=None,
        help="vocabulary preset (demo, coco80, ovcoco, lvis1203, ...) or a text file with one "
        "class per line (default: the dataset's categories)",
    )
    data.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    out = p.add_argument_group("output")
    out.add_argument("--output", default=None, help="write the report as JSON here")
    out.add_argument("--markdown", default=None, help="write the report as markdown tables here")
    out.add_argument("--results-dir", default=None, help="write each method's det-box COCO segm results here")
    out.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    out.add_argument("--quiet", action="store_true", help="no progress bars and no printed tables")
    return p


# ------------------------------------------------------------------------------------------------ data
def split_classes(split: str) -> tuple[list[str] | None, set[str]]:
    """(class names to keep, or None for all; novel names) of a split; LVIS novel classes come later."""
    if split == "ovcoco":
        from .data.splits import OVCOCO_BASE, OVCOCO_NOVEL

        return [*OVCOCO_BASE, *OVCOCO_NOVEL], set(OVCOCO_NOVEL)
    return None, set()


def read_vocabulary(value: str):
    """A vocabulary preset name or a text file (one class per line)."""
    from .vocabulary import Vocabulary

    path = Path(value)
    if path.is_file():
        return Vocabulary.from_text(path.read_text(encoding="utf-8"))
    return Vocabulary.preset(value)


def load_data(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """(dataset, vocabulary, novel entries of ``dataset.class_names``); the vocabulary indexes the dataset's
    class names, and with a split its ``seen`` flags are the base classes."""
    from .data.coco import CocoInstanceDataset, normalize_name
    from .data.splits import lvis_split
    from .vocabulary import Vocabulary

    keep, novel = split_classes(args.split)
    vocabulary = read_vocabulary(args.vocabulary) if args.vocabulary else None
    if vocabulary is not None and keep is not None:  # e.g. coco80 with ovcoco: the 15 excluded classes go
        kept = {normalize_name(n) for n in keep}
        vocabulary = Vocabulary([s for s in vocabulary.synonyms if normalize_name(s[0]) in kept])
    names = [", ".join(s) for s in vocabulary.synonyms] if vocabulary is not None else keep
    # Categories outside ``names`` (a split's excluded classes, or classes missing from the vocabulary) are
    # left out of the ground truth.
    dataset = CocoInstanceDataset(
        args.ann, args.images, class_names=names, ignore_unknown_categories=names is not None, train=False
    )
    if args.split == "lvis":
        novel = set(lvis_split(dataset.categories)[1])
    novel_keys = {normalize_name(n) for n in novel}
    is_novel = [normalize_name(entry.split(",")[0]) in novel_keys for entry in dataset.class_names]
    if vocabulary is None:
        vocabulary = Vocabulary(dataset.class_names)
    if args.split != "none":
        vocabulary = Vocabulary(vocabulary.synonyms, seen=[not n for n in is_novel])
    return dataset, vocabulary, [e for e, n in zip(dataset.class_names, is_novel) if n]


# ---------------------------------------------------------------------------------------------- methods
def method_factories(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """{method key: function building its predictor}; built one at a time to bound memory."""
    methods: dict[str, Callable[[], Any]] = {}
    if args.baseline is None or args.compare:
        methods["ovsam"] = lambda: ovsam_predictor(args)
    kinds = BASELINES if args.compare else (args.baseline,) if args.baseline else ()
    for kind in kinds:
        methods[kind] = partial(baseline_predictor, args, kind)
    return methods


def ovsam_predictor(args: argparse.Namespace):
    from .build import build_ovsam
    from .predictor import OVSAMPredictor

    model = build_ovsam(
        args.model, checkpoint=args.checkpoint, sam_checkpoint=args.sam_checkpoint, device=args.device
    )
    if args.no_fusion:
        model.config.fusion.enabled = False
    return OVSAMPredictor(model, clean_masks=not args.raw_masks)


def baseline_predictor(args: argparse.Namespace, kind: str):
    from .baselines import build_baseline

    return build_baseline(
        kind,
        sam=args.sam,
        sam_checkpoint=args.sam_checkpoint,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        device=args.device,
        clean_masks=not args.raw_masks,
    )


def describe(args: argparse.Namespace, key: str) -> dict[str, Any]:
    if key == "ovsam":
        return {
            "method": "OV-SAM",
            "model": str(args.model),
            "fusion": not args.no_fusion,
            "clean_masks": not args.raw_masks,
        }
    return {
        "method": key.replace("_", "-") + " baseline",
        "sam": args.sam,
        "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained,
        "clean_masks": not args.raw_masks,
    }


# ----------------------------------------------------------------------------------------------- running
def run_protocol(
    protocol: str,
    predictor,
    dataset,
    novel: list[str],
    args: argparse.Namespace,
    detections,
    results_path: Path | None,
) -> dict[str, Any]:
    from .evaluation.gt_prompts import evaluate_gt_prompts
    from .evaluation.mask_ap import evaluate_detector_boxes

    progress = not args.quiet
    if protocol == "det-box":
        return evaluate_detector_boxes(
            predictor,
            dataset,
            detections,
            novel_classes=novel,
            score_mode=args.score_mode,
            max_images=args.max_images,
            max_detections=args.max_detections,
            results_path=results_path,
            progress=progress,
        )
    kind = protocol.removeprefix("gt-")
    return evaluate_gt_prompts(
        predictor, dataset, prompt=kind, novel_classes=novel, max_images=args.max_images, progress=progress
    )


def evaluate_method(
    key: str,
    predictor: Any,
    protocols: list[str],
    dataset,
    vocabulary,
    novel: list[str],
    args: argparse.Namespace,
    detections,
) -> dict[str, Any]:
    predictor.set_vocabulary(vocabulary)
    entry: dict[str, Any] = {**describe(args, key), "results": {}, "seconds": {}}
    for protocol in protocols:
        results_path = None
        if protocol == "det-box" and args.results_dir:
            Path(args.results_dir).mkdir(parents=True, exist_ok=True)
            results_path = Path(args.results_dir) / f"{key}_segm_results.json"
        start = time.perf_counter()
        entry["results"][protocol] = run_protocol(
            protocol, predictor, dataset, novel, args, detections, results_path
        )
        entry["seconds"][protocol] = round(time.perf_counter() - start, 3)
    return entry


# ------------------------------------------------------------------------------------------------ report
def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in FRACTIONS:
        return "n/a" if value < 0 else f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown_report(report: dict[str, Any]) -> str:
    """One table per protocol, a row per method; IoU, accuracy and AP in %."""
    lines = [
        f"# Evaluation on `{report['ann']}`",
        "",
        f"{report['num_images']} images, {report['vocabulary_size']} classes, split: {report['split']}. "
        "IoU, accuracy and AP in %.",
        "",
    ]
    for protocol in report["protocols"]:
        rows = {name: m["results"].get(protocol, {}) for name, m in report["methods"].items()}
        spec = AP_COLUMNS if protocol == "det-box" else GT_COLUMNS
        columns = [(k, title) for k, title in spec if any(k in r for r in rows.values())]
        lines += [
            f"## {protocol}",
            "",
            "| method | " + " | ".join(t for _, t in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for name, result in rows.items():
            label = report["methods"][name]["method"]
            cells = [_cell(k, result.get(k)) for k, _ in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    protocols = list(dict.fromkeys(args.protocol or DEFAULT_PROTOCOLS))
    if args.compare and args.baseline:
        parser.error("--compare already runs both baselines; leave out --baseline.")
    if "det-box" in protocols and not args.detections:
        parser.error("--protocol det-box needs --detections (a detector's COCO results JSON).")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1.")
    detections = None
    try:
        dataset, vocabulary, novel = load_data(args)
        if args.detections:
            from .evaluation.mask_ap import load_detections

            detections = load_detections(args.detections, max_per_image=args.max_detections)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    report: dict[str, Any] = {
        "ann": str(args.ann),
        "images": str(args.images or Path(args.ann).parent),
        "split": args.split,
        "num_images": len(dataset) if args.max_images is None else min(args.max_images, len(dataset)),
        "vocabulary_size": len(vocabulary),
        "novel_classes": novel,
        "protocols": protocols,
        "methods": {},
    }
    for key, make in method_factories(args).items():
        try:
            predictor = make()  # one method at a time: the previous one is freed first
        except (FileNotFoundError, ValueError) as error:  # missing weights, unknown config or architecture
            parser.error(f"cannot build {key}: {error}")
        report["methods"][key] = evaluate_method(
            key, predictor, protocols, dataset, vocabulary, novel, args, detections
        )
        del predictor
    table = markdown_report(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    if not args.quiet:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
