"""Segment everything and Name labels in the session (no Qt): proposals, the commit, undo, kept labels,
classes, cancel, regions, bad inputs; and a click on background giving no object.

They run the shipped ``demo`` model (its own vocabulary) on crops of the sample images, with every filter open
(its thresholds are not what is tested): the tests check the bookkeeping (what is proposed is what is
committed, with its features; what was there stays). The tiny model (random weights) covers a tiled slice.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from session_fakes import FakePredictor, disk, make_session

from napari_ovsam._sample_data import sample_2d, sample_stack
from napari_ovsam.automatic import (
    AutomaticSettings,
    iter_name_labels,
    iter_segment_everything,
    parse_classes,
    visible_region,
)
from napari_ovsam.proposals import SOURCE_COLUMN, fit_to_labels, without_background
from napari_ovsam.results import CroppedMasks, ObjectResults
from napari_ovsam.session import AnnotationSession
from napari_ovsam.tiles import drain
from ovsam_model import OVSAMPredictor, build_ovsam
from ovsam_model.vocabulary import DEMO_CLASSES

OPEN = AutomaticSettings(
    points_per_side=6, points_per_batch=9, min_iou=0.0, min_stability=0.0, min_score=0.0,
    max_background=1.0, nms_iou=0.5, min_area=4,
)  # fmt: skip


def blobs(shape=(96, 96), seed=0):
    """A uint16 image of a few bright disks on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape[-2:])
    for centre, radius in (((24, 24), 10), ((30, 70), 8), ((70, 40), 12), ((72, 78), 6)):
        image[disk(shape[-2:], centre, radius)] += 800
    return np.clip(image, 0, None).astype(np.uint16)


def sample(size=128):
    return sample_2d()[0][0][:size, :size]


@pytest.fixture(scope="module")
def predictor():
    return OVSAMPredictor(build_ovsam("demo"))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    out = OVSAMPredictor(build_ovsam("tiny"))
    out.set_vocabulary(list(DEMO_CLASSES))
    return out


def tiny_session(predictor, image):
    session = AnnotationSession(predictor)
    session.set_image(image)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    return session


def object_masks(proposals):
    """slice -> list of full-size masks of its proposals."""
    return {s: [r.masks[i] for i in range(len(r))] for s, r in proposals.results.items()}


def test_segment_everything_previews_then_commits_one_undoable_step(predictor):
    session = tiny_session(predictor, sample())
    proposals = drain(iter_segment_everything(session, [()], settings=OPEN))
    assert len(proposals) > 3 and list(proposals.results) == [()]
    assert not session.target.labels.any() and not session.target.history  # only a preview so far
    results = proposals.on(())
    masks = object_masks(proposals)[()]
    assert not np.any(np.sum(masks, axis=0) > 1)  # non-overlapping

    group = session.commit_all(list(proposals.results.values()))
    labels, features = session.target.labels, session.target.features
    assert len(group.label_ids) == len(results) and len(session.target.history) == 1
    for label_id, mask in zip(group.label_ids, masks):
        np.testing.assert_array_equal(labels == label_id, mask)
    assert list(features["label_id"]) == list(group.label_ids)
    assert list(features["class_name"]) == results.class_names
    assert set(results.class_names) <= set(DEMO_CLASSES)
    np.testing.assert_allclose(features["score"], results.scores, rtol=1e-6)
    np.testing.assert_allclose(features["iou"], results.iou, rtol=1e-6)
    assert (
        all(features["topk_names"].str.split(" | ", regex=False).map(len) == 4)
        and not features["reviewed"].any()
    )
    assert set(a for a, _ in session.target.anchors) == set(group.label_ids)

    assert session.undo() is group
    assert not labels.any() and session.target.features.empty and not session.target.anchors


def test_existing_labels_are_kept_and_overlapping_proposals_dropped(predictor):
    session = tiny_session(predictor, sample())
    free = drain(iter_segment_everything(session, [()], settings=OPEN))
    first = free.on(()).masks[0]  # an object that will be labelled already
    session.target.labels[first] = 77
    before = session.target.labels.copy()
    proposals = drain(iter_segment_everything(session, [()], settings=OPEN))
    assert 0 < len(proposals) < len(free)
    for mask in object_masks(proposals)[()]:
        assert not (mask & first).any()  # dropped, or clipped to the free pixels
    session.commit_all(list(proposals.results.values()))
    np.testing.assert_array_equal(session.target.labels[first], 77)
    assert (session.target.labels[before == 0] != 77).all()


