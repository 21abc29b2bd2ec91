"""Painting objects into labels (numpy and zarr), exact undo, label ids, the napari-compatible features table,
and the labels target's history budget."""

import numpy as np
import pandas as pd
import pytest
import zarr

from napari_ovsam.features import (
    add_feature_rows,
    empty_features,
    ensure_features,
    features_row,
    max_feature_id,
    remove_feature_rows,
    topk_from_row,
)
from napari_ovsam.painting import max_label, paint_masks, undo_commit
from napari_ovsam.results import ObjectResults
from napari_ovsam.targets import LabelsTarget


def box_mask(shape, r0, r1, c0, c1):
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


class RecordingArray:
    """A (Z, H, W) array that records every key read or written, like a chunked store would see them."""

    def __init__(self, array):
        self.array, self.reads, self.writes = array, [], []

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    ndim = property(lambda self: self.array.ndim)

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]

    def __setitem__(self, key, value):
        self.writes.append(key)
        self.array[key] = value


# ------------------------------------------------------------------------------------------------ ids


def test_max_label_and_max_feature_id(tmp_path):
    labels = np.zeros((3, 8, 8), np.uint16)
    labels[2, 1, 1] = 41
    assert max_label(labels) == 41 and max_label(np.zeros((4, 4), np.int32)) == 0
    stored = zarr.create_array(str(tmp_path / "l.zarr"), shape=labels.shape, dtype="uint16", chunks=(1, 8, 8))
    assert max_label(stored) == 0  # no chunk stored: nothing to read
    stored[...] = labels
    assert max_label(stored) == 41
    assert max_feature_id(add_feature_rows(None, [features_row(7, "ring", 0.9, 0.8)])) == 7
    assert max_feature_id(empty_features()) == 0


def _one_object(slice_index, shape, r0):
    masks = np.zeros((1, *shape), bool)
    masks[0, r0 : r0 + 3, 2:5] = True
    one = np.ones(1, np.float32)
    return ObjectResults(slice_index, masks, ["a"], one, one, [["a"]], np.ones((1, 1)))


def test_new_ids_are_unique_over_a_zarr_stack_painted_by_hand(tmp_path):
    """Ids painted before the first commit are found by one scan; later brush strokes by paint events; the
    stack is not read again for later commits."""
    stored = zarr.create_array(
        str(tmp_path / "l.zarr"), shape=(3, 16, 16), dtype="uint32", chunks=(1, 16, 16)
    )
    stored[0, 1, 1] = 1  # painted by hand on slice 0, no features row
    recording = RecordingArray(stored)
    target = LabelsTarget(recording)
    [first] = target.commit(_one_object((1,), (16, 16), 4)).label_ids
    assert first == 2
    reads = len(recording.reads)
    stored[2, 0, 0] = 9  # a brush stroke on slice 2, as napari's paint event reports it
    target.note_painted([(np.array([[2], [0], [0]]), np.array([0]), 9)])
    [second] = target.commit(_one_object((1,), (16, 16), 10)).label_ids
    assert second == 10
    assert len(recording.reads) - reads == 1  # only the committed box was read


# ------------------------------------------------------------------------------------------------ painting


def test_keep_mode_never_overwrites_and_first_mask_wins():
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 9  # an existing object
    masks = np.stack([box_mask((10, 10), 0, 5, 0, 5), box_mask((10, 10), 4, 8, 4, 8)])
    record = paint_masks(labels, masks, [10, 11])
    assert (labels[0:3, 0:3] == 9).all()
    assert (labels[3:5, 0:5] == 10).all() and labels[4, 4] == 10  # first mask keeps the overlap
    assert labels[5, 5] == 11 and labels[4, 7] == 11
    assert record.label_ids == (10, 11) and record.empty_ids == ()
    assert record.bbox == (0, 8, 0, 8)
    assert record.num_pixels == 25 - 9 + 16 - 1


def test_overwrite_mode_replaces_existing_labels():
    labels = np.full((6, 6), 3, np.uint8)
    paint_masks(labels, box_mask((6, 6), 1, 3, 1, 3), [4], mode="overwrite")
    assert (labels[1:3, 1:3] == 4).all()
    assert (labels == 3).sum() == 32


