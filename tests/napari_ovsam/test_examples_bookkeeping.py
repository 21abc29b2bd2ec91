"""The plugin's example bookkeeping: every committed object's features kept with its labels, examples
learnt from commits, renames and reviews, undone with their commit, synced into the predictor, persisted."""

from __future__ import annotations

import numpy as np
import pytest
from session_fakes import disk, make_session


@pytest.fixture
def image_2d():
    """64x64: object 1 (value 10) a disk at (20, 20), object 2 (value 20) a disk at (44, 40)."""
    image = np.zeros((64, 64), np.uint16)
    image[disk(image.shape, (20, 20), 8)] = 10
    image[disk(image.shape, (44, 40), 9)] = 20
    return image


def _commit_two(session):
    session.ensure_embedding(())
    boxes = [np.array([[r - 10, c - 10], [r - 10, c + 10], [r + 10, c + 10], [r + 10, c - 10]], float)
             for r, c in ((20, 20), (44, 40))]  # fmt: skip
    results = session.segment(np.zeros((0, 2)), np.zeros(0, bool), boxes, ["rectangle"] * 2, slice_index=())
    return session.commit(results)


def test_mark_reviewed_sets_only_the_reviewed_column(image_2d):
    session = make_session(image_2d)
    _commit_two(session)
    before = session.target.features.copy()
    session.mark_reviewed(2)
    after = session.target.features
    assert list(after["reviewed"]) == [False, True]
    assert list(after["class_name"]) == list(before["class_name"])
    session.mark_reviewed(2, False)
    assert not session.target.features["reviewed"].any()
    with pytest.raises(ValueError, match="No object with label id 9"):
        session.mark_reviewed(9)
