"""The command line of ``python -m ovsam_model.evaluate``: argv -> ``EvaluationArgs`` -> the report.

argv is parsed once into typed values (``EvaluationArgs`` holding the methods and ``ProtocolOptions``); the
runner and the evaluators never see an ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..cli_parser import OneLineErrorParser, fail
from .automatic import AutomaticSettings
from .mask_ap import load_detections
from .report import markdown_report
from .runner import (
    BASELINES,
    DEFAULT_PROTOCOLS,
    PROTOCOLS,
    SPLITS,
    BaselineMethod,
    EvaluationData,
    Method,
    OVSAMMethod,
    ProtocolOptions,
    evaluate_method,
    load_data,
)

PROG = "python -m ovsam_model.evaluate"
DESCRIPTION = """\
OV-SAM and the SAM + CLIP baselines on COCO/LVIS-format data.

Protocols (repeat --protocol or list several):
    gt-box    every ground-truth instance prompted by its box: mIoU and accuracy (the paper's Table 1)
    gt-point  ... by one interior point (distance-transform centre): the official protocol
    det-box   a detector's boxes (--detections, COCO results JSON) as prompts: mask AP via COCOeval
    automatic no prompts: AutomaticAnnotator segments and names everything (OV-SAM only); mask AP / AP50 /
              AR class-aware and class-agnostic for class-aware and class-agnostic NMS, the Otsu + watershed
              baseline, "find all <class>" precision / recall at IoU 0.5, and naming the true labels

Examples:
    python -m ovsam_model.evaluate --model ovsam_rn50x16 --ann coco/instances_val2017.json \\
        --images coco/val2017 --split ovcoco --output report.json --markdown report.md
    python -m ovsam_model.evaluate --compare --model ovsam_rn50x16 --sam vit_h --clip-model RN50x16 \\
        --ann coco/instances_val2017.json --images coco/val2017 --split ovcoco \\
        --protocol gt-box gt-point det-box --detections detic_val2017.json --markdown compare.md
    python -m ovsam_model.evaluate --model demo --ann work-data/fresh/val.json --protocol automatic \
        --points-per-side 32 --min-iou 0.6 --markdown automatic.md

With --split the numbers are also split into base and novel classes (OV-COCO 48/17, with the 15 excluded
COCO classes left out of data and vocabulary as in the official evaluation; LVIS common+frequent / rare).
IoU and accuracy are per instance, averaged over all instances; the JSON keeps IoU and AP on 0..1 and accuracy
in %, the markdown shows them all in %.
"""


@dataclass(frozen=True)
class EvaluationArgs:
    """Everything one evaluation run needs, parsed from argv."""

    ann: str
    images: str | None
    split: str
    vocabulary: str | None
    protocols: tuple[str, ...]
    methods: tuple[Method, ...]
    detections_path: str | None
    options: ProtocolOptions
    output: str | None
    markdown: str | None
    quiet: bool


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_method_arguments(parser.add_argument_group("what to evaluate"))
    _add_data_arguments(parser.add_argument_group("data"))
    add_automatic_arguments(parser.add_argument_group("automatic protocol (defaults: AutomaticAnnotator's)"))
    _add_output_arguments(parser.add_argument_group("output"))
    return parser


def _add_method_arguments(group: Any) -> None:
    group.add_argument(
        "--model",
        default="ovsam_rn50x16",
        help="OV-SAM config name, JSON path, or one of our checkpoint files",
    )
    group.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        help="OV-SAM weights files (repeatable; default: the config's named sources)",
    )
    group.add_argument(
        "--no-fusion",
        action="store_true",
        help="OV-SAM without the frozen-CLIP score fusion (the trained head)",
    )
    group.add_argument(
        "--raw-masks",
        action="store_true",
        help="masks as the decoders give them, for OV-SAM and the baselines alike (no clean-up by the prompts; "
        "see ovsam_model.postprocess)",
    )
    group.add_argument(
        "--baseline", choices=BASELINES, default=None, help="evaluate a SAM + CLIP baseline instead of OV-SAM"
    )
    group.add_argument(
        "--compare", action="store_true", help="evaluate OV-SAM (--model) and both baselines in one report"
    )
    group.add_argument(
        "--sam",
        default="vit_h",
        choices=("vit_h", "vit_l", "vit_b", "tiny"),
        help="the baselines' SAM (tiny: random weights, for tests)",
    )
    group.add_argument(
        "--sam-checkpoint", default=None, help="SAM sam_vit_*.pth file (baselines; OV-SAM's decoder source)"
    )
    group.add_argument("--clip-model", default="RN50x16", help="the baselines' open_clip architecture")
    group.add_argument(
        "--clip-pretrained",
        default="openai",
        help="the baselines' open_clip tag or weights file; 'none' = random weights",
    )


def _add_data_arguments(group: Any) -> None:
    group.add_argument("--ann", required=True, help="COCO/LVIS instance JSON (ground truth)")
    group.add_argument("--images", default=None, help="image root of --ann (default: the JSON's folder)")
    group.add_argument(
        "--protocol",
        action="extend",
        nargs="+",
        choices=PROTOCOLS,
        default=None,
        help="gt-box, gt-point, det-box and/or automatic (repeatable; default: gt-box gt-point)",
    )
    group.add_argument("--detections", default=None, help="detector results JSON (COCO format) for det-box")
    group.add_argument(
        "--score-mode",
        choices=("detector", "detector_x_class"),
        default="detector",
        help="det-box mask score: the detector's (default, as the official code) or x class prob",
    )
    group.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="det-box: the highest-scoring detections kept per image; det-box and automatic: COCOeval's "
        "maxDets (300 for LVIS)",
    )
    group.add_argument(
        "--split",
        choices=SPLITS,
        default="none",
        help="base/novel split: ovcoco (48/17), lvis (frequent+common / rare) or none",
    )
    group.add_argument(
        "--vocabulary",
        default=None,
        help="vocabulary preset (demo, coco80, ovcoco, lvis1203, ...) or a text file with one "
        "class per line (default: the dataset's categories)",
    )
    group.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")


_FRACTION_FLAGS = {
    "min_iou": "lowest predicted IoU kept",
    "min_stability": "lowest stability score kept (IoU of the mask at -1 and +1 logits)",
    "max_background": "highest probability of the background class kept (objectness)",
    "min_score": "lowest probability of the named class kept",
    "nms_iou": "box IoU above which NMS drops the less confident proposal",
}


def add_automatic_arguments(group: Any) -> None:
    """The annotator's threshold flags (defaults: ``AutomaticAnnotator``'s)."""
    defaults = AutomaticSettings()
    group.add_argument(
        "--points-per-side",
        type=int,
        default=defaults.points_per_side,
        help=f"grid points along each image side (default {defaults.points_per_side})",
    )
    for name, text in _FRACTION_FLAGS.items():
        value = getattr(defaults, name)
        group.add_argument(
            "--" + name.replace("_", "-"), type=float, default=value, help=f"{text}, 0..1 (default {value})"
        )


def automatic_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AutomaticSettings:
    """The automatic flags as ``AutomaticSettings``; a value out of range is a one-line error."""
    if args.points_per_side < 1:
        parser.error(f"--points-per-side must be at least 1, got {args.points_per_side}.")
    for name in _FRACTION_FLAGS:
        value = getattr(args, name)
        if not 0 <= value <= 1:  # also NaN
            parser.error(f"--{name.replace('_', '-')} must be a number between 0 and 1, got {value}.")
    return AutomaticSettings(
        points_per_side=args.points_per_side, **{name: getattr(args, name) for name in _FRACTION_FLAGS}
    )


def _add_output_arguments(group: Any) -> None:
    group.add_argument("--output", default=None, help="write the report as JSON here")
    group.add_argument("--markdown", default=None, help="write the report as markdown tables here")
    group.add_argument(
        "--results-dir", default=None, help="write each method's det-box COCO segm results here"
    )
    group.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    group.add_argument("--quiet", action="store_true", help="no progress bars and no printed tables")


def parse_args(argv: list[str] | None = None) -> EvaluationArgs:
    """argv -> ``EvaluationArgs``; inconsistent flags exit with one line (status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    protocols = tuple(dict.fromkeys(args.protocol or DEFAULT_PROTOCOLS))
    if args.compare and args.baseline:
        parser.error("--compare already runs both baselines; leave out --baseline.")
    if "det-box" in protocols and not args.detections:
        parser.error("--protocol det-box needs --detections (a detector's COCO results JSON).")
    if args.max_images is not None and args.max_images < 1:
        parser.error("--max-images must be at least 1.")
    if args.max_detections < 1:
        parser.error("--max-detections must be at least 1.")
    if "automatic" in protocols and (args.baseline or args.compare):
        parser.error(
            "--protocol automatic evaluates OV-SAM's AutomaticAnnotator only; leave out --baseline and --compare "
            "(the report has its own Otsu + watershed baseline)."
        )
    automatic = automatic_settings(parser, args)
    return EvaluationArgs(
        ann=args.ann,
        images=args.images,
        split=args.split,
        vocabulary=args.vocabulary,
        protocols=protocols,
        methods=_methods(args),
        detections_path=args.detections,
        options=ProtocolOptions(
            score_mode=args.score_mode,
            max_detections=args.max_detections,
            max_images=args.max_images,
            progress=not args.quiet,
            results_dir=args.results_dir,
            automatic=automatic,
        ),
        output=args.output,
        markdown=args.markdown,
        quiet=args.quiet,
    )


def _methods(args: argparse.Namespace) -> tuple[Method, ...]:
    """The methods to evaluate, in report order; each is built only when its turn comes (bounded memory)."""
    clean = not args.raw_masks
    methods: list[Method] = []
    if args.baseline is None or args.compare:
        checkpoint = tuple(args.checkpoint) if args.checkpoint else None
        methods.append(
            OVSAMMethod(
                str(args.model), checkpoint, args.sam_checkpoint, not args.no_fusion, clean, args.device
            )
        )
    kinds = BASELINES if args.compare else (args.baseline,) if args.baseline else ()
    for kind in kinds:
        methods.append(
            BaselineMethod(
                kind, args.sam, args.sam_checkpoint, args.clip_model, args.clip_pretrained, clean, args.device
            )
        )
    return tuple(methods)


def run(config: EvaluationArgs, data: EvaluationData, options: ProtocolOptions) -> dict[str, Any]:
    """Evaluate every method of ``config`` on ``data``: the report as a JSON-able dict."""
    num_images = len(data.dataset)
    report: dict[str, Any] = {
        "ann": str(config.ann),
        "images": str(config.images or Path(config.ann).parent),
        "split": config.split,
        "num_images": num_images if options.max_images is None else min(options.max_images, num_images),
        "vocabulary_size": len(data.vocabulary),
        "novel_classes": data.novel,
        "protocols": list(config.protocols),
        "methods": {},
    }
    for method in config.methods:
        try:
            predictor = method.build()  # one method at a time: the previous one is freed first
        except (FileNotFoundError, ValueError) as error:  # missing weights, unknown config or architecture
            raise _MethodError(f"cannot build {method.key}: {error}") from error
        report["methods"][method.key] = evaluate_method(
            method, predictor, config.protocols, data, options
        ).to_dict()
        del predictor
    return report


class _MethodError(ValueError):
    """A method that cannot be built (its message is the CLI's one line)."""


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        data = load_data(config.ann, config.images, split=config.split, vocabulary=config.vocabulary)
        options = config.options
        if config.detections_path:
            detections = load_detections(config.detections_path, max_per_image=options.max_detections)
            options = replace(options, detections=detections)
        report = run(config, data, options)
    except (FileNotFoundError, ValueError) as error:
        fail(PROG, str(error))
    table = markdown_report(report)
    if config.output:
        Path(config.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if config.markdown:
        Path(config.markdown).write_text(table, encoding="utf-8")
    if not config.quiet:
        print(table)
    return 0
