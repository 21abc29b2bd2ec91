"""Two processes writing the same keys into one cache folder at the same time (two napari windows, or
precompute while annotating): afterwards every entry verifies and holds what was written.

The suite runs the race 3 times; ``OVSAM_CACHE_RACE_REPEATS=20`` runs it 20 times in a row (done before each
change to the cache's writing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from napari_ovsam.cache import CacheWarning, EmbeddingCache

REPEATS = int(os.environ.get("OVSAM_CACHE_RACE_REPEATS", "3"))
KEYS = 40
FP = "race-model"

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from napari_ovsam.cache import EmbeddingCache

    store, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    while not go.exists():  # both writers start together
        time.sleep(0.001)
    cache = EmbeddingCache(max_items=1, store_path=store)
    for i in range({keys}):
        rng = np.random.default_rng(i)
        state = {{
            "embedding": rng.standard_normal((32, 16, 16)).astype(np.float32),
            "fpn_0": rng.standard_normal((16, 64, 64)).astype(np.float32),
            "original_size": (40, 50),
        }}
        key = ("{fp}", f"{{i:032x}}")
        cache.put(key, state)
        cache.clear_memory()
        back = cache.get(key)  # read while the other process writes
        if back is None or not np.allclose(back["embedding"], state["embedding"], atol=2e-3):
            sys.exit(f"{{name}}: entry {{i}} did not read back")
    """
).format(keys=KEYS, fp=FP)


def expected_state(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "embedding": rng.standard_normal((32, 16, 16)).astype(np.float32),
        "fpn_0": rng.standard_normal((16, 64, 64)).astype(np.float32),
    }


@pytest.mark.distributed
@pytest.mark.parametrize("attempt", range(REPEATS))
def test_two_writers_same_keys_same_folder(tmp_path, attempt):
    store, go = tmp_path / "cache", tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(go), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    time.sleep(0.5)  # both interpreters up and polling
    go.touch()
    results = [w.communicate(timeout=120) for w in writers]
    for writer, (_out, err) in zip(writers, results):
        assert writer.returncode == 0, err
        assert "CacheWarning" not in err, err  # no writer ever read a damaged entry

    cache = EmbeddingCache(store_path=store)
    keys = [(FP, f"{i:032x}") for i in range(KEYS)]
    assert sorted(cache.keys()) == keys
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        for i, key in enumerate(keys):
            assert key in cache
            state = cache.get(key)
            for name, value in expected_state(i).items():
                np.testing.assert_allclose(state[name], value, atol=2e-3, rtol=1e-3)
            assert state["original_size"] == (40, 50)
    leftovers = [p for p in store.rglob(".*")]
    assert leftovers == []  # every temporary file was renamed or discarded
