"""The automatic protocol: segment and name everything with no prompt, scored against the ground truth.

On each image ``AutomaticAnnotator.annotate`` runs with the dataset's class names as vocabulary, and
``evaluate_automatic`` reports, side by side:

- ``class_aware_nms`` / ``class_agnostic_nms``: mask AP, AP50, AR (at ``max_detections`` per image) through
  pycocotools, each ``class_aware`` (categories must match) and ``class_agnostic`` (all categories as one), for
  the annotator's class-aware NMS and for the same proposals under class-agnostic NMS, named afterwards;
- ``otsu_watershed``: the classical baseline (``ovsam_model.evaluation.classical``), class-agnostic;
- ``find_all``: for each class c, ``annotate(classes=[c])``; precision and recall at mask IoU >= 0.5 against
  the ground-truth objects of class c, matched greedily by confidence (each object matched once), pooled over
  the images, and the best recall at precision >= 0.85 along the confidence ranking (``recall_at_precision``);
- ``naming``: ``name_labels`` on the ground-truth label image: the fraction of labels named with their class.

Each image is decoded once for all the annotator's runs (``CachedDecoder``). Ground-truth masks overlap in
places; the label image for ``naming`` paints them in annotation order, each taking only free pixels, and a
label left without pixels is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..automatic import AutomaticAnnotator, Instances, annotator_defaults, name_labels
from ..rle import label_rles
from .classical import OtsuWatershed
from .decode_cache import CachedDecoder
from .mask_ap import MaskAPEvaluator, encode_masks, label_to_category

#: Mask IoU at which a "find all" proposal counts as finding a ground-truth object.
FIND_ALL_IOU = 0.5
# "Find all" is scored by the best recall at this precision along the confidence ranking (pooled over images).
FIND_ALL_PRECISION = 0.85
NMS_MODES = (("class_aware_nms", False), ("class_agnostic_nms", True))
MATCHING = (("class_aware", False), ("class_agnostic", True))
DEFAULT_BASELINE = OtsuWatershed()

_ANNOTATOR_DEFAULTS = annotator_defaults()


@dataclass(frozen=True)
class AutomaticSettings:
    """The annotator's thresholds as evaluated; defaults are ``AutomaticAnnotator``'s own (see its docstring)."""

    points_per_side: int = _ANNOTATOR_DEFAULTS["points_per_side"]
    min_iou: float = _ANNOTATOR_DEFAULTS["min_iou"]
    min_stability: float = _ANNOTATOR_DEFAULTS["min_stability"]
    max_background: float = _ANNOTATOR_DEFAULTS["max_background"]
    min_score: float = _ANNOTATOR_DEFAULTS["min_score"]
    nms_iou: float = _ANNOTATOR_DEFAULTS["nms_iou"]

    def annotator(self, predictor: Any, *, class_agnostic: bool = False) -> AutomaticAnnotator:
        return AutomaticAnnotator(
            predictor, **{f.name: getattr(self, f.name) for f in fields(self)}, class_agnostic=class_agnostic
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- matching
def greedy_matches(
    predicted: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], iou: float = FIND_ALL_IOU
) -> int:
    """Predictions (COCO results: RLE ``segmentation``, ``score``) that find a ground-truth RLE with mask IoU
    >= ``iou``: visited by score, highest first, each taking the best still-unmatched object."""
    return int(match_flags(predicted, truth, iou)[1].sum())


def match_flags(
    predicted: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]], iou: float = FIND_ALL_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, matched) of the predictions, highest score first: float64 and bool (n,), matched as in
    ``greedy_matches``."""
    order = sorted(range(len(predicted)), key=lambda i: -float(predicted[i]["score"]))
    scores = np.array([float(predicted[i]["score"]) for i in order], np.float64)
    matched = np.zeros(len(order), bool)
    if not predicted or not truth:
        return scores, matched
    ious = mask_utils.iou([predicted[i]["segmentation"] for i in order], list(truth), [0] * len(truth))
    free = np.ones(len(truth), bool)
    for k, row in enumerate(np.asarray(ious).reshape(len(order), len(truth))):
        candidates = np.where(free & (row >= iou), row, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            free[best] = False
            matched[k] = True
    return scores, matched


def recall_at_precision(
    scores: np.ndarray, matched: np.ndarray, truth: int, precision: float
) -> float | None:
    """The highest recall of the predictions above any confidence cut whose precision is at least
    ``precision`` (0 when no cut reaches it; None when there is nothing to find)."""
    if truth == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(matched[order])
    kept = np.arange(1, len(order) + 1)
    reached = hits / kept >= precision
    return float(hits[reached].max() / truth) if reached.any() else 0.0


def precision_recall(found: int, predicted: int, truth: int) -> dict[str, Any]:
    """Pooled counts -> precision and recall (None where nothing was predicted / nothing is there)."""
    return {
        "precision": found / predicted if predicted else None,
        "recall": found / truth if truth else None,
        "found": found,
        "predicted": predicted,
        "objects": truth,
    }


def ground_truth_labels(masks: np.ndarray) -> np.ndarray:
    """bool (M, H, W) masks -> int32 (H, W) labels, object i as id i + 1, painted in order on free pixels."""
    labels = np.zeros(masks.shape[1:], np.int32)
    for i, mask in enumerate(masks):
        labels[mask & (labels == 0)] = i + 1
    return labels


# ---------------------------------------------------------------------------------------------- results
def instance_results(
    instances: Instances, image_id: int, category_of: Mapping[int, int]
) -> list[dict[str, Any]]:
    """COCO results of ``instances`` whose class (index into its names) has a category in ``category_of``;
    objects of other classes are dropped."""
    keep = np.array([int(c) in category_of for c in instances.class_ids], bool)
    kept = instances.select(np.flatnonzero(keep))
    names = {kept.names[label]: category for label, category in category_of.items()}
    return kept.to_coco(image_id, category_ids=names)


def label_results(
    labels: np.ndarray, scores: np.ndarray, image_id: int, category_id: int
) -> list[dict[str, Any]]:
    """COCO results of a label image (ids 1..N, ``scores`` (N,) by id), all with one category."""
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "segmentation": rle,
            "score": float(scores[label_id - 1]),
        }
        for label_id, rle, _, _ in label_rles(labels)
    ]


