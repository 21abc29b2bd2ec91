"""Mask AP of the detector-box protocol, checked against pycocotools' COCOeval on tiny inline ground truth."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from ovsam_model.data.coco import CocoInstanceDataset, quiet_coco
from ovsam_model.evaluation.mask_ap import (
    MaskAPEvaluator,
    detection_boxes,
    encode_masks,
    evaluate_detector_boxes,
    load_detections,
    load_results,
)
from ovsam_model.predictor import Prediction

H, W = 40, 48
# (image id, category id, (y0, y1, x0, x1)) of the ground-truth rectangles.
OBJECTS = [
    (1, 1, (2, 12, 3, 15)),
    (1, 2, (20, 36, 10, 30)),
    (1, 3, (5, 15, 30, 44)),
    (2, 1, (0, 20, 0, 20)),
    (2, 2, (25, 38, 25, 46)),
]


def rectangle(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def ground_truth(*, lvis: bool = False) -> dict:
    frequencies = ["f", "c", "r"]
    categories = [{"id": i, "name": name} for i, name in enumerate(("nucleus", "rod", "ring"), start=1)]
    if lvis:
        for cat, freq in zip(categories, frequencies):
            cat["frequency"] = freq
    anns = []
    for index, (image_id, cat, box) in enumerate(OBJECTS, start=1):
        rle = encode_masks(rectangle(*box)[None])[0]
        ann = {
            "id": index,
            "image_id": image_id,
            "category_id": cat,
            "segmentation": rle,
            "area": float(rectangle(*box).sum()),
            "bbox": [box[2], box[0], box[3] - box[2], box[1] - box[0]],
        }
        if not lvis:  # LVIS annotations carry no iscrowd field
            ann["iscrowd"] = 0
        anns.append(ann)
    images = [{"id": i, "height": H, "width": W, "file_name": f"im{i}.npy"} for i in (1, 2)]
    return {"images": images, "annotations": anns, "categories": categories}


def predictions(shift: int = 0) -> list[tuple[int, np.ndarray, int, float]]:
    """(image id, mask, category id, score) per object, the masks shifted right by ``shift`` pixels."""
    out = []
    for image_id, cat, (y0, y1, x0, x1) in OBJECTS:
        out.append((image_id, rectangle(y0, y1, min(x0 + shift, W - 1), min(x1 + shift, W)), cat, 0.9))
    return out


def run(evaluator: MaskAPEvaluator, preds, image_ids=(1, 2)) -> dict:
    evaluator.reset()
    for image_id in image_ids:
        mine = [p for p in preds if p[0] == image_id]
        masks = np.stack([p[1] for p in mine]) if mine else np.zeros((0, H, W), bool)
        evaluator.process(image_id, masks, [p[2] for p in mine], [p[3] for p in mine])
    return evaluator.evaluate()


def cocoeval_directly(gt: dict, results: list[dict], cat_ids=None) -> np.ndarray:
    coco = quiet_coco(copy.deepcopy(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(copy.deepcopy(results))
        coco_eval = COCOeval(coco, dt, iouType="segm")
        if cat_ids is not None:
            coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_perfect_predictions_give_ap_one():
    gt = ground_truth()
    metrics = run(MaskAPEvaluator(quiet_coco(gt)), predictions())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert metrics["num_images"] == 2 and metrics["num_detections"] == len(OBJECTS)


@pytest.mark.parametrize("shift", [2, 4, 7])
def test_shifted_predictions_match_cocoeval(shift):
    gt = ground_truth()
    evaluator = MaskAPEvaluator(quiet_coco(gt))
    metrics = run(evaluator, predictions(shift))
    expected = cocoeval_directly(gt, evaluator.results)
    assert metrics["AP"] < 1.0
    for i, name in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        assert metrics[name] == pytest.approx(expected[i]), name


def test_empty_predictions_give_zero_ap_without_crashing():
    gt = ground_truth()
    evaluator = MaskAPEvaluator(quiet_coco(gt), novel_category_ids=[3])
    metrics = run(evaluator, [])
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AP_novel"] == 0.0
    assert metrics["APl"] == -1.0  # no large ground truth at all: COCOeval's "undefined"
    assert metrics["num_detections"] == 0
    assert len(load_results(quiet_coco(gt), []).getAnnIds()) == 0
    evaluator.reset()
    assert evaluator.evaluate() == {"num_images": 0, "num_detections": 0}


def test_only_processed_images_are_evaluated():
    gt = ground_truth()
    metrics = run(MaskAPEvaluator(quiet_coco(gt)), predictions(), image_ids=(1,))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["num_images"] == 1


def test_base_novel_ap_equals_cocoeval_restricted_by_cat_ids():
    gt = ground_truth()
    evaluator = MaskAPEvaluator(quiet_coco(gt), novel_category_ids=[2, 3])
    preds = predictions(3)
    preds[0] = (1, preds[0][1], 1, 0.2)  # vary scores so categories differ
    metrics = run(evaluator, preds)
    assert metrics["AP_base"] == pytest.approx(cocoeval_directly(gt, evaluator.results, [1])[0])
    assert metrics["AP_novel"] == pytest.approx(cocoeval_directly(gt, evaluator.results, [2, 3])[0])


def test_lvis_frequencies_and_missing_iscrowd():
    gt = ground_truth(lvis=True)
    evaluator = MaskAPEvaluator(quiet_coco(gt))
    preds = [p for p in predictions() if p[2] != 3]  # miss the rare class
    metrics = run(evaluator, preds)
    assert metrics["APf"] == pytest.approx(1.0) and metrics["APc"] == pytest.approx(1.0)
    assert metrics["APr"] == 0.0
    assert metrics["AP"] == pytest.approx(2 / 3)  # the mean over the three categories


def test_process_checks_lengths():
    evaluator = MaskAPEvaluator(quiet_coco(ground_truth()))
    with pytest.raises(ValueError, match="category ids"):
        evaluator.process(1, np.zeros((2, H, W), bool), [1], [0.5, 0.5])


def test_load_detections_sorts_filters_and_validates(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3, "category_id": 1},
                {"image_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9, "category_id": 1},
                {"image_id": 1, "bbox": [2, 2, 5, 5], "score": 0.01, "category_id": 1},
                {"image_id": 2, "bbox": [3, 3, 5, 5], "score": 0.5, "category_id": 2},
            ]
        )
    )
    dets = load_detections(path, score_threshold=0.05)
    assert [d["score"] for d in dets[1]] == [0.9, 0.3] and len(dets[2]) == 1
    assert len(load_detections(path, max_per_image=1)[1]) == 1
    with pytest.raises(ValueError, match="entry 0"):
        load_detections([{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="x, y, w, h"):
        load_detections([{"image_id": 1, "bbox": [0, 0, 1], "score": 1.0}])


@pytest.mark.parametrize(
    ("detection", "message"),
    [
        ({"image_id": 1, "bbox": [float("nan"), 0, 1, 1], "score": 1.0}, "finite"),
        ({"image_id": 1, "bbox": [0, 0, float("inf"), 1], "score": 1.0}, "finite"),
        ({"image_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}, "finite score"),
        ({"image_id": 1, "bbox": [0, 0, -1, 1], "score": 1.0}, "w, h >= 0"),
        ({"image_id": "one", "bbox": [0, 0, 1, 1], "score": 1.0}, "'image_id' must be an integer"),
        ({"image_id": -3, "bbox": [0, 0, 1, 1], "score": 1.0}, "'image_id' must be in"),
        ({"image_id": 1, "bbox": "0 0 1 1", "score": 1.0}, "entry 0"),
        ({"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}, "entry 0"),
        ([1, 2, 3], "needs 'image_id'"),
    ],
    ids=[
        "nan-x",
        "inf-w",
        "nan-score",
        "negative-w",
        "text-id",
        "negative-id",
        "text-bbox",
        "text-score",
        "list",
    ],
)
def test_malformed_detections_name_the_entry(detection, message):
    with pytest.raises(ValueError) as error:
        load_detections([detection])
    assert message in str(error.value) and "entry 0" in str(error.value)


def test_detection_boxes_are_xyxy_clipped_to_the_image():
    boxes, scores = detection_boxes(
        [
            {"bbox": [10, 5, 20, 10], "score": 0.9},
            {"bbox": [-5, 30, 100, 20], "score": 0.8},
            {"bbox": [60, 0, 5, 5], "score": 0.7},
        ],
        (40, 48),
    )
    np.testing.assert_allclose(boxes, [[10, 5, 30, 15], [0, 30, 48, 40]])
    np.testing.assert_allclose(scores, [0.9, 0.8])


class OraclePredictor:
    """Answers each box with the ground-truth instance whose box it is; checks the boxes' frame."""

    def __init__(self, objects, probability: float = 0.5) -> None:
        self.objects = objects  # {image (bytes): [(box XYXY, mask, label)]}
        self.probability = probability

    def set_vocabulary(self, vocabulary) -> None:
        pass

    def set_image(self, image, contrast_limits=None) -> None:
        self.current = self.objects[image.tobytes()]

    def predict(self, points=None, point_labels=None, boxes=None, multimask_output=False, top_k=5):
        masks, labels = [], []
        for box in np.asarray(boxes):
            match = [(m, label) for b, m, label in self.current if np.allclose(b, box)]
            assert match, f"box {box} is not a ground-truth box in original-image pixels"
            masks.append(match[0][0])
            labels.append(match[0][1])
        n = len(labels)
        ids = np.array(labels, np.int64)
        return Prediction(
            np.stack(masks)[:, None],
            np.ones((n, 1), np.float32),
            ids,
            [""] * n,
            np.full(n, self.probability, np.float32),
            ids[:, None],
            np.full((n, 1), self.probability, np.float32),
            [[""]] * n,
            np.zeros((n, 1, 4, 4), np.float32),
        )