def test_fit_to_labels_drops_mostly_labelled_objects_and_clips_the_others():
    labels = np.zeros((1, 20, 20), np.uint32)
    labels[0, :, :10] = 5
    crops = [np.ones((4, 4), bool), np.ones((4, 8), bool), np.ones((4, 4), bool)]
    offsets = np.array([[0, 2], [8, 8], [14, 14]])  # inside the label, 2 of 8 columns on it, free
    zeros = np.zeros(3, np.float32)
    results = ObjectResults(
        (0,), CroppedMasks(crops, offsets, (20, 20)), ["a", "b", "c"], zeros + 0.9, zeros + 0.8,
        [["a"], ["b"], ["c"]], np.ones((3, 1), np.float32),
    )  # fmt: skip
    target = make_session(np.zeros((1, 20, 20), np.uint16)).target
    target.labels[:] = labels
    kept = fit_to_labels(results, target, "keep")
    assert kept.class_names == ["b", "c"]
    np.testing.assert_array_equal(kept.masks.crops[0], np.c_[np.zeros((4, 2), bool), np.ones((4, 6), bool)])
    np.testing.assert_array_equal(kept.masks.offsets, [[8, 8], [14, 14]])
    assert fit_to_labels(results, target, "overwrite") is results


def test_classes_filter_finds_all_of_one_class(predictor):
    session = tiny_session(predictor, sample())
    every = drain(iter_segment_everything(session, [()], settings=OPEN)).on(())
    chosen = every.class_names[0]
    only = drain(iter_segment_everything(session, [()], classes=[chosen], settings=OPEN)).on(())
    assert set(only.class_names) == {chosen}
    assert len(only) >= every.class_names.count(chosen)
    assert parse_classes(" nucleus ,rod ", DEMO_CLASSES) == ["nucleus", "rod"]
    assert parse_classes("  ", DEMO_CLASSES) is None
    with pytest.raises(ValueError, match="no class 'dog'.*nucleus"):
        parse_classes("nucleus, dog", DEMO_CLASSES)


def test_cancel_stops_the_annotator_and_commits_nothing(predictor):
    session = tiny_session(predictor, sample())
    steps = iter_segment_everything(session, [()], settings=OPEN)  # 36 points, 9 per batch
    messages = [next(steps)[2] for _ in range(2)]
    assert "encoding" in messages[0] and messages[1].endswith("9/36…")
    steps.close()  # what the job runner does on Cancel
    assert not any(t.name == "ovsam-automatic" for t in threading.enumerate())
    assert not session.target.labels.any() and not session.target.history


def test_whole_stack_is_one_undo_step_and_region_stays_in_its_box(predictor):
    session = tiny_session(predictor, sample_stack()[0][0][2:4, :128, :128])
    proposals = drain(iter_segment_everything(session, [(0,), (1,)], settings=OPEN))
    assert set(proposals.results) == {(0,), (1,)} and proposals.slices == 2
    group = session.commit_all(list(proposals.results.values()))
    assert {r.slice_index for r in group.records} == {(0,), (1,)} and not group.one_slice
    for z in (0, 1):
        assert len(np.unique(session.target.labels[z])) - 1 == len(proposals.on((z,)))
    session.undo()
    assert not session.target.labels.any() and not session.target.history

    region = (10, 70, 30, 100)
    inside = drain(iter_segment_everything(session, [(1,)], region=region, settings=OPEN)).on((1,))
    assert len(inside) > 1
    painted = inside.label_image() > 0
    assert painted.shape == (128, 128) and painted[10:70, 30:100].sum() == painted.sum()


