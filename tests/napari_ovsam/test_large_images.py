"""Large images in the session (no Qt): tiles read and encoded only where prompts are, at native resolution,
tile entries in the embedding cache (a reopened session encodes nothing), cropped masks painted into zarr
labels with bounded undo, precompute over tiles (resumable), multiscale levels.

The tiny model's input is 128 px, so a 1024 x 1024 image is already tiled (11 x 11 tiles of 128 px, 32 px
overlap); its random weights make the masks meaningless: the tests compare with the predictor itself.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import zarr

from napari_ovsam.cache import EmbeddingCache, model_fingerprint
from napari_ovsam.prompts import ObjectPrompt
from napari_ovsam.results import CroppedMasks
from napari_ovsam.session import AnnotationSession, TilesNeeded
from napari_ovsam.tiles import SliceView
from ovsam_model.predictor import OVSAMPredictor
from ovsam_model.tiled import SAMPLE_GRID, SAMPLE_SIDE

VOCABULARY = ["nucleus", "rod, bacterium", "ring"]


class SpyArray:
    """A lazy array over a zarr array that records every region read (as (rows, cols) slices)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


def zarr_image(path, shape=(1024, 1024), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 3000, shape).astype(np.uint16)
    data[300:340, 500:560] += 20000  # a bright block to prompt on
    array = zarr.create_array(store=str(path), shape=shape, dtype=np.uint16, chunks=(256, 256))
    array[...] = data
    return array, data


def box_object(x0, y0, x1, y1):
    return ObjectPrompt(
        np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.array([x0, y0, x1, y1], np.float32)
    )


def point_object(x, y):
    return ObjectPrompt(np.array([[x, y]], np.float32), np.array([1], np.int32))


@pytest.fixture
def session_on(tiny_model):
    def make(image, cache=None):
        session = AnnotationSession(OVSAMPredictor(tiny_model), cache=cache)
        session.set_vocabulary(VOCABULARY)
        session.set_image(image)
        return session

    return make


def run(generator):
    """Drain a job generator: (its items, its return value)."""
    items = []
    while True:
        try:
            items.append(next(generator))
        except StopIteration as stop:
            return items, stop.value


def test_prompts_are_decoded_at_native_resolution_on_the_tiles_they_touch(tmp_path, session_on, tiny_model):
    array, data = zarr_image(tmp_path / "big.zarr")
    spy = SpyArray(array)
    session = session_on(spy)
    assert session.tiled and session.labels_shape == (1024, 1024)
    info = session.ensure_embedding(())
    assert info.tiles == 121 and not info.computed and session.embedding_ready(())
    assert len(spy.reads) <= SAMPLE_GRID**2  # the contrast sample only: no tile read, none encoded
    assert all(r.stop - r.start <= SAMPLE_SIDE and c.stop - c.start <= SAMPLE_SIDE for r, c in spy.reads)
    spy.reads.clear()

    objects = [box_object(505, 305, 550, 335), point_object(100, 900)]
    with pytest.raises(TilesNeeded) as needed:  # the GUI thread never encodes
        session.predict(objects, ())
    assert needed.value.missing == 2
    steps, encoded = run(session.iter_tiles((), objects))
    tiled = session._tiled[()]
    assert encoded == 2 == tiled.predictor.tiles.encodings == session.encoder_runs
    assert [m for *_, m in steps] and all(
        m.startswith("Encoding tile ") and m.endswith(" of 121…") for *_, m in steps
    )
    touched = [tiled.predictor.tile_grid[int(m.split()[2]) - 1] for *_, m in steps]
    for rows, cols in spy.reads:  # only the two touched tiles were read
        assert any(
            w.y0 <= rows.start and rows.stop <= w.y1 and w.x0 <= cols.start and cols.stop <= w.x1
            for w in touched
        )

    results = session.predict(objects, ())
    assert isinstance(results.masks, CroppedMasks) and results.masks.shape == (2, 1024, 1024)
    reference = OVSAMPredictor(tiny_model)  # the predictor alone, on the whole image in memory
    reference.set_vocabulary(VOCABULARY)
    reference.set_image(data)
    expected = reference.predict(boxes=np.array([[505, 305, 550, 335]], np.float32))
    np.testing.assert_array_equal(results.masks[0], expected.masks[0, 0])
    assert results.masks[0].any() and results.class_names[0] == expected.class_names[0]
    box = results.masks.boxes()[0]
    assert 305 <= box[0] and box[1] <= 336 and 505 <= box[2] and box[3] <= 551  # clipped to its box
    assert tiled.predictor.tiles.encodings == 2  # decoding encoded nothing more


