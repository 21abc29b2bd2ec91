"""Segment and name everything (``AutomaticAnnotator``) and naming existing labels (``name_labels``).

Most tests drive the annotator with a scripted predictor whose answers are known (``ScriptedPredictor``: a point
on object i gives object i's mask and class, a point on background a blob with a high background probability),
so that each filter, NMS, the overlap resolution and the class filter can be checked exactly; the tiny model
(random weights) runs the real decoding paths, whole and tiled, end to end.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

from ovsam_model.automatic import AutomaticAnnotator, Instances, coco_categories, name_labels
from ovsam_model.modeling.ovsam import OVSAM
from ovsam_model.prediction import Prediction, TorchPrediction
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.tiling import TileSpec

SIDE = 64  # scripted image, model input and low-resolution mask frame all 64 x 64: no change of frame
NAMES = ["nucleus", "rod"]
# Filters off; masks kept as the clicks give them (the box refinement has its own test).
LOOSE = dict(min_iou=0.0, min_stability=0.0, min_score=0.0, max_background=1.0, min_area=1, refine=False)


def scene() -> tuple[np.ndarray, list[int]]:
    """GT label image (64 x 64) with three squares (ids 1-3) and the class of each (0 nucleus, 1 rod)."""
    labels = np.zeros((SIDE, SIDE), np.int32)
    labels[4:20, 4:20] = 1
    labels[30:50, 8:24] = 2
    labels[36:60, 36:60] = 3
    return labels, [0, 1, 0]


class ScriptedPredictor:
    """What ``AutomaticAnnotator`` uses of ``OVSAMPredictor``, answering from a known label image.

    A point on object i: object i's mask (logit +8 inside, -8 outside), predicted IoU ``ious[i]``, class
    ``classes[i]`` with probability 0.8 and background 0.1. A point on background: a disk of radius 4 around the
    point, predicted IoU 0.8, background probability 0.9. ``overrides`` maps an object id to another mask.
    """

    def __init__(self, labels: np.ndarray, classes: list[int], ious: list[float] | None = None) -> None:
        self.gt = labels
        self.classes = classes
        self.ious = ious or [0.9] * len(classes)
        self.model = SimpleNamespace(config=SimpleNamespace(image_size=SIDE))
        self.model.upscale_masks = lambda logits, input_size, original_size: OVSAM.upscale_masks(
            self.model, logits, input_size, original_size
        )
        self.device = torch.device("cpu")
        self.features = object()
        self.original_size = self.input_size = (SIDE, SIDE)
        self.tiles = None
        self.vocabulary = SimpleNamespace(names=list(NAMES))
        self.overrides: dict[int, np.ndarray] = {}
        self.points_seen = 0

    def set_image(self, image, contrast_limits=None) -> None:
        self.original_size = self.input_size = tuple(np.asarray(image).shape[:2])

    def predict_torch(self, features, prompts, *, multimask_output: bool = False) -> TorchPrediction:
        points = prompts.points[:, 0].numpy()
        self.points_seen += len(points)
        m = 3 if multimask_output else 1
        yy, xx = np.mgrid[:SIDE, :SIDE]
        logits = np.full((len(points), m, SIDE, SIDE), -8.0, np.float32)
        iou = np.zeros((len(points), m), np.float32)
        probs = np.zeros((len(points), len(NAMES) + 1), np.float32)
        for n, (x, y) in enumerate(points):
            label = int(self.gt[int(y), int(x)])
            if label:
                mask = self.overrides.get(label, self.gt == label)
                iou[n] = self.ious[label - 1]
                probs[n, self.classes[label - 1]], probs[n, -1] = 0.8, 0.1
                probs[n, 1 - self.classes[label - 1]] = 0.1
            else:
                mask = (yy - y) ** 2 + (xx - x) ** 2 <= 16
                iou[n], probs[n, 0], probs[n, -1] = 0.8, 0.1, 0.9
            logits[n, :, mask] = 8.0
        return TorchPrediction(torch.from_numpy(logits), torch.from_numpy(iou), torch.from_numpy(probs))


def same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    """True when two label images hold the same objects, whatever their ids."""
    pairs = {(int(a), int(b)) for a, b in zip(found.ravel(), truth.ravel())}
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_everything_is_found_named_and_background_rejected() -> None:
    gt, classes = scene()
    annotator = AutomaticAnnotator(
        ScriptedPredictor(gt, classes), points_per_side=16, **{**LOOSE, "max_background": 0.5}
    )
    found = annotator.annotate()
    assert len(found) == 3 and same_partition(found.labels, gt)
    by_class = {found.class_names[i]: found.mask(i).sum() for i in range(3)}
    assert sorted(found.class_names) == ["nucleus", "nucleus", "rod"] and by_class["rod"] == (gt == 2).sum()
    assert np.allclose(found.scores, 0.8) and np.allclose(found.background, 0.1)
    assert np.allclose(found.confidence, 0.9 * 0.8)
    for i in range(3):  # boxes are the painted pixels' bounds
        rows, cols = np.nonzero(found.mask(i))
        assert list(found.boxes[i]) == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_without_the_background_filter_background_blobs_become_objects() -> None:
    gt, classes = scene()
    found = AutomaticAnnotator(ScriptedPredictor(gt, classes), points_per_side=16, **LOOSE).annotate()
    assert len(found) > 3  # the blobs on background: only the background class tells them apart
    assert set(np.unique(found.labels[gt > 0])) <= set(found.ids)


def test_predicted_iou_filter() -> None:
    gt, classes = scene()
    predictor = ScriptedPredictor(gt, classes, ious=[0.9, 0.4, 0.9])
    found = AutomaticAnnotator(
        predictor, points_per_side=16, **{**LOOSE, "max_background": 0.5, "min_iou": 0.5}
    ).annotate()
    assert len(found) == 2 and not found.labels[gt == 2].any()


def test_classes_keep_only_objects_whose_best_class_is_asked_for() -> None:
    gt, classes = scene()
    options = {**LOOSE, "max_background": 0.5}
    found = AutomaticAnnotator(ScriptedPredictor(gt, classes), points_per_side=16, **options).annotate(
        classes="rod"
    )
    assert found.class_names == ["rod"] and np.array_equal(found.mask(0), gt == 2)
    with pytest.raises(ValueError, match="no class 'mitochondrion'.*nucleus, rod"):
        AutomaticAnnotator(ScriptedPredictor(gt, classes), **options).annotate(classes=["mitochondrion"])


def test_overlaps_are_resolved_best_first_into_one_label_image() -> None:
    gt, classes = scene()
    predictor = ScriptedPredictor(gt, classes, ious=[0.9, 0.95, 0.9])
    grown = np.zeros_like(gt, bool)
    grown[26:54, 8:44] = True  # object 2's mask overlaps object 3's square
    predictor.overrides[2] = grown
    options = {**LOOSE, "max_background": 0.5, "agreement": False}  # painted in predicted-IoU order
    found = AutomaticAnnotator(predictor, points_per_side=16, **options).annotate()
    assert len(found) == 3
    rod = found.mask(found.class_names.index("rod"))
    assert np.array_equal(rod, grown)  # the most confident object keeps its whole mask
    third = found.labels[(gt == 3) & ~grown]
    assert (third == third[0]).all() and not np.isin(found.labels[grown], third[0]).any()


class PartsPredictor(ScriptedPredictor):
    """Points on the left quarter of object 3 give that quarter, with a higher predicted IoU than the whole."""

    def predict_torch(self, features, prompts, *, multimask_output: bool = False) -> TorchPrediction:
        out = super().predict_torch(features, prompts, multimask_output=multimask_output)
        for n, (x, y) in enumerate(prompts.points[:, 0].numpy()):
            if self.gt[int(y), int(x)] == 3 and x < 42:
                part = np.full((SIDE, SIDE), -8.0, np.float32)
                part[36:60, 36:42] = 8.0
                out.low_res_logits[n] = torch.from_numpy(part)
                out.iou[n] = 0.99
        return out


def test_agreement_ranks_the_mask_most_proposals_agree_with_first() -> None:
    gt, classes = scene()
    options = {**LOOSE, "max_background": 0.5, "points_per_side": 16, "skip_covered": False}
    agreeing = AutomaticAnnotator(PartsPredictor(gt, classes), **options).annotate()
    alone = AutomaticAnnotator(
        PartsPredictor(gt, classes), agreement=False, contain=False, **options
    ).annotate()
    assert same_partition(agreeing.labels, gt)  # the whole object wins over its often-proposed quarter
    third = alone.labels[36:60, 36:42]
    assert (third == third[0, 0]).all() and not np.isin(alone.labels[36:60, 42:60], third[0, 0]).any()
    # Painted first, the quarter gives its place to the whole, which holds it.
    contained = AutomaticAnnotator(PartsPredictor(gt, classes), agreement=False, **options).annotate()
    assert same_partition(contained.labels, gt)


class BoxPredictor(ScriptedPredictor):
    """Clicks give the object's mask eroded by 3 pixels, named "nucleus"; a box gives the whole object of most of
    its pixels, named by its true class with probability 0.9."""

    def predict_torch(self, features, prompts, *, multimask_output: bool = False) -> TorchPrediction:
        out = super().predict_torch(features, prompts, multimask_output=multimask_output)
        logits = out.low_res_logits.numpy()
        for n in range(len(logits)):
            for m in range(logits.shape[1]):
                inside = ndimage.binary_erosion(logits[n, m] > 0, iterations=3)
                logits[n, m] = np.where(inside, 8.0, -8.0)
        out.probabilities[:, 0], out.probabilities[:, 1] = 0.8, 0.1
        return out

    def predict(self, *, boxes, top_k: int = 5) -> Prediction:
        self.boxes_seen.extend(np.asarray(boxes).tolist())
        n = len(boxes)
        masks = np.zeros((n, 1, SIDE, SIDE), bool)
        topk_ids = np.zeros((n, len(NAMES)), np.int64)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).round().astype(int)):
            inside = self.gt[max(y0, 0) : y1, max(x0, 0) : x1]
            label = np.bincount(inside.ravel()).argmax()
            masks[i, 0] = self.gt == label
            topk_ids[i] = [self.classes[label - 1], 1 - self.classes[label - 1]]
        scores = np.tile(np.array([0.9, 0.05], np.float32), (n, 1))
        return Prediction(
            masks=masks,
            iou=np.full((n, 1), 0.9, np.float32),
            class_ids=topk_ids[:, 0],
            class_names=[NAMES[i] for i in topk_ids[:, 0]],
            scores=scores[:, 0],
            topk_ids=topk_ids,
            topk_scores=scores,
            topk_names=[[NAMES[i] for i in row] for row in topk_ids],
            low_res_logits=np.zeros((n, 1, SIDE, SIDE), np.float16),
            background=np.full(n, 0.05, np.float32),
        )


def test_refine_decodes_and_names_each_kept_proposal_again_from_its_box() -> None:
    gt, classes = scene()
    predictor = BoxPredictor(gt, classes)
    predictor.boxes_seen = []
    options = {**LOOSE, "max_background": 0.5, "points_per_side": 16}
    clicks = AutomaticAnnotator(predictor, **options).annotate()
    assert clicks.class_names == ["nucleus"] * 3 and not same_partition(clicks.labels, gt)  # eroded, one name
    refined = AutomaticAnnotator(predictor, **{**options, "refine": True}).annotate()
    assert same_partition(refined.labels, gt) and len(predictor.boxes_seen) == 3
    assert sorted(refined.class_names) == ["nucleus", "nucleus", "rod"] and np.allclose(refined.scores, 0.9)
    for x0, y0, x1, y1 in predictor.boxes_seen:  # each box is the click mask's box, 10 % larger on every side
        label = gt[int((y0 + y1) / 2), int((x0 + x1) / 2)]
        rows, cols = np.nonzero(ndimage.binary_erosion(gt == label, iterations=3))
        width, height = cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()
        assert np.allclose([x0, y0], [cols.min() - 0.1 * width, rows.min() - 0.1 * height], atol=1e-4)


def test_class_aware_nms_keeps_different_classes_class_agnostic_does_not() -> None:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    square = (yy >= 10) & (yy < 40) & (xx >= 10) & (xx < 40)
    gt = np.zeros((SIDE, SIDE), np.int32)
    gt[square & (xx > yy)] = 1  # two triangles of different classes in the same box: no pixel shared
    gt[square & (xx <= yy)] = 2
    options = {**LOOSE, "max_background": 0.5, "nms_iou": 0.5}
    aware = AutomaticAnnotator(ScriptedPredictor(gt, [0, 1]), points_per_side=16, **options).annotate()
    agnostic = AutomaticAnnotator(
        ScriptedPredictor(gt, [0, 1]), points_per_side=16, class_agnostic=True, **options
    ).annotate()
    assert sorted(aware.class_names) == ["nucleus", "rod"] and same_partition(aware.labels, gt)
    assert len(agnostic) == 1  # boxes of IoU ~1 across classes: one suppresses the other


def test_points_inside_accepted_objects_or_amid_empty_background_are_not_decoded() -> None:
    gt, classes = scene()
    options = {**LOOSE, "max_background": 0.5, "points_per_side": 16, "points_per_batch": 8}
    runs = {
        "full": AutomaticAnnotator(
            ScriptedPredictor(gt, classes), skip_covered=False, skip_empty=False, **options
        ),
        "covered": AutomaticAnnotator(
            ScriptedPredictor(gt, classes), skip_covered=True, skip_empty=False, **options
        ),
        "empty": AutomaticAnnotator(ScriptedPredictor(gt, classes), skip_covered=False, **options),
        "both": AutomaticAnnotator(ScriptedPredictor(gt, classes), skip_covered=True, **options),
    }
    found = {name: annotator.annotate() for name, annotator in runs.items()}
    decoded = {name: annotator.decoded_points for name, annotator in runs.items()}
    assert decoded["full"] == 256 == runs["full"].predictor.points_seen
    assert (
        decoded["covered"] < 256
        and decoded["empty"] < 256
        and decoded["both"] < min(decoded["covered"], decoded["empty"])
    )
    assert decoded["both"] > 64  # the coarse pass (every other row and column: 64 points) always runs
    for name in ("covered", "empty", "both"):
        assert same_partition(found[name].labels, found["full"].labels)
        assert sorted(found[name].class_names) == sorted(found["full"].class_names)


def test_progress_reports_every_batch_and_can_cancel() -> None:
    gt, classes = scene()
    seen: list[tuple[int, int]] = []
    annotator = AutomaticAnnotator(
        ScriptedPredictor(gt, classes), points_per_side=8, points_per_batch=16, **LOOSE
    )
    annotator.annotate(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(16, 64), (32, 64), (48, 64), (64, 64)]

    def cancel(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annotator.annotate(progress=cancel)


def test_coco_annotations_round_trip_through_pycocotools() -> None:
    gt, classes = scene()
    found = AutomaticAnnotator(
        ScriptedPredictor(gt, classes), points_per_side=16, **{**LOOSE, "max_background": 0.5}
    ).annotate()
    annotations = found.to_coco(7, first_id=100)
    categories = {c["name"]: c["id"] for c in coco_categories(found.names)}
    assert [a["id"] for a in annotations] == [100, 101, 102]
    for i, ann in enumerate(annotations):
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert np.array_equal(mask, found.mask(i)) and ann["area"] == mask.sum() == mask_utils.area(
            ann["segmentation"]
        )
        assert ann["image_id"] == 7 and ann["category_id"] == categories[found.class_names[i]]
        x, y, w, h = ann["bbox"]
        assert [x, y, x + w, y + h] == list(found.boxes[i])
        assert ann["alternatives"][0][0] == found.class_names[i] and ann["label_id"] == found.ids[i]
    with pytest.raises(ValueError, match="no id for"):
        found.to_coco(1, category_ids={"nucleus": 1})


def test_bad_input_is_refused_with_a_message() -> None:
    gt, classes = scene()
    predictor = ScriptedPredictor(gt, classes)
    with pytest.raises(ValueError, match="image is empty"):
        AutomaticAnnotator(predictor).annotate(np.zeros((0, 10)))
    predictor.vocabulary = None
    with pytest.raises(ValueError, match="No vocabulary"):
        AutomaticAnnotator(predictor).annotate()
    for option, value in (
        ("points_per_side", 0),
        ("min_iou", 1.5),
        ("nms_iou", -0.1),
        ("min_area", -1),
        ("top_k", 0),
    ):
        with pytest.raises(ValueError, match=option):
            AutomaticAnnotator(predictor, **{option: value})


# ---------------------------------------------------------------- the real decoding paths (tiny model)
def check_consistent(found: Instances, size: tuple[int, int]) -> None:
    """A label image of the image's size whose ids are exactly the rows, with boxes bounding their pixels."""
    assert found.labels.shape == size and found.labels.dtype == np.int32
    assert set(np.unique(found.labels)) - {0} == set(found.ids.tolist())
    assert len(found.class_names) == len(found.topk_names) == len(found.scores) == len(found)
    for i in range(len(found)):
        rows, cols = np.nonzero(found.mask(i))
        assert list(found.boxes[i]) == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert found.topk_names[i][0] == found.class_names[i] and set(found.topk_names[i]) <= set(found.names)


