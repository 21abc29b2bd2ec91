"""``python -m ovsam_model.evaluate`` end to end on a tiny synthetic dataset, the GT-prompt evaluator on
hand-made inputs, and the base/novel split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovsam_model.data.synthetic import write_dataset
from ovsam_model.evaluate import build_parser, load_data, main, markdown_report
from ovsam_model.evaluation.gt_prompts import GTPromptEvaluator, evaluate_gt_prompts, gt_prompts

TINY_BASELINES = ["--sam", "tiny", "--clip-model", "ovsam-tiny-RN", "--clip-pretrained", "none"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """4 validation images of 128 px with 2-4 objects each, and a detections file made from the GT boxes."""
    root = tmp_path_factory.mktemp("synthetic")
    paths = write_dataset(root / "data", num_train=0, num_val=4, size=128, objects_per_image=(2, 4))
    gt = json.loads(paths["val"].read_text())
    detections = [
        {
            "image_id": a["image_id"],
            "bbox": a["bbox"],
            "score": 0.5 + 0.1 * (a["id"] % 4),
            "category_id": a["category_id"],
        }
        for a in gt["annotations"]
    ]
    (root / "dets.json").write_text(json.dumps(detections))
    return {
        "ann": str(paths["val"]),
        "dets": str(root / "dets.json"),
        "instances": len(gt["annotations"]),
        "root": root,
    }


@pytest.mark.slow
def test_compare_writes_one_report_with_all_methods(synthetic, tmp_path):
    report_path, table_path = tmp_path / "report.json", tmp_path / "report.md"
    code = main(
        [
            "--model",
            "tiny",
            "--compare",
            *TINY_BASELINES,
            "--ann",
            synthetic["ann"],
            "--protocol",
            "gt-box",
            "gt-point",
            "--protocol",
            "det-box",
            "--detections",
            synthetic["dets"],
            "--device",
            "cpu",
            "--output",
            str(report_path),
            "--markdown",
            str(table_path),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["protocols"] == ["gt-box", "gt-point", "det-box"]
    assert report["num_images"] == 4 and report["vocabulary_size"] == 4
    assert list(report["methods"]) == ["ovsam", "image_crop", "feature_crop"]
    for method in report["methods"].values():
        for kind in ("gt-box", "gt-point"):
            result = method["results"][kind]
            assert result["count"] == synthetic["instances"]
            assert 0 <= result["miou"] <= 1 and 0 <= result["acc"] <= 100
        ap = method["results"]["det-box"]
        assert ap["num_detections"] == synthetic["instances"] and ap["num_images"] == 4
        assert all(-1 <= ap[k] <= 1 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
        assert set(method["seconds"]) == set(report["protocols"])
    table = table_path.read_text()
    for heading in ("## gt-box", "## gt-point", "## det-box"):
        assert heading in table
    rows = [line for line in table.splitlines() if line.startswith("| OV-SAM |")]
    assert len(rows) == 3
    miou = float(rows[0].split("|")[2])
    assert 0 <= miou <= 100
    assert "| image-crop baseline |" in table and "| feature-crop baseline |" in table


def test_single_model_default_protocols_without_fusion(synthetic, tmp_path):
    report_path = tmp_path / "report.json"
    main(
        [
            "--model",
            "tiny",
            "--no-fusion",
            "--ann",
            synthetic["ann"],
            "--max-images",
            "2",
            "--device",
            "cpu",
            "--output",
            str(report_path),
            "--quiet",
        ]
    )
    report = json.loads(report_path.read_text())
    assert report["num_images"] == 2 and list(report["methods"]) == ["ovsam"]
    assert report["methods"]["ovsam"]["fusion"] is False
    assert set(report["methods"]["ovsam"]["results"]) == {"gt-box", "gt-point"}


def test_one_baseline_alone(synthetic, tmp_path, capsys):
    main(
        [
            "--baseline",
            "feature_crop",
            *TINY_BASELINES,
            "--ann",
            synthetic["ann"],
            "--protocol",
            "gt-point",
            "--max-images",
            "1",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert "| feature-crop baseline |" in out and "OV-SAM" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--protocol", "det-box"], "needs --detections"),
        (["--compare", "--baseline", "image_crop"], "leave out --baseline"),
        (["--max-images", "0"], "at least 1"),
        (["--vocabulary", "no-such-preset"], "Unknown vocabulary preset"),
        (["--split", "ovcoco"], "usable instance"),
        (["--baseline", "image_crop", "--sam", "vit_b"], "sam_vit_b_01ec64.pth"),
        (["--model", "no_such_config"], "cannot build ovsam"),
        (["--split", "ovcoco", "--vocabulary", "demo"], "vocabulary is empty"),
        (["--max-detections", "0"], "--max-detections must be at least 1"),
        (["--protocol", "det-box", "--detections", "missing.json"], "missing.json"),
        (["--max-images", "two"], "invalid int value"),
        (["--split", "coco"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_message(synthetic, capsys, argv, message):
    with pytest.raises(SystemExit) as error:
        main(["--model", "tiny", "--ann", synthetic["ann"], *argv])
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_every_flag_has_help():
    for action in build_parser()._actions:
        assert action.help, action.dest


# --------------------------------------------------------------------------------- the GT-prompt evaluator
def test_gt_prompt_evaluator_perfect_and_wrong_predictions():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4, :4] = masks[1, 4:, 4:] = masks[2, 2:6, 2:6] = True
    labels = np.array([0, 1, 2])
    evaluator = GTPromptEvaluator(["nucleus", "rod", "ring"], novel_classes=["ring"])
    evaluator.process(masks, labels, masks, labels)
    metrics = evaluator.evaluate()
    assert metrics["miou"] == 1.0 and metrics["acc"] == 100.0 and metrics["count"] == 3
    assert metrics["base_iou"] == metrics["novel_iou"] == 1.0
    evaluator.reset()
    half = masks.copy()
    half[0, :2] = False  # IoU 1/2 for the first instance
    evaluator.process(masks, labels, half, np.array([0, 2, 1]))
    metrics = evaluator.evaluate()
    assert metrics["miou"] == pytest.approx((0.5 + 1 + 1) / 3) and metrics["acc"] == pytest.approx(100 / 3)
    assert metrics["base_iou"] == pytest.approx(0.75) and metrics["base_acc"] == pytest.approx(50.0)
    assert metrics["novel_iou"] == 1.0 and metrics["novel_acc"] == 0.0
    evaluator.reset()
    assert evaluator.evaluate() == {"count": 0}


def test_gt_prompts_are_boxes_or_interior_points():
    masks = np.zeros((1, 10, 12), bool)
    masks[0, 2:7, 3:10] = True
    np.testing.assert_array_equal(gt_prompts(masks, "box")["boxes"], [[3, 2, 10, 7]])
    point = gt_prompts(masks, "point")
    assert (
        point["points"].shape == (1, 1, 2)
        and masks[0, int(point["points"][0, 0, 1]), int(point["points"][0, 0, 0])]
    )
    with pytest.raises(ValueError, match="Unknown prompt kind"):
        gt_prompts(masks, "scribble")


# ------------------------------------------------------------------------------------------ base / novel
@pytest.fixture
def ovcoco_like(tmp_path):
    """One 32 x 40 image with a base (person), a novel (dog) and an excluded (traffic light) instance."""
    from ovsam_model.evaluation.mask_ap import encode_masks

    np.save(tmp_path / "im.npy", np.random.default_rng(0).integers(0, 255, (32, 40), dtype=np.uint8))
    boxes = {1: (2, 12, 2, 14), 18: (15, 30, 5, 25), 10: (3, 10, 25, 38)}  # category id -> y0, y1, x0, x1
    anns = []
    for i, (cat, (y0, y1, x0, x1)) in enumerate(boxes.items(), start=1):
        mask = np.zeros((32, 40), bool)
        mask[y0:y1, x0:x1] = True
        anns.append(
            {
                "id": i,
                "image_id": 1,
                "category_id": cat,
                "segmentation": encode_masks(mask[None])[0],
                "area": float(mask.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
            }
        )
    categories = [{"id": 1, "name": "person"}, {"id": 10, "name": "traffic light"}, {"id": 18, "name": "dog"}]
    data = {
        "images": [{"id": 1, "file_name": "im.npy", "height": 32, "width": 40}],
        "annotations": anns,
        "categories": categories,
    }
    (tmp_path / "gt.json").write_text(json.dumps(data))
    return tmp_path / "gt.json"


def test_ovcoco_split_drops_excluded_classes_and_marks_novel_ones(ovcoco_like):
    data = load_data(ovcoco_like, split="ovcoco")
    dataset, vocabulary, novel = data.dataset, data.vocabulary, data.novel
    assert len(vocabulary) == 65 and len(novel) == 17 and "dog" in novel and "person" not in novel
    assert vocabulary.seen[vocabulary.index("person")] and not vocabulary.seen[vocabulary.index("dog")]
    assert sorted(dataset.category_to_label) == [1, 18]  # traffic light is out
    item = dataset.load_original(0)
    names = [dataset.class_names[label] for label in item["labels"]]
    assert sorted(names) == ["dog", "person"]


def test_base_novel_metrics_with_an_oracle(ovcoco_like):
    data = load_data(ovcoco_like, split="ovcoco")
    dataset, novel = data.dataset, data.novel

    class Oracle:  # right masks, names everything "person"
        def set_image(self, image, contrast_limits=None):
            self.item = dataset.load_original(0)

        def predict(self, points=None, point_labels=None, boxes=None, multimask_output=False, top_k=5):
            from types import SimpleNamespace

            person = dataset.class_names.index("person")
            return SimpleNamespace(
                masks=self.item["masks"][:, None], class_ids=np.full(len(self.item["masks"]), person)
            )

    metrics = evaluate_gt_prompts(Oracle(), dataset, prompt="box", novel_classes=novel)
    assert metrics["miou"] == 1.0 and metrics["acc"] == 50.0
    assert metrics["base_acc"] == 100.0 and metrics["novel_acc"] == 0.0


def test_markdown_marks_undefined_and_missing_values():
    report = {
        "ann": "x.json",
        "num_images": 1,
        "vocabulary_size": 2,
        "split": "none",
        "protocols": ["det-box"],
        "methods": {
            "ovsam": {"method": "OV-SAM", "results": {"det-box": {"AP": 0.5, "APl": -1.0}}},
            "image_crop": {"method": "image-crop baseline", "results": {"det-box": {"AP": 0.25}}},
        },
    }
    table = markdown_report(report)
    assert "| OV-SAM | 50.0 | n/a |" in table and "| image-crop baseline | 25.0 | – |" in table


def test_missing_annotation_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main(["--model", "tiny", "--ann", str(tmp_path / "nope.json"), "--quiet"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "nope.json" in err and "Traceback" not in err
