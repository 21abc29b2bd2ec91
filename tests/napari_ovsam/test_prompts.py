"""The plugin's prompts and layer frames: (row, col) <-> (x, y), slicing, boxes, clipping, grouping."""

import numpy as np
import pytest

from napari_ovsam.frames import current_slice, empty_prompt_data, on_slice, rowcol_to_xy
from napari_ovsam.prompts import (
    ObjectPrompt,
    batch_prompts,
    box_to_shape_vertices,
    clip_prompts_to_image,
    collect_prompts,
    shapes_to_boxes,
)


def points_to_prompts(data, labels, *, slice_index, boxes_xyxy=(), group="refine"):
    """Points layer data (and XYXY boxes, as rectangles) on a slice -> objects, the way the session sees them."""
    lead = tuple(slice_index or ())
    shapes = [box_to_shape_vertices(box, lead) for box in boxes_xyxy]
    prompts = collect_prompts(
        data, labels, shapes, ["rectangle"] * len(shapes), slice_index=slice_index, image_hw=(1000, 1000),
        group=group,
    )  # fmt: skip
    return prompts.objects


def rectangle(r0, c0, r1, c1, leading=()):
    """Napari rectangle vertices (..., row, col) drawn from corner (r0, c0) to corner (r1, c1)."""
    rc = [[r0, c0], [r0, c1], [r1, c1], [r1, c0]]
    return np.array([[*leading, r, c] for r, c in rc], dtype=float)


# ------------------------------------------------------------------------------------------------ axis order


def test_rowcol_to_xy_swaps_the_last_axis():
    rowcol = np.array([[10.0, 3.0], [0.0, 7.5]])
    xy = rowcol_to_xy(rowcol)
    np.testing.assert_array_equal(xy, [[3.0, 10.0], [7.5, 0.0]])
    assert xy.dtype == np.float32
    np.testing.assert_array_equal(rowcol_to_xy(xy), rowcol)  # the swap is its own inverse


# ------------------------------------------------------------------------------------------------ slicing


@pytest.mark.parametrize(
    ("dims_point", "image_ndim", "rgb", "expected"),
    [
        ((12.0, 30.0), 2, False, ()),  # 2D grey
        ((12.0, 30.0), 3, True, ()),  # 2D RGB: (H, W, 3) has two viewer axes
        ((4.0, 12.0, 30.0), 3, False, (4,)),  # (Z, H, W)
        ((4.0, 12.0, 30.0), 4, True, (4,)),  # (Z, H, W, 3) RGB stack
        ((1.0, 2.0, 3.0, 12.0, 30.0), 4, False, (2, 3)),  # viewer with an extra leading axis
        ((2.5, 0.0, 0.0), 3, False, (3,)),  # half rounds up, like the slider
        ((2.49, 0.0, 0.0), 3, False, (2,)),
    ],
)
def test_current_slice(dims_point, image_ndim, rgb, expected):
    assert current_slice(dims_point, image_ndim, rgb) == expected


def test_current_slice_uses_scale_translate_and_clips():
    # world z = 10 with scale 2 and translate 4 is data z = 3
    assert current_slice((10.0, 0.0, 0.0), 3, False, scale=(2, 1, 1), translate=(4, 0, 0)) == (3,)
    assert current_slice((99.0, 0.0, 0.0), 3, False, shape=(5, 8, 8)) == (4,)
    assert current_slice((-3.0, 0.0, 0.0), 3, False, shape=(5, 8, 8)) == (0,)


def test_current_slice_rejects_a_1d_layer():
    with pytest.raises(ValueError, match="two spatial axes"):
        current_slice((0.0,), 2, True)


def test_on_slice_rounds_leading_coordinates():
    coords = np.array([[2.0, 5, 5], [2.4, 1, 1], [2.6, 1, 1], [3.0, 0, 0]])
    np.testing.assert_array_equal(on_slice(coords, (2,)), [True, True, False, False])
    assert on_slice(coords, None).all()
    with pytest.raises(ValueError, match="do not match"):
        on_slice(coords, (2, 0))


def test_empty_prompt_data():
    assert empty_prompt_data(3).shape == (0, 3)
    with pytest.raises(ValueError):
        empty_prompt_data(1)


# ------------------------------------------------------------------------------------------------ boxes