def test_tiny_model_whole_image(tiny_predictor, image16) -> None:
    annotator = AutomaticAnnotator(tiny_predictor, points_per_side=8, **LOOSE)
    found = annotator.annotate(image16)
    check_consistent(found, image16.shape)
    assert 0 < annotator.decoded_points <= 64 and len(found) > 0


def test_tiny_model_tiled_image(tiny_model) -> None:
    predictor = OVSAMPredictor(tiny_model, tiling=TileSpec(scale=0.5))
    predictor.set_vocabulary(["nucleus", "rod"])
    rng = np.random.default_rng(1)
    image = rng.integers(0, 1000, (300, 420)).astype(np.uint16)
    image[100:160, 180:260] += 20000  # an object across the tiles' borders
    annotator = AutomaticAnnotator(predictor, points_per_side=4, **LOOSE)
    found = annotator.annotate(image)
    assert predictor.tiles is not None and len(predictor.tile_grid) > 1
    check_consistent(found, image.shape)
    assert annotator.decoded_points > 0 and len(found) > 0


# ---------------------------------------------------------------- naming existing labels
def test_name_labels_names_every_label_and_keeps_the_users_ids(tiny_predictor, image16) -> None:
    labels = np.zeros(image16.shape, np.int64)
    labels[30:60, 40:80] = 7
    labels[5:20, 100:140] = 2**40  # a huge id: kept as it is
    labels[70:85, 10:30] = 12
    before = labels.copy()
    named = name_labels(tiny_predictor, labels, image=image16)
    assert np.array_equal(labels, before) and np.array_equal(named.labels, labels)  # input untouched
    assert named.ids.tolist() == [7, 12, 2**40] and len(named.class_names) == 3
    assert set(named.class_names) <= {"nucleus", "rod", "ring"} and np.isnan(named.iou).all()
    assert list(named.boxes[0]) == [40, 30, 80, 60]
    probabilities = np.concatenate([named.topk_scores, named.background[:, None]], axis=1)
    assert (named.topk_scores[:, 0] >= named.topk_scores[:, -1]).all() and (probabilities <= 1).all()
    assert [a["label_id"] for a in named.to_coco(1)] == [7, 12, 2**40]


