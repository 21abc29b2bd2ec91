"""OVSAMPredictor on the tiny config: numpy round trips at the original resolution, caching, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.prompts import NumpyPrompts
from ovsam_model.vocabulary import Vocabulary


def test_non_square_16bit_round_trip_at_original_size(tiny_predictor, image16):
    tiny_predictor.set_image(image16)
    assert tiny_predictor.original_size == (90, 150) and tiny_predictor.input_size == (77, 128)
    result = tiny_predictor.predict(
        points=np.array([[[60.0, 45.0]], [[10.0, 10.0]]]),
        point_labels=np.array([[1], [1]]),
        boxes=np.array([[40, 30, 80, 60], [0, 0, 30, 20]]),
        multimask_output=True,
        top_k=2,
    )
    assert result.masks.shape == (2, 3, 90, 150) and result.masks.dtype == bool
    assert result.iou.shape == (2, 3)
    assert (np.diff(result.iou, axis=1) <= 1e-6).all()  # best mask first
    assert result.class_ids.shape == (2,) and result.class_ids.dtype == np.int64
    assert set(result.class_names) <= {"nucleus", "rod", "ring"}
    assert result.topk_ids.shape == (2, 2) and (result.topk_ids[:, 0] == result.class_ids).all()
    assert (np.diff(result.topk_scores, axis=1) <= 0).all()
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    assert result.low_res_logits.shape == (2, 3, 32, 32) and result.low_res_logits.dtype == np.float16


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 80, 3), np.uint8) + 7,
        np.random.default_rng(1).random((70, 50)).astype(np.float32),
        np.random.default_rng(2).integers(0, 255, (60, 60, 5)).astype(np.uint8),
        np.random.default_rng(3).integers(-50, 50, (40, 90, 2)).astype(np.int16),
    ],
    ids=["rgb-uint8", "grey-float", "5-channel", "2-channel-int"],
)
def test_any_dtype_and_channel_layout(tiny_predictor, image):
    tiny_predictor.set_image(image)
    result = tiny_predictor.predict(boxes=np.array([5, 5, 30, 30]))
    assert result.masks.shape == (1, 1, *image.shape[:2])


def test_embedding_state_round_trip_gives_identical_predictions(tiny_model, tiny_predictor, image16):
    tiny_predictor.set_image(image16)
    prompts = {"boxes": np.array([[40, 30, 80, 60], [5, 5, 50, 70]])}
    expected = tiny_predictor.predict(**prompts)
    state = tiny_predictor.get_image_embedding()
    assert set(state) == {
        "embedding",
        "fpn_0",
        "fpn_1",
        "fpn_2",
        "fpn_3",
        "clip_top",
        "original_size",
        "input_size",
    }
    other = OVSAMPredictor(tiny_model)
    other.set_vocabulary(["nucleus", "rod, bacterium", "ring"])
    other.set_image_embedding(state)
    got = other.predict(**prompts)
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)


def test_chunked_decoding_equals_one_chunk(tiny_model, image16):
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, 100, 9), rng.uniform(0, 60, 9)
    boxes = np.stack([x0, y0, x0 + 30, y0 + 20], axis=1)
    results = []
    for chunk in (2, 64):
        predictor = OVSAMPredictor(tiny_model, chunk_size=chunk)
        predictor.set_vocabulary(["a", "b"])
        predictor.set_image(image16)
        results.append(predictor.predict(boxes=boxes))
    np.testing.assert_array_equal(results[0].masks, results[1].masks)
    np.testing.assert_allclose(results[0].scores, results[1].scores, rtol=1e-5)


def test_masks_come_from_the_float32_logits_of_the_torch_path(tiny_model, tiny_predictor, image16):
    tiny_predictor.clean_masks = False  # the decoder's masks as they are (clipping is tested below)
    tiny_predictor.set_image(image16)
    boxes = np.array([[40, 30, 80, 60], [5, 5, 50, 70], [0, 0, 149, 89]], np.float32)
    result = tiny_predictor.predict(boxes=boxes, multimask_output=True)
    prompts = NumpyPrompts(None, None, boxes).to_input_frame(
        tiny_predictor.original_size, tiny_predictor.input_size, tiny_model.device
    )
    torch_result = tiny_predictor.predict_torch(tiny_predictor.features, prompts, multimask_output=True)
    full = tiny_model.upscale_masks(
        torch_result.low_res_logits, tiny_predictor.input_size, tiny_predictor.original_size
    )
    np.testing.assert_array_equal(result.masks, (full > 0).numpy())
    np.testing.assert_allclose(
        result.low_res_logits, torch_result.low_res_logits.numpy(), rtol=1e-3, atol=1e-3
    )


def test_clean_masks_stay_in_their_box_and_can_be_switched_off(tiny_model, image16):
    boxes = np.array([[40, 30, 80, 60], [5, 5, 50, 70]], np.float32)
    results = {}
    for clean in (True, False):
        predictor = OVSAMPredictor(tiny_model, clean_masks=clean)
        predictor.set_vocabulary(["a", "b"])
        predictor.set_image(image16)
        results[clean] = predictor.predict(boxes=boxes)
    inside = np.zeros((2, 90, 150), bool)
    inside[0, 30:61, 40:81] = inside[1, 5:71, 5:51] = True
    assert not (results[True].masks[:, 0] & ~inside).any()
    np.testing.assert_array_equal(results[True].masks[:, 0], results[False].masks[:, 0] & inside)


def test_no_prompts_give_an_empty_prediction(tiny_predictor, image16):
    tiny_predictor.set_image(image16)
    for multimask, m in ((False, 1), (True, 3)):
        result = tiny_predictor.predict(boxes=np.zeros((0, 4)), multimask_output=multimask)
        assert len(result) == 0 and result.class_names == [] and result.topk_names == []
        assert result.masks.shape == (0, m, 90, 150) and result.iou.shape == (0, m)


def test_vocabulary_change_renames_with_the_same_masks(tiny_predictor, image16):
    tiny_predictor.set_image(image16)
    first = tiny_predictor.predict(boxes=np.array([40, 30, 80, 60]))
    tiny_predictor.set_vocabulary(Vocabulary(["alpha", "beta, b"]))
    second = tiny_predictor.predict(boxes=np.array([40, 30, 80, 60]))
    np.testing.assert_array_equal(first.masks, second.masks)
    assert second.class_names[0] in {"alpha", "beta"}


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 3, 4, 5)), "2D image"),
        (np.zeros((0, 10)), "empty"),
        (np.full((10, 10), np.nan, np.float32), "NaN"),
        (np.zeros((3, 64, 64)), "channels-first"),
    ],
)
def test_bad_images_are_named(tiny_predictor, image, match):
    with pytest.raises(ValueError, match=match):
        tiny_predictor.set_image(image)


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        ({}, "No prompt"),
        ({"points": np.array([[200.0, 10.0]]), "point_labels": np.array([1])}, "outside"),
        (
            {"points": np.array([[10.0, 10.0], [20, 20]]), "point_labels": np.array([1])},
            "one label per point",
        ),
        ({"points": np.array([[10.0, 10.0]])}, "point_labels are required"),
        ({"boxes": np.array([10, 10, 10, 40])}, "zero area"),
        ({"boxes": np.array([40, 40, 10, 10])}, "inverted"),
        ({"boxes": np.array([10, 10, 400, 40])}, "outside"),
        (
            {
                "boxes": np.array([[1, 1, 5, 5], [2, 2, 9, 9]]),
                "points": np.array([[[3.0, 3.0]]]),
                "point_labels": np.array([[1]]),
            },
            "each object needs one of each",
        ),
        ({"points": np.array([[np.nan, 3.0]]), "point_labels": np.array([1])}, "NaN"),
    ],
)
def test_bad_prompts_are_named(tiny_predictor, image16, prompts, match):
    tiny_predictor.set_image(image16)
    with pytest.raises(ValueError, match=match):
        tiny_predictor.predict(**prompts)


def test_predict_needs_an_image_and_a_vocabulary(tiny_model, image16):
    predictor = OVSAMPredictor(tiny_model)
    with pytest.raises(ValueError, match="set_image"):
        predictor.predict(boxes=np.array([1, 1, 5, 5]))
    predictor.set_image(image16)
    with pytest.raises(ValueError, match="set_vocabulary"):
        predictor.predict(boxes=np.array([1, 1, 5, 5]))
    with pytest.raises(ValueError, match="empty"):
        predictor.set_vocabulary([])
    with pytest.raises(ValueError, match="[Dd]uplicate"):
        predictor.set_vocabulary(["cell", "Cell"])


def test_embedding_from_another_model_is_refused(tiny_predictor, image16):
    tiny_predictor.set_image(image16)
    state = tiny_predictor.get_image_embedding()
    state["embedding"] = np.zeros((64, 16, 16), np.float32)
    with pytest.raises(ValueError, match="does not fit the model"):
        tiny_predictor.set_image_embedding(state)


def test_box_prompts_are_named_from_their_own_box(tiny_model, tiny_predictor, image16):
    import torch

    tiny_predictor.set_image(image16)
    box = np.array([40.0, 30.0, 80.0, 60.0])
    result = tiny_predictor.predict(boxes=box, top_k=3)
    features = tiny_predictor.features
    scale = tiny_predictor.input_size[1] / image16.shape[1]
    with torch.no_grad():
        head, clip = tiny_model.region_embeddings(
            features, torch.tensor(box * scale, dtype=torch.float32)[None]
        )
        probs = tiny_model.classify(head, clip, tiny_predictor.text_embeddings, tiny_predictor.seen)
    assert int(probs[0, :-1].argmax()) == int(result.class_ids[0])
    np.testing.assert_allclose(float(probs[0, result.class_ids[0]]), result.scores[0], rtol=1e-4)
