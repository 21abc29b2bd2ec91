"""The embedding cache: content keys, LRU, verified safetensors entries on disk, damage, read-only folders."""

import json
import os
import warnings

import numpy as np
import pytest

from napari_ovsam.cache import (
    DEFAULT_MEMORY_BYTES,
    CacheWarning,
    EmbeddingCache,
    content_hash,
    make_key,
    model_fingerprint,
    state_nbytes,
)
from ovsam_model import cache_store
from ovsam_model.cache_store import CACHE_FORMAT, MARKER

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


def entry_file(store, k):
    [folder] = [p for p in store.iterdir() if p.is_dir()]
    return folder / f"{k[1]}.safetensors"


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
    assert_states_close(first.get(key(0)), states[key(0)])  # evicted from memory, read back from disk


def test_an_entry_is_one_checksummed_safetensors_file_without_pickle(tmp_path):
    from safetensors import safe_open

    store = tmp_path / "c"
    cache = EmbeddingCache(store_path=store)
    state = fake_state(1)
    state["steps"] = np.array([3, 2**40], np.int64)  # not an embedding: kept exactly
    state["flags"] = np.array([True, False])
    state["tag"] = "x"
    cache.put(key(1), state)
    assert json.loads((store / MARKER).read_text()) == {"format": CACHE_FORMAT, "version": 3}
    path = entry_file(store, key(1))
    assert (path.parent / "fingerprint.txt").read_text() == FP
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["fingerprint.txt", path.name])  # no temp
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        assert f.get_tensor("embedding").dtype == np.float16
        assert f.get_tensor("steps").dtype == np.int64
    assert metadata["fingerprint"] == FP and metadata["content_hash"] == key(1)[1]
    assert len(metadata["crc32"]) == 8 and json.loads(metadata["tuples"])["original_size"] == [40, 50]
    got = EmbeddingCache(store_path=store).get(key(1))
    assert_states_close({k: v for k, v in got.items() if k not in ("steps", "flags", "tag")}, fake_state(1))
    assert got["steps"].tolist() == [3, 2**40] and got["flags"].tolist() == [True, False]
    assert got["tag"] == "x"


def test_values_beyond_float16_are_stored_as_float32(tmp_path):
    cache = EmbeddingCache(store_path=tmp_path / "c.zarr")
    big = fake_state(1)
    big["clip_top"] = big["clip_top"] * 1e6
    cache.put(key(1), big)
    reopened = EmbeddingCache(store_path=tmp_path / "c.zarr").get(key(1))
    assert reopened["clip_top"].dtype == np.float32
    np.testing.assert_allclose(reopened["clip_top"], big["clip_top"], rtol=1e-6)


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def _empty(path):
    path.write_bytes(b"")


def _other_key(path):
    path.write_bytes(entry_file(path.parent.parent, key(2)).read_bytes())


def _header_byte(path):
    data = bytearray(path.read_bytes())
    data[20] = ord("#")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _empty, _other_key, _header_byte])
def test_a_damaged_entry_is_a_miss_with_a_warning_and_is_rewritten(tmp_path, damage):
    store = tmp_path / "c"
    writer = EmbeddingCache(store_path=store)
    writer.put(key(1), fake_state(1))
    writer.put(key(2), fake_state(2))
    damage(entry_file(store, key(1)))

    cache = EmbeddingCache(store_path=store)
    with pytest.warns(CacheWarning, match=r"is damaged"):
        assert cache.get(key(1)) is None  # never zeros, never another slice's embedding
    assert key(1) not in cache
    cache.put(key(1), fake_state(1))  # what a miss leads to: computed again, rewritten
    assert_states_close(EmbeddingCache(store_path=store).get(key(1)), fake_state(1))


