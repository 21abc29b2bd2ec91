"""``evaluate --protocol automatic``: mask AP class-aware and class-agnostic against pycocotools, the greedy
"find all" matching, the decode cache, and a small end-to-end run with the tiny model (random weights: the
figures are not checked, only that every section is there and well formed)."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from ovsam_model.automatic import AutomaticAnnotator, Instances
from ovsam_model.data.coco import quiet_coco
from ovsam_model.data.synthetic import write_dataset
from ovsam_model.evaluate import main, parse_args
from ovsam_model.evaluation.automatic import (
    AutomaticSettings,
    greedy_matches,
    ground_truth_labels,
    instance_results,
    precision_recall,
    recall_at_precision,
)
from ovsam_model.evaluation.decode_cache import CachedDecoder
from ovsam_model.evaluation.mask_ap import MaskAPEvaluator, encode_masks

H, W = 40, 48
NAMES = ["nucleus", "rod", "ring"]
# (image id, class index, (y0, y1, x0, x1)) of non-overlapping ground-truth rectangles; category = class + 1.
OBJECTS = [
    (1, 0, (2, 12, 3, 15)),
    (1, 1, (20, 36, 10, 30)),
    (1, 2, (5, 15, 30, 44)),
    (2, 0, (0, 20, 0, 20)),
    (2, 1, (25, 38, 25, 46)),
]
CATEGORY_OF = {0: 1, 1: 2, 2: 3}


def rectangle(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def ground_truth() -> dict:
    annotations = []
    for index, (image_id, label, box) in enumerate(OBJECTS, start=1):
        mask = rectangle(*box)
        annotations.append(
            {
                "id": index,
                "image_id": image_id,
                "category_id": CATEGORY_OF[label],
                "segmentation": encode_masks(mask[None])[0],
                "area": float(mask.sum()),
                "bbox": [box[2], box[0], box[3] - box[2], box[1] - box[0]],
                "iscrowd": 0,
            }
        )
    images = [{"id": i, "height": H, "width": W, "file_name": f"im{i}.png"} for i in (1, 2)]
    categories = [{"id": CATEGORY_OF[i], "name": n} for i, n in enumerate(NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def as_instances(image_id: int, classes: dict[int, int] | None = None, shift: int = 0) -> Instances:
    """The ground truth of one image as ``Instances`` (classes: object index -> another class), masks
    shifted right by ``shift`` pixels; confidence falls with the object's order."""
    mine = [(label, box) for i, label, box in OBJECTS if i == image_id]
    labels = np.zeros((H, W), np.int32)
    class_ids = []
    for n, (label, (y0, y1, x0, x1)) in enumerate(mine):
        labels[rectangle(y0, y1, min(x0 + shift, W - 1), min(x1 + shift, W))] = n + 1
        class_ids.append((classes or {}).get(n, label))
    n = len(mine)
    scores = np.linspace(0.9, 0.5, n).astype(np.float32)
    return Instances(
        labels=labels,
        ids=np.arange(1, n + 1),
        boxes=np.zeros((n, 4), np.float32),
        class_ids=np.array(class_ids, np.int64),
        class_names=[NAMES[c] for c in class_ids],
        scores=scores,
        iou=scores.copy(),
        stability=scores.copy(),
        background=np.zeros(n, np.float32),
        confidence=scores.copy(),
        topk_names=[[NAMES[c]] for c in class_ids],
        topk_scores=scores[:, None].copy(),
        names=list(NAMES),
    )


def mask_ap(instances_of, *, class_agnostic: bool) -> dict:
    evaluator = MaskAPEvaluator(quiet_coco(ground_truth()), class_agnostic=class_agnostic)
    for image_id in (1, 2):
        evaluator.process_results(image_id, instance_results(instances_of(image_id), image_id, CATEGORY_OF))
    return evaluator.evaluate()


# ------------------------------------------------------------------------------------ mask AP vs COCOeval
def test_the_ground_truth_as_prediction_scores_one_both_ways():
    for agnostic in (False, True):
        metrics = mask_ap(as_instances, class_agnostic=agnostic)
        assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
        assert metrics["AR"] == pytest.approx(1.0) and metrics["num_detections"] == len(OBJECTS)


