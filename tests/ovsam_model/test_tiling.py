"""Tile geometry without a model: the grid, the overlap, prompt routing, masks pasted back, compact masks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovsam_model import prediction
from ovsam_model.prediction import CompactMasks, paint_labels
from ovsam_model.tiled import paste_mask
from ovsam_model.tiling import (
    TileSpec,
    Window,
    margin,
    paste_bounds,
    paste_logits,
    prompt_extents,
    route,
    tile_grid,
    tile_starts,
)

SPEC = TileSpec().resolved(128)  # tiny's input: 128 px tiles, 32 px overlap, stride 96


def test_defaults_follow_the_model_input():
    assert (SPEC.tile_size, SPEC.overlap, SPEC.scale, SPEC.side, SPEC.stride) == (128, 32, 1.0, 128, 96)
    half = TileSpec(scale=0.5).resolved(1024)
    assert (half.overlap, half.side, half.stride) == (256, 2048, 1536)
    assert not SPEC.tiles((192, 100)) and SPEC.tiles((193, 100))  # more than 1.5 tiles: tiled


def test_tile_starts_step_by_the_stride_and_clamp_the_last_tile():
    assert tile_starts(100, 128, 96) == [0]
    assert tile_starts(128, 128, 96) == [0]
    assert tile_starts(129, 128, 96) == [0, 1]
    assert tile_starts(500, 128, 96) == [0, 96, 192, 288, 372]


def test_grid_covers_the_image_with_tiles_inside_it():
    grid = tile_grid((300, 500), SPEC)
    assert len(grid) == 3 * 5
    covered = np.zeros((300, 500), int)
    for w in grid:
        assert 0 <= w.y0 < w.y1 <= 300 and 0 <= w.x0 < w.x1 <= 500
        assert w.size == (128, 128) and w.input_size == (128, 128)
        covered[w.y0 : w.y1, w.x0 : w.x1] += 1
    assert covered.min() >= 1
    strip = tile_grid((1, 2000), SPEC)  # thinner than a tile: tiles as thin as the image
    assert all(w.size == (1, 128) and w.input_size == (1, 128) for w in strip)


def test_scaled_tiles_cover_more_pixels_and_are_resized_to_the_input():
    grid = tile_grid((1000, 1000), TileSpec(scale=0.5).resolved(128))
    assert grid[0].size == (256, 256) and grid[0].input_size == (128, 128)
    assert grid[0].to_input(np.array([[256.0, 128.0]])).tolist() == [[128.0, 64.0]]


def test_every_object_up_to_the_overlap_lies_whole_inside_a_tile():
    grid = tile_grid((700, 900), SPEC)
    rng = np.random.default_rng(0)
    for _ in range(500):
        size = rng.uniform(1, SPEC.overlap, 2)
        x0, y0 = rng.uniform(0, 900 - size[0]), rng.uniform(0, 700 - size[1])
        box = np.array([x0, y0, x0 + size[0], y0 + size[1]])
        index, window = route(box, grid, (700, 900), SPEC)
        assert index >= 0 and window is grid[index] and margin(box, window, (700, 900)) >= 0


def test_a_prompt_goes_to_the_tile_where_it_has_the_most_margin():
    grid = tile_grid((300, 500), SPEC)
    box = np.array([100.0, 10.0, 120.0, 30.0])  # in tiles at x0 = 0 (8 px from its edge) and 96 (4 px)
    index, window = route(box, grid, (300, 500), SPEC)
    assert index == 0 and window.bounds == (0, 0, 128, 128)
    assert margin(box, grid[1], (300, 500)) == pytest.approx(4.0)
    image_edge = np.array([0.0, 0.0, 10.0, 10.0])  # image edges are no tile edge: no lost context there
    assert margin(image_edge, grid[0], (300, 500)) == pytest.approx(118.0)


def test_a_prompt_no_tile_holds_gets_a_window_centred_on_it():
    grid = tile_grid((300, 500), SPEC)
    box = np.array([60.0, 40.0, 160.0, 90.0])  # 100 px wide: more than the overlap, less than a tile
    index, window = route(box, grid, (300, 500), SPEC)
    assert index == -1 and window.size == (128, 128) and window.input_size == (128, 128)
    assert margin(box, window, (300, 500)) >= 0
    assert window.bounds == (1, 46, 129, 174)
    corner = np.array([420.0, 250.0, 499.0, 299.0])  # near the corner: shifted inside the image
    assert route(corner, grid, (300, 500), SPEC)[1].bounds[2:] == (300, 500)


def test_a_prompt_larger_than_a_tile_is_decoded_on_a_downscaled_view_of_its_region():
    grid = tile_grid((1000, 2000), SPEC)
    box = np.array([100.0, 200.0, 900.0, 600.0])  # 800 x 400 px
    index, window = route(box, grid, (1000, 2000), SPEC)
    assert index == -1
    assert window.bounds == (100, 0, 700, 1000)  # 100 px (12.5 % of 800) of context, clamped at x = 0
    assert window.input_size == (77, 128)  # longer side = the model input
    assert margin(box, window, (1000, 2000)) >= 0


def test_prompt_extents_join_boxes_and_real_points():
    points = np.array([[[10.0, 20.0], [50.0, 5.0], [999.0, 999.0]]], np.float32)
    labels = np.array([[1.0, 0.0, -1.0]], np.float32)  # the padding point is ignored
    assert prompt_extents(points, labels, None).tolist() == [[10.0, 5.0, 50.0, 20.0]]
    boxes = np.array([[30.0, 10.0, 60.0, 40.0]], np.float32)
    assert prompt_extents(points, labels, boxes).tolist() == [[10.0, 5.0, 60.0, 40.0]]


def test_pasted_logits_match_the_models_upsampling_on_a_native_tile():
    torch.manual_seed(0)
    low = torch.randn(2, 32, 32) * 3
    window = Window(40, 60, 168, 188, (128, 128))
    expected = F.interpolate(low[None], (128, 128), mode="bilinear", align_corners=False)[0]
    got = paste_logits(low, window, 128, (0, 128, 0, 128))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    part = paste_logits(low, window, 128, (10, 50, 20, 90))
    torch.testing.assert_close(part, expected[:, 10:50, 20:90], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [Window(0, 0, 128, 128, (128, 128)), Window(0, 0, 300, 500, (77, 128))])
def test_paste_bounds_hold_every_mask_pixel(window):
    low = torch.full((1, 32, 32), -5.0)
    low[0, 10:13, 5:9] = 4.0
    bounds = paste_bounds(low, window, 128)
    assert bounds is not None
    full = paste_logits(low, window, 128, (0, window.size[0], 0, window.size[1]))[0] > 0
    r0, r1, c0, c1 = bounds
    assert full.sum() > 0 and full[r0:r1, c0:c1].sum() == full.sum()
    assert paste_bounds(torch.full((1, 32, 32), -1.0), window, 128) is None


def test_a_pasted_mask_comes_back_in_the_full_image_frame_clipped_to_its_box():
    low = torch.full((1, 32, 32), -5.0)
    low[0, 8:16, 8:16] = 5.0  # rows/cols 32..64 of the 128 px input
    window = Window(200, 300, 328, 428, (128, 128))
    crop, (row, col) = paste_mask(low, window, 128, None)
    assert crop.shape[0] == 1 and crop[0, 1:-1, 1:-1].all()  # bilinear: the corners sit at 0
    assert abs(row - 232) <= 1 and abs(col - 332) <= 1 and abs(crop.shape[1] - 32) <= 2
    box = np.array([340.0, 240.0, 350.0, 250.0])  # XYXY, full image
    clipped, (row, col) = paste_mask(low, window, 128, box)
    assert (row, col) == (240, 340) and clipped.shape == (1, 11, 11)
    empty, _ = paste_mask(torch.full((3, 32, 32), -1.0), window, 128, None)
    assert empty.shape == (3, 0, 0)


def _compact():
    crops = [np.ones((1, 2, 3), bool), np.array([[[True, False], [True, True]]]), np.zeros((1, 0, 0), bool)]
    return CompactMasks(crops, np.array([[1, 1], [2, 3], [0, 0]]), (5, 6))


def test_compact_masks_index_like_the_dense_array():
    masks = _compact()
    dense = masks.dense()
    assert masks.shape == dense.shape == (3, 1, 5, 6) and len(masks) == 3
    assert dense[0, 0, 1:3, 1:4].all() and dense[0].sum() == 6
    assert dense[1, 0].sum() == 3 and dense[1, 0, 2, 4] == 0 and not dense[2].any()
    np.testing.assert_array_equal(masks[1, 0], dense[1, 0])
    np.testing.assert_array_equal(masks[:, 0], dense[:, 0])
    np.testing.assert_array_equal(np.asarray(masks), dense)
    assert masks.boxes().tolist() == [[1, 1, 4, 3], [3, 2, 5, 4], [0, 0, 0, 0]]


def test_paint_writes_each_crop_in_order_and_can_keep_existing_labels():
    masks = _compact()
    labels = np.zeros((5, 6), np.uint32)
    labels[2, 3] = 9
    masks.paint(labels, [4, 7, 8])
    assert labels[1, 1] == 4 and labels[2, 3] == 7 and labels[3, 4] == 7 and labels[2, 1] == 4
    kept = np.zeros((5, 6), np.uint32)
    kept[2, 3] = 9
    masks.paint(kept, [4, 7, 8], only_background=True)
    assert kept[2, 3] == 9 and kept[3, 3] == 7


def test_paint_into_zarr_writes_only_the_crops(tmp_path):
    zarr = pytest.importorskip("zarr")
    labels = zarr.open_array(tmp_path / "labels.zarr", mode="w", shape=(5, 6), chunks=(2, 2), dtype="u4")
    _compact().paint(labels, [1, 2, 3])
    expected = np.zeros((5, 6), np.uint32)
    _compact().paint(expected, [1, 2, 3])
    np.testing.assert_array_equal(labels[:], expected)


def test_a_thousand_objects_on_a_16k_image_allocate_no_full_size_mask():
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, 16000, (1000, 2))
    crops = [rng.random((1, 40, 30)) > 0.5 for _ in range(1000)]
    tracemalloc.start()
    masks = CompactMasks(crops, offsets, (16384, 16384))
    one = masks[3, 0]  # one full-size mask: 256 MiB, on request only
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert one.shape == (16384, 16384) and one.sum() == crops[3].sum()
    assert peak < 300 * 1024**2  # 1,000 dense masks would be 250 GiB


def test_dense_masks_past_the_memory_limit_are_refused(monkeypatch):
    monkeypatch.setattr(prediction, "MAX_DENSE_BYTES", 10)
    with pytest.raises(ValueError, match="paint them into a label image"):
        np.asarray(_compact())


def test_paint_labels_takes_either_mask_form():
    compact = _compact()
    dense = compact.dense()
    from_dense = paint_labels(dense, np.zeros((5, 6), np.uint16), [4, 7, 8])
    from_compact = paint_labels(compact, np.zeros((5, 6), np.uint16), [4, 7, 8])
    np.testing.assert_array_equal(from_dense, from_compact)
    assert set(np.unique(from_dense)) == {0, 4, 7}
    with pytest.raises(ValueError, match="one label id per object"):
        paint_labels(dense, np.zeros((5, 6), np.uint16), [1])
