"""Precomputing a stack's embeddings: resume, stop, progress, the CLI, and the real tiny model."""

import numpy as np
import pytest

from napari_ovsam import precompute
from napari_ovsam.cache import CacheWarning, EmbeddingCache, make_key
from napari_ovsam.precompute import main, precompute_stack


class FakePredictor:
    """set_image / get_image_embedding with a state that records which image it came from."""

    def __init__(self):
        self.calls = []

    def set_image(self, image, contrast_limits=None):
        self.calls.append((float(np.asarray(image).mean()), contrast_limits))
        self.image = np.asarray(image)

    def get_image_embedding(self):
        value = float(self.image.mean())
        return {
            "embedding": np.full((8, 4, 4), value, np.float32),
            "fpn_0": np.zeros((4, 16, 16), np.float32),
            "original_size": self.image.shape[:2],
            "input_size": (64, 64),
        }


@pytest.fixture
def stack():
    return np.stack([np.full((12, 10), z, np.uint16) for z in range(5)])


def test_embeds_every_slice_and_resumes(stack):
    cache, predictor = EmbeddingCache(max_items=10), FakePredictor()
    assert precompute_stack(stack, predictor, cache, fingerprint="fake") == 5
    assert [mean for mean, _ in predictor.calls] == [0, 1, 2, 3, 4]
    state = cache.get(make_key("fake", stack[3]))
    assert state["embedding"][0, 0, 0] == 3 and state["original_size"] == (12, 10)
    again = FakePredictor()
    assert precompute_stack(stack, again, cache, fingerprint="fake") == 0
    assert again.calls == []


def test_range_contrast_progress_and_stop(stack):
    cache, predictor = EmbeddingCache(), FakePredictor()
    seen = []
    done = precompute_stack(
        stack, predictor, cache, fingerprint="fake", start=1, stop=-1, contrast_limits=(0, 10),
        progress=lambda i, n: seen.append((i, n)),
    )  # fmt: skip
    assert done == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    assert predictor.calls[0] == (1.0, (0, 10))
    assert make_key("fake", stack[1], (0, 10)) in cache
    assert make_key("fake", stack[1]) not in cache  # other contrast, other key

    stopper = FakePredictor()
    stop_after_two = lambda: len(stopper.calls) >= 2  # noqa: E731
    assert (
        precompute_stack(stack, stopper, EmbeddingCache(), fingerprint="f", should_stop=stop_after_two) == 2
    )


def test_fingerprint_defaults_to_the_predictor_model(stack):
    with pytest.raises(ValueError, match="fingerprint"):
        precompute_stack(stack, FakePredictor(), EmbeddingCache())


def test_cli_writes_a_resumable_cache(tmp_path, stack, monkeypatch, capsys):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    built = []

    def fake_loader(model, checkpoint, device):
        built.append((model, checkpoint, device))
        predictor = FakePredictor()
        predictor.model = _FakeModel()
        return predictor

    monkeypatch.setattr(precompute, "load_predictor", fake_loader)
    out = tmp_path / "cache.zarr"
    assert main([str(path), "--out", str(out), "--stop", "3", "--device", "cpu"]) == 0
    assert built == [("demo", None, "cpu")]
    assert "3 slice(s) embedded" in capsys.readouterr().out
    assert len(EmbeddingCache(store_path=out).keys()) == 3
    assert main([str(path), "--out", str(out), "--contrast-limits", "0", "4"]) == 0
    assert "5 slice(s) embedded, 0 already cached" in capsys.readouterr().out
    assert main([str(path), "--out", str(out)]) == 0  # resumes the first run
    assert "2 slice(s) embedded, 3 already cached" in capsys.readouterr().out
    assert main([str(path), "--out", str(out)]) == 0
    assert "0 slice(s) embedded, 5 already cached" in capsys.readouterr().out


def test_precompute_rewrites_damaged_entries_and_skips_only_verified_ones(tmp_path, stack):
    store = tmp_path / "c"
    assert precompute_stack(stack, FakePredictor(), EmbeddingCache(store_path=store), fingerprint="f") == 5
    entries = sorted(store.glob("*/*.safetensors"))
    assert len(entries) == 5
    data = entries[0].read_bytes()
    entries[0].write_bytes(data[: len(data) // 2])  # truncated (a full disk, a killed copy)
    entries[1].unlink()
    again = FakePredictor()
    with pytest.warns(CacheWarning, match="is damaged"):
        assert precompute_stack(stack, again, EmbeddingCache(store_path=store), fingerprint="f") == 2
    assert precompute_stack(stack, FakePredictor(), EmbeddingCache(store_path=store), fingerprint="f") == 0
    fresh = EmbeddingCache(store_path=store)
    for z in range(5):
        assert fresh.get(make_key("f", stack[z]))["embedding"][0, 0, 0] == z


def test_cli_refuses_a_folder_that_is_not_a_cache(tmp_path, stack, capsys):
    import tifffile

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    prefix = "python -m napari_ovsam.precompute: error: "
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "missing.tif"), "--out", str(tmp_path / "new")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(prefix) and not (tmp_path / "new").exists()
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "stack.tif"), "--out", str(mine)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(prefix)
    assert "is not an embedding cache" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "stack.tif"), "--out", str(tmp_path / "new"), "--model", "nope"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Unknown model 'nope'" in err and len(err.splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


class _FakeModel:
    config = "fake-config"

    def state_dict(self):
        return {"w": np.ones(3, np.float32)}


@pytest.mark.slow
def test_with_the_real_tiny_model(tmp_path):
    build = pytest.importorskip("ovsam_model.build")
    predictor_module = pytest.importorskip("ovsam_model.predictor")
    predictor = predictor_module.OVSAMPredictor(build.build_ovsam("tiny", device="cpu"))
    stack = np.random.default_rng(0).integers(0, 4000, size=(2, 40, 50)).astype(np.uint16)
    cache = EmbeddingCache(store_path=tmp_path / "c.zarr")
    assert precompute_stack(stack, predictor, cache) == 2

    from napari_ovsam.cache import model_fingerprint

    key = make_key(model_fingerprint(predictor.model), stack[1])
    state = EmbeddingCache(store_path=tmp_path / "c.zarr").get(key)  # reopened: float16 -> float32
    predictor.set_image(stack[1])
    fresh = predictor.get_image_embedding()
    assert set(state) == set(fresh) and state["original_size"] == (40, 50)
    predictor.set_image_embedding(state)
    predictor.set_vocabulary(["nucleus", "rod"])
    result = predictor.predict(points=np.array([[25.0, 20.0]]), point_labels=np.array([1]))
    assert result.masks.shape[-2:] == (40, 50)
    scale = np.abs(fresh["embedding"]).max()
    np.testing.assert_allclose(state["embedding"], fresh["embedding"], atol=2e-3 * scale)