def test_a_wrong_class_scores_zero_class_aware_and_one_class_agnostic():
    def wrong(image_id: int) -> Instances:
        shifted = {n: (label + 1) % 3 for n, label in enumerate(o[1] for o in OBJECTS if o[0] == image_id)}
        return as_instances(image_id, classes=shifted)

    assert mask_ap(wrong, class_agnostic=False)["AP"] == pytest.approx(0.0)
    assert mask_ap(wrong, class_agnostic=False)["AR"] == pytest.approx(0.0)
    assert mask_ap(wrong, class_agnostic=True)["AP"] == pytest.approx(1.0)


def test_class_agnostic_equals_cocoeval_with_all_categories_as_one():
    """An imperfect prediction (masks shifted, IoU 0.5-0.8): ``useCats = 0`` gives the numbers of COCOeval on
    ground truth and results relabelled to a single category."""

    def shifted(image_id: int) -> Instances:
        return as_instances(image_id, classes={0: 2}, shift=3)

    metrics = mask_ap(shifted, class_agnostic=True)
    gt = ground_truth()
    results = [r for i in (1, 2) for r in instance_results(shifted(i), i, CATEGORY_OF)]
    for entry in [*gt["annotations"], *results]:
        entry["category_id"] = 1
    gt["categories"] = [{"id": 1, "name": "object"}]
    coco = quiet_coco(copy.deepcopy(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    assert 0 < metrics["AP"] < 1
    assert metrics["AP"] == pytest.approx(coco_eval.stats[0]) and metrics["AP50"] == pytest.approx(
        coco_eval.stats[1]
    )
    assert metrics["AR"] == pytest.approx(coco_eval.stats[8])


def test_instance_results_drop_classes_without_a_category():
    results = instance_results(as_instances(1), 1, {0: 1, 1: 2})  # no category for "ring"
    assert [r["category_id"] for r in results] == [1, 2]
    assert all(r["image_id"] == 1 and isinstance(r["segmentation"]["counts"], str) for r in results)


# --------------------------------------------------------------------------------------- find all <class>
def test_greedy_matching_by_confidence_matches_each_object_once():
    a, b = rectangle(0, 10, 0, 10), rectangle(20, 30, 20, 30)
    truth = encode_masks(np.stack([a, b]))

    def result(mask: np.ndarray, score: float) -> dict:
        return {"segmentation": encode_masks(mask[None])[0], "score": score}

    duplicate = [result(a, 0.9), result(a, 0.8)]
    assert greedy_matches(duplicate, truth) == 1  # the second copy of a finds nothing left
    half = rectangle(0, 10, 0, 4)  # IoU 0.4 with a
    assert greedy_matches([result(half, 0.9), result(b, 0.5)], truth) == 1
    assert greedy_matches([], truth) == 0 and greedy_matches(duplicate, []) == 0
    assert precision_recall(1, 2, 4) == {
        "precision": 0.5,
        "recall": 0.25,
        "found": 1,
        "predicted": 2,
        "objects": 4,
    }
    assert precision_recall(0, 0, 0)["precision"] is None


def test_ground_truth_labels_paint_overlaps_in_order():
    masks = np.stack([rectangle(0, 10, 0, 10), rectangle(5, 15, 5, 15), rectangle(2, 4, 2, 4)])
    labels = ground_truth_labels(masks)
    assert labels[0, 0] == 1 and labels[7, 7] == 1 and labels[12, 12] == 2
    assert 3 not in labels  # wholly under object 1: not a label any more


# ------------------------------------------------------------------------------------ settings and cache
def test_settings_default_to_the_annotators_own_and_build_it():
    annotator = AutomaticSettings().annotator(object(), class_agnostic=True)
    reference = AutomaticAnnotator(object())
    for name in ("points_per_side", "min_iou", "min_stability", "max_background", "min_score", "nms_iou"):
        assert getattr(annotator, name) == getattr(reference, name), name
    assert annotator.class_agnostic is True and reference.class_agnostic is False


def test_cached_decoder_gives_the_same_objects_and_decodes_each_point_once(tiny_predictor, image16):
    settings = AutomaticSettings(points_per_side=6, min_iou=0.0, min_stability=0.0, max_background=1.0)
    settings = AutomaticSettings(**{**settings.to_dict(), "min_score": 0.0})
    tiny_predictor.set_image(image16)
    plain = settings.annotator(tiny_predictor).annotate()
    cached = CachedDecoder(tiny_predictor)
    first = settings.annotator(cached).annotate()
    decoded = cached.decoded
    again = settings.annotator(cached, class_agnostic=True).annotate()
    assert len(plain) > 0 and decoded > 0
    np.testing.assert_array_equal(first.labels, plain.labels)
    assert first.class_names == plain.class_names
    np.testing.assert_allclose(first.confidence, plain.confidence, rtol=1e-4)
    assert cached.decoded == decoded and cached.answered >= decoded  # the second run decoded nothing
    assert again.labels.shape == plain.labels.shape
    cached.set_image(image16[::-1].copy())  # another image: nothing remembered holds
    settings.annotator(cached).annotate()
    assert cached.decoded > decoded


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("automatic")
    paths = write_dataset(root / "data", num_train=0, num_val=2, size=96, objects_per_image=(2, 3))
    return str(paths["val"])


def test_tiny_model_end_to_end_report_has_every_section(synthetic, tmp_path):
    report_path, table_path = tmp_path / "report.json", tmp_path / "report.md"
    argv = ["--model", "tiny", "--ann", synthetic, "--protocol", "automatic", "--points-per-side", "4"]
    argv += ["--min-iou", "0", "--min-stability", "0", "--max-background", "1", "--min-score", "0"]
    argv += ["--device", "cpu", "--output", str(report_path), "--markdown", str(table_path), "--quiet"]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    result = report["methods"]["ovsam"]["results"]["automatic"]
    for mode in ("class_aware_nms", "class_agnostic_nms"):
        for match in ("class_aware", "class_agnostic"):
            metrics = result[mode][match]
            assert metrics["num_images"] == 2 and all(-1 <= metrics[k] <= 1 for k in ("AP", "AP50", "AR"))
    assert result["otsu_watershed"]["class_agnostic"]["num_images"] == 2
    assert set(result["find_all"]) == {"nucleus", "rod", "ring", "cluster"}
    objects = json.loads(open(synthetic).read())["annotations"]
    assert sum(c["objects"] for c in result["find_all"].values()) == len(objects)
    assert 0 <= result["naming"]["named_right"] <= 1 and result["naming"]["labels"] >= 1
    assert result["settings"]["points_per_side"] == 4 and result["settings"]["min_iou"] == 0
    table = table_path.read_text()
    for heading in ("## automatic: mask AP", "## automatic: find all", "## automatic: naming"):
        assert heading in table
    assert "| Otsu + watershed | – | class-agnostic |" in table
    assert table.count("| OV-SAM | class-") == 4


def test_flags_default_to_the_annotator_and_reach_the_settings(synthetic):
    assert parse_args(["--ann", synthetic]).options.automatic == AutomaticSettings()
    config = parse_args(
        ["--ann", synthetic, "--protocol", "automatic", "--nms-iou", "0.3", "--points-per-side", "8"]
    )
    assert config.protocols == ("automatic",)
    assert config.options.automatic.nms_iou == 0.3 and config.options.automatic.points_per_side == 8


BAD_ARGUMENTS = [
    ("grid of 0", ["--points-per-side", "0"], "--points-per-side must be at least 1, got 0"),
    ("IoU above 1", ["--min-iou", "1.5"], "--min-iou must be a number between 0 and 1, got 1.5"),
    ("negative NMS", ["--nms-iou", "-0.1"], "--nms-iou must be a number between 0 and 1"),
    ("NaN background", ["--max-background", "nan"], "--max-background must be a number between 0 and 1"),
    ("stability word", ["--min-stability", "high"], "invalid float value: 'high'"),
    ("with baselines", ["--compare"], "leave out --baseline and --compare"),
    ("with a baseline", ["--baseline", "image_crop"], "leave out --baseline and --compare"),
]


@pytest.mark.parametrize(
    ("argv", "message"), [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS]
)
def test_bad_automatic_flags_exit_with_one_line(synthetic, capsys, argv, message):
    with pytest.raises(SystemExit) as error:
        main(["--model", "tiny", "--ann", synthetic, "--protocol", "automatic", *argv])
    err = capsys.readouterr().err
    assert error.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_recall_at_precision_is_the_best_recall_of_any_confidence_cut() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    matched = np.array([True, True, False, True, True, False])
    # cuts: 1/1, 2/2, 2/3, 3/4, 4/5, 4/6 precision; of 5 objects
    assert recall_at_precision(scores, matched, 5, 0.8) == pytest.approx(4 / 5)  # precision 0.8 at 5 kept
    assert recall_at_precision(scores, matched, 5, 0.85) == pytest.approx(2 / 5)
    assert recall_at_precision(scores[::-1], matched[::-1], 5, 0.85) == pytest.approx(2 / 5)  # any order
    assert (
        recall_at_precision(scores, ~matched, 5, 0.85) == 0.0
        and recall_at_precision(scores, matched, 0, 0.85) is None
    )