def test_segment_everything_on_a_tiled_slice(tiny):
    image = np.tile(blobs(), (3, 3))  # 288 px under the tiny model's 128 px input: tiled
    session = tiny_session(tiny, image)
    assert session.tiled
    proposals = drain(iter_segment_everything(session, [()], settings=OPEN))
    results = proposals.on(())
    assert len(results) and isinstance(results.masks, CroppedMasks)
    group = session.commit_all([results])
    assert len(group.label_ids) == len(results) and group.one_slice
    assert len(np.unique(session.target.labels)) - 1 == len(results)


def test_name_labels_keeps_the_masks_and_maps_the_ids(predictor):
    stack = np.stack([blobs(seed=0), blobs(seed=1)])
    session = tiny_session(predictor, stack)
    user = np.zeros(stack.shape, np.uint16)
    user[0][disk((96, 96), (24, 24), 10)] = 5
    user[0][disk((96, 96), (70, 40), 12)] = 300
    user[1][disk((96, 96), (30, 70), 8)] = 9
    original = user.copy()
    proposals = drain(iter_name_labels(session, user, [(0,), (1,)]))
    assert len(proposals) == 3
    np.testing.assert_array_equal(user, original)  # the source is never changed
    session.commit_all(list(proposals.results.values()))
    labels, features = session.target.labels, session.target.features
    assert sorted(features[SOURCE_COLUMN]) == [5, 9, 300]
    for _, row in features.iterrows():
        z = 1 if row[SOURCE_COLUMN] == 9 else 0
        np.testing.assert_array_equal(labels[z] == row["label_id"], user[z] == row[SOURCE_COLUMN])
    assert set(features["class_name"]) <= set(DEMO_CLASSES) and not features["reviewed"].any()
    assert features["topk_names"].str.len().min() > 0


@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((64, 64), np.uint16), r"shape \(64, 64\) but the image \(96, 96\)"),
        (np.zeros((96, 96), np.float32), "float32: choose integer labels"),
        (np.full((96, 96), 2**60, np.uint64), "above 2\\^53: renumber"),
        (np.full((96, 96), -3, np.int32), "negative id"),
    ],
)
def test_name_labels_bad_inputs_change_nothing(predictor, source, match):
    session = tiny_session(predictor, blobs())
    with pytest.raises(ValueError, match=match):
        drain(iter_name_labels(session, source, [()]))
    assert not session.target.labels.any() and not session.target.history


def test_visible_region_from_the_camera():
    # a 100x200 image at scale 2, offset (10, 20): the camera sees world rows 40..80 and columns 60..140
    region = visible_region((0, 60, 100), 2.0, (80, 160), (1, 2, 2), (0, 10, 20), (100, 200))
    assert region == (15, 36, 20, 61)
    assert visible_region((60, 100), 0.01, (80, 160), (2, 2), (10, 20), (100, 200)) == (0, 100, 0, 200)
    assert visible_region((5000, 5000), 2.0, (80, 160), (2, 2), (10, 20), (100, 200)) is None


def test_a_click_on_background_gives_no_object():
    image = np.zeros((32, 32), np.float32)
    image[4:12, 4:12] = 10
    point = np.array([[8.0, 8.0]])
    for background, objects in ((0.9, 0), (0.1, 1), (0.45, 1)):  # the fake's best class has 0.9
        session = make_session(image, FakePredictor(background=background))
        session.ensure_embedding(())
        results = session.segment(point, np.array([True]), [], [], ())
        assert len(results) == objects and len(results.masks) == objects
        assert ("No object here (background)." in results.messages) == (objects == 0)


def test_an_object_whose_background_beats_every_class_is_no_object():
    zeros = np.zeros(3, np.float32)
    results = ObjectResults(
        (), np.ones((3, 4, 4), bool), ["a", "b", "c"], np.array([0.3, 0.2, 0.6], np.float32), zeros,
        [["a"], ["b"], ["c"]], np.ones((3, 1), np.float32), background=np.array([0.25, 0.4, 0.3], np.float32),
    )  # fmt: skip
    kept = without_background(results)
    assert (
        kept.class_names == ["a", "c"]
        and len(kept.masks) == 2
        and kept.background.tolist() == pytest.approx([0.25, 0.3])
    )
    assert kept.messages == ["1 prompt(s) on background: no object there."]
