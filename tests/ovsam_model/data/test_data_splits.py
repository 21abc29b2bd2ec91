"""OV-COCO and LVIS class splits."""

from __future__ import annotations

import pytest

from ovsam_model.data.splits import OVCOCO_BASE, OVCOCO_EXCLUDED, OVCOCO_NOVEL, lvis_split


def test_ovcoco_split_sizes_and_disjointness() -> None:
    assert (len(OVCOCO_BASE), len(OVCOCO_NOVEL), len(OVCOCO_EXCLUDED)) == (48, 17, 15)
    assert len(set(OVCOCO_BASE) | set(OVCOCO_NOVEL) | set(OVCOCO_EXCLUDED)) == 80
    assert {"person", "tv", "toaster"} <= set(OVCOCO_BASE) and {"bus", "snowboard"} <= set(OVCOCO_NOVEL)


def test_lvis_split_by_frequency() -> None:
    cats = [
        {"id": 3, "name": "c", "frequency": "r"},
        {"id": 1, "name": "a", "frequency": "f"},
        {"id": 2, "name": "b", "frequency": "c"},
    ]
    assert lvis_split(cats) == (["a", "b"], ["c"])
    with pytest.raises(ValueError, match="frequency"):
        lvis_split([{"id": 1, "name": "a"}])
