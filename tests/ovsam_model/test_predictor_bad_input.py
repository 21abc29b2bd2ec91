"""Bad input to the model package's public entry points: one row per case, each a clear ``ValueError``.

A row is (case id, call, message fragment). A new entry point joins by adding its rows; nothing may fail with a
TypeError, KeyError, IndexError, ZeroDivisionError or a torch RuntimeError from inside the code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from ovsam_model.image import to_model_rgb
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.vocabulary import Vocabulary, as_vocabulary

IMAGE = np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)
BOX = [[5, 5, 30, 30]]


@pytest.fixture
def ready(tiny_predictor: OVSAMPredictor) -> OVSAMPredictor:
    tiny_predictor.set_image(IMAGE)
    return tiny_predictor


def _state(predictor: OVSAMPredictor, **changes: Any) -> dict[str, Any]:
    state = predictor.get_image_embedding()
    for key, value in changes.items():
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


def _nan_embedding(p: OVSAMPredictor) -> dict[str, Any]:
    return _state(p, embedding=np.full_like(p.get_image_embedding()["embedding"], np.nan))


Case = tuple[str, Callable[[OVSAMPredictor], Any], str]

PREDICTOR_CASES: list[Case] = [
    # images
    ("image 4D", lambda p: p.set_image(np.zeros((2, 2, 8, 8), np.uint8)), "one slice at a time"),
    ("image empty", lambda p: p.set_image(np.zeros((0, 5), np.uint8)), "empty"),
    ("image NaN pixel", lambda p: p.set_image(np.where(np.eye(16) > 0, np.nan, 1.0)), "NaN"),
    ("image infinite", lambda p: p.set_image(np.full((16, 16), np.inf)), "NaN or infinite"),
    ("image complex", lambda p: p.set_image(np.ones((16, 16), complex)), "dtype complex128"),
    ("image of objects", lambda p: p.set_image(np.empty((16, 16), object)), "dtype object"),
    ("image channels first", lambda p: p.set_image(np.zeros((3, 64, 64), np.uint8)), "channels-first"),
    ("image None", lambda p: p.set_image(None), "2D image"),
    # contrast limits
    ("contrast inverted", lambda p: p.set_image(IMAGE, contrast_limits=(10, 0)), "inverted"),
    ("contrast NaN", lambda p: p.set_image(IMAGE, contrast_limits=(np.nan, 1)), "finite"),
    ("contrast infinite", lambda p: p.set_image(IMAGE, contrast_limits=(0, np.inf)), "finite"),
    ("contrast one value", lambda p: p.set_image(IMAGE, contrast_limits=(1,)), "two numbers"),
    ("contrast text", lambda p: p.set_image(IMAGE, contrast_limits=("a", "b")), "two numbers"),
    # vocabularies and text embeddings
    ("vocabulary None", lambda p: p.set_vocabulary(None), "list of class entries"),
    ("vocabulary number", lambda p: p.set_vocabulary(5), "list of class entries"),
    ("vocabulary empty list", lambda p: p.set_vocabulary([]), "empty"),
    ("vocabulary empty text", lambda p: p.set_vocabulary(""), "empty"),
    ("vocabulary blank class", lambda p: p.set_vocabulary(["a", " , "]), "no class name"),
    ("vocabulary duplicate", lambda p: p.set_vocabulary(["cell", "Cell"]), "Duplicate class names"),
    ("vocabulary non-string class", lambda p: p.set_vocabulary(["a", 3]), "class 2"),
    ("seen flags wrong length", lambda p: p.set_vocabulary(["a", "b"], seen=[True]), "seen has 1 flags"),
    (
        "text embeddings wrong class count",
        lambda p: p.set_vocabulary(["a", "b"], text_embeddings=torch.zeros(3, 1, 32)),
        "K = 2 classes",
    ),
    (
        "text embeddings 2D",
        lambda p: p.set_vocabulary(["a"], text_embeddings=torch.zeros(1, 32)),
        "[K, P, D]",
    ),
    (
        "text embeddings wrong width",
        lambda p: p.set_vocabulary(["a"], text_embeddings=torch.zeros(1, 1, 5)),
        "5 features per synonym",
    ),
    (
        "text embeddings NaN",
        lambda p: p.set_vocabulary(["a"], text_embeddings=torch.full((1, 1, 32), float("nan"))),
        "NaN",
    ),
    # prompts
    ("box NaN", lambda p: p.predict(boxes=[[np.nan, 0, 10, 10]]), "NaN"),
    ("box outside", lambda p: p.predict(boxes=[[0, 0, 100, 100]]), "outside"),
    ("box inverted", lambda p: p.predict(boxes=[[30, 30, 10, 10]]), "inverted"),
    ("box 5 numbers", lambda p: p.predict(boxes=[[1, 2, 3, 4, 5]]), "(N, 4)"),
    ("box text", lambda p: p.predict(boxes="abc"), "must be numbers"),
    ("no prompt", lambda p: p.predict(), "No prompt"),
    ("labels without points", lambda p: p.predict(point_labels=[1], boxes=BOX), "without points"),
    ("points without labels", lambda p: p.predict(points=[[5, 5]]), "point_labels are required"),
    (
        "labels mismatch",
        lambda p: p.predict(points=[[5, 5], [6, 6]], point_labels=[1]),
        "one label per point",
    ),
    ("label 7", lambda p: p.predict(points=[[5, 5]], point_labels=[7]), "must be 1 (positive)"),
    ("only padding", lambda p: p.predict(points=[[5, 5]], point_labels=[-1]), "real (non-padding)"),
    ("only negative", lambda p: p.predict(points=[[5, 5]], point_labels=[0]), "no positive point"),
    ("point outside", lambda p: p.predict(points=[[500, 5]], point_labels=[1]), "outside"),
    (
        "object counts differ",
        lambda p: p.predict(points=np.full((2, 1, 2), 5.0), point_labels=np.ones((2, 1)), boxes=BOX * 3),
        "2 point groups and 3 boxes",
    ),
    # options
    ("top_k 0", lambda p: p.predict(boxes=BOX, top_k=0), "top_k"),
    ("top_k negative", lambda p: p.predict(boxes=BOX, top_k=-1), "top_k"),
    ("top_k fraction", lambda p: p.predict(boxes=BOX, top_k=2.5), "top_k"),
    ("top_k text", lambda p: p.predict(boxes=BOX, top_k="3"), "top_k"),
    ("chunk size 0", lambda p: OVSAMPredictor(p.model, chunk_size=0), "chunk_size"),
    ("chunk size negative", lambda p: OVSAMPredictor(p.model, chunk_size=-1), "chunk_size"),
    ("chunk size fraction", lambda p: OVSAMPredictor(p.model, chunk_size=2.5), "chunk_size"),
    # image embedding states
    ("state not a dict", lambda p: p.set_image_embedding([1, 2]), "dict get_image_embedding"),
    ("state empty", lambda p: p.set_image_embedding({}), "embedding is None"),
    ("state without a level", lambda p: p.set_image_embedding(_state(p, fpn_1=None)), "fpn_1 is None"),
    (
        "state level of another shape",
        lambda p: p.set_image_embedding(_state(p, fpn_0=np.zeros((1, 4, 4), np.float32))),
        "fpn_0 is (1, 4, 4)",
    ),
    ("state NaN", lambda p: p.set_image_embedding(_nan_embedding(p)), "NaN"),
    ("state without sizes", lambda p: p.set_image_embedding(_state(p, original_size=None)), "original_size"),
    ("state sizes text", lambda p: p.set_image_embedding(_state(p, original_size="ab")), "original_size"),
    (
        "state negative size",
        lambda p: p.set_image_embedding(_state(p, original_size=(-5, 10))),
        "original_size",
    ),
    (
        "state sizes disagree",
        lambda p: p.set_image_embedding(_state(p, input_size=(5, 5))),
        "does not match its original_size",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in PREDICTOR_CASES], ids=[c[0] for c in PREDICTOR_CASES]
)
def test_predictor_bad_input_raises_one_clear_value_error(ready, call, message) -> None:
    with pytest.raises(ValueError) as error:
        call(ready)
    assert message in str(error.value)


def test_predictor_without_image_or_vocabulary(tiny_model) -> None:
    predictor = OVSAMPredictor(tiny_model)
    with pytest.raises(ValueError, match="No image is set"):
        predictor.predict(boxes=BOX)
    with pytest.raises(ValueError, match="No image is set"):
        predictor.get_image_embedding()
    predictor.set_image(IMAGE)
    with pytest.raises(ValueError, match="No vocabulary is set"):
        predictor.predict(boxes=BOX)


@pytest.mark.parametrize(
    "image",
    [
        np.ones((32, 32), bool),
        np.zeros((1, 2000), np.uint8),
        np.zeros((2000, 1), np.uint16),
        np.full((32, 32), np.iinfo(np.int64).max),
        np.arange(1024, dtype=np.uint64).reshape(32, 32) * 2**54,
        np.full((32, 32), 1e300),
        np.ones((16, 16), np.float16),
        -np.arange(1024.0).reshape(32, 32),
        [[0, 10], [20, 30]],
    ],
    ids=["bool", "1x2000", "2000x1", "int64 max", "uint64", "1e300", "float16", "negative", "nested list"],
)
def test_extreme_images_segment_with_finite_scores(ready, image) -> None:
    """Images that once crashed (a 1-px strip, bool, flat int64 extremes) now encode and name objects."""
    ready.set_image(image)
    h, w = np.shape(image)[:2]
    result = ready.predict(boxes=[[0, 0, w, h]])
    assert result.masks.shape == (1, 1, h, w)
    assert np.isfinite(result.scores).all() and np.isfinite(result.iou).all()
    assert result.class_names[0] in ready.vocabulary.names


def test_contrast_rule_edge_cases() -> None:
    flat = to_model_rgb(np.full((4, 4), np.iinfo(np.int64).max))
    assert flat.shape == (4, 4, 3) and np.isfinite(flat).all() and (flat == 0).all()
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    rgb = to_model_rgb(mask)
    assert rgb[1, 1, 0] == 255 and rgb[0, 0, 0] == 0
    equal_limits = to_model_rgb(np.arange(16.0).reshape(4, 4), contrast_limits=(5, 5))
    assert equal_limits.min() == 0 and equal_limits.max() == 255  # a threshold at 5


def test_text_vocabulary_is_one_class_per_line(ready) -> None:
    """A plain string is a text (one class per line): "cat" is one class, not c, a, t."""
    ready.set_vocabulary("cat")
    assert ready.vocabulary.names == ["cat"]
    ready.set_vocabulary("cat\ndog, puppy")
    assert ready.vocabulary.synonyms == [["cat"], ["dog", "puppy"]]
    assert as_vocabulary(np.array(["a", "b"])).names == ["a", "b"]
    assert as_vocabulary(("x",)) == Vocabulary(["x"])


BASELINE_CASES = [
    c for c in PREDICTOR_CASES if c[0].startswith(("box", "label", "point", "top_k", "vocabulary"))
]


@pytest.fixture(scope="module")
def baseline():
    from ovsam_model.baselines import build_baseline

    model = build_baseline(
        "image_crop", sam="tiny", clip_model="ovsam-tiny-RN", clip_pretrained="none", device="cpu"
    )
    model.set_image(IMAGE)
    return model


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in BASELINE_CASES], ids=[c[0] for c in BASELINE_CASES]
)
def test_baselines_refuse_the_same_bad_input(baseline, call, message) -> None:
    """The baselines share the predictor's interface, and so its checks and messages."""
    baseline.set_vocabulary(["nucleus", "rod"])
    with pytest.raises(ValueError) as error:
        call(baseline)
    assert message in str(error.value)