def test_tile_entries_make_a_reopened_session_encode_nothing(tmp_path, session_on):
    array, _ = zarr_image(tmp_path / "big.zarr")
    store = tmp_path / "cache"
    first = session_on(array, EmbeddingCache(store_path=store))
    first.ensure_embedding(())
    objects = [box_object(505, 305, 550, 335)]
    run(first.iter_tiles((), objects))
    tiled = first._tiled[()]
    index = next(iter(tiled.keys))
    fingerprint = model_fingerprint(first.predictor.model)
    key = (fingerprint, tiled.predictor.tile_key(index))
    assert key in EmbeddingCache(store_path=store)  # on disk, keyed by model and tile content
    assert len(list(store.glob("*/*.safetensors"))) == 1
    before = first.predict(objects, ())

    again = session_on(
        SpyArray(zarr.open_array(str(tmp_path / "big.zarr"), mode="r")), EmbeddingCache(store_path=store)
    )
    again.ensure_embedding(())
    steps, encoded = run(again.iter_tiles((), objects))
    assert encoded == 0 == steps.__len__() == again._tiled[()].predictor.tiles.encodings
    after = again.predict(objects, ())
    np.testing.assert_array_equal(after.masks[0], before.masks[0])
    assert after.class_names == before.class_names


def test_commits_paint_cropped_masks_into_zarr_labels_with_bounded_undo(tmp_path, session_on):
    array, _ = zarr_image(tmp_path / "big.zarr")
    session = session_on(array)
    labels = zarr.create_array(
        store=str(tmp_path / "labels.zarr"), shape=(1024, 1024), dtype=np.uint32, chunks=(256, 256)
    )
    target = session.attach_labels(labels)
    session.ensure_embedding(())
    objects = [box_object(505, 305, 550, 335), box_object(20, 20, 60, 60), box_object(900, 880, 1000, 990)]
    run(session.iter_tiles((), objects))
    results = session.predict(objects, ())
    group = session.commit(results)
    painted = [i for i, crop in enumerate(results.masks.crops) if crop.any()]
    assert len(group.records) == len(painted) >= 2 and group.label_ids == tuple(range(1, len(painted) + 1))
    for record, i in zip(group.records, painted):  # one record per object, over its own crop only
        crop, (r, c) = results.masks.crops[i], results.masks.offsets[i]
        assert (
            record.bbox == (r, r + crop.shape[0], c, c + crop.shape[1]) and record.changed.shape == crop.shape
        )
    stored = labels[...]
    for label_id, i in zip(group.label_ids, painted):
        np.testing.assert_array_equal(stored == label_id, results.masks[i])
    assert group.nbytes < 4 * sum(c.size for c in results.masks.crops) * 9
    assert list(target.features["label_id"]) == list(group.label_ids)
    assert set(target.anchors) == {(i, ()) for i in group.label_ids}
    assert session.target.last_commit() == (list(group.label_ids), ())

    run(session.iter_tiles((), objects[:1]))
    second = session.commit(session.predict(objects[:1], ()))  # keep mode: the same place is taken
    assert second is None
    session.undo()
    assert not labels[...].any() and target.features.empty and not target.anchors


def test_precompute_covers_every_tile_and_resumes(tmp_path, session_on):
    array, _ = zarr_image(tmp_path / "mid.zarr", shape=(256, 256))  # 3 x 3 tiles
    store = tmp_path / "cache"
    session = session_on(array, EmbeddingCache(store_path=store))
    assert session.tiled
    steps = session.iter_precompute(())
    first = [next(steps) for _ in range(4)]
    steps.close()  # cancelled part way: what is stored stays
    assert first == [(i, 9, True) for i in range(1, 5)]
    again = session_on(array, EmbeddingCache(store_path=store))
    done = list(again.iter_precompute(()))
    assert [d for d, _, _ in done] == list(range(1, 10)) and sum(c for *_, c in done) == 5
    assert len(list(store.glob("*/*.safetensors"))) == 9
    third = session_on(array, EmbeddingCache(store_path=store))
    third.ensure_embedding(())
    objects = [box_object(10, 10, 40, 40), box_object(200, 200, 240, 240)]
    assert run(third.iter_tiles((), objects))[1] == 0 and third.encoder_runs == 0


