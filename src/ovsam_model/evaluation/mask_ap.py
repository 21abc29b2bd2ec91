"""The detector-box protocol: mask AP of the masks that a detector's boxes prompt, through pycocotools.

A detector's COCO results JSON (``[{"image_id", "bbox": [x, y, w, h], "score", ...}]``, boxes in pixels of the
original image) gives the box prompts. Each image is given to the predictor at its original resolution and the
boxes stay in that frame: the predictor scales them to its input frame together with the image (the official
code fed ground-truth boxes in the wrong, unscaled frame). Each mask is named by the predictor (the detector's
own ``category_id`` is not used); its score is the detector score (``score_mode="detector"``, the default, as
the official code kept it) or the detector score x the class probability (``"detector_x_class"``).

Metrics come from ``COCOeval(iouType="segm")`` on 0..1 (-1 where a subset has no ground truth): AP, AP50,
AP75, APs, APm, APl, AR (average recall at ``max_detections`` per image, AR@100 by default), plus AP over
base / novel categories and, when the categories carry LVIS ``frequency`` fields, APr / APc / APf. The subsets
are read from the same COCOeval run (its per-category precision), which equals a run restricted by
``params.catIds``. ``class_agnostic=True`` matches across categories (``useCats = 0``), without subsets.
LVIS note: COCOeval is not the federated LVIS metric (no ``not_exhaustive`` / negative categories); for
official LVIS numbers use the ``lvis`` package on the written results.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..data.coco_checks import check_id

SCORE_MODES = ("detector", "detector_x_class")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# COCOeval.stats[8]: average recall at the most detections per image (``max_detections``, 100 by default).
AR_STAT = 8
LVIS_FREQUENCIES = {"r": "APr", "c": "APc", "f": "APf"}


# ------------------------------------------------------------------------------------------- detections
def load_detections(
    source: str | Path | Sequence[Mapping[str, Any]],
    *,
    score_threshold: float = 0.0,
    max_per_image: int | None = None,
) -> dict[int, list[dict[str, Any]]]:
    """Read detector results (a COCO results JSON file or its list) into {image_id: detections}.

    Each detection keeps ``bbox`` [x, y, w, h] (original-image pixels) and ``score``; per image they are
    sorted by score (highest first), those below ``score_threshold`` dropped and at most ``max_per_image``
    kept. Raises a ``ValueError`` naming the first malformed entry.
    """
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8") as f:
            entries = json.load(f)
        where = str(source)
    else:
        entries, where = list(source), "detections"
    if not isinstance(entries, list):
        raise ValueError(
            f"{where}: a COCO results file is a list of detections, got {type(entries).__name__}."
        )
    out: dict[int, list[dict[str, Any]]] = {}
    for i, det in enumerate(entries):
        image_id, box, score = _check_detection(det, f"{where}: entry {i}")
        if score >= score_threshold:
            out.setdefault(image_id, []).append({"bbox": box, "score": score})
    for dets in out.values():
        dets.sort(key=lambda d: -d["score"])
        if max_per_image is not None:
            del dets[max_per_image:]
    return out


def _check_detection(det: Any, where: str) -> tuple[int, list[float], float]:
    """(image_id, [x, y, w, h], score) of one detection, or a ValueError saying what is wrong with it."""
    if not isinstance(det, Mapping) or any(k not in det for k in ("image_id", "bbox", "score")):
        raise ValueError(f"{where} needs 'image_id', 'bbox' [x, y, w, h] and 'score'.")
    try:
        image_id = check_id(det["image_id"], "'image_id'")
        box = [float(v) for v in det["bbox"]]
        score = float(det["score"])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: {error}; expected an integer image_id, bbox [x, y, w, h] and a score."
        ) from None
    if len(box) != 4 or not np.isfinite([*box, score]).all() or box[2] < 0 or box[3] < 0:
        raise ValueError(
            f"{where} has bbox {det['bbox']} and score {det['score']}; expected finite [x, y, w, h] with w, h >= 0 "
            "and a finite score."
        )
    return image_id, box, score


def detection_boxes(
    detections: Sequence[Mapping[str, Any]], image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """XYWH detections -> (boxes float32 (n, 4) XYXY clipped to the (H, W) image, scores float32 (n,)).

    Boxes with no area left inside the image are dropped (they cannot prompt anything).
    """
    h, w = image_size
    boxes = np.array([d["bbox"] for d in detections], dtype=np.float32).reshape(-1, 4)
    scores = np.array([d["score"] for d in detections], dtype=np.float32)
    boxes[:, 2:] += boxes[:, :2]
    boxes = np.clip(boxes, 0, np.array([w, h, w, h], dtype=np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep]


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """bool (N, H, W) masks -> COCO RLEs (``counts`` as str, JSON-ready)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


