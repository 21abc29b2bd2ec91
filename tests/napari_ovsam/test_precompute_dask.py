"""``python -m napari_ovsam.precompute`` on a Dask cluster: 2 worker processes fill one embedding cache, the
entries are those a run in one process computes (a rerun finds every slice cached), and a scheduler that
does not answer is one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_ovsam.cache import EmbeddingCache, make_key, model_fingerprint
from napari_ovsam.precompute import load_predictor, main
from ovsam_model.annotate import cluster


@pytest.mark.distributed
def test_two_workers_fill_one_cache(tmp_path, capsys):
    stack = np.random.default_rng(0).integers(0, 4000, size=(4, 48, 56)).astype(np.uint16)
    path, out = tmp_path / "stack.tif", tmp_path / "cache"
    tifffile.imwrite(path, stack, photometric="minisblack")
    assert main([str(path), "--out", str(out), "--device", "cpu", "--workers", "2"]) == 0
    assert "4 of 4 slice(s) done, 4 embedding(s) computed" in capsys.readouterr().out
    assert main([str(path), "--out", str(out), "--device", "cpu"]) == 0  # in this process: all cached
    assert "0 slice(s) embedded, 4 already cached" in capsys.readouterr().out
    predictor = load_predictor("demo", None, "cpu")
    cache = EmbeddingCache(store_path=out)
    for z in (0, 3):
        state = cache.get(make_key(model_fingerprint(predictor.model), stack[z]))
        predictor.set_image(stack[z])
        fresh = predictor.get_image_embedding()["embedding"]
        np.testing.assert_allclose(state["embedding"], fresh, atol=2e-3 * np.abs(fresh).max())


def test_a_scheduler_that_does_not_answer(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((2, 20, 20), np.uint16), photometric="minisblack")
    with pytest.raises(SystemExit) as info:
        main([str(path), "--out", str(tmp_path / "cache"), "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "No Dask scheduler answered at tcp://127.0.0.1:9 within 1 s" in err
    for argv, message in (
        (["--workers", "0"], "--workers must be 1 or more"),
        (["--workers", "2", "--scheduler", "tcp://h:1"], "not allowed with argument"),
    ):
        with pytest.raises(SystemExit) as info:
            main([str(path), "--out", str(tmp_path / "cache"), *argv])
        assert info.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "cache").exists()
