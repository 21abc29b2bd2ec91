"""Overlap resolution (``automatic.painting.paint_instances``): masks painted best first, each taking only free
pixels, and fragments found before their whole giving way to it (``contain``)."""

from __future__ import annotations

import numpy as np

from ovsam_model.automatic import painting
from ovsam_model.automatic.painting import paint_instances

SIZE = (40, 40)


def crop(rows: slice, cols: slice) -> tuple[np.ndarray, tuple[int, int]]:
    """A filled rectangle as the painter's (bool crop, (row, col) offset)."""
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    return np.ones(shape, bool), (rows.start, cols.start)


def paint(masks, confidence=None, min_area=1):
    conf = None if confidence is None else np.asarray(confidence, np.float32)
    return paint_instances(None, masks, "crops", SIZE, min_area, conf)


def test_first_come_first_served_without_confidence() -> None:
    part, whole = crop(slice(10, 20), slice(10, 14)), crop(slice(10, 20), slice(10, 30))
    labels, kept = paint([part, whole])
    assert kept.tolist() == [0, 1]
    assert (labels[10:20, 10:14] == 1).all() and (labels[10:20, 14:30] == 2).all()


def test_a_fragment_painted_first_gives_its_place_to_the_whole() -> None:
    part, whole = crop(slice(10, 20), slice(10, 14)), crop(slice(10, 20), slice(10, 30))
    labels, kept = paint([part, whole], confidence=[0.9, 0.5])
    assert kept.tolist() == [1]  # the whole only, with id 1
    assert (labels[10:20, 10:30] == 1).all() and labels.sum() == 200


def test_a_much_less_confident_whole_leaves_the_fragment_in_place() -> None:
    part, whole = crop(slice(10, 20), slice(10, 14)), crop(slice(10, 20), slice(10, 30))
    labels, kept = paint([part, whole], confidence=[0.9, 0.4])  # 0.4 < 0.5 x 0.9
    assert kept.tolist() == [0, 1]
    assert (labels[10:20, 10:14] == 1).all() and (labels[10:20, 14:30] == 2).all()


def test_an_object_mostly_outside_the_later_mask_keeps_its_place() -> None:
    neighbour = crop(slice(0, 10), slice(0, 10))  # 100 pixels, 30 of them inside the next mask
    later = crop(slice(7, 17), slice(0, 10))
    labels, kept = paint([neighbour, later], confidence=[0.6, 0.9])
    assert kept.tolist() == [0, 1]
    assert (labels[0:10, 0:10] == 1).all() and (labels[10:17, 0:10] == 2).all()


def test_a_fragment_partly_outside_is_removed_whole_and_ids_stay_consecutive() -> None:
    first = crop(slice(0, 5), slice(30, 35))  # an unrelated object, painted first
    part = crop(slice(10, 20), slice(9, 14))  # 50 pixels, 40 (80 %) inside the whole
    whole = crop(slice(10, 20), slice(10, 30))
    labels, kept = paint([first, part, whole], confidence=[0.9, 0.8, 0.7])
    assert kept.tolist() == [0, 2]
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert (labels[10:20, 10:30] == 2).all()
    assert (labels[10:20, 9] == 0).all()  # the fragment's pixels outside the whole are freed, not kept
    assert (labels[0:5, 30:35] == 1).all()


def test_a_whole_that_cannot_take_its_place_does_not_remove_the_fragment() -> None:
    big = crop(slice(0, 20), slice(0, 20))  # takes most of the later mask and lies mostly outside it
    part = crop(slice(20, 22), slice(0, 5))
    later = crop(slice(10, 22), slice(0, 10))  # 120 pixels: 100 held by big, 10 by the fragment
    labels, kept = paint([big, part, later], confidence=[0.9, 0.9, 0.9])
    assert kept.tolist() == [0, 1]
    assert (labels[20:22, 0:5] == 2).all() and (labels[20:22, 5:10] == 0).all()


def test_several_fragments_of_one_object_give_way_together() -> None:
    parts = [crop(slice(10, 20), slice(c, c + 5)) for c in (10, 15, 20, 25)]
    whole = crop(slice(10, 20), slice(10, 30))
    labels, kept = paint([*parts, whole], confidence=[0.9, 0.9, 0.9, 0.9, 0.6])
    assert kept.tolist() == [4]
    assert (labels[10:20, 10:30] == 1).all() and labels.max() == 1


def test_renumbering_in_bands_of_rows_gives_the_same_labels(monkeypatch) -> None:
    masks = [
        crop(slice(0, 5), slice(30, 35)),
        crop(slice(10, 20), slice(9, 14)),
        crop(slice(33, 38), slice(0, 6)),
        crop(slice(10, 20), slice(10, 30)),
    ]
    confidence = [0.9, 0.8, 0.8, 0.7]
    whole, kept = paint(masks, confidence)
    monkeypatch.setattr(painting, "RENUMBER_ROWS", 7)
    banded, kept_banded = paint(masks, confidence)
    assert kept.tolist() == kept_banded.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(banded, whole)
    assert set(np.unique(banded).tolist()) == {0, 1, 2, 3} and (banded[33:38, 0:6] == 2).all()