def test_a_stack_of_large_slices_is_tiled_per_slice(tmp_path, session_on):
    data = np.random.default_rng(1).integers(0, 3000, (3, 256, 300)).astype(np.uint16)
    stack = zarr.create_array(
        store=str(tmp_path / "stack.zarr"), shape=data.shape, dtype=np.uint16, chunks=(1, 128, 128)
    )
    stack[...] = data
    session = session_on(stack)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    assert session.tiled and session.leading_shape == (3,)
    session.ensure_embedding((2,))
    objects = [box_object(30, 30, 80, 70)]
    run(session.iter_tiles((2,), objects))
    results = session.predict(objects, (2,))
    reference = OVSAMPredictor(session.predictor.model)
    reference.set_vocabulary(VOCABULARY)
    reference.set_image(data[2])
    np.testing.assert_array_equal(results.masks[0], reference.predict(boxes=objects[0].box_xyxy).masks[0, 0])
    group = session.commit(results)
    assert group is None or all(r.slice_index == (2,) for r in group.records)
    assert (
        list(session.iter_precompute((2,), 1, 2))[-1][:2]
        == (len(session._tiled[(2,)].predictor.tile_grid),) * 2
    )


def test_small_images_keep_the_whole_image_path(session_on):
    image = np.random.default_rng(2).integers(0, 3000, (192, 192)).astype(np.uint16)  # 1.5 inputs: not tiled
    session = session_on(image)
    assert not session.tiled
    assert session.ensure_embedding(()).computed and session.ensure_embedding(()).tiles == 0
    results = session.predict([box_object(20, 20, 80, 80)], ())
    assert isinstance(results.masks, np.ndarray) and results.masks.shape == (1, 192, 192)


def test_multiscale_images_use_level_zero_and_bad_pyramids_are_refused(tmp_path, session_on):
    array, _ = zarr_image(tmp_path / "big.zarr")
    half = zarr.create_array(
        store=str(tmp_path / "half.zarr"), shape=(512, 512), dtype=np.uint16, chunks=(256, 256)
    )
    session = session_on([array, half])
    assert session.image is array and session.tiled
    with pytest.raises(ValueError, match="Level 1 of this multiscale image .* is not smaller than level 0"):
        session.set_image([half, array])
    with pytest.raises(ValueError, match="Level 1 of this multiscale image has 3 channels, level 0 has 4"):
        session.set_image([np.zeros((64, 64, 4), np.uint8), np.zeros((32, 32, 3), np.uint8)], rgb=True)
    with pytest.raises(ValueError, match="Level 1 of this multiscale image has 3 axes"):
        session.set_image([np.zeros((64, 64)), np.zeros((2, 32, 32))])
    assert session.image is array  # a refused pyramid leaves the image as it was


def test_slice_views_read_only_what_is_sliced(tmp_path):
    stack = SpyArray(zarr.create_array(store=str(tmp_path / "s.zarr"), shape=(4, 300, 200), dtype=np.uint8))
    view = SliceView(stack, (2,))
    assert view.shape == (300, 200) and view.ndim == 2 and view.dtype == np.uint8
    assert view[10:20, 30:50].shape == (10, 20) and stack.reads == [(2, slice(10, 20), slice(30, 50))]
    assert copy.copy(view).index == (2,)


def test_a_new_vocabulary_names_the_next_objects_on_a_tiled_slice(tmp_path, session_on):
    array, _ = zarr_image(tmp_path / "big.zarr")
    session = session_on(array)
    session.ensure_embedding(())
    objects = [box_object(505, 305, 550, 335)]
    run(session.iter_tiles((), objects))
    assert set(session.predict(objects, ()).topk_names[0]) <= {"nucleus", "rod", "ring"}
    session.set_vocabulary(["cell", "blob, smudge"])
    assert set(session.predict(objects, ()).topk_names[0]) <= {"cell", "blob"}


