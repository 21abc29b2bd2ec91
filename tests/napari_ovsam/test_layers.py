"""The preview layer's in-place updates, in a shown napari viewer (Xvfb), where napari re-textures only the
changed region."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_ovsam import _layers
from napari_ovsam.results import ObjectResults

pytestmark = pytest.mark.gui


def _results(slice_index, hw, boxes):
    masks = np.zeros((len(boxes), *hw), bool)
    for mask, (r0, r1, c0, c1) in zip(masks, boxes):
        mask[r0:r1, c0:c1] = True
    n = len(boxes)
    return ObjectResults(
        slice_index,
        masks,
        ["a"] * n,
        np.ones(n, np.float32),
        np.ones(n, np.float32),
        [["a"]] * n,
        np.ones((n, 1)),
    )


@pytest.mark.parametrize("stack", [False, True], ids=["2d", "stack"])
def test_live_previews_write_exactly_the_new_objects(make_napari_viewer, qtbot, stack):
    viewer = make_napari_viewer(show=True)
    shape = (3, 400, 500) if stack else (400, 500)
    image = viewer.add_image(np.zeros(shape, np.uint16), scale=(1.0,) * (len(shape) - 2) + (0.5, 2.0))
    index = (2,) if stack else ()
    if stack:
        viewer.dims.set_point(0, 2.0)  # the slice in view, where the prompts are
    sequence = [
        [(10, 40, 20, 60)],
        [(15, 45, 25, 70), (30, 60, 50, 90)],  # moved, plus a second object overlapping it (first on top)
        [(100, 120, 140, 160)],  # far away: the old objects must be erased
        [],
    ]
    refreshes = []
    for step, boxes in enumerate(sequence):
        results = _results(index, shape[-2:], boxes)
        layer = _layers.show_preview(viewer, image, results)
        if step == 0:  # the layer is new: count napari's full refreshes of it from now on
            layer.refresh = lambda *args, _full=layer.refresh, **kwargs: (
                refreshes.append(1),
                _full(*args, **kwargs),
            )
        QApplication.processEvents()  # let the canvas draw
        np.testing.assert_array_equal(layer.data.reshape(shape[-2:]), results.label_image())
        assert not layer._undo_history  # live updates leave no napari paint history behind
        if stack:
            assert layer.data.shape == (1, *shape[-2:]) and layer.translate[0] == 2.0
    assert viewer.layers[_layers.PREVIEW] is layer  # one layer, updated in place
    assert not refreshes  # napari re-textured only the changed regions, never the whole slice


def test_clear_preview_then_update(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(np.zeros((50, 60), np.uint16))
    _layers.show_preview(viewer, image, _results((), (50, 60), [(5, 20, 5, 20)]))
    _layers.clear_preview(viewer)
    assert not viewer.layers[_layers.PREVIEW].data.any()
    results = _results((), (50, 60), [(30, 40, 30, 50)])
    layer = _layers.show_preview(viewer, image, results)
    np.testing.assert_array_equal(layer.data, results.label_image())


def test_preview_dtype_grows_with_the_number_of_objects(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(np.zeros((40, 400), np.uint16))
    few = _layers.show_preview(viewer, image, _results((), (40, 400), [(0, 5, 0, 5)]))
    assert few.data.dtype == np.uint8
    boxes = [(r, r + 2, c, c + 2) for r in range(0, 40, 2) for c in range(0, 30, 2)]  # 300 objects
    results = _results((), (40, 400), boxes)
    many = _layers.show_preview(viewer, image, results)
    assert many.data.dtype == np.uint16 and int(many.data.max()) == 300
    np.testing.assert_array_equal(many.data, results.label_image())