def test_fully_covered_and_empty_masks_are_reported():
    labels = np.ones((5, 5), np.int32)
    masks = np.stack([box_mask((5, 5), 0, 2, 0, 2), np.zeros((5, 5), bool)])
    rows = [features_row(2, "rod", 0.5, 0.5), features_row(3, "ring", 0.5, 0.5)]
    record = paint_masks(labels, masks, [2, 3], feature_rows=rows)
    assert record.label_ids == () and record.empty_ids == (2, 3)
    assert record.feature_rows == [] and record.num_pixels == 0
    assert (labels == 1).all()
    assert undo_commit(labels, record) == 0

    nothing = paint_masks(labels, np.zeros((1, 5, 5), bool), [4])
    assert nothing.empty_ids == (4,) and nothing.num_pixels == 0


def test_undo_restores_exactly_and_spares_later_edits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 16, 16)).astype(np.int32)
    original = labels.copy()
    masks = np.stack([box_mask((16, 16), 2, 9, 3, 12), box_mask((16, 16), 7, 15, 0, 6)])
    record = paint_masks(labels, masks, [20, 21], slice_index=(1,), mode="overwrite")
    assert (labels[0] == original[0]).all()
    assert undo_commit(labels, record) == record.num_pixels
    np.testing.assert_array_equal(labels, original)

    record = paint_masks(labels, masks, [20, 21], slice_index=(1,), mode="overwrite")
    labels[1, 3, 3] = 99  # the user paints over a committed pixel afterwards
    restored = undo_commit(labels, record)
    assert restored == record.num_pixels - 1
    assert labels[1, 3, 3] == 99
    expected = original.copy()
    expected[1, 3, 3] = 99
    np.testing.assert_array_equal(labels, expected)


def test_commits_undone_in_reverse_order_restore_the_start():
    labels = np.zeros((12, 12), np.int32)
    first = paint_masks(labels, box_mask((12, 12), 0, 6, 0, 6), [1])
    second = paint_masks(labels, box_mask((12, 12), 3, 9, 3, 9), [2], mode="overwrite")
    undo_commit(labels, second)
    assert (labels[0:6, 0:6] == 1).all() and labels[8, 8] == 0
    undo_commit(labels, first)
    assert not labels.any()


def test_only_the_bounding_box_of_one_slice_is_read_and_written():
    store = RecordingArray(np.zeros((4, 32, 32), np.uint16))
    record = paint_masks(store, box_mask((32, 32), 5, 9, 10, 20), [3], slice_index=(2,))
    expected_key = (2, slice(5, 9), slice(10, 20))
    assert store.reads == [expected_key] and store.writes == [expected_key]
    undo_commit(store, record)
    assert store.writes[-1] == expected_key
    assert not store.array.any()


def test_painting_a_zarr_stack_in_place(tmp_path):
    stack = zarr.create_array(
        str(tmp_path / "labels.zarr"), shape=(3, 20, 20), dtype="uint32", chunks=(1, 10, 10)
    )
    record = paint_masks(stack, box_mask((20, 20), 2, 5, 12, 18), [7], slice_index=(1,))
    assert (stack[1, 2:5, 12:18] == 7).all()
    assert int(np.asarray(stack[...]).sum()) == 7 * 18
    undo_commit(stack, record)
    assert not np.asarray(stack[...]).any()


def test_paint_masks_rejects_bad_input():
    labels = np.zeros((2, 8, 8), np.uint8)
    mask = box_mask((8, 8), 0, 2, 0, 2)
    with pytest.raises(ValueError, match="slice_index"):
        paint_masks(labels, mask, [1])
    with pytest.raises(ValueError, match="do not match"):
        paint_masks(labels, np.zeros((1, 4, 4), bool), [1], slice_index=(0,))
    with pytest.raises(ValueError, match="positive"):
        paint_masks(labels, mask, [0], slice_index=(0,))
    with pytest.raises(ValueError, match="dtype"):
        paint_masks(labels, mask, [300], slice_index=(0,))
    with pytest.raises(ValueError, match="ids"):
        paint_masks(labels, mask, [1, 2], slice_index=(0,))
    with pytest.raises(ValueError, match="mode"):
        paint_masks(labels, mask, [1], slice_index=(0,), mode="merge")


