"""The embedding cache: content keys, LRU, zarr persistence across instances, interrupted writes."""

import numpy as np
import pytest

from napari_ovsam.cache import (
    DEFAULT_MEMORY_BYTES,
    EmbeddingCache,
    content_hash,
    make_key,
    model_fingerprint,
    state_nbytes,
)

FP = "tiny-0123"


def fake_state(seed=0, scale=1.0):
    """A state shaped like OVSAMPredictor.get_image_embedding() of the tiny model (float32 + tuples)."""
    rng = np.random.default_rng(seed)
    shapes = {
        "embedding": (32, 8, 8),
        "fpn_0": (16, 32, 32),
        "fpn_1": (16, 16, 16),
        "fpn_2": (16, 8, 8),
        "fpn_3": (16, 4, 4),
        "clip_top": (256, 4, 4),
    }
    state = {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in shapes.items()}
    state["original_size"] = (40, 50)
    state["input_size"] = (102, 128)
    return state


def key(i):
    return (FP, f"{i:032x}")


def assert_states_close(got, expected, rtol=1e-3):
    assert set(got) == set(expected)
    for name, value in expected.items():
        if isinstance(value, tuple):
            assert got[name] == value and isinstance(got[name], tuple)
        else:
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            np.testing.assert_allclose(got[name], value, rtol=rtol, atol=1e-3 * np.abs(value).max())


# ------------------------------------------------------------------------------------------------ keys


def test_content_hash_sees_pixels_shape_dtype_and_contrast():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    base = content_hash(image)
    assert base == content_hash(image.copy()) and len(base) == 32
    assert base == content_hash(np.asfortranarray(image))  # memory layout does not matter
    changed = image.copy()
    changed[0, 0] = 99
    others = {
        content_hash(changed),
        content_hash(image.reshape(4, 3)),
        content_hash(image.astype(np.int32)),
        content_hash(image, (0, 100)),
        content_hash(image, (0, 101)),
    }
    assert len(others) == 5 and base not in others
    assert content_hash(image, (0, 100)) == content_hash(image, [0.0, 100.0])
    assert make_key(FP, image) == (FP, base)


def test_model_fingerprint_tracks_config_and_weights():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    a = torch.nn.Linear(600, 600)  # 1.4 MB of weights: sampled, not hashed whole
    b = torch.nn.Linear(600, 600)
    assert model_fingerprint(a) == model_fingerprint(a)
    assert model_fingerprint(a) != model_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.bias[0] += 1
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a.to(torch.bfloat16)).startswith("Linear-")


# ------------------------------------------------------------------------------------------------ memory


def test_memory_lru_evicts_the_least_recently_used():
    cache = EmbeddingCache(max_items=2)
    for i in range(3):
        cache.put(key(i), fake_state(i))
    assert key(0) not in cache and key(1) in cache and key(2) in cache
    cache.get(key(1))  # now the most recent
    cache.put(key(3), fake_state(3))
    assert cache.memory_keys == [key(1), key(3)]
    assert cache.get(key(2)) is None
    assert cache.get(("x", "y")) is None and ("x",) not in cache
    with pytest.raises(TypeError, match="make_key"):
        cache.put("not a key", fake_state())
    with pytest.raises(ValueError):
        EmbeddingCache(max_items=0)


