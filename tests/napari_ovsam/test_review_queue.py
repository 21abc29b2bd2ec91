"""The review queue without Qt: the uncertainty order, navigation, the count, alternatives, where objects are."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from napari_ovsam.features import add_feature_rows, features_row
from napari_ovsam.review import (
    ReviewQueue,
    alternative,
    locate,
    margin_of,
    review_order,
    review_summary,
    reviewed_count,
)
from napari_ovsam.targets import LabelsTarget


def table(*rows: dict) -> pd.DataFrame:
    return add_feature_rows(None, list(rows))


def row(label_id, name="rod", score=0.5, scores=(0.5, 0.3), reviewed=False, names=None):
    names = names if names is not None else ["rod", "ring", "nucleus", "cluster", "unknown"][: len(scores)]
    return features_row(label_id, name, score, 0.9, names, scores, reviewed=reviewed)


def test_margin_is_top1_minus_top2_with_bounds_for_missing_alternatives():
    assert margin_of(row(1, scores=(0.6, 0.25, 0.1))) == pytest.approx(0.35)
    assert margin_of(row(1, scores=(0.25, 0.6))) == pytest.approx(0.35)  # stored out of order: best first
    # One stored alternative: the runner-up may hold all the rest, so the margin is its lowest possible value.
    assert margin_of(row(1, score=0.8, scores=(0.8,))) == pytest.approx(0.6)
    assert margin_of(row(1, score=0.4, scores=(0.4,))) == 0.0
    assert margin_of(row(1, score=0.9, scores=())) == pytest.approx(
        0.8
    )  # no alternatives: the score is top-1
    assert math.isnan(margin_of(row(1, score=math.nan, scores=())))  # nothing known


def test_order_reviewed_last_unknown_first_then_margin_then_score_then_id():
    features = table(
        row(1, scores=(0.9, 0.05)),  # margin 0.85: sure
        row(2, scores=(0.5, 0.45), reviewed=True),  # the smallest margin, but reviewed: last
        row(3, scores=(0.6, 0.5), score=0.6),  # margin 0.1
        row(4, name="unknown", score=0.2, scores=(0.2, 0.01)),  # named unknown: first despite margin 0.19
        row(5, scores=(0.7, 0.6), score=0.7),  # margin 0.1 too, higher score than 3: after it
        row(6, score=math.nan, scores=()),  # confidence not known: after every scored object
        row(7, scores=(0.6, 0.5), score=0.6),  # the same as 3: the lower id first
        row(8, scores=(0.95, 0.01), reviewed=True),
    )
    assert review_order(features) == [4, 3, 7, 5, 1, 6, 2, 8]
    assert reviewed_count(features) == (2, 8) and review_summary(features) == "2 / 8 reviewed"
    assert review_order(None) == [] and review_summary(None) == "0 / 0 reviewed"


def test_a_table_without_scores_or_alternatives_is_ordered_by_id():
    foreign = pd.DataFrame(
        {"label_id": [5, 2, 9], "class_name": ["a", "b", "c"]}
    )  # e.g. another tool's labels
    assert review_order(foreign) == [2, 5, 9]
    assert ReviewQueue().next(foreign) == 2


def test_navigation_walks_unreviewed_objects_and_wraps_around():
    features = table(row(1, scores=(0.9, 0.1)), row(2, scores=(0.5, 0.4)), row(3, scores=(0.6, 0.3)))
    queue = ReviewQueue()
    assert [queue.next(features) for _ in range(4)] == [2, 3, 1, 2]  # margins 0.1, 0.3, 0.8, then around
    assert [queue.previous(features) for _ in range(3)] == [1, 3, 2]
    fresh = ReviewQueue()
    assert fresh.previous(features) == 1  # from nowhere, backwards: the surest unreviewed object
    assert fresh.next(features, selected=2) == 3  # a selected object is where the queue steps from


def test_accepting_or_renaming_the_current_object_does_not_skip_or_repeat():
    features = table(
        row(1, name="unknown", score=0.3, scores=(0.3, 0.2)),
        row(2, scores=(0.5, 0.4)),
        row(3, scores=(0.6, 0.3)),
    )
    queue = ReviewQueue()
    assert queue.next(features) == 1
    # The user took an alternative for 1: renamed (out of the unknown group) and reviewed.
    features.loc[features["label_id"] == 1, ["class_name", "reviewed"]] = ["rod", True]
    assert queue.next(features, selected=1) == 2
    features.loc[features["label_id"] == 2, "reviewed"] = True  # accepted
    assert queue.next(features, selected=2) == 3
    features.loc[features["label_id"] == 3, "reviewed"] = True
    assert queue.next(features, selected=3) is None and queue.previous(features) is None  # all reviewed


def test_the_queue_survives_its_object_being_undone():
    features = table(row(1, scores=(0.9, 0.1)), row(2, scores=(0.5, 0.4)), row(3, scores=(0.6, 0.3)))
    queue = ReviewQueue()
    assert queue.next(features) == 2
    gone = features[features["label_id"] != 2]
    assert queue.next(gone, selected=None) == 3  # from where 2 was
    queue.forget()
    assert queue.next(gone) == 3 and queue.next(table()) is None


def test_alternative_names_are_numbered_from_one():
    features = table(row(4, scores=(0.5, 0.3, 0.1), names=["rod", "ring", "nucleus"]))
    assert [alternative(features, 4, k) for k in (1, 2, 3, 4)] == ["rod", "ring", "nucleus", None]
    assert alternative(features, 99, 1) is None
    with pytest.raises(ValueError, match="from 1"):
        alternative(features, 4, 0)


def _painted_target(labels: np.ndarray) -> LabelsTarget:
    target = LabelsTarget(labels)
    for label_id in np.unique(labels[labels > 0]):
        target.features = add_feature_rows(target.features, [row(int(label_id))])
    return target


def test_locate_2d_gives_the_centroid():
    labels = np.zeros((40, 50), np.uint32)
    labels[10:20, 30:36] = 3
    place = locate(_painted_target(labels), 3, ())
    assert place.slice_index == () and (place.row, place.col) == pytest.approx((14.5, 32.5))
    assert place.box == (10, 20, 30, 36)  # half-open (row0, row1, col0, col1)
    assert locate(_painted_target(labels), 4, ()) is None


def test_locate_in_a_stack_prefers_the_slice_in_view_then_anchors_then_pixels():
    labels = np.zeros((5, 30, 30), np.uint32)
    labels[1, 2:6, 2:6] = 7
    labels[3, 10:20, 10:14] = 7
    target = _painted_target(labels)
    assert locate(target, 7, (3,)).slice_index == (3,)  # it is in view there: stay
    no_anchor = locate(target, 7, (0,))  # not in view, no anchors: its first slice, searched in memory
    assert no_anchor.slice_index == (1,) and (no_anchor.row, no_anchor.col) == pytest.approx((3.5, 3.5))
    target.anchors[(7, (3,))] = (15.0, 12.0)  # committed in this session on slice 3
    anchored = locate(target, 7, (0,))
    assert anchored.slice_index == (3,) and (anchored.row, anchored.col) == pytest.approx((14.5, 11.5))


def test_locate_reads_only_the_slice_in_view_of_lazy_labels():
    class Lazy:
        """A lazy (not numpy) labels array that records which slices are read."""

        def __init__(self, data):
            self.data, self.shape, self.dtype, self.ndim, self.reads = (
                data,
                data.shape,
                data.dtype,
                data.ndim,
                [],
            )

        def __getitem__(self, index):
            self.reads.append(index)
            return self.data[index]

    data = np.zeros((4, 20, 20), np.uint32)
    data[2, 5:9, 5:9] = 1
    lazy = Lazy(data)
    target = LabelsTarget(lazy, table(row(1)))
    assert locate(target, 1, (0,)) is None and lazy.reads == [(0,)]  # not in view, not searched further
    target.anchors[(1, (2,))] = (6.0, 7.0)
    place = locate(target, 1, (0,))
    assert (place.slice_index, place.row, place.col) == ((2,), 6.0, 7.0) and lazy.reads == [(0,)]
    assert place.box is None  # its pixels were not read
