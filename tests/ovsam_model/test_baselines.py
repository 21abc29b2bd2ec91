"""The SAM + CLIP baselines with a tiny random SAM and the tiny CLIP: interface, shapes, loading, cropping."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from ovsam_model.baselines import (
    FeatureCropBaseline,
    ImageCropBaseline,
    build_baseline,
    build_sam,
    build_tiny_sam,
)
from ovsam_model.baselines.image_crop import crop_padded
from ovsam_model.predictor import OVSAMPredictor, Prediction

VOCABULARY = ["nucleus", "rod, bacterium", "ring"]
KINDS = ("image_crop", "feature_crop")


@pytest.fixture(scope="module", params=KINDS)
def baseline(request):
    torch.manual_seed(0)
    model = build_baseline(
        request.param, sam="tiny", clip_model="ovsam-tiny-RN", clip_pretrained="none", device="cpu"
    )
    model.set_vocabulary(VOCABULARY)
    return model


def test_shapes_at_original_resolution_and_names_from_the_vocabulary(baseline, image16):
    baseline.set_image(image16)
    assert baseline.original_size == (90, 150) and baseline.input_size == (77, 128)
    result = baseline.predict(
        points=np.array([[[60.0, 45.0]], [[10.0, 10.0]]]),
        point_labels=np.array([[1], [1]]),
        boxes=np.array([[40, 30, 80, 60], [0, 0, 30, 20]]),
        multimask_output=True,
        top_k=2,
    )
    assert isinstance(result, Prediction) and len(result) == 2
    assert result.masks.shape == (2, 3, 90, 150) and result.masks.dtype == bool
    assert result.iou.shape == (2, 3) and (np.diff(result.iou, axis=1) <= 1e-6).all()
    assert result.class_ids.dtype == np.int64 and set(result.class_names) <= {"nucleus", "rod", "ring"}
    assert result.topk_ids.shape == (2, 2) and (result.topk_ids[:, 0] == result.class_ids).all()
    assert [names[0] for names in result.topk_names] == result.class_names
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    assert (np.diff(result.topk_scores, axis=1) <= 0).all()
    assert result.low_res_logits.shape == (2, 3, 32, 32)


def test_point_only_and_box_only_prompts(baseline, image16):
    baseline.set_image(image16)
    assert baseline.predict(points=np.array([[5.0, 5.0]]), point_labels=np.array([1])).masks.shape == (
        1,
        1,
        90,
        150,
    )
    boxes = np.array([[0, 0, 150, 90], [100, 50, 140, 85], [3, 3, 9, 9]], dtype=float)
    result = baseline.predict(boxes=boxes, top_k=10)
    assert result.masks.shape == (3, 1, 90, 150) and result.topk_ids.shape == (3, 3)
    np.testing.assert_allclose(result.topk_scores.sum(axis=1), 1.0, rtol=1e-5)  # softmax over K classes


def test_same_interface_as_the_predictor(baseline):
    for name in ("set_image", "set_vocabulary", "predict", "get_image_embedding", "set_image_embedding"):
        ours = inspect.signature(getattr(baseline, name)).parameters
        theirs = inspect.signature(getattr(OVSAMPredictor, name)).parameters
        assert list(ours) == [p for p in theirs if p != "self"], name


@pytest.mark.parametrize(
    "prompts",
    [
        {},
        {"points": np.array([[10.0, 10.0]])},
        {"points": np.array([[200.0, 10.0]]), "point_labels": np.array([1])},
        {"boxes": np.array([30, 30, 10, 40])},
        {"boxes": np.array([0, 0, 151, 50])},
        {
            "points": np.array([[[1.0, 1.0]], [[2.0, 2.0]]]),
            "point_labels": np.ones((2, 1)),
            "boxes": np.array([0, 0, 5, 5]),
        },
    ],
    ids=["none", "no-labels", "outside", "inverted-box", "box-outside", "count-mismatch"],
)
def test_bad_prompts_raise_the_predictors_errors(baseline, tiny_predictor, image16, prompts):
    messages = []
    for predictor in (baseline, tiny_predictor):
        predictor.set_image(image16)
        with pytest.raises(ValueError) as error:
            predictor.predict(**prompts)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_predict_needs_an_image_and_a_vocabulary():
    model = ImageCropBaseline(build_tiny_sam(), *_tiny_clip())
    with pytest.raises(ValueError, match="No image is set"):
        model.predict(boxes=np.array([0, 0, 5, 5]))
    model.set_image(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="No vocabulary is set"):
        model.predict(boxes=np.array([0, 0, 5, 5]))


def test_embedding_state_round_trip(baseline, image16):
    baseline.set_image(image16)
    prompts = {"boxes": np.array([[40, 30, 80, 60], [5, 5, 50, 70]])}
    expected = baseline.predict(**prompts)
    state = baseline.get_image_embedding()
    baseline.reset_image()
    baseline.set_image_embedding(state)
    got = baseline.predict(**prompts)
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        baseline.set_image_embedding(dict(state, embedding=np.zeros((8, 4, 4), np.float32)))


def test_image_crop_windows_are_square_enlarged_and_zero_padded():
    model = ImageCropBaseline(build_tiny_sam(), *_tiny_clip(), crop_scale=1.5)
    windows = model.crop_windows(torch.tensor([[10.0, 20.0, 30.0, 30.0]]))
    x0, y0, x1, y1 = windows[0].tolist()
    assert x1 - x0 == y1 - y0 == 30 and (x0 + x1) / 2 == 20 and (y0 + y1) / 2 == 25
    image = torch.arange(12.0).view(1, 3, 4)
    crop = crop_padded(image, [-1, -1, 2, 2])
    assert crop.shape == (1, 3, 3) and crop[0, 0].eq(0).all() and crop[0, 1, 1:].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="crop_scale"):
        ImageCropBaseline(build_tiny_sam(), *_tiny_clip(), crop_scale=0.5)


def test_image_crop_uses_clips_normalisation():
    model = ImageCropBaseline(build_tiny_sam(), *_tiny_clip())
    grey = np.broadcast_to(np.array([122.77, 116.75, 104.09], np.float32), (16, 16, 3))  # CLIP mean x 255
    model.set_image(np.ascontiguousarray(grey), contrast_limits=(0, 255))
    assert model._image is not None and model._image.abs().max() < 1e-3


def test_feature_crop_without_mask_is_the_box_roi():
    sam, (clip, tokenizer) = build_tiny_sam(), _tiny_clip()
    masked = FeatureCropBaseline(sam, clip, tokenizer, mask_features=True)
    plain = FeatureCropBaseline(sam, clip, tokenizer, mask_features=False)
    image = np.random.default_rng(0).integers(0, 255, (100, 60, 3), dtype=np.uint8)
    for model in (masked, plain):
        model.set_image(image)
    boxes = torch.tensor([[5.0, 5.0, 40.0, 60.0], [0.0, 0.0, 60.0, 100.0]])
    logits = torch.randn(2, 32, 32)
    invalid = torch.zeros(2, dtype=torch.bool)  # empty masks: the box alone is pooled
    expected = plain._region_embeddings(boxes, logits, invalid)
    torch.testing.assert_close(masked._region_embeddings(boxes, logits, invalid), expected)
    assert not torch.allclose(masked._region_embeddings(boxes, logits, ~invalid), expected)


def test_sam_weights_load_strictly_from_a_sam_file(tmp_path):
    torch.manual_seed(1)
    source = build_tiny_sam()
    path = tmp_path / "sam_tiny.pth"
    torch.save(source.state_dict(), path)
    loaded = build_sam("tiny", path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    torch.save({k: v for k, v in source.state_dict().items() if "iou" not in k}, path)
    with pytest.raises(ValueError, match="mask_decoder"):
        build_sam("tiny", path)


def test_missing_sam_weights_offline_name_the_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth"):
        build_sam("vit_b")
    with pytest.raises(ValueError, match="Unknown SAM"):
        build_sam("vit_x")
    with pytest.raises(ValueError, match="Unknown baseline"):
        build_baseline("box_crop", sam="tiny")


def _tiny_clip():
    from ovsam_model.baselines import build_clip

    model, tokenizer, _ = build_clip("ovsam-tiny-RN", "none")
    return model, tokenizer


@pytest.mark.parametrize("kind", KINDS)
def test_baselines_clean_masks_by_their_prompts_like_the_predictor(kind, image16):
    from scipy import ndimage

    boxes = np.array([[40, 30, 80, 60], [5, 5, 50, 70]], np.float32)
    clicks = np.array([[[60.0, 45.0]], [[20.0, 20.0]]])
    results = {}
    for clean in (True, False):
        torch.manual_seed(0)
        model = build_baseline(
            kind,
            sam="tiny",
            clip_model="ovsam-tiny-RN",
            clip_pretrained="none",
            device="cpu",
            clean_masks=clean,
        )
        model.set_vocabulary(VOCABULARY)
        model.set_image(image16)
        results[clean] = (
            model.predict(boxes=boxes),
            model.predict(points=clicks, point_labels=np.ones((2, 1))),
        )
    inside = np.zeros((2, 90, 150), bool)
    inside[0, 30:61, 40:81] = inside[1, 5:71, 5:51] = True
    boxed = results[True][0].masks[:, 0]
    np.testing.assert_array_equal(boxed, results[False][0].masks[:, 0] & inside)
    clicked = {clean: results[clean][1] for clean in (True, False)}
    assert not (clicked[True].masks & ~clicked[False].masks).any()  # the clean-up only removes pixels
    eight = np.ones((3, 3), bool)
    raw_parts = [ndimage.label(m > 0, structure=eight)[1] for m in clicked[False].low_res_logits[:, 0]]
    clean_parts = [ndimage.label(m > 0, structure=eight)[1] for m in clicked[True].low_res_logits[:, 0]]
    assert max(raw_parts) > 1  # SAM's click masks had stray parts ...
    assert clean_parts == [1, 1]  # ... and one part is left of each: the clicked one (or the largest)
