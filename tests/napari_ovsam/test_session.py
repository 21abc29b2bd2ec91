"""AnnotationSession without a viewer: prompts -> objects -> labels, undo, cache, precompute, propagation."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from session_fakes import CLASSES, FakePredictor, disk, make_session

from napari_ovsam.propagation import PropagationSettings, mask_box, mask_iou
from napari_ovsam.session import AnnotationSession, SessionBusy
from ovsam_model.build import build_ovsam
from ovsam_model.predictor import OVSAMPredictor


@pytest.fixture
def image_2d():
    """64x64: object 1 (value 10) a disk at (20, 20), object 2 (value 20) a disk at (44, 40)."""
    image = np.zeros((64, 64), np.uint16)
    image[disk(image.shape, (20, 20), 8)] = 10
    image[disk(image.shape, (44, 40), 9)] = 20
    return image


@pytest.fixture
def stack():
    """(6, 48, 48): object 3 (value 30) on slices 1..4, drifting one pixel per slice; object 1 everywhere."""
    data = np.zeros((6, 48, 48), np.uint16)
    for z in range(6):
        data[z, -1, -1] = z + 1  # every slice differs (cache keys are content hashes)
        data[z][disk((48, 48), (10, 10), 5)] = 10
        if 1 <= z <= 4:
            data[z][disk((48, 48), (28, 26 + z), 7)] = 30
    return data


def point_and_box(slice_index=()):
    """A positive point on object 1 at (row 20, col 20) and a box (rows 36..52, cols 31..49) on object 2."""
    lead = list(slice_index)
    points = np.array([[*lead, 20.0, 20.0]])
    rect = np.array([[*lead, 36, 31], [*lead, 36, 49], [*lead, 52, 49], [*lead, 52, 31]], float)
    return points, np.array([True]), [rect], ["rectangle"]


def test_segment_commit_and_undo_2d(image_2d):
    session = make_session(image_2d)
    session.ensure_embedding(())
    results = session.segment(*point_and_box(), slice_index=())
    assert len(results) == 2 and results.class_names == ["rod", "nucleus"]  # boxes first, then points
    assert results.masks[0].sum() == (image_2d == 20).sum()
    assert results.latency_ms >= 0

    group = session.commit(results)
    labels, features = session.target.labels, session.target.features
    assert group.label_ids == (1, 2)
    np.testing.assert_array_equal(labels == 1, image_2d == 20)
    np.testing.assert_array_equal(labels == 2, image_2d == 10)
    assert list(features["class_name"]) == ["rod", "nucleus"]
    assert list(features["label_id"]) == [1, 2] and not features["reviewed"].any()
    assert features.loc[0, "topk_names"].startswith("rod | ")
    row, col = session.target.anchors[(2, ())]
    assert image_2d[int(row), int(col)] == 10  # the name sits on its object

    assert session.undo() is group
    assert not session.target.labels.any() and session.target.features.empty
    assert session.target.anchors == {} and session.undo() is None


def test_keep_and_overwrite_modes_and_exact_undo(image_2d):
    session = make_session(image_2d)
    session.ensure_embedding(())
    first = session.segment(np.array([[20.0, 20.0]]), [True], [], [], slice_index=())
    session.commit(first)
    before_labels = session.target.labels.copy()
    before_features = session.target.features.copy()

    assert session.commit(first) is None  # keep: the same object paints nothing new
    np.testing.assert_array_equal(session.target.labels, before_labels)

    group = session.commit(first, mode="overwrite")
    assert group.label_ids == (2,) and (session.target.labels == 2).sum() == (image_2d == 10).sum()
    assert (1, ()) not in session.target.anchors  # object 1 was erased from the slice

    session.undo()
    np.testing.assert_array_equal(session.target.labels, before_labels)
    pd.testing.assert_frame_equal(session.target.features, before_features)
    assert (1, ()) in session.target.anchors


def test_unknown_threshold_vocabulary_change_and_rename(image_2d):
    session = make_session(image_2d, unknown_threshold=0.95)
    session.ensure_embedding(())
    results = session.segment(np.array([[20.0, 20.0]]), [True], [], [], slice_index=())
    assert results.class_names == ["unknown"] and results.topk_names[0][0] == "nucleus"
    session.commit(results)

    session.unknown_threshold = 0.0
    session.set_vocabulary(["cell", "blob"])
    assert session.vocabulary.names == ["cell", "blob"]
    assert list(session.target.features["class_name"]) == ["unknown"]  # committed names stay

    session.rename(1, "mitotic cell")
    row = session.target.row(1)
    assert row["class_name"] == "mitotic cell" and row["reviewed"]
    with pytest.raises(ValueError, match="No object"):
        session.rename(99, "x")


def test_embedding_cache_is_reused_and_required(image_2d):
    predictor = FakePredictor()
    session = make_session(image_2d, predictor)
    assert not session.embedding_ready(())
    with pytest.raises(RuntimeError, match="not computed"):
        session.segment(np.array([[20.0, 20.0]]), [True], [], [], slice_index=())
    info = session.ensure_embedding(())
    assert info.computed and session.embedding_ready(())
    assert not session.ensure_embedding(()).computed
    assert predictor.counts["encode"] == 1 == session.encoder_runs

    session.set_contrast_limits((0, 100))  # another contrast is another embedding
    assert not session.embedding_ready(()) and session.ensure_embedding(()).computed
    session.set_predictor(predictor, fingerprint="another model")
    assert session.ensure_embedding(()).computed and predictor.counts["encode"] == 3
    session.set_image(image_2d[::-1].copy(), contrast_limits=(0, 100))  # another image, same slice index
    assert not session.embedding_ready(())


class SliceOnly:
    """A lazy stack that only allows reading one slice at a time (np.asarray of it all fails)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, index):
        assert isinstance(index, (int, tuple)) and np.ndim(index) <= 1 and len(np.atleast_1d(index)) == 1
        self.reads.append(int(np.atleast_1d(index)[0]))
        return self.data[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was read")


def precompute(session, slice_index, start=0, stop=None, steps=None):
    """Run ``iter_precompute`` (to the end, or for ``steps`` slices, as a cancel would); the slices embedded."""
    walk = session.iter_precompute(slice_index, start, stop)
    computed = [new for _, (_, _, new) in zip(range(steps or 10**9), walk)]
    walk.close()
    return sum(computed)


def test_precompute_progress_cancel_and_resume(stack):
    lazy = SliceOnly(stack)
    session = make_session(lazy)
    assert [(done, total) for done, total, _ in session.iter_precompute((0,), 0, 2)] == [(1, 2), (2, 2)]
    assert precompute(session, (3,), start=1, stop=4) == 2  # slice 1 is cached, 2 and 3 are new
    assert precompute(session, (0,), steps=5) == 1  # stopped after slice 4: slice 5 is left
    assert precompute(session, (0,)) == 1 and session.encoder_runs == 6
    assert precompute(session, (0,)) == 0
    assert set(lazy.reads) == set(range(6))
    assert session.embedding_ready((4,))  # what precompute stored is what segmenting finds
    session.ensure_embedding((4,))
    assert session.encoder_runs == 6


def test_a_failed_embedding_is_remembered_until_the_setting_changes(image_2d):
    predictor = FakePredictor()
    session = make_session(image_2d, predictor)

    def fail(image, contrast_limits=None):
        raise ValueError("The image contains NaN or infinite pixels.")

    predictor.set_image = fail
    with pytest.raises(ValueError, match="NaN"):
        session.ensure_embedding(())
    assert session.embedding_failure(()) == "The image contains NaN or infinite pixels."
    session.set_contrast_limits((0, 10))  # another contrast may work: forgotten
    assert session.embedding_failure(()) is None
    with pytest.raises(ValueError):
        session.ensure_embedding(())
    session.forget_failures()  # the user asked again
    assert session.embedding_failure(()) is None


def test_each_labels_array_keeps_its_target_and_history(image_2d):
    session = make_session(image_2d)
    session.ensure_embedding(())
    first = session.target
    session.commit(session.segment(np.array([[20.0, 20.0]]), [True], [], [], slice_index=()))
    other = np.zeros_like(first.labels)
    other_target = session.attach_labels(other)
    assert other_target is not first and session.target.labels is other
    assert session.undo() is None  # the other labels have no history
    assert session.attach_labels(first.labels) is first and len(first.history) == 1
    assert session.target_of(other) is other_target
    assert session.detach_labels(first.labels) and session.target is None
    assert session.target_of(first.labels) is None and not session.detach_labels(first.labels)
    with pytest.raises(RuntimeError, match="No labels"):
        session.undo()


def test_user_edits_of_the_features_survive_the_next_commit(image_2d):
    """The layer's table is a view of the session's: a column the user added and a value they typed stay."""
    session = make_session(image_2d)
    session.ensure_embedding(())
    session.commit(session.segment(np.array([[20.0, 20.0]]), [True], [], [], slice_index=()))
    shown = session.target.features.copy()  # what the layer shows, edited by the user
    shown["note"] = ["looks odd"]
    shown.loc[0, "class_name"] = "my nucleus"
    session.attach_labels(session.target.labels, shown)  # the widget takes the edits in before writing
    session.commit(session.segment(np.array([[44.0, 40.0]]), [True], [], [], slice_index=()))
    features = session.target.features
    assert list(features["label_id"]) == [1, 2]
    assert features.loc[0, "class_name"] == "my nucleus" and features.loc[0, "note"] == "looks odd"
    assert pd.isna(features.loc[1, "note"]) and features.loc[1, "class_name"] == "rod"
    session.undo()
    assert list(session.target.features["note"]) == ["looks odd"]


def test_what_to_propagate(stack):
    session = make_session(stack)
    assert session.propagation_start(None, (2,)) is None  # nothing committed yet
    session.ensure_embedding((2,))
    session.commit(session.segment(np.array([[2, 28.0, 28.0]]), [True], [], [], slice_index=(2,)))
    assert session.propagation_start(None, (4,)) == ([1], (2,))  # the last commit, from its slice
    assert session.propagation_start(1, (4,)) == ([1], (2,))  # the selected object, from where it is
    assert session.propagation_start(1, (2,)) == ([1], (2,))
    assert session.propagation_start(9, (2,)) is None  # not an object


def test_propagation_through_stack_is_one_undo_step(stack):
    session = make_session(stack)
    session.ensure_embedding((2,))
    results = session.segment(np.array([[2, 28.0, 28.0]]), [True], [], [], slice_index=(2,))
    group = session.commit(results)
    assert group.label_ids == (1,) and results.class_names == ["ring"]
    after_commit = session.target.labels.copy()

    steps = list(session.iter_propagate([1], (2,), PropagationSettings(min_iou=0.5, min_overlap=0.3)))
    labels = session.target.labels
    assert [s.slice_index for s in steps if s.painted] == [(3,), (4,), (1,)]
    assert {s.reason for s in steps if not s.painted} == {"the mask vanished"}
    assert [z for z in range(6) if (labels[z] == 1).any()] == [1, 2, 3, 4]
    for z in range(1, 5):
        np.testing.assert_array_equal(labels[z] == 1, stack[z] == 30)
    assert sorted(session.target.slices_of(1)) == [(1,), (2,), (3,), (4,)]
    row = session.target.row(1)
    assert row["class_name"] == "ring" and row["score"] == pytest.approx(0.9)
    assert steps[-1].done == len(steps) <= steps[-1].total

    session.undo()  # the whole propagation, not the commit
    np.testing.assert_array_equal(session.target.labels, after_commit)
    assert session.target.slices_of(1) == [(2,)]
    session.undo()
    assert not session.target.labels.any()


def test_propagation_stops_on_low_iou_low_overlap_and_max_slices(stack):
    jumped = stack.copy()
    jumped[4] = np.where(jumped[4] == 30, 0, jumped[4])
    jumped[4][disk((48, 48), (28, 36), 7)] = 30  # the object jumps 7 pixels between slices 3 and 4
    jumped[1] = np.where(jumped[1] == 30, 40, jumped[1])  # on slice 1 it predicts with a low IoU
    session = make_session(jumped, FakePredictor(iou_by_value={40: 0.2}))
    session.ensure_embedding((2,))
    session.commit(session.segment(np.array([[2, 28.0, 28.0]]), [True], [], [], slice_index=(2,)))
    steps = list(session.iter_propagate([1], (2,), PropagationSettings(min_iou=0.5, min_overlap=0.3)))
    reasons = {s.slice_index: s.reason for s in steps}
    assert reasons[(3,)] == "" and "overlap" in reasons[(4,)] and "IoU 0.20" in reasons[(1,)]

    session.undo()
    steps = list(
        session.iter_propagate([1], (2,), PropagationSettings(min_iou=0, min_overlap=0, max_slices=1))
    )
    assert [s.slice_index for s in steps] == [(3,), (1,)]


def test_cancelled_propagation_keeps_its_slices_and_blocks_commits(stack):
    session = make_session(stack)
    session.ensure_embedding((2,))
    results = session.segment(np.array([[2, 28.0, 28.0]]), [True], [], [], slice_index=(2,))
    session.commit(results)
    walk = session.iter_propagate([1], (2,), PropagationSettings())
    first = next(walk)
    assert first.painted and first.slice_index == (3,)
    with pytest.raises(SessionBusy):
        session.commit(results)
    with pytest.raises(SessionBusy):
        session.undo()
    walk.close()  # cancel
    assert len(session.target.history) == 2
    assert [z for z in range(6) if (session.target.labels[z] == 1).any()] == [2, 3]
    session.undo()
    assert [z for z in range(6) if (session.target.labels[z] == 1).any()] == [2]


def test_job_predictor_shares_the_model_not_the_image(image_2d):
    session = make_session(image_2d)
    job = session.job_predictor()
    assert job.model is session.predictor.model and job is not session.predictor
    job.set_image(image_2d)
    assert session.predictor.features is None


def test_helpers():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:20] = True
    np.testing.assert_array_equal(mask_box(mask), [8, 5, 19, 9])
    assert mask_box(mask, 0.1).tolist() == pytest.approx([4.9, 2.6, 22.1, 11.4], abs=1e-4)
    assert mask_iou(mask, mask) == 1.0 and mask_iou(mask, ~mask) == 0.0
    assert mask_iou(np.zeros_like(mask), np.zeros_like(mask)) == 0.0


def test_with_the_tiny_model(tiny_ovsam_predictor):
    """The real predictor end to end on the CPU (random weights: only shapes and bookkeeping are checked)."""
    image = np.random.default_rng(0).integers(0, 1000, (3, 64, 80)).astype(np.uint16)
    session = AnnotationSession(copy.copy(tiny_ovsam_predictor))
    session.set_vocabulary("nucleus\nrod, bacterium\nring\ncluster\n")
    session.set_image(image)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    assert session.ensure_embedding((1,)).computed
    points, labels, shapes, types = point_and_box((1,))
    results = session.segment(points, labels, shapes, types, slice_index=(1,))
    assert results.masks.shape == (2, 64, 80) and results.topk_scores.shape == (2, 4)
    assert set(results.class_names) <= set(CLASSES)
    session.commit(results, mode="overwrite")
    assert set(session.target.features["label_id"]) <= {1, 2}


@pytest.fixture(scope="module")
def tiny_ovsam_predictor():
    """The real predictor over the tiny model (random weights)."""
    return OVSAMPredictor(build_ovsam("tiny", device="cpu"))
