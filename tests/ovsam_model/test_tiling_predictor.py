"""The predictor on tiled images (``tiny`` and ``demo``): laziness, masks in the full frame, tile states."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ovsam_model.build import build_ovsam
from ovsam_model.data.synthetic import generate_image, image_rng
from ovsam_model.evaluation.gt_prompts import gt_prompts, mask_ious
from ovsam_model.prediction import CompactMasks
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.tiled import SAMPLE_SIDE
from ovsam_model.tiling import TileSpec

VOCABULARY = ["nucleus", "rod, bacterium", "ring"]


class SpyImage:
    """A lazy uint16 (H, W) image that makes its pixels on demand and records every region read."""

    def __init__(self, shape: tuple[int, int], seed: int = 0) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.uint16), 2
        self.seed = seed
        self.reads: list[tuple[slice, slice]] = []

    def __getitem__(self, key):
        rows, cols = key
        self.reads.append((rows, cols))
        r = np.arange(self.shape[0])[rows][:, None].astype(np.int64)
        c = np.arange(self.shape[1])[cols][None, :].astype(np.int64)
        return ((r * 7919 + c * 104729 + self.seed) % 4093 + 100 * ((r // 40 + c // 40) % 2)).astype(
            np.uint16
        )

    def read_pixels(self) -> int:
        return sum(
            len(range(*r.indices(self.shape[0]))) * len(range(*c.indices(self.shape[1])))
            for r, c in self.reads
        )


def predictor(model, **kwargs) -> OVSAMPredictor:
    p = OVSAMPredictor(model, **kwargs)
    p.set_vocabulary(VOCABULARY)
    return p


def test_a_large_image_is_read_and_encoded_only_where_prompts_are(tiny_model):
    image = SpyImage((20000, 30000))
    p = predictor(tiny_model)
    encoded = []
    p.on_tile_encode = lambda index, window: encoded.append((index, window, p.encoding_tile))
    p.set_image(image)
    assert len(p.tile_grid) == 208 * 313 and p.tiles is not None and p.tiles.encodings == 0
    assert len(image.reads) <= 64 and image.read_pixels() <= 64 * SAMPLE_SIDE**2  # the contrast sample only
    image.reads.clear()
    box = np.array([[5000.0, 3000.0, 5020.0, 3030.0]])
    first = p.predict(boxes=box)
    assert p.tiles.encodings == 1 and len(image.reads) == 1 and image.read_pixels() == 128 * 128
    index = int(first.tiles[0])
    assert encoded == [(index, p.tile_grid[index], (index, p.tile_grid[index]))] and p.encoding_tile is None
    again = p.predict(boxes=box + np.array([10.0, 10.0, 10.0, 10.0]))  # same tile: nothing read or encoded
    assert again.tiles[0] == index and p.tiles.encodings == 1 and len(image.reads) == 1
    p.predict(boxes=box + 10000)
    assert p.tiles.encodings == 2 and len(image.reads) == 2
    p.tile_key(index)  # known from the encoding's read
    assert len(image.reads) == 2
    key = p.tile_key(index + 7)  # a cache's lookup reads the tile; its encoding right after reads no more
    p.get_tile_embedding(index + 7)
    assert len(image.reads) == 3 and p.tiles.encodings == 3 and p.tile_key(index + 7) == key


def test_the_byte_budget_drops_the_least_recently_used_tiles(tiny_model):
    p = predictor(tiny_model, tile_cache_bytes=1)  # keeps only the last tile
    p.set_image(SpyImage((1000, 1000)))
    boxes = [np.array([10.0, 10.0, 20.0, 20.0]), np.array([700.0, 700.0, 720.0, 720.0])]
    for box in boxes + boxes:
        p.predict(boxes=box)
    assert p.tiles is not None and p.tiles.encodings == 4
    roomy = predictor(tiny_model)
    roomy.set_image(SpyImage((1000, 1000)))
    for box in boxes + boxes:
        roomy.predict(boxes=box)
    assert roomy.tiles is not None and roomy.tiles.encodings == 2


def test_small_images_are_encoded_whole_as_before(tiny_model, image16):
    auto, off = predictor(tiny_model), predictor(tiny_model, tiling="off")
    just_under = np.tile(image16, (3, 2))[:192, :192]
    for image in (image16, just_under):
        auto.set_image(image)
        off.set_image(image)
        assert auto.tiles is None and auto.input_size == off.input_size
        a, b = auto.predict(boxes=[10, 10, 60, 50]), off.predict(boxes=[10, 10, 60, 50])
        assert isinstance(a.masks, np.ndarray) and a.tiles is None
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    auto.set_image(np.tile(image16, (3, 2))[:193, :193])
    assert auto.tiles is not None and auto.features is None


def _picture_in_a_mosaic(image16, window):
    picture = np.tile(image16, (2, 1))[:128, :128]
    mosaic = np.random.default_rng(5).integers(0, 4000, (700, 900)).astype(np.uint16)
    mosaic[window.y0 : window.y1, window.x0 : window.x1] = picture
    return picture, mosaic


def test_a_tile_decodes_as_the_same_picture_alone_and_its_mask_is_pasted_in_place(tiny_model, image16):
    tiled = predictor(tiny_model)
    tiled.set_image(np.zeros((700, 900), np.uint16))
    index = 14
    window = tiled.tile_grid[index]
    picture, mosaic = _picture_in_a_mosaic(image16, window)
    limits = (0.0, 40000.0)
    tiled.set_image(mosaic, contrast_limits=limits)
    alone = predictor(tiny_model)
    alone.set_image(picture, contrast_limits=limits)
    boxes = np.array([[40.0, 30.0, 80.0, 70.0], [50.0, 45.0, 75.0, 60.0]], np.float32)
    points = np.array([[[60.0, 50.0]], [[62.0, 52.0]]], np.float32)
    for kwargs in ({"boxes": boxes}, {"points": points, "point_labels": np.ones((2, 1))}):
        shifted = {k: v for k, v in kwargs.items()}
        if "boxes" in kwargs:
            shifted["boxes"] = boxes + np.array([window.x0, window.y0] * 2, np.float32)
        else:
            shifted["points"] = points + np.array([window.x0, window.y0], np.float32)
        expected, got = (
            alone.predict(**kwargs, multimask_output=True),
            tiled.predict(**shifted, multimask_output=True),
        )
        assert isinstance(got.masks, CompactMasks) and got.tiles.tolist() == [index, index]
        placed = np.stack([got.masks[i][:, window.y0 : window.y1, window.x0 : window.x1] for i in range(2)])
        assert np.mean(placed != expected.masks) < 1e-3  # one bilinear step instead of two: a few edge pixels
        assert sum(got.masks[i].sum() for i in range(2)) == placed.sum()  # nothing outside the tile
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.iou, expected.iou, rtol=1e-4, atol=1e-6)
        assert got.class_names == expected.class_names


def test_box_masks_stay_in_their_boxes_across_tile_borders(tiny_model):
    p = predictor(tiny_model)
    p.set_image(SpyImage((700, 900)))
    boxes = np.array([[80.0, 80.0, 180.0, 140.0], [50.0, 60.0, 650.0, 500.0], [90.0, 5.0, 110.0, 30.0]])
    result = p.predict(boxes=boxes)
    assert (
        result.tiles.tolist()[:2] == [-1, -1] and result.tiles[2] >= 0
    )  # across borders, larger than a tile
    assert isinstance(result.masks, CompactMasks)
    for (x0, y0, x1, y1), (x, y, xe, ye) in zip(boxes, result.masks.boxes()):
        if xe > x:
            assert (
                x >= np.floor(x0) and y >= np.floor(y0) and xe <= np.floor(x1) + 1 and ye <= np.floor(y1) + 1
            )
    labels = result.masks.paint(np.zeros((700, 900), np.uint16), [1, 2, 3])
    assert set(np.unique(labels)) <= {0, 1, 2, 3}


def test_tile_states_round_trip_without_encoding(tiny_model):
    image = SpyImage((600, 800), seed=3)
    first = predictor(tiny_model)
    first.set_image(image)
    box = np.array([300.0, 200.0, 330.0, 240.0])
    expected = first.predict(boxes=box)
    index = int(expected.tiles[0])
    state, key = first.get_tile_embedding(index), first.tile_key(index)
    assert state["window"] == first.tile_grid[index].bounds and state["input_size"] == (128, 128)
    second = predictor(tiny_model)
    second.set_image(image)
    assert second.tile_key(index) == key and second.tile_key(index + 1) != key
    second.set_tile_embedding(index, state)
    got = second.predict(boxes=box)
    assert second.tiles is not None and second.tiles.encodings == 0
    np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(expected.masks))
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    other = predictor(tiny_model)
    other.set_image(image, contrast_limits=(0, 1000))
    assert other.tile_key(index) != key  # the contrast is part of what was encoded


def test_zarr_dask_and_tiff_images_give_the_numpy_result(tiny_model, tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    tifffile = pytest.importorskip("tifffile")
    pixels = SpyImage((500, 600))[:, :]
    on_disk = zarr.open_array(
        tmp_path / "image.zarr", mode="w", shape=pixels.shape, chunks=(100, 100), dtype="u2"
    )
    on_disk[:] = pixels
    tifffile.imwrite(tmp_path / "image.tif", pixels, tile=(256, 256))
    tiff = zarr.open(tifffile.imread(tmp_path / "image.tif", aszarr=True), mode="r")
    box = np.array([[250.0, 300.0, 290.0, 330.0], [10.0, 10.0, 40.0, 40.0]])
    results = []
    for image in (pixels, on_disk, da.from_array(pixels, chunks=100), tiff):
        p = predictor(tiny_model)
        p.set_image(image, contrast_limits=(0, 5000))
        results.append(p.predict(boxes=box))
    for other in results[1:]:
        np.testing.assert_array_equal(np.asarray(other.masks), np.asarray(results[0].masks))
        np.testing.assert_allclose(other.scores, results[0].scores, rtol=1e-6)


def test_one_contrast_for_all_tiles_from_a_sample_of_a_lazy_image(tiny_model):
    image = SpyImage((2000, 2000))
    p = predictor(tiny_model)
    p.set_image(image)
    assert p.tiles is not None
    lo, hi = p.tiles.tiled.contrast_limits
    assert 0 <= lo < 200 and 3900 < hi <= 4200  # the pattern spans 0..4192
    numpy_image = image[:, :]
    p.set_image(numpy_image)  # a dense image: about its 0.5-99.5 percentiles, as the whole-image rule
    expected = np.percentile(numpy_image, (0.5, 99.5))
    assert p.tiles.tiled.contrast_limits == pytest.approx(tuple(expected), rel=0.01)


def test_a_sparse_image_keeps_its_objects_below_the_high_limit(tiny_model):
    """A few bright cells on a dark, noisy background (a mosaic): the image-wide 99.5th percentile is
    background, which would saturate the cells and stretch the noise; the blocks holding cells set it."""
    rng = np.random.default_rng(0)
    image = rng.normal(200, 20, (3000, 3000)).clip(0).astype(np.uint16)
    for y, x in rng.integers(100, 2900, (12, 2)):
        image[y - 10 : y + 10, x - 10 : x + 10] = rng.normal(3000, 100, (20, 20)).astype(np.uint16)
    assert np.percentile(image, 99.5) < 300
    p = predictor(tiny_model)
    p.set_image(image)
    assert p.tiles is not None
    lo, hi = p.tiles.tiled.contrast_limits
    assert lo < 200 and 2900 < hi < 3400
    lazy = predictor(tiny_model)
    lazy.set_image(SpyImage((3000, 3000)))  # the lazy sample follows the same rule
    assert lazy.tiles is not None and lazy.tiles.tiled.contrast_limits[1] > 3900


def test_scale_views_the_image_at_another_resolution(tiny_model):
    p = predictor(tiny_model, tiling=TileSpec(scale=0.5))
    image = SpyImage((1000, 1000))
    p.set_image(image)
    assert p.tile_grid[0].size == (256, 256) and p.tile_grid[0].input_size == (128, 128)
    result = p.predict(boxes=np.array([100.0, 100.0, 160.0, 150.0]))
    assert result.tiles[0] == 0 and image.read_pixels() - 64 * SAMPLE_SIDE**2 <= 256 * 256


def test_demo_mosaic_segments_and_names_objects_as_in_their_images():
    model = build_ovsam("demo", device="cpu")
    samples = [generate_image(image_rng(11, "val", i), 256) for i in range(4)]
    for s in samples:
        lo, hi = np.percentile(s.image, (0.5, 99.5))
        s.image = (np.clip((s.image - lo) / (hi - lo), 0, 1) * 65535).astype(np.uint16)
    mosaic = np.full((37 + 512 + 40, 53 + 512 + 40), 0, np.uint16)
    origins = [(37 + 256 * (i // 2), 53 + 256 * (i % 2)) for i in range(4)]
    for s, (r, c) in zip(samples, origins):
        mosaic[r : r + 256, c : c + 256] = s.image
    tiled, alone = OVSAMPredictor(model), OVSAMPredictor(model)
    tiled.set_image(mosaic)
    assert tiled.tiles is not None
    ious, alone_ious, named, alone_named = [], [], [], []
    for s, (r, c) in zip(samples, origins):
        boxes = gt_prompts(s.masks, "box")["boxes"]
        alone.set_image(s.image)
        expected = alone.predict(boxes=boxes)
        got = tiled.predict(boxes=boxes + np.array([c, r, c, r], np.float32))
        local = np.stack([got.masks[i, 0][r : r + 256, c : c + 256] for i in range(len(boxes))])
        ious.append(mask_ious(local, s.masks))
        alone_ious.append(mask_ious(expected.masks[:, 0], s.masks))
        named.append(got.class_ids == s.labels)
        alone_named.append(expected.class_ids == s.labels)
    miou, alone_miou = np.concatenate(ious).mean(), np.concatenate(alone_ious).mean()
    assert miou > 0.7 and miou >= alone_miou - 0.03
    assert np.concatenate(named).mean() >= np.concatenate(alone_named).mean() - 0.1


def test_prepare_tiles_encodes_in_advance_what_predict_decodes_on(tiny_model):
    image = SpyImage((900, 900))
    p = predictor(tiny_model)
    p.set_image(image)
    boxes = np.array([[20.0, 20.0, 40.0, 40.0], [80.0, 80.0, 180.0, 140.0], [700.0, 700.0, 720.0, 730.0]])
    routes = p.prepare_tiles(boxes=boxes)
    assert p.tiles is not None and p.tiles.encodings == 3
    assert [index for index, _ in routes][1] == -1 and all(window in p.tiles for _, window in routes)
    result = p.predict(boxes=boxes)
    assert p.tiles.encodings == 3 and result.tiles.tolist() == [index for index, _ in routes]


def test_no_prompts_and_rgba_images_on_a_tiled_image(tiny_model):
    p = predictor(tiny_model)
    rgba = np.random.default_rng(0).integers(0, 3000, (400, 500, 4)).astype(np.uint16)
    rgba[..., 3] = 65535  # alpha is dropped: it must not stretch the contrast limits
    p.set_image(rgba)
    assert p.tiles is not None and p.tiles.tiled.contrast_limits[1] < 3000
    empty = p.predict(boxes=np.zeros((0, 4)), multimask_output=True)
    assert len(empty) == 0 and empty.masks.shape == (0, 3, 400, 500) and empty.tiles.shape == (0,)
    assert p.predict(boxes=[10, 10, 50, 50]).masks.shape == (1, 1, 400, 500)


def test_a_thousand_prompts_on_a_16k_image_allocate_no_full_size_mask(tiny_model):
    p = predictor(tiny_model)
    p.set_image(SpyImage((16384, 16384)))
    rng = np.random.default_rng(0)
    corners = rng.choice([1000.0, 9000.0], (1000, 2)) + rng.uniform(0, 20, (1000, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(8, 18, (1000, 2))], axis=1)
    tracemalloc.start()
    result = p.predict(boxes=boxes)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result) == 1000 and result.masks.shape == (1000, 1, 16384, 16384)
    assert p.tiles is not None and p.tiles.encodings == 4  # the prompts sit in four tiles
    assert peak < 64 * 1024**2  # one full-size bool mask alone is 256 MiB
    assert all(crop.shape[1] <= 20 and crop.shape[2] <= 20 for crop in result.masks.crops)


def test_tiled_decoding_in_chunks_equals_one_chunk(tiny_model):
    image = SpyImage((700, 700), seed=1)
    rng = np.random.default_rng(4)
    corners = rng.uniform(0, 640, (9, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(10, 50, (9, 2))], axis=1)
    results = []
    for chunk in (2, 64):
        p = predictor(tiny_model, chunk_size=chunk)
        p.set_image(image)
        results.append(p.predict(boxes=boxes, multimask_output=True))
    np.testing.assert_array_equal(np.asarray(results[0].masks), np.asarray(results[1].masks))
    np.testing.assert_allclose(results[0].scores, results[1].scores, rtol=1e-5)
    np.testing.assert_array_equal(results[0].tiles, results[1].tiles)