# ------------------------------------------------------------------------------------------- evaluator
def _quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def _complete_ground_truth(coco: COCO) -> COCO:
    """COCOeval needs ``iscrowd`` and ``area`` on every annotation (LVIS has no ``iscrowd``): add them."""
    anns = coco.dataset["annotations"]
    if all("iscrowd" in a and "area" in a for a in anns):
        return coco
    filled = []
    for ann in anns:
        ann = dict(ann, iscrowd=ann.get("iscrowd", 0))
        if "area" not in ann:
            ann["area"] = float(mask_utils.area(coco.annToRLE(ann)))
        filled.append(ann)
    out = COCO()
    out.dataset = dict(coco.dataset, annotations=filled)
    _quiet(out.createIndex)
    return out


def load_results(coco_gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """``coco_gt.loadRes`` that also accepts an empty list (pycocotools fails on it): no detections."""
    if results:
        return _quiet(coco_gt.loadRes, copy.deepcopy(results))
    empty = COCO()
    empty.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    _quiet(empty.createIndex)
    return empty


class MaskAPEvaluator:
    """Collects COCO segm results per image and scores them with COCOeval; ``reset`` / ``process`` / ``evaluate``.

    Args:
        coco_gt: the ground truth (pycocotools ``COCO``).
        category_ids: categories to evaluate (default: all of ``coco_gt``).
        novel_category_ids: categories reported as ``AP_novel`` (the others of ``category_ids`` as
            ``AP_base``); empty: no split.
        max_detections: COCOeval's largest maxDets (100; LVIS uses 300).
        class_agnostic: match predictions to ground truth whatever their categories (COCOeval's
            ``useCats = 0``: all categories as one); the category subsets are then not reported.
    """

    def __init__(
        self,
        coco_gt: COCO,
        *,
        category_ids: Iterable[int] | None = None,
        novel_category_ids: Iterable[int] = (),
        max_detections: int = 100,
        class_agnostic: bool = False,
    ) -> None:
        self.coco_gt = _complete_ground_truth(coco_gt)
        ids = self.coco_gt.getCatIds() if category_ids is None else category_ids
        self.category_ids = sorted(int(c) for c in ids)
        self.novel_category_ids = {int(c) for c in novel_category_ids}
        self.max_detections = int(max_detections)
        self.class_agnostic = bool(class_agnostic)
        self.reset()

    def reset(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.image_ids: set[int] = set()

    def process(
        self, image_id: int, masks: np.ndarray, category_ids: Sequence[int], scores: Sequence[float]
    ) -> None:
        """One image's predictions: masks bool (N, H, W) at the original size, COCO category ids (N,),
        scores (N,). An image with no predictions is still counted (its ground truth are misses)."""
        if not len(masks) == len(category_ids) == len(scores):
            raise ValueError(f"{len(masks)} masks, {len(category_ids)} category ids, {len(scores)} scores.")
        self.image_ids.add(int(image_id))
        for rle, cat, score in zip(encode_masks(masks), category_ids, scores):
            self.results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(cat),
                    "segmentation": rle,
                    "score": float(score),
                }
            )

    def process_results(self, image_id: int, results: Sequence[Mapping[str, Any]]) -> None:
        """One image's predictions as COCO results (``category_id``, RLE ``segmentation``, ``score``; e.g.
        ``Instances.to_coco``); other keys are dropped. An empty list still counts the image."""
        self.image_ids.add(int(image_id))
        for result in results:
            self.results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(result["category_id"]),
                    "segmentation": result["segmentation"],
                    "score": float(result["score"]),
                }
            )

    def write_results(self, path: str | Path) -> None:
        """Write the collected results as a COCO results JSON (e.g. for the official LVIS evaluator)."""
        Path(path).write_text(json.dumps(self.results), encoding="utf-8")

    def evaluate(self) -> dict[str, float]:
        """AP metrics on 0..1 (see the module docstring) plus ``num_images`` and ``num_detections``."""
        if not self.image_ids:
            return {"num_images": 0, "num_detections": 0}
        coco_eval = COCOeval(self.coco_gt, load_results(self.coco_gt, self.results), iouType="segm")
        coco_eval.params.imgIds = sorted(self.image_ids)
        coco_eval.params.catIds = self.category_ids
        coco_eval.params.maxDets = [1, 10, self.max_detections]
        coco_eval.params.useCats = 0 if self.class_agnostic else 1
        _quiet(coco_eval.evaluate)
        _quiet(coco_eval.accumulate)
        _quiet(coco_eval.summarize)
        out: dict[str, float] = {name: float(v) for name, v in zip(STAT_NAMES, coco_eval.stats)}
        out["AR"] = float(coco_eval.stats[AR_STAT])
        for name, subset in ({} if self.class_agnostic else self._subsets()).items():
            out[name] = subset_ap(coco_eval, subset)
        out["num_images"] = len(self.image_ids)
        out["num_detections"] = len(self.results)
        return out

    def _subsets(self) -> dict[str, set[int]]:
        subsets: dict[str, set[int]] = {}
        evaluated = set(self.category_ids)
        if self.novel_category_ids:
            subsets["AP_base"] = evaluated - self.novel_category_ids
            subsets["AP_novel"] = evaluated & self.novel_category_ids
        cats = self.coco_gt.loadCats(self.category_ids)
        if cats and all("frequency" in c for c in cats):
            for code, name in LVIS_FREQUENCIES.items():
                subsets[name] = {int(c["id"]) for c in cats if c["frequency"] == code}
        return subsets