def test_the_command_line_precomputes_the_tiles_of_a_large_2d_image_and_resumes(tmp_path, capsys):
    import torch

    from napari_ovsam.precompute import main

    zarr_image(tmp_path / "mosaic.zarr", shape=(256, 300))  # 3 x 3 tiles for tiny
    out = tmp_path / "cache"
    torch.manual_seed(0)  # the same random tiny weights (and fingerprint) in both runs
    assert main([str(tmp_path / "mosaic.zarr"), "--out", str(out), "--model", "tiny", "--device", "cpu"]) == 0
    assert "9 tile(s) embedded, 0 already cached" in capsys.readouterr().out
    assert len(list(out.glob("*/*.safetensors"))) == 9
    torch.manual_seed(0)
    assert main([str(tmp_path / "mosaic.zarr"), "--out", str(out), "--model", "tiny", "--device", "cpu"]) == 0
    assert "0 tile(s) embedded, 9 already cached" in capsys.readouterr().out


def test_ome_zarr_and_pyramidal_tiff_pyramids_open_lazily_at_full_resolution(tmp_path, session_on):
    import tifffile

    from napari_ovsam.multiscale import open_pyramid

    data = np.random.default_rng(3).integers(0, 3000, (1024, 1024)).astype(np.uint16)
    group = zarr.open_group(str(tmp_path / "image.ome.zarr"), mode="w")
    for name, level in (("0", data), ("1", data[::2, ::2]), ("2", data[::4, ::4])):
        group.create_array(name, shape=level.shape, dtype=level.dtype, chunks=(256, 256))[...] = level
    group.attrs["multiscales"] = [
        {"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}, {"path": "2"}]}
    ]
    with tifffile.TiffWriter(tmp_path / "image.tif") as tif:
        tif.write(data, subifds=1, tile=(256, 256))
        tif.write(data[::2, ::2], subfiletype=1, tile=(256, 256))
    box = box_object(505, 305, 550, 335)
    masks = []
    for path, count in ((tmp_path / "image.ome.zarr", 3), (tmp_path / "image.tif", 2)):
        levels = open_pyramid(path)
        assert len(levels) == count and all(isinstance(level, zarr.Array) for level in levels)  # lazy
        assert levels[0].shape == (1024, 1024) and levels[1].shape == (512, 512)
        session = session_on(levels)
        assert session.image is levels[0] and session.tiled
        session.ensure_embedding(())
        run(session.iter_tiles((), [box]))
        masks.append(session.predict([box], ()).masks[0])
    np.testing.assert_array_equal(masks[0], masks[1])  # the same full-resolution pixels either way

    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "1"}, {"path": "0"}]}]
    with pytest.raises(ValueError, match="Level 1 of this multiscale image .* is not smaller than level 0"):
        open_pyramid(tmp_path / "image.ome.zarr")
    del group.attrs["multiscales"]
    with pytest.raises(ValueError, match="without OME-Zarr 'multiscales' metadata"):
        open_pyramid(tmp_path / "image.ome.zarr")


def test_propagation_through_a_stack_of_tiled_slices(tmp_path, session_on):
    from napari_ovsam.propagation import PropagationSettings

    block = np.zeros((256, 300), np.uint16)
    block[100:160, 120:200] = 30000
    data = np.stack([block] * 3)
    stack = zarr.create_array(
        store=str(tmp_path / "stack.zarr"), shape=data.shape, dtype=np.uint16, chunks=(1, 128, 128)
    )
    stack[...] = data
    session = session_on(stack)
    labels = zarr.create_array(
        store=str(tmp_path / "labels.zarr"), shape=data.shape, dtype=np.uint32, chunks=(1, 128, 128)
    )
    session.attach_labels(labels)
    session.ensure_embedding((1,))
    objects = [box_object(120, 100, 199, 159)]
    results = session.predict(objects, (1,))  # 9 tiles: encoded when the slice came into view
    group = session.commit(results)
    assert group is not None and group.label_ids == (1,)
    settings = PropagationSettings(min_iou=-1.0, min_overlap=0.0)
    steps = list(session.iter_propagate([1], (1,), settings))
    assert {s.slice_index for s in steps} == {(0,), (2,)}
    for step in steps:  # what the predictor alone gives on that slice, from the box around slice 1's mask
        assert step.painted == (labels[step.slice_index[0]] == 1).any()
    assert session.undo().description == "propagation of 1 object(s)"
    assert not (labels[0] == 1).any() and not (labels[2] == 1).any() and (labels[1] == 1).any()