# ------------------------------------------------------------------------------------------------ features


def test_features_row_and_topk_round_trip():
    row = features_row(5, "ring", 0.8, 0.9, ["ring", "rod"], [0.8, 0.15])
    assert row["index"] == row["label_id"] == 5
    assert row["topk_names"] == "ring | rod" and row["topk_scores"] == "0.8000 | 0.1500"
    assert topk_from_row(row) == (["ring", "rod"], [0.8, 0.15])
    assert topk_from_row(features_row(1, "x", 0, 0)) == ([], [])
    with pytest.raises(ValueError, match="separator"):
        features_row(1, "a|b", 0.5, 0.5, ["a|b"], [0.5])


def test_add_replace_and_remove_rows():
    table = add_feature_rows(None, [features_row(1, "nucleus", 0.9, 0.8), features_row(2, "rod", 0.7, 0.6)])
    assert list(table["index"]) == [1, 2] and list(table.index) == [0, 1]
    table = add_feature_rows(table, [features_row(2, "ring", 0.5, 0.4, reviewed=True)])
    assert list(table["label_id"]) == [1, 2]
    assert table.set_index("label_id").loc[2, "class_name"] == "ring"
    assert table["reviewed"].dtype == bool and table["index"].dtype == np.int64
    table = remove_feature_rows(table, [1])
    assert list(table["index"]) == [2] and list(table.index) == [0]
    assert len(remove_feature_rows(table, [2])) == 0
    pd.testing.assert_frame_equal(add_feature_rows(table, []), table)


def test_ensure_features_accepts_napari_and_foreign_tables():
    assert list(ensure_features(pd.DataFrame()).columns)[:2] == ["index", "label_id"]
    from_ids = ensure_features(pd.DataFrame({"label_id": [4, 9], "class_name": ["a", "b"], "area": [3, 4]}))
    assert list(from_ids["index"]) == [4, 9]
    assert "area" in from_ids.columns  # extra user columns survive
    implicit = ensure_features({"class_name": ["background", "a"]})  # napari's rule: row i is label i
    assert list(implicit["index"]) == [0, 1]


def test_napari_labels_layer_maps_values_to_our_rows():
    layers = pytest.importorskip("napari.layers")
    data = np.zeros((10, 10), np.int32)
    data[2:4, 2:4] = 7
    data[6:8, 6:8] = 3
    features = add_feature_rows(
        None,
        [features_row(7, "ring", 0.91, 0.8, ["ring", "rod"], [0.91, 0.05]), features_row(3, "rod", 0.5, 0.4)],
    )
    layer = layers.Labels(data, features=features)
    assert layer._label_index == {7: 0, 3: 1}
    shown = layer._get_properties((2, 2))
    assert "class_name: ring" in shown and "label_id: 7" in shown
    assert not any(s.startswith("index") for s in shown)
    assert "class_name: rod" in layer._get_properties((7, 7))
    layer.features = remove_feature_rows(layer.features, [7])
    assert layer._label_index == {3: 0}
    pd.testing.assert_frame_equal(ensure_features(layer.features), remove_feature_rows(features, [7]))


def test_undo_history_keeps_within_its_byte_budget():
    def square(r0):
        masks = np.zeros((1, 100, 100), bool)
        masks[0, r0 : r0 + 10, 10:20] = True
        one = np.ones(1, np.float32)
        return ObjectResults((), masks, ["a"], one, one, [["a"]], np.ones((1, 1)))

    target = LabelsTarget(np.zeros((100, 100), np.uint32), max_history_bytes=10**9)
    first = target.commit(square(0))
    per_step = first.nbytes
    assert per_step >= 100 * (4 + 4)  # 100 pixels: old and new uint32 values at least
    target.max_history_bytes = 2 * per_step
    for r0 in (20, 40, 60):
        target.commit(square(r0))
    assert len(target.history) == 2  # the two newest steps fit the budget
    assert [target.undo().label_ids, target.undo().label_ids, target.undo()] == [(4,), (3,), None]
    assert sorted(np.unique(target.labels)) == [0, 1, 2]  # the two oldest commits stay, no longer undoable
    target.max_history_bytes = 0
    target.commit(square(80))
    assert len(target.history) == 1  # the last step is always kept
