"""Reopening a stack whose embeddings are in an on-disk zarr cache: the first prompt on a slice costs no
re-encoding. Target: first prompt <= 2x the steady per-prompt latency.

Setup: a small uint16 stack (default 6 slices of 256x256) saved as zarr, every slice embedded into an
``EmbeddingCache`` store on disk with ``precompute.precompute_stack`` (what the widget's Precompute button and
``python -m napari_ovsam.precompute`` run). Then each round simulates reopening napari: the model is rebuilt
(same weights, so the same fingerprint and cache keys; checked), a NEW ``EmbeddingCache`` is opened on the
same store and a NEW ``AnnotationSession`` is given the lazy zarr stack, and one box is prompted on a slice
that session never visited. Three quantities, measured in alternation (median over the rounds):

- first prompt: ``session.ensure_embedding`` (read the slice, hash it, find its key on disk: what the widget's
  embedding worker does) + ``session.predict`` (cache get from disk + ``set_image_embedding`` + decode);
  printed with its parts;
- steady prompt: the same ``session.predict`` again on that slice (embedding already set: the decode only);
- encoding from scratch: ``set_image`` + ``get_image_embedding`` of the same slice (what a cache miss costs
  before the first prompt can run).

The OS page cache is warm (the store was just written): a cold disk adds its read time to the first prompt.

    python benchmarks/bench_cache_reopen.py [--model tiny] [--slices 6] [--size 256] [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 2.0


def write_stack(path: Path, slices: int, size: int) -> Any:
    """A (slices, size, size) uint16 zarr stack of blobs on noise, written slice by slice; opened read-only."""
    import zarr

    rng = np.random.default_rng(0)
    array = zarr.create_array(
        store=str(path), shape=(slices, size, size), dtype=np.uint16, chunks=(1, size, size)
    )
    yy, xx = np.mgrid[:size, :size]
    for z in range(slices):
        centres = rng.uniform(0, size, (8, 2))
        blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 20) ** 2)) for cy, cx in centres)
        array[z] = (3000 * blobs + rng.normal(400, 40, (size, size))).clip(0, 65535).astype(np.uint16)
    return zarr.open_array(str(path), mode="r")


def load_predictor(model: str, random_weights: bool = False) -> Any:
    """The model as a fresh napari session would load it (seeded: random-weight configs rebuild identically),
    with a 4-class vocabulary of random text embeddings (naming cost does not depend on their values).
    ``random_weights``: any config with random weights everywhere (no weight files needed)."""
    import torch

    from common import random_ovsam
    from ovsam_model.build import build_ovsam
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.vocabulary import DEMO_CLASSES

    torch.manual_seed(0)
    model_ = random_ovsam(model) if random_weights else build_ovsam(model, device="cpu")
    predictor = OVSAMPredictor(model_, tiling="off")  # whole-slice embeddings, as the plugin stores them
    text = torch.nn.functional.normalize(
        torch.randn(len(DEMO_CLASSES), 1, predictor.model.config.embed_dim), dim=-1
    )
    predictor.set_vocabulary(list(DEMO_CLASSES), text_embeddings=text)
    return predictor


def precompute(stack: Any, model: str, store: Path, random_weights: bool) -> tuple[str, float]:
    """Embed every slice into the store (a session before the reopening); returns (fingerprint, seconds)."""
    from napari_ovsam.cache import EmbeddingCache, model_fingerprint
    from napari_ovsam.precompute import precompute_stack

    predictor = load_predictor(model, random_weights)
    start = time.perf_counter()
    computed = precompute_stack(stack, predictor, EmbeddingCache(max_items=1, store_path=store))
    assert computed == stack.shape[0], computed
    return model_fingerprint(predictor.model), time.perf_counter() - start


def one_round(stack: Any, predictor: Any, store: Path, z: int, steady_repeats: int) -> dict[str, float]:
    """A reopened session: first prompt on slice z (with its parts), steady prompts, encoding from scratch."""
    from napari_ovsam.cache import EmbeddingCache
    from napari_ovsam.prompts import ObjectPrompt
    from napari_ovsam.session import AnnotationSession

    session = AnnotationSession(predictor, cache=EmbeddingCache(max_items=16, store_path=store))
    session.set_image(stack)
    size = stack.shape[-1]
    box = np.asarray([0.2 * size, 0.25 * size, 0.6 * size, 0.7 * size], np.float32)
    objects = [ObjectPrompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), box)]
    start = time.perf_counter()
    info = session.ensure_embedding((z,))
    found = time.perf_counter()
    session.restore_embedding((z,))
    restored = time.perf_counter()
    results = session.predict(objects, (z,))
    first_end = time.perf_counter()
    if info.computed or session.encoder_runs:
        raise RuntimeError(f"Slice {z} was re-encoded: the cache key did not match the precomputed one.")
    assert len(results) == 1
    steady = []
    for _ in range(steady_repeats):
        t = time.perf_counter()
        session.predict(objects, (z,))
        steady.append(time.perf_counter() - t)
    encoder = session.job_predictor()
    image = session.read_slice((z,))
    t = time.perf_counter()
    encoder.set_image(image)
    encoder.get_image_embedding()
    encode = time.perf_counter() - t
    return {
        "first": first_end - start, "lookup": found - start, "restore": restored - found,
        "decode": first_end - restored, "steady": statistics.median(steady), "encode": encode,
    }  # fmt: skip


def report(
    model: str, args: argparse.Namespace, rows: list[dict[str, float]], precompute_s: float, store_mb: float
) -> float:
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    first_ratio = med["first"] / med["steady"]
    print(
        f"reopening a {args.slices}x{args.size}x{args.size} uint16 zarr stack with a populated embedding cache, "
        f"model '{model}', one box; median [quartiles] of {len(rows)} reopened sessions"
    )
    print(
        f"  (precompute of {args.slices} slices: {precompute_s:.2f} s; cache store on disk: {store_mb:.1f} MB)"
    )
    lines = (
        ("first", "first prompt on an unvisited slice (no encoding)"),
        ("lookup", "  read slice + content hash + key found on disk"),
        ("restore", "  cache get from disk + set_image_embedding"),
        ("decode", "  decode + name (session.predict)"),
        ("steady", "steady per-prompt latency (embedding already set)"),
        ("encode", "encoding the slice from scratch (cache miss)"),
    )
    for key, text in lines:
        q1, _, q3 = statistics.quantiles([1000 * row[key] for row in rows], n=4)
        print(f"  {text:<50}: {1000 * med[key]:8.2f} ms  [{q1:7.2f}, {q3:7.2f}]")
    verdict = "met" if first_ratio <= TARGET else "NOT met"
    print(
        f"  ratio first prompt / steady prompt                : {first_ratio:8.2f}  (target <= {TARGET}: {verdict})"
    )
    print(f"  ratio first prompt / encoding from scratch        : {med['first'] / med['encode']:8.2f}")
    print(
        f"  ratio first prompt without the lookup / steady    : {(med['first'] - med['lookup']) / med['steady']:8.2f}"
    )
    return first_ratio


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="tiny", help="model name (tiny: random weights, 128 px; demo if installed)"
    )
    p.add_argument("--random-weights", action="store_true", help="any config with random weights (no files)")
    p.add_argument("--slices", type=int, default=6, help="slices in the stack")
    p.add_argument("--size", type=int, default=256, help="slice side in pixels")
    p.add_argument(
        "--rounds", type=int, default=30, help="reopened sessions (each prompts an unvisited slice)"
    )
    p.add_argument("--steady", type=int, default=5, help="steady prompts per round (their median is used)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from common import machine
    from napari_ovsam.cache import model_fingerprint

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-reopen-"))
    try:
        stack = write_stack(folder / "stack.zarr", args.slices, args.size)
        store = folder / "embeddings.zarr"
        fingerprint, precompute_s = precompute(stack, args.model, store, args.random_weights)
        store_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
        predictor = load_predictor(
            args.model, args.random_weights
        )  # napari reopened: the model is loaded again
        if model_fingerprint(predictor.model) != fingerprint:
            raise RuntimeError("The rebuilt model has another fingerprint: its cache keys would not match.")
        rows = [
            one_round(stack, predictor, store, r % args.slices, args.steady) for r in range(args.rounds + 1)
        ]
        rows = rows[1:]  # round 0 warms up
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"  load average before timing: {os.getloadavg()[0]:.2f} (2 cores)")
    label = args.model + (" (random weights)" if args.random_weights else "")
    ratio = report(label, args, rows, precompute_s, store_mb)
    return {"ratio": ratio}


if __name__ == "__main__":
    main()
