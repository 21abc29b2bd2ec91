"""Running an evaluation: the data and vocabulary of a split, the methods, the protocols.

Everything here takes typed values (``EvaluationData``, ``OVSAMMethod``, ``BaselineMethod``,
``ProtocolOptions``); the command line (``ovsam_model.evaluation.cli``) parses argv into them once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..baselines import build_baseline
from ..build import build_ovsam
from ..data.coco import CocoInstanceDataset, normalize_name
from ..data.splits import OVCOCO_BASE, OVCOCO_NOVEL, lvis_split
from ..predictor import OVSAMPredictor
from ..vocabulary import Vocabulary
from .automatic import AutomaticSettings, evaluate_automatic
from .gt_prompts import evaluate_gt_prompts
from .mask_ap import evaluate_detector_boxes

PROTOCOLS = ("gt-box", "gt-point", "det-box", "automatic")
DEFAULT_PROTOCOLS = ("gt-box", "gt-point")
SPLITS = ("none", "ovcoco", "lvis")
BASELINES = ("image_crop", "feature_crop")


# ------------------------------------------------------------------------------------------------ data
@dataclass
class EvaluationData:
    """The ground truth, the vocabulary it is named with (indexing ``dataset.class_names``; with a split its
    ``seen`` flags are the base classes) and the novel entries of ``dataset.class_names``."""

    dataset: CocoInstanceDataset
    vocabulary: Vocabulary
    novel: list[str]


def split_classes(split: str) -> tuple[list[str] | None, set[str]]:
    """(class names to keep, or None for all; novel names) of a split; LVIS novel classes come later."""
    if split == "ovcoco":
        return [*OVCOCO_BASE, *OVCOCO_NOVEL], set(OVCOCO_NOVEL)
    return None, set()


def read_vocabulary(value: str) -> Vocabulary:
    """A vocabulary preset name or a text file (one class per line)."""
    path = Path(value)
    if path.is_file():
        return Vocabulary.from_text(path.read_text(encoding="utf-8"))
    return Vocabulary.preset(value)


def load_data(
    ann: str | Path, images: str | Path | None = None, *, split: str = "none", vocabulary: str | None = None
) -> EvaluationData:
    """Read a COCO/LVIS instance file for evaluation.

    ann: the instance JSON; images: its image root (default: the JSON's folder); split: "none", "ovcoco" or
    "lvis"; vocabulary: a preset name or a text file (default: the dataset's categories).
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    keep, novel = split_classes(split)
    chosen = read_vocabulary(vocabulary) if vocabulary else None
    if chosen is not None and keep is not None:  # e.g. coco80 with ovcoco: the 15 excluded classes go
        kept = {normalize_name(n) for n in keep}
        chosen = Vocabulary([s for s in chosen.synonyms if normalize_name(s[0]) in kept])
    names = [", ".join(s) for s in chosen.synonyms] if chosen is not None else keep
    # Categories outside ``names`` (a split's excluded classes, or classes missing from the vocabulary) are
    # left out of the ground truth.
    dataset = CocoInstanceDataset(
        ann, images, class_names=names, ignore_unknown_categories=names is not None, train=False
    )
    if split == "lvis":
        novel = set(lvis_split(dataset.categories)[1])
    novel_keys = {normalize_name(n) for n in novel}
    is_novel = [normalize_name(entry.split(",")[0]) in novel_keys for entry in dataset.class_names]
    if chosen is None:
        chosen = Vocabulary(dataset.class_names)
    if split != "none":
        chosen = Vocabulary(chosen.synonyms, seen=[not n for n in is_novel])
    return EvaluationData(dataset, chosen, [e for e, n in zip(dataset.class_names, is_novel) if n])


# ---------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class OVSAMMethod:
    """OV-SAM as evaluated: a config name, JSON or checkpoint, its weights, fusion on or off."""

    model: str = "ovsam_rn50x16"
    checkpoint: tuple[str, ...] | None = None
    sam_checkpoint: str | None = None
    fusion: bool = True
    clean_masks: bool = True
    device: str = "auto"
    key: str = "ovsam"

    def build(self) -> OVSAMPredictor:
        checkpoint = list(self.checkpoint) if self.checkpoint else None
        model = build_ovsam(
            self.model, checkpoint=checkpoint, sam_checkpoint=self.sam_checkpoint, device=self.device
        )
        if not self.fusion:
            model.config.fusion.enabled = False
        return OVSAMPredictor(model, clean_masks=self.clean_masks)

    def describe(self) -> dict[str, Any]:
        return {
            "method": "OV-SAM",
            "model": self.model,
            "fusion": self.fusion,
            "clean_masks": self.clean_masks,
        }


@dataclass(frozen=True)
class BaselineMethod:
    """A SAM + CLIP baseline as evaluated (``ovsam_model.baselines``)."""

    kind: str
    sam: str = "vit_h"
    sam_checkpoint: str | None = None
    clip_model: str = "RN50x16"
    clip_pretrained: str | None = "openai"
    clean_masks: bool = True
    device: str = "auto"

    @property
    def key(self) -> str:
        return self.kind

    def build(self) -> Any:
        return build_baseline(
            self.kind,
            sam=self.sam,
            sam_checkpoint=self.sam_checkpoint,
            clip_model=self.clip_model,
            clip_pretrained=self.clip_pretrained,
            device=self.device,
            clean_masks=self.clean_masks,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.kind.replace("_", "-") + " baseline",
            "sam": self.sam,
            "clip_model": self.clip_model,
            "clip_pretrained": self.clip_pretrained,
            "clean_masks": self.clean_masks,
        }


Method = OVSAMMethod | BaselineMethod


# ----------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ProtocolOptions:
    """How the protocols run: detections for det-box, its score mode and cap (also COCOeval's maxDets for
    automatic), an image limit, progress, and the automatic annotator's thresholds."""

    detections: Any = None
    score_mode: str = "detector"
    max_detections: int = 100
    max_images: int | None = None
    progress: bool = True
    results_dir: str | None = None
    automatic: AutomaticSettings = AutomaticSettings()


def run_protocol(
    protocol: str, predictor: Any, data: EvaluationData, options: ProtocolOptions, results_path: Path | None
) -> dict[str, Any]:
    """One protocol's metrics for a predictor whose vocabulary is set."""
    if protocol == "automatic":
        return evaluate_automatic(
            predictor,
            data.dataset,
            settings=options.automatic,
            max_images=options.max_images,
            max_detections=options.max_detections,
            progress=options.progress,
        )
    if protocol == "det-box":
        return evaluate_detector_boxes(
            predictor,
            data.dataset,
            options.detections,
            novel_classes=data.novel,
            score_mode=options.score_mode,
            max_images=options.max_images,
            max_detections=options.max_detections,
            results_path=results_path,
            progress=options.progress,
        )
    return evaluate_gt_prompts(
        predictor,
        data.dataset,
        prompt=protocol.removeprefix("gt-"),
        novel_classes=data.novel,
        max_images=options.max_images,
        progress=options.progress,
    )


@dataclass
class MethodReport:
    """What one method scored per protocol, and how long each protocol took."""

    description: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.description, "results": self.results, "seconds": self.seconds}


def evaluate_method(
    method: Method, predictor: Any, protocols: Sequence[str], data: EvaluationData, options: ProtocolOptions
) -> MethodReport:
    """Run ``protocols`` with one method's predictor; det-box results go to ``options.results_dir``."""
    predictor.set_vocabulary(data.vocabulary)
    report = MethodReport(method.describe())
    for protocol in protocols:
        results_path = None
        if protocol == "det-box" and options.results_dir:
            Path(options.results_dir).mkdir(parents=True, exist_ok=True)
            results_path = Path(options.results_dir) / f"{method.key}_segm_results.json"
        start = time.perf_counter()
        report.results[protocol] = run_protocol(protocol, predictor, data, options, results_path)
        report.seconds[protocol] = round(time.perf_counter() - start, 3)
    return report