def test_the_largest_label_of_a_large_2d_zarr_array_is_read_band_by_band(tmp_path):
    from napari_ovsam.painting import max_label

    labels = SpyArray(
        zarr.create_array(
            store=str(tmp_path / "l.zarr"), shape=(2048, 1000), dtype=np.uint32, chunks=(512, 512)
        )
    )
    labels.array[1500, 900] = 7
    labels.chunks = labels.array.chunks
    assert max_label(labels) == 7
    assert [key.stop - key.start for key in labels.reads] == [512] * 4  # one band of chunks at a time


def test_a_prompt_larger_than_a_tile_is_decoded_on_a_view_of_its_region(tmp_path, session_on, tiny_model):
    array, data = zarr_image(tmp_path / "big.zarr")
    session = session_on(array)
    session.ensure_embedding(())
    objects = [box_object(400, 200, 700, 450)]  # 300 x 250 px: larger than a 128 px tile
    with pytest.raises(TilesNeeded):
        session.predict(objects, ())
    steps, encoded = run(session.iter_tiles((), objects))
    assert encoded == 1 and [m for *_, m in steps] == ["Encoding a view around a prompt (121 tiles)…"]
    results = session.predict(objects, ())
    reference = OVSAMPredictor(tiny_model)
    reference.set_vocabulary(VOCABULARY)
    reference.set_image(data)
    expected = reference.predict(boxes=objects[0].box_xyxy)
    assert expected.tiles.tolist() == [-1]
    np.testing.assert_array_equal(results.masks[0], expected.masks[0, 0])
    assert not any(session.cache.keys())  # a view made for one prompt is no tile entry


class LazyMosaic:
    """A lazy uint16 (H, W) image whose pixels are made on demand (nothing is ever held whole)."""

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.uint16), 2

    def __getitem__(self, key):
        rows, cols = key
        r = np.arange(self.shape[0])[rows][:, None].astype(np.int64)
        c = np.arange(self.shape[1])[cols][None, :].astype(np.int64)
        return ((r * 7919 + c * 104729) % 4093 + 20000 * ((r // 50 + c // 50) % 2)).astype(np.uint16)


def test_a_16k_image_is_annotated_without_full_size_masks_or_reads(session_on):
    import tracemalloc

    session = session_on(LazyMosaic((16384, 16384)))
    labels = zarr.create_array(
        store=zarr.storage.MemoryStore(), shape=(16384, 16384), dtype=np.uint32, chunks=(1024, 1024)
    )
    target = session.attach_labels(labels)
    assert session.ensure_embedding(()).tiles == 171 * 171
    objects = [
        box_object(1010, 2010, 1040, 2040),
        box_object(15000, 300, 15030, 330),
        box_object(8000, 15000, 8040, 15040),
    ]
    assert run(session.iter_tiles((), objects))[1] == 3
    tracemalloc.start()
    results = session.predict(objects, ())
    group = session.commit(results)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20  # one full-size bool mask would be 256 MiB, a uint32 labels image 1 GiB
    assert group is not None and labels.nchunks_initialized <= 3 * 4  # only the chunks the objects touch
    assert group.nbytes < 2**20 and target.history[-1] is group  # undo holds the objects' boxes only
    session.undo()
    assert all(not labels[b[0] : b[1], b[2] : b[3]].any() for b in results.masks.boxes() if b is not None)


def test_a_large_rgb_image_is_tiled_over_its_spatial_axes(tmp_path, session_on, tiny_model):
    data = np.random.default_rng(4).integers(0, 255, (600, 500, 3)).astype(np.uint8)
    rgb = zarr.create_array(
        store=str(tmp_path / "rgb.zarr"), shape=data.shape, dtype=np.uint8, chunks=(256, 256, 3)
    )
    rgb[...] = data
    session = AnnotationSession(OVSAMPredictor(tiny_model))
    session.set_vocabulary(VOCABULARY)
    session.set_image(rgb, rgb=True)
    assert session.tiled and session.labels_shape == (600, 500)
    session.ensure_embedding(())
    objects = [box_object(200, 300, 260, 350)]
    run(session.iter_tiles((), objects))
    results = session.predict(objects, ())
    reference = OVSAMPredictor(tiny_model)
    reference.set_vocabulary(VOCABULARY)
    reference.set_image(data)
    assert results.masks.shape == (1, 600, 500)
    np.testing.assert_array_equal(results.masks[0], reference.predict(boxes=objects[0].box_xyxy).masks[0, 0])
