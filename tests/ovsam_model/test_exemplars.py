"""Exemplar naming: features, the example set and its files, the classifier, the fusion, and the predictor's
learn / forget / save / load with the tiny and demo models (``ovsam_model.exemplars``)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops_table

from ovsam_model import AutomaticAnnotator, name_labels
from ovsam_model.build import build_ovsam
from ovsam_model.data.synthetic_images import ALL_CLASS_NAMES, generate_image
from ovsam_model.evaluation.gt_prompts import gt_prompts
from ovsam_model.exemplars import (
    SHAPE_FEATURE_NAMES,
    ExampleSet,
    ExemplarClassifier,
    FusionSettings,
    class_union,
    fuse,
    shape_features,
)
from ovsam_model.exemplars.features import ObjectCrop
from ovsam_model.predictor import OVSAMPredictor

FEATURE = {name: i for i, name in enumerate(SHAPE_FEATURE_NAMES)}


def _disk(size: int, radius: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    return np.hypot(yy - cy, xx - cx) <= radius


def _crop(mask: np.ndarray, grey: np.ndarray | None = None) -> ObjectCrop:
    return ObjectCrop(mask, mask.astype(np.float32) * 100 + 10 if grey is None else grey, (0, 0))


# ----------------------------------------------------------------------------------------------- features
def test_shape_features_measure_what_regionprops_measures():
    mask = np.zeros((40, 50), bool)
    mask[5:30, 8:40] = True
    mask[10:15, 12:18] = False  # a hole
    features = shape_features(_crop(mask))
    table = regionprops_table(
        mask.astype(np.uint8), properties=("area", "solidity", "eccentricity", "axis_major_length")
    )
    assert features[FEATURE["log_area"]] == pytest.approx(np.log(table["area"][0]), rel=1e-5)
    assert features[FEATURE["solidity"]] == pytest.approx(table["solidity"][0], rel=1e-4)
    assert features[FEATURE["eccentricity"]] == pytest.approx(table["eccentricity"][0], rel=1e-4)
    assert features[FEATURE["log_major_axis"]] == pytest.approx(
        np.log(table["axis_major_length"][0]), rel=1e-4
    )
    assert features[FEATURE["holes"]] == 1
    assert features[FEATURE["parts"]] == 1


def test_shape_features_tell_shapes_and_textures_apart():
    disk = _disk(41, 15)
    rod = np.zeros((41, 41), bool)
    rod[17:24, 3:38] = True
    crescent = disk & ~_disk(41, 13, (20, 27))
    f_disk, f_rod, f_crescent = (shape_features(_crop(m)) for m in (disk, rod, crescent))
    assert f_disk[FEATURE["eccentricity"]] < 0.1 < 0.9 < f_rod[FEATURE["eccentricity"]]
    assert f_disk[FEATURE["solidity"]] > 0.9 > 0.7 > f_crescent[FEATURE["solidity"]]
    smooth = disk * 100.0 + 10
    speckled = smooth.copy()
    for y, x in ((12, 14), (20, 26), (27, 17), (16, 22)):
        speckled[y - 1 : y + 2, x - 1 : x + 2] += 150
    f_smooth = shape_features(_crop(disk, smooth.astype(np.float32)))
    f_speckled = shape_features(_crop(disk, speckled.astype(np.float32)))
    assert f_speckled[FEATURE["spots"]] > 3 * f_smooth[FEATURE["spots"]]
    assert f_speckled[FEATURE["peaks"]] > f_smooth[FEATURE["peaks"]]
    assert np.isfinite(f_speckled).all()


def test_an_empty_mask_has_zero_features():
    assert not shape_features(_crop(np.zeros((8, 8), bool))).any()


# ------------------------------------------------------------------------------------------- example set
def test_example_set_adds_drops_counts_and_round_trips(tmp_path):
    examples = ExampleSet.empty("model-a", "layout-1", 3)
    examples = examples.add(np.ones((2, 3)), ["mitotic", "  apoptotic "]).add(np.zeros((1, 3)), ["mitotic"])
    assert examples.counts() == {"mitotic": 2, "apoptotic": 1}
    assert examples.labels().tolist() == [0, 1, 0]
    assert examples.without(["mitotic"]).counts() == {"apoptotic": 1}
    assert len(examples.without()) == 0
    path = examples.save(tmp_path / "cells.examples.safetensors")
    loaded = ExampleSet.load(path)
    assert loaded.class_names == examples.class_names
    np.testing.assert_array_equal(loaded.features, examples.features)
    assert (loaded.model, loaded.layout) == ("model-a", "layout-1")
    with pytest.raises(ValueError, match="another model"):
        loaded.check_compatible("model-b", "layout-1")


@pytest.mark.parametrize("names", [[""], ["  "], ["a, b"], [None]])
def test_example_set_refuses_bad_class_names(names):
    with pytest.raises(ValueError, match="class name"):
        ExampleSet(np.zeros((1, 2)), names, "m", "l")


def test_example_files_that_are_damaged_or_foreign_are_refused(tmp_path):
    path = ExampleSet(np.ones((2, 4)), ["a", "b"], "m", "l").save(tmp_path / "x.examples.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    damaged = tmp_path / "damaged.examples.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        ExampleSet.load(damaged)
    text = tmp_path / "notes.examples.safetensors"
    text.write_text("not tensors")
    with pytest.raises(ValueError, match="not a readable examples file"):
        ExampleSet.load(text)
    with pytest.raises(ValueError, match="No examples file"):
        ExampleSet.load(tmp_path / "missing.examples.safetensors")
    with pytest.raises(ValueError, match="features"):
        ExampleSet(np.ones((2, 4)), ["a", "b"], "m", "l").add(np.ones((1, 5)), ["a"])


# -------------------------------------------------------------------------------------------- classifier
def test_classifier_separates_examples_and_measures_novelty():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, (5, 4))
    b = rng.normal(0, 0.1, (5, 4)) + [3, 0, 0, 0]
    features, labels = np.concatenate([a, b]), np.array([0] * 5 + [1] * 5)
    clf = ExemplarClassifier(features, labels, 3)
    probs = clf.predict_proba(np.array([[0, 0, 0, 0], [3, 0, 0, 0]]))
    assert probs[0, 0] > 0.6 and probs[1, 1] > 0.6
    sharper = ExemplarClassifier(features, labels, 3, c=10.0).predict_proba(np.array([[0, 0, 0, 0]]))
    assert sharper[0, 0] > max(0.9, probs[0, 0])  # weaker regularisation: surer of separable examples
    assert (probs[:, 2] == 0).all()  # a class without examples
    novelty = clf.novelty(np.array([[0.0, 0, 0, 0], [0, 40, 0, 0]]))
    assert novelty[0] < 2 < 10 < novelty[1]
    single = ExemplarClassifier(a, np.zeros(5, np.int64), 1)
    np.testing.assert_array_equal(single.predict_proba(b), np.ones((5, 1)))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_classifier_probabilities_are_scikit_learns(n_classes):
    rng = np.random.default_rng(1)
    labels = np.arange(12) % n_classes
    features = rng.normal(0, 1, (12, 6)) + labels[:, None]
    clf = ExemplarClassifier(features, labels, n_classes + 1)
    objects = rng.normal(0, 2, (7, 6))
    expected = clf.model.predict_proba(clf.transform(objects))
    np.testing.assert_allclose(clf.predict_proba(objects)[:, :n_classes], expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------- fusion
def test_fusion_keeps_text_priors_adds_example_classes_and_rejects_the_unknown():
    vocabulary = ["nucleus", "rod"]
    text = np.array([[0.6, 0.2, 0.2], [0.1, 0.7, 0.2]])  # background last
    classes = ["nucleus", "mitotic"]  # nucleus has examples, rod has none, mitotic has examples only
    examples = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert class_union(vocabulary, classes) == ["nucleus", "rod", "mitotic"]
    probs, unknown = fuse(text, vocabulary, examples, classes, np.array([1.0, 9.0]), FusionSettings(1.0))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, -1], text[:, -1])
    np.testing.assert_allclose(probs[:, 1], text[:, 1], rtol=1e-6)  # rod keeps its text probability
    # object 0: nucleus 0.2 * (2 * 0.75) vs mitotic 0.8 * 1, sharing 1 - 0.25 of the foreground
    ratio = 0.2 * 1.5 / (0.2 * 1.5 + 0.8)
    assert probs[0, 0] == pytest.approx(0.8 * 0.75 * ratio, rel=1e-5)
    assert probs[0, 2] == pytest.approx(0.8 * 0.75 * (1 - ratio), rel=1e-5)
    assert unknown.tolist() == [False, False]  # object 1 is far from the examples but the text says rod
    _, unknown = fuse(text, vocabulary, examples, classes, np.array([9.0, 1.0]), FusionSettings(1.0))
    assert unknown.tolist() == [True, False]
    with pytest.raises(ValueError, match="text_weight"):
        FusionSettings(text_weight=-1)


# ------------------------------------------------------------------------------------- with the models
@pytest.fixture(scope="module")
def demo_predictor() -> OVSAMPredictor:
    return OVSAMPredictor(build_ovsam("demo"))


def _sample(seed: int):
    return generate_image(np.random.default_rng([900, seed]), 256, (7, 10), extra_classes=True)


def _names(sample) -> list[str]:
    return [ALL_CLASS_NAMES[label] for label in sample.labels]


def test_demo_model_learns_new_classes_and_forgets_them(demo_predictor, tmp_path):
    predictor = demo_predictor
    predictor.forget_examples()
    for seed in range(6):  # taught as a user does: by committing the masks the model made from boxes
        sample = _sample(seed)
        predictor.set_image(sample.image)
        masks = predictor.predict(boxes=_boxes(sample.masks)).masks[:, 0]
        made = masks.any(axis=(1, 2))
        predictor.learn_examples(sample.image, masks[made], np.array(_names(sample))[made].tolist())
    assert set(predictor.examples.counts()) == set(ALL_CLASS_NAMES)
    assert predictor.class_names == list(ALL_CLASS_NAMES)  # the vocabulary, then the new classes
    right = total = 0
    for seed in range(6, 12):
        sample = _sample(seed)
        predictor.set_image(sample.image)
        out = predictor.predict(boxes=_boxes(sample.masks), top_k=3)
        assert out.unknown is not None and out.unknown.shape == (len(sample.labels),)
        new = sample.labels >= 4
        right += int((np.array(out.class_names)[new] == np.array(_names(sample))[new]).sum())
        total += int(new.sum())
    assert total >= 20 and right / total >= 0.4  # 0 % from the text alone: it knows only 4 classes
    path = predictor.save_examples(tmp_path / "taught.examples.safetensors")
    before = predictor.predict(boxes=_boxes(sample.masks))
    crescents = predictor.examples.counts()["crescent"]
    assert predictor.forget_examples(["crescent"]) == crescents
    assert "crescent" not in predictor.examples.counts()
    predictor.forget_examples()
    text_only = predictor.predict(boxes=_boxes(sample.masks))
    assert text_only.unknown is None and set(text_only.class_names) <= set(ALL_CLASS_NAMES[:4])
    assert predictor.load_examples(path) == len(ExampleSet.load(path))
    again = predictor.predict(boxes=_boxes(sample.masks))
    assert again.class_names == before.class_names
    np.testing.assert_allclose(again.scores, before.scores, rtol=1e-5)
    predictor.forget_examples()


def test_examples_from_another_model_are_refused(demo_predictor, tiny_model, tmp_path):
    sample = _sample(0)
    demo_predictor.forget_examples()
    demo_predictor.learn_examples(sample.image, sample.masks, _names(sample))
    path = demo_predictor.save_examples(tmp_path / "demo.examples.safetensors")
    demo_predictor.forget_examples()
    other = OVSAMPredictor(tiny_model)
    with pytest.raises(ValueError, match="another model"):
        other.load_examples(path)
    assert len(other.examples) == 0


def test_learn_examples_takes_a_label_image_and_refuses_bad_input(demo_predictor):
    predictor = demo_predictor
    predictor.forget_examples()
    sample = _sample(1)
    labels = np.zeros(sample.image.shape, np.int32)
    for i, mask in enumerate(sample.masks):
        labels[mask] = 10 * (i + 1)
    names = {10 * (i + 1): name for i, name in enumerate(_names(sample))}
    assert predictor.learn_examples(sample.image, labels, names) == len(sample.masks)
    assert sum(predictor.examples.counts().values()) == len(sample.masks)
    with pytest.raises(ValueError, match="no class name"):
        predictor.learn_examples(sample.image, labels, {10: "nucleus"})
    with pytest.raises(ValueError, match="empty"):
        predictor.learn_examples(sample.image, np.zeros((1, 256, 256), bool), ["nucleus"])
    with pytest.raises(ValueError, match="do not fit the image"):
        predictor.learn_examples(sample.image, np.ones((1, 64, 64), bool), ["nucleus"])
    with pytest.raises(ValueError, match="class name"):
        predictor.learn_examples(sample.image, sample.masks[:1], [""])
    with pytest.raises(ValueError, match="1 class names for 2 masks"):
        predictor.learn_examples(sample.image, sample.masks[:2], ["nucleus"])
    predictor.forget_examples()


def test_naming_a_restored_embedding_needs_the_pixels(demo_predictor):
    predictor = demo_predictor
    sample = _sample(2)
    predictor.set_image(sample.image)
    state = predictor.get_image_embedding()
    features = predictor.example_features(sample.masks)
    predictor.set_image_embedding(state)
    with pytest.raises(ValueError, match="pixels are not known"):
        predictor.example_features(sample.masks)
    predictor.set_image_embedding(state, image=sample.image)
    np.testing.assert_allclose(predictor.example_features(sample.masks), features, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not the one of this embedding"):
        predictor.set_image_embedding(state, image=sample.image[:100])


def test_annotator_and_name_labels_name_from_examples(demo_predictor):
    predictor = demo_predictor
    predictor.forget_examples()
    for seed in range(4):
        sample = _sample(seed)
        predictor.learn_examples(sample.image, sample.masks, _names(sample))
    sample = _sample(11)
    labels = np.zeros(sample.image.shape, np.int32)
    for i, mask in enumerate(sample.masks):
        labels[mask] = i + 1
    named = name_labels(predictor, labels, image=sample.image)
    assert named.names == list(ALL_CLASS_NAMES)
    new = sample.labels >= 4
    right = np.array(named.class_names)[new] == np.array(_names(sample))[new]
    assert new.sum() >= 2 and right.mean() >= 0.5
    found = AutomaticAnnotator(predictor).annotate(sample.image)
    assert found.names == list(ALL_CLASS_NAMES)
    assert set(found.class_names) <= set(ALL_CLASS_NAMES)
    predictor.forget_examples()


def test_tiled_images_learn_and_name_with_examples(tiny_model):
    predictor = OVSAMPredictor(tiny_model, tiling="auto")
    predictor.set_vocabulary(["nucleus", "rod"])
    image = np.zeros((400, 400), np.uint16)
    masks = np.zeros((2, 400, 400), bool)
    masks[0, 20:60, 30:70] = True
    masks[1, 300:320, 200:380] = True
    image[masks.any(axis=0)] = 5000
    predictor.learn_examples(image, masks, ["mitotic", "rod"])
    assert predictor.tiles is not None
    assert predictor.class_names == ["nucleus", "rod", "mitotic"]
    out = predictor.predict(boxes=np.array([[20, 10, 80, 70], [190, 290, 390, 330]]), top_k=3)
    assert all(name in predictor.class_names for name in out.class_names)
    assert out.topk_ids.max() < 3 and out.unknown.shape == (2,)


def _boxes(masks: np.ndarray) -> np.ndarray:
    return gt_prompts(masks, "box")["boxes"]