def test_memory_budget_in_bytes():
    size = state_nbytes(fake_state())
    cache = EmbeddingCache(max_items=10, max_bytes=int(2.5 * size))
    for i in range(4):
        cache.put(key(i), fake_state(i))
    assert cache.memory_keys == [key(2), key(3)]
    default = EmbeddingCache(max_items=100)  # bounded in bytes by default, not only in items
    third = np.broadcast_to(np.float32(0), (DEFAULT_MEMORY_BYTES // 4 // 3 + 1,))  # a third, no allocation
    for i in range(4):
        default.put(key(i), {"embedding": third})
    assert default.memory_keys == [key(2), key(3)]


# ------------------------------------------------------------------------------------------------ disk


def test_reopened_store_finds_entries(tmp_path):
    store = tmp_path / "cache.zarr"
    first = EmbeddingCache(max_items=2, store_path=store)
    states = {key(i): fake_state(i) for i in range(3)}
    for k, state in states.items():
        first.put(k, state)
    second = EmbeddingCache(store_path=store)
    assert sorted(second.keys()) == sorted(states)
    assert len(second) == 3 and all(k in second for k in states)
    for k, state in states.items():
        assert_states_close(second.get(k), state)
    assert first.get(key(0)) is not None  # evicted from memory, read back from disk


def test_an_entry_is_one_float16_chunk_on_disk(tmp_path):
    import zarr

    cache = EmbeddingCache(store_path=tmp_path / "c.zarr")
    state = fake_state(1)
    state["steps"] = np.array([3, 2**40], np.int64)  # not an embedding: kept exactly
    cache.put(key(1), state)
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    [(_, folder)] = list(root.groups())
    entry = folder[key(1)[1]]
    floats = sum(v.size for v in state.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f")
    assert isinstance(entry, zarr.Array) and entry.dtype == np.float16
    assert entry.shape == entry.chunks == (floats,)  # one chunk: one read
    reopened = EmbeddingCache(store_path=tmp_path / "c.zarr")
    meta = reopened._meta(key(1))
    assert meta is not None and meta["attributes"]["complete"]
    direct = reopened._read_plain(key(1), meta)
    assert direct is not None  # read as two plain files, no zarr call
    np.testing.assert_array_equal(direct, np.asarray(entry[...]))  # the same values zarr reads
    assert folder.attrs["fingerprint"] == FP
    reopened = EmbeddingCache(store_path=tmp_path / "c.zarr").get(key(1))
    assert_states_close({k: v for k, v in reopened.items() if k != "steps"}, fake_state(1))
    assert reopened["steps"].dtype == np.int64 and reopened["steps"].tolist() == [3, 2**40]


def test_an_entry_zarr_wrote_with_compression_is_read_through_zarr(tmp_path):
    import zarr

    store = tmp_path / "c.zarr"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    [(_, folder)] = list(zarr.open_group(str(store), mode="a").groups())
    plain = folder[key(1)[1]]
    values, attrs = np.asarray(plain[...]), plain.attrs.asdict()
    packed = folder.create_array(
        key(1)[1], shape=values.shape, dtype=values.dtype, chunks=values.shape, overwrite=True
    )  # zarr's default codecs compress
    packed[...] = values
    packed.attrs.update(attrs)
    assert packed.metadata.to_dict()["codecs"] != plain.metadata.to_dict()["codecs"]
    assert_states_close(EmbeddingCache(store_path=store).get(key(1)), fake_state(1))


def test_values_beyond_float16_are_stored_as_float32(tmp_path):
    cache = EmbeddingCache(store_path=tmp_path / "c.zarr")
    big = fake_state(1)
    big["clip_top"] = big["clip_top"] * 1e6
    cache.put(key(1), big)
    reopened = EmbeddingCache(store_path=tmp_path / "c.zarr").get(key(1))
    assert reopened["clip_top"].dtype == np.float32
    np.testing.assert_allclose(reopened["clip_top"], big["clip_top"], rtol=1e-6)


def test_interrupted_write_is_invisible_and_overwritten(tmp_path):
    import zarr

    store = tmp_path / "c.zarr"
    cache = EmbeddingCache(store_path=store)
    cache.put(key(5), fake_state(5))
    root = zarr.open_group(str(store), mode="a")
    [(_, folder)] = list(root.groups())
    entry = folder[key(5)[1]]
    del entry.attrs["complete"]  # as if the process died before the last step
    entry[...] = 0

    reopened = EmbeddingCache(store_path=store)
    assert key(5) not in reopened and reopened.get(key(5)) is None and reopened.keys() == []
    reopened.put(key(5), fake_state(5))
    assert_states_close(EmbeddingCache(store_path=store).get(key(5)), fake_state(5))


def test_entries_of_another_layout_are_computed_again(tmp_path):
    import zarr

    store = tmp_path / "c.zarr"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    root = zarr.open_group(str(store), mode="a")
    [(_, folder)] = list(root.groups())
    old = folder.create_group(key(2)[1])  # a group per entry, as the first layout wrote them
    old.create_array("embedding", shape=(2,), dtype=np.float16)
    old.attrs["complete"] = True
    cache = EmbeddingCache(store_path=store)
    assert key(2) not in cache and cache.get(key(2)) is None and cache.keys() == [key(1)]
    cache.put(key(2), fake_state(2))
    assert_states_close(EmbeddingCache(store_path=store).get(key(2)), fake_state(2))


def test_memory_only_cache_has_no_store(tmp_path):
    cache = EmbeddingCache()
    cache.put(key(1), fake_state(1))
    assert cache.keys() == [key(1)]
    cache.clear_memory()
    assert cache.keys() == [] and cache.get(key(1)) is None