def subset_ap(coco_eval: COCOeval, category_ids: set[int]) -> float:
    """AP (IoU 0.50:0.95, all areas, most detections) over ``category_ids`` of an accumulated COCOeval:
    the same number as a COCOeval run with ``params.catIds`` restricted to them; -1 without ground truth."""
    order = list(coco_eval.params.catIds)
    index = [order.index(c) for c in sorted(category_ids) if c in order]
    precision = coco_eval.eval["precision"][:, :, index, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


# ---------------------------------------------------------------------------------------------- protocol
def label_to_category(category_to_label: Mapping[int, int]) -> dict[int, int]:
    """Invert a dataset's {category id: label} (the lowest category id wins where labels repeat)."""
    out: dict[int, int] = {}
    for cat, label in sorted(category_to_label.items()):
        out.setdefault(int(label), int(cat))
    return out


def evaluate_detector_boxes(
    predictor,
    dataset,
    detections: Mapping[int, Sequence[Mapping[str, Any]]],
    *,
    novel_classes: Iterable[str] = (),
    score_mode: str = "detector",
    max_images: int | None = None,
    max_detections: int = 100,
    results_path: str | Path | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Mask AP of ``predictor``'s masks and names for the detector's boxes, image by image.

    Args:
        predictor: any predictor of the ``OVSAMPredictor`` interface, its vocabulary indexed like
            ``dataset.class_names``.
        dataset: a ``CocoInstanceDataset`` (``load_original``, ``records``, ``category_to_label``, ``coco``).
        detections: {image_id: [{"bbox": XYWH, "score"}]} (``load_detections``).
        novel_classes: entries of ``dataset.class_names`` reported as ``AP_novel``.
        score_mode: "detector" (keep the detector score) or "detector_x_class".
        results_path: where to write the COCO segm results JSON (optional).

    Masks named with a class that has no category in the dataset are dropped.
    """
    if score_mode not in SCORE_MODES:
        raise ValueError(f"Unknown score_mode '{score_mode}'; use one of {SCORE_MODES}.")
    to_category = label_to_category(dataset.category_to_label)
    novel = set(novel_classes)
    evaluator = MaskAPEvaluator(
        dataset.coco,
        category_ids=sorted(dataset.category_to_label),
        novel_category_ids=[
            c for c, label in dataset.category_to_label.items() if dataset.class_names[label] in novel
        ],
        max_detections=max_detections,
    )
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in tqdm(range(count), disable=not progress, desc="detector boxes"):
        record = dataset.records[index]
        boxes, scores = detection_boxes(detections.get(record.image_id, []), (record.height, record.width))
        if len(boxes) == 0:
            evaluator.process(record.image_id, np.zeros((0, record.height, record.width), bool), [], [])
            continue
        item = dataset.load_original(index)
        predictor.set_image(item["image"], contrast_limits=(0.0, 255.0))  # already 0..255 model input
        result = predictor.predict(boxes=boxes, multimask_output=False)
        keep = np.array([int(label) in to_category for label in result.class_ids], dtype=bool)
        if score_mode == "detector_x_class":
            scores = scores * result.scores
        categories = [to_category[int(label)] for label in result.class_ids[keep]]
        evaluator.process(record.image_id, result.masks[keep, 0], categories, scores[keep])
    if results_path is not None:
        evaluator.write_results(results_path)
    return evaluator.evaluate()