def test_box_in_any_drawing_direction_gives_the_same_xyxy():
    drawn = [rectangle(10, 20, 40, 60), rectangle(40, 60, 10, 20), rectangle(10, 60, 40, 20)]
    result = shapes_to_boxes(drawn, ["rectangle"] * 3, slice_index=None)
    np.testing.assert_array_equal(result.boxes_xyxy, [[20, 10, 60, 40]] * 3)  # x0 = col0, y0 = row0
    assert result.boxes_xyxy.dtype == np.float32
    assert result.skipped == {}


def test_shapes_on_a_stack_keep_only_the_current_slice():
    shapes = [rectangle(0, 0, 5, 5, (1,)), rectangle(1, 2, 8, 9, (2,)), rectangle(0, 0, 5, 5, (3,))]
    result = shapes_to_boxes(shapes, ["rectangle"] * 3, slice_index=(2,))
    np.testing.assert_array_equal(result.boxes_xyxy, [[2, 1, 9, 8]])
    np.testing.assert_array_equal(result.shape_indices, [1])
    assert result.skipped == {}  # other slices are not errors


def test_non_rectangles_small_and_oblique_shapes_are_skipped_with_reasons():
    oblique = rectangle(0, 0, 9, 9, (2,))
    oblique[2, 0] = 3.0
    shapes = [
        rectangle(0, 0, 9, 9, (2,)),
        rectangle(0, 0, 9, 9, (2,)),
        rectangle(4, 4, 4.5, 9, (2,)),
        oblique,
    ]
    result = shapes_to_boxes(shapes, ["ellipse", "rectangle", "rectangle", "rectangle"], slice_index=(2,))
    np.testing.assert_array_equal(result.shape_indices, [1])
    assert set(result.skipped) == {0, 2, 3}
    assert "ellipse" in result.skipped[0]
    assert "smaller" in result.skipped[2]
    assert "different slices" in result.skipped[3]


def test_rotated_rectangle_gives_its_bounding_box():
    diamond = np.array([[0.0, 5.0], [5.0, 10.0], [10.0, 5.0], [5.0, 0.0]])
    result = shapes_to_boxes([diamond], ["rectangle"], slice_index=None)
    np.testing.assert_array_equal(result.boxes_xyxy, [[0, 0, 10, 10]])


def test_no_shapes_gives_an_empty_array():
    result = shapes_to_boxes([], [], slice_index=(0,))
    assert result.boxes_xyxy.shape == (0, 4)


# ------------------------------------------------------------------------------------------------ clipping


def test_clip_prompts_to_image():
    points = np.array([[5.0, 5.0], [-0.4, 3.0], [10.0, 2.0], [3.0, 19.6]])  # (x, y) in a 20x10 (HxW) image
    boxes = np.array([[2, 2, 8, 8], [-5, -5, 4, 30], [12, 0, 15, 5]], dtype=np.float32)
    pts, labels, kept, messages = clip_prompts_to_image(points, np.array([1, 0, 1, 1]), boxes, (20, 10))
    np.testing.assert_array_equal(pts, [[5, 5], [0, 3]])  # border half-pixel snaps onto the edge pixel
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_array_equal(kept, [[2, 2, 8, 8], [0, 0, 4, 19]])
    assert any("2 point(s) outside" in m for m in messages)
    assert any("1 box(es) outside" in m for m in messages)
    assert any("clipped" in m for m in messages)


# ------------------------------------------------------------------------------------------------ grouping


def test_points_inside_a_box_refine_it_and_the_rest_form_one_object():
    # points as napari (row, col): the model must see (x, y) = (col, row)
    data = np.array([[15.0, 25.0], [30.0, 50.0], [80.0, 90.0], [85.0, 70.0]])
    labels = np.array([True, False, True, False])
    boxes = np.array([[20, 10, 60, 40]], dtype=np.float32)  # x 20..60, y 10..40
    objects = points_to_prompts(data, labels, slice_index=None, boxes_xyxy=boxes)
    assert len(objects) == 2
    boxed, free = objects
    np.testing.assert_array_equal(boxed.box_xyxy, [20, 10, 60, 40])
    np.testing.assert_array_equal(boxed.points_xy, [[25, 15], [50, 30]])
    np.testing.assert_array_equal(boxed.point_labels, [1, 0])
    assert free.box_xyxy is None
    np.testing.assert_array_equal(free.points_xy, [[90, 80], [70, 85]])
    np.testing.assert_array_equal(free.point_labels, [1, 0])
    assert free.points_xy.dtype == np.float32 and free.point_labels.dtype == np.int32