def test_name_labels_in_chunks_equals_one_chunk(tiny_predictor, image16) -> None:
    labels = np.zeros(image16.shape, np.int32)
    for i in range(12):
        labels[(i // 6) * 40 + 5 : (i // 6) * 40 + 30, (i % 6) * 25 + 2 : (i % 6) * 25 + 20] = i + 1
    one = name_labels(tiny_predictor, labels, image=image16)
    chunked = name_labels(tiny_predictor, labels, chunk_size=5)
    assert one.class_names == chunked.class_names and np.allclose(one.scores, chunked.scores, atol=1e-5)


def test_name_labels_refine_never_takes_a_neighbours_pixels(tiny_predictor, image16) -> None:
    labels = np.zeros(image16.shape, np.int32)
    labels[30:60, 40:60] = 1
    labels[30:60, 60:80] = 2
    refined = name_labels(tiny_predictor, labels, image=image16, refine=True)
    assert not np.isnan(refined.iou).any()
    for label, other in ((1, 2), (2, 1)):
        assert not (refined.labels[labels == other] == label).any()  # never over the other label
    assert set(np.unique(refined.labels)) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((10, 10), np.int32), "labels are 10x10 pixels but the image is 150x90"),
        (np.zeros((90, 150), np.float32), "integer label image"),
        (np.zeros((2, 90, 150), np.int32), r"one \(H, W\) label image"),
        (np.full((90, 150), -1, np.int32), "negative id"),
    ],
)
def test_name_labels_bad_labels(tiny_predictor, image16, labels, message) -> None:
    tiny_predictor.set_image(image16)
    with pytest.raises(ValueError, match=message):
        name_labels(tiny_predictor, labels)


def test_name_labels_without_labels_is_empty(tiny_predictor, image16) -> None:
    named = name_labels(tiny_predictor, np.zeros(image16.shape, np.uint16), image=image16)
    assert len(named) == 0 and named.to_coco(1) == [] and not named.labels.any()