@pytest.fixture
def npy_dataset(tmp_path):
    gt = ground_truth()
    rng = np.random.default_rng(0)
    for image in gt["images"]:
        np.save(tmp_path / image["file_name"], rng.integers(0, 255, (H, W), dtype=np.uint8))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return CocoInstanceDataset(tmp_path / "gt.json", train=False), gt


def oracle_for(dataset) -> OraclePredictor:
    from ovsam_model.data.transforms import masks_to_boxes

    objects = {}
    for index in range(len(dataset)):
        item = dataset.load_original(index)
        boxes = masks_to_boxes(item["masks"]).numpy()
        objects[item["image"].tobytes()] = list(zip(boxes, item["masks"], item["labels"]))
    return OraclePredictor(objects)


def gt_detections(gt: dict, score: float = 0.9) -> dict:
    return load_detections(
        [{"image_id": a["image_id"], "bbox": a["bbox"], "score": score} for a in gt["annotations"]]
    )


def test_detector_box_protocol_with_an_oracle_gives_ap_one(npy_dataset, tmp_path):
    dataset, gt = npy_dataset
    results = tmp_path / "segm.json"
    metrics = evaluate_detector_boxes(
        oracle_for(dataset), dataset, gt_detections(gt), novel_classes=["ring"], results_path=results
    )
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP_novel"] == pytest.approx(1.0)
    written = json.loads(results.read_text())
    assert len(written) == len(OBJECTS) and {r["category_id"] for r in written} == {1, 2, 3}
    assert all(r["score"] == pytest.approx(0.9) for r in written)  # the detector score is kept


def test_detector_x_class_score_and_images_without_detections(npy_dataset, tmp_path):
    dataset, gt = npy_dataset
    dets = gt_detections(gt)
    del dets[2]
    results = tmp_path / "segm.json"
    metrics = evaluate_detector_boxes(
        oracle_for(dataset), dataset, dets, score_mode="detector_x_class", results_path=results
    )
    assert metrics["num_images"] == 2 and metrics["num_detections"] == 3
    assert 0 < metrics["AP"] < 1  # image 2's objects are missed
    assert all(r["score"] == pytest.approx(0.45) for r in json.loads(results.read_text()))
    with pytest.raises(ValueError, match="score_mode"):
        evaluate_detector_boxes(oracle_for(dataset), dataset, dets, score_mode="max")