def test_a_damaged_entry_warns_once(tmp_path):
    store = tmp_path / "c"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    _truncate(entry_file(store, key(1)))
    cache = EmbeddingCache(store_path=store, max_items=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert cache.get(key(1)) is None and key(1) not in cache
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1


def test_a_deleted_entry_is_a_miss_not_zeros(tmp_path):
    store = tmp_path / "c"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    entry_file(store, key(1)).unlink()
    cache = EmbeddingCache(store_path=store)
    assert cache.get(key(1)) is None and key(1) not in cache and cache.keys() == []


def test_a_killed_writers_temporary_file_is_not_an_entry(tmp_path):
    store = tmp_path / "c"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    path = entry_file(store, key(1))
    (path.parent / f".{key(2)[1]}.safetensors.123.abc.tmp").write_bytes(path.read_bytes()[:50])
    cache = EmbeddingCache(store_path=store)
    assert cache.keys() == [key(1)] and key(2) not in cache and cache.get(key(2)) is None


def test_the_loser_of_a_write_race_keeps_the_complete_entry(tmp_path):
    store = tmp_path / "c"
    first, second = EmbeddingCache(store_path=store), EmbeddingCache(store_path=store)
    first.put(key(1), fake_state(1))
    before = entry_file(store, key(1)).stat().st_ino
    second.put(key(1), fake_state(1, scale=2.0))  # the same key computed elsewhere: the first one stays
    assert entry_file(store, key(1)).stat().st_ino == before
    assert_states_close(EmbeddingCache(store_path=store).get(key(1)), fake_state(1))
    assert [p.name for p in entry_file(store, key(1)).parent.iterdir() if p.name.startswith(".")] == []


def test_refuses_a_folder_that_is_not_a_cache(tmp_path):
    import zarr

    image = tmp_path / "image.zarr"
    zarr.create_array(str(image), shape=(2, 4, 4), dtype=np.uint8)
    before = sorted(p.relative_to(image) for p in image.rglob("*"))
    with pytest.raises(ValueError, match=r"image.zarr is not an embedding cache .*choose a new or empty"):
        EmbeddingCache(store_path=image)
    assert sorted(p.relative_to(image) for p in image.rglob("*")) == before  # nothing written
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        EmbeddingCache(store_path=tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    EmbeddingCache(store_path=empty).put(key(1), fake_state(1))
    assert (empty / MARKER).is_file()


def test_an_older_zarr_cache_is_reused_and_its_entries_are_misses(tmp_path):
    import zarr

    store = tmp_path / "old.zarr"
    root = zarr.open_group(str(store), mode="a", zarr_format=3)
    root.attrs.update({"format": CACHE_FORMAT, "version": 2})
    old = root.require_group("abc").create_array("0" * 32, shape=(4,), dtype=np.float16)
    old.attrs["complete"] = True
    cache = EmbeddingCache(store_path=store)
    assert cache.keys() == [] and cache.get((FP, "0" * 32)) is None
    cache.put(key(1), fake_state(1))
    assert_states_close(EmbeddingCache(store_path=store).get(key(1)), fake_state(1))


def test_a_read_only_store_serves_hits_and_warns_once(tmp_path, monkeypatch):
    store = tmp_path / "c"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    cache = EmbeddingCache(store_path=store)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_store.CacheStore, "_place", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(2, 5):
            cache.put(key(i), fake_state(i))  # no crash: kept in memory
    assert [str(w.message) for w in caught if issubclass(w.category, CacheWarning)] == [
        f"The embedding cache {store} cannot be written (Permission denied): embeddings computed now stay "
        "in memory only; entries already there are still used."
    ]
    assert not cache.writable and key(3) in cache and cache.get(key(3)) is not None
    assert_states_close(cache.get(key(1)), fake_state(1))
    assert EmbeddingCache(store_path=store).keys() == [key(1)]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes read-only folders")
def test_a_read_only_folder_on_disk(tmp_path):
    store = tmp_path / "c"
    EmbeddingCache(store_path=store).put(key(1), fake_state(1))
    for path in [store, *store.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        cache = EmbeddingCache(store_path=store)
        with pytest.warns(CacheWarning, match="cannot be written"):
            cache.put(key(2), fake_state(2))
        assert_states_close(cache.get(key(1)), fake_state(1))
    finally:
        for path in [store, *store.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_memory_only_cache_has_no_store(tmp_path):
    cache = EmbeddingCache()
    cache.put(key(1), fake_state(1))
    assert cache.keys() == [key(1)]
    cache.clear_memory()
    assert cache.keys() == [] and cache.get(key(1)) is None