def test_point_in_nested_boxes_joins_the_smallest():
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], dtype=np.float32)
    objects = points_to_prompts(np.array([[20.0, 20.0]]), np.array([1]), slice_index=None, boxes_xyxy=boxes)
    assert len(objects) == 2
    assert len(objects[0].points_xy) == 0
    np.testing.assert_array_equal(objects[1].points_xy, [[20, 20]])


def test_per_positive_grouping_attaches_negatives_to_the_nearest_positive():
    data = np.array([[10.0, 10.0], [100.0, 100.0], [12.0, 14.0], [95.0, 99.0]])  # (row, col)
    labels = np.array([1, 1, 0, 0])
    objects = points_to_prompts(data, labels, slice_index=None, group="per_positive")
    assert len(objects) == 2
    np.testing.assert_array_equal(objects[0].points_xy, [[10, 10], [14, 12]])
    np.testing.assert_array_equal(objects[0].point_labels, [1, 0])
    np.testing.assert_array_equal(objects[1].points_xy, [[100, 100], [99, 95]])


def test_negatives_alone_make_no_object():
    objects = points_to_prompts(np.array([[1.0, 2.0]]), np.array([0]), slice_index=None)
    assert objects == []
    with pytest.raises(ValueError, match="group"):
        points_to_prompts(np.array([[1.0, 2.0]]), np.array([1]), slice_index=None, group="each")


def test_points_on_other_slices_are_ignored():
    data = np.array([[3.0, 10.0, 20.0], [4.0, 11.0, 21.0]])
    objects = points_to_prompts(data, np.array([1, 1]), slice_index=(3,))
    assert len(objects) == 1
    np.testing.assert_array_equal(objects[0].points_xy, [[20, 10]])


def test_empty_points_layer():
    assert points_to_prompts(empty_prompt_data(3), np.zeros(0, bool), slice_index=(0,)) == []


def test_collect_prompts_reports_what_it_left_out():
    points = np.array([[0.0, 5.0, 5.0], [0.0, 500.0, 5.0], [0.0, 2.0, 2.0]])
    shapes = [rectangle(1, 1, 8, 8, (0,)), rectangle(1, 1, 8, 8, (0,))]
    prompts = collect_prompts(
        points,
        np.array([1, 1, 0]),
        shapes,
        ["rectangle", "polygon"],
        slice_index=(0,),
        image_hw=(20, 20),
    )
    assert len(prompts.objects) == 1  # the box with the two inside points
    np.testing.assert_array_equal(prompts.objects[0].point_labels, [1, 0])
    assert any("Shape 1" in m for m in prompts.messages)
    assert any("outside the 20x20 image" in m for m in prompts.messages)

    lonely = collect_prompts(
        np.array([[0.0, 5.0, 5.0]]), np.array([0]), [], [], slice_index=(0,), image_hw=(20, 20)
    )
    assert lonely.objects == [] and any("negative" in m for m in lonely.messages)


def test_batch_prompts_pads_points_and_separates_boxes():
    objects = [
        ObjectPrompt(np.array([[1, 2], [3, 4]], np.float32), np.array([1, 0], np.int32)),
        ObjectPrompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.array([0, 0, 5, 5], np.float32)),
        ObjectPrompt(np.array([[7, 8]], np.float32), np.array([1], np.int32)),
    ]
    (boxed_ids, boxed), (point_ids, pointed) = batch_prompts(objects)
    np.testing.assert_array_equal(boxed_ids, [1])
    assert boxed["points"] is None and boxed["point_labels"] is None
    np.testing.assert_array_equal(boxed["boxes"], [[0, 0, 5, 5]])
    np.testing.assert_array_equal(point_ids, [0, 2])
    assert pointed["points"].shape == (2, 2, 2) and pointed["boxes"] is None
    np.testing.assert_array_equal(pointed["point_labels"], [[1, 0], [1, -1]])
    assert batch_prompts([]) == []


# ------------------------------------------------------------------------------------------------ layer data


def test_box_vertices_carry_the_slice_and_round_trip():
    vertices = box_to_shape_vertices([20, 10, 60, 40], (7,))
    assert vertices.shape == (4, 3)
    np.testing.assert_array_equal(vertices[:, 0], 7)
    np.testing.assert_array_equal(vertices[0, 1:], [10, 20])  # (row, col) = (y0, x0)
    # napari's shapes -> boxes path gives the box back
    boxes = shapes_to_boxes([vertices], ["rectangle"], slice_index=(7,)).boxes_xyxy
    np.testing.assert_array_equal(boxes, [[20, 10, 60, 40]])
    assert box_to_shape_vertices([0, 0, 1, 1]).shape == (4, 2)