# --------------------------------------------------------------------------------------------- protocol
class AutomaticEvaluator:
    """Accumulates the automatic protocol image by image; ``reset`` / ``process`` / ``evaluate``.

    dataset: a ``CocoInstanceDataset`` whose class names index the predictor's vocabulary; settings: the
    annotator's thresholds; baseline: the classical method; max_detections: COCOeval's largest maxDets.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        settings: AutomaticSettings = AutomaticSettings(),
        baseline: OtsuWatershed = DEFAULT_BASELINE,
        max_detections: int = 100,
    ) -> None:
        self.dataset, self.settings, self.baseline = dataset, settings, baseline
        self.max_detections = int(max_detections)
        self.category_of = label_to_category(dataset.category_to_label)
        self.reset()

    def _evaluator(self, class_agnostic: bool) -> MaskAPEvaluator:
        return MaskAPEvaluator(
            self.dataset.coco,
            category_ids=sorted(self.dataset.category_to_label),
            max_detections=self.max_detections,
            class_agnostic=class_agnostic,
        )

    def reset(self) -> None:
        self.ap = {
            mode: {match: self._evaluator(agnostic) for match, agnostic in MATCHING} for mode, _ in NMS_MODES
        }
        self.baseline_ap = self._evaluator(True)
        self.find_all = {label: [0, 0, 0] for label in self.category_of}  # found, predicted, objects
        self.find_all_ranked: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {
            c: [] for c in self.category_of
        }
        self.named = {label: [0, 0] for label in self.category_of}  # named right, labels
        self.decoded_points: list[int] = []

    def process(self, predictor: Any, item: Mapping[str, Any]) -> None:
        """One image (``CocoInstanceDataset.load_original``'s dict) on a predictor whose vocabulary is set."""
        image_id = int(item["image_id"])
        predictor.set_image(item["image"], contrast_limits=(0.0, 255.0))  # already 0..255 model input
        cached = CachedDecoder(predictor)
        for mode, agnostic in NMS_MODES:
            found = self.settings.annotator(cached, class_agnostic=agnostic).annotate()
            results = instance_results(found, image_id, self.category_of)
            for evaluator in self.ap[mode].values():
                evaluator.process_results(image_id, results)
        truth = encode_masks(item["masks"])
        names = list(predictor.vocabulary.names)
        annotator = self.settings.annotator(cached)
        for label, counts in self.find_all.items():
            found = annotator.annotate(classes=[names[label]])
            results = instance_results(found, image_id, self.category_of)
            objects = [rle for rle, gt in zip(truth, item["labels"]) if gt == label]
            scores, matched = match_flags(results, objects)
            self.find_all_ranked[label].append((scores, matched))
            counts[0] += int(matched.sum())
            counts[1] += len(results)
            counts[2] += len(objects)
        self.decoded_points.append(cached.decoded)
        labels, scores = self.baseline.segment(item["image"])
        first_category = min(self.category_of.values(), default=1)
        self.baseline_ap.process_results(image_id, label_results(labels, scores, image_id, first_category))
        self._name_labels(predictor, item)

    def _name_labels(self, predictor: Any, item: Mapping[str, Any]) -> None:
        if len(item["masks"]) == 0:
            return
        named = name_labels(predictor, ground_truth_labels(item["masks"]))
        for label_id, class_id in zip(named.ids, named.class_ids):
            truth = int(item["labels"][int(label_id) - 1])
            if truth in self.named:
                self.named[truth][0] += int(class_id) == truth
                self.named[truth][1] += 1

    def evaluate(self) -> dict[str, Any]:
        """The report's ``automatic`` entry (see the module docstring); AP and fractions on 0..1."""
        names = self.dataset.class_names
        right = sum(c[0] for c in self.named.values())
        total = sum(c[1] for c in self.named.values())
        out: dict[str, Any] = {
            mode: {match: evaluator.evaluate() for match, evaluator in by_match.items()}
            for mode, by_match in self.ap.items()
        }
        out["otsu_watershed"] = {"class_agnostic": self.baseline_ap.evaluate()}
        out["find_all"] = {}
        for label, counts in self.find_all.items():
            ranked = self.find_all_ranked[label]
            scores = np.concatenate([r[0] for r in ranked]) if ranked else np.zeros(0)
            matched = np.concatenate([r[1] for r in ranked]) if ranked else np.zeros(0, bool)
            entry = precision_recall(*counts)
            entry["recall_at_precision"] = recall_at_precision(scores, matched, counts[2], FIND_ALL_PRECISION)
            out["find_all"][names[label]] = entry
        out["naming"] = {
            "named_right": right / total if total else None,
            "labels": total,
            "per_class": {names[label]: c[0] / c[1] if c[1] else None for label, c in self.named.items()},
        }
        out["settings"] = self.settings.to_dict()
        out["baseline"] = asdict(self.baseline)
        out["decoded_points_per_image"] = float(np.mean(self.decoded_points)) if self.decoded_points else 0.0
        return out


def evaluate_automatic(
    predictor: Any,
    dataset: Any,
    *,
    settings: AutomaticSettings = AutomaticSettings(),
    baseline: OtsuWatershed = DEFAULT_BASELINE,
    max_images: int | None = None,
    max_detections: int = 100,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the automatic protocol with an ``OVSAMPredictor`` whose vocabulary indexes ``dataset.class_names``
    on the first ``max_images`` images; returns ``AutomaticEvaluator.evaluate()``."""
    evaluator = AutomaticEvaluator(
        dataset, settings=settings, baseline=baseline, max_detections=max_detections
    )
    for index in tqdm(_indices(dataset, max_images), disable=not progress, desc="automatic"):
        evaluator.process(predictor, dataset.load_original(index))
    return evaluator.evaluate()


def _indices(dataset: Any, max_images: int | None) -> Iterable[int]:
    return range(len(dataset) if max_images is None else min(max_images, len(dataset)))
