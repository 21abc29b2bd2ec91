"""Compute the image embeddings of a whole stack ahead of time, into an :class:`EmbeddingCache`.

Library: :func:`precompute_stack` (this command line and the cache benchmark; the widget embeds slices through
the session, with the same cache keys).
Command line (e.g. on a GPU machine, then copy the cache next to the stack)::

    python -m napari_ovsam.precompute stack.zarr --model demo --out cache.zarr [--start 0 --stop 10]
    python -m napari_ovsam.precompute stack.zarr --out cache.zarr --workers 4   # a local Dask cluster
    python -m napari_ovsam.precompute stack.zarr --out cache.zarr --scheduler tcp://HOST:PORT

With ``--workers`` or ``--scheduler`` (``pip install napari-ovsam[batch]``) every slice is one Dask task: a
worker builds its model once, reads its slice from the (shared) path, and writes the entries into the one
cache folder itself (entry writes are atomic, so many writers are safe); nothing but slice numbers and counts
travels between the client and the workers.

Large slices (those the predictor tiles: longer than the model input by the predictor's margin, e.g. a
mosaic or a slide given as a 2D zarr, OME-Zarr (level 0) or pyramidal TIFF (level 0)) are embedded tile by
tile, each tile an entry keyed by its content (``predictor.tile_key``), read lazily: no slice is loaded whole.

Rerunning resumes: slices (or tiles) whose cache entries verify (size, checksum) are skipped; a damaged or missing entry
is computed again and rewritten. ``--out`` must be a new or empty folder, or a cache made before. The cache
keys hold the model fingerprint and each slice's content hash with the contrast limits, so the plugin reuses
these embeddings only when it sees the same slices with the same ``--contrast-limits`` (default: none, the
predictor's percentile rule).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ovsam_model.annotate.cluster import DEFAULT_RETRIES, dask_client, run_on_cluster, run_tasks
from ovsam_model.build import build_ovsam
from ovsam_model.cli_parser import OneLineErrorParser
from ovsam_model.data.stacks import Stack
from ovsam_model.data.stacks import open_stack as open_lazy_stack
from ovsam_model.predictor import OVSAMPredictor

from .cache import EmbeddingCache, make_key, model_fingerprint
from .tiles import SliceView, iter_precompute_tiles, slice_view, tiles_slices_of


def precompute_stack(
    stack: Any,
    predictor: Any,
    cache: EmbeddingCache,
    *,
    start: int = 0,
    stop: int | None = None,
    contrast_limits: Sequence[float] | None = None,
    fingerprint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Embed slices ``start..stop-1`` of a stack and store each state in ``cache``, skipping cached ones.

    A slice counts as cached only when ``key in cache`` holds, which verifies the entry on disk: damaged entries
    (truncated, changed bytes) are computed again and rewritten.

    Args:
        stack: (Z, H, W) or (Z, H, W, C) array-like read one slice at a time (numpy, zarr, dask, a tifffile or
            ``ovsam_model.data.stacks.Stack``); ``stack[z]`` is one (H, W[, C]) image.
        predictor: an ``OVSAMPredictor`` (or anything with ``set_image(image, contrast_limits=...)`` and
            ``get_image_embedding()``).
        cache: where the states go (its disk store, if any, makes them last).
        start, stop: slice range (``stop=None``: to the end; negative values count from the end).
        contrast_limits: (low, high) for every slice, as in the viewer; None: the predictor's percentile rule.
        fingerprint: the model's cache-key name; default ``model_fingerprint(predictor.model)``.
        progress: called as ``progress(done, total)`` after each slice, skipped ones included.
        should_stop: polled before each slice; True ends the loop cleanly (everything stored so far stays).

    Returns:
        the number of slices embedded by this call (cached slices not counted); for slices the predictor
        tiles, the number of tiles embedded (``progress`` then counts tiles too).
    """
    if fingerprint is None:
        if not hasattr(predictor, "model"):
            raise ValueError("Pass fingerprint= for a predictor without a .model attribute.")
        fingerprint = model_fingerprint(predictor.model)
    indices = range(int(stack.shape[0]))[slice(start, stop)]
    if tiles_slices_of(predictor, tuple(int(s) for s in stack.shape[1:3])):  # type: ignore[arg-type]
        return _precompute_tiles(
            stack, indices, predictor, cache, contrast_limits, fingerprint, progress, should_stop
        )
    computed = 0
    for done, z in enumerate(indices, start=1):
        if should_stop is not None and should_stop():
            break
        image = np.asarray(stack[z])
        key = make_key(fingerprint, image, contrast_limits)
        if key not in cache:
            predictor.set_image(image, contrast_limits=contrast_limits)
            cache.put(key, predictor.get_image_embedding())
            computed += 1
        if progress is not None:
            progress(done, len(indices))
    return computed


def _precompute_tiles(
    stack: Any,
    indices: range,
    predictor: Any,
    cache: EmbeddingCache,
    contrast_limits: Sequence[float] | None,
    fingerprint: str,
    progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> int:
    """``precompute_stack`` of slices the predictor tiles: every tile of every slice, read lazily."""
    computed = 0
    views = [lazy_slice(stack, z) for z in indices]
    for done, total, new in iter_precompute_tiles(
        predictor, views, contrast_limits, cache, threading.Lock(), fingerprint
    ):
        computed += int(new)
        if progress is not None:
            progress(done, total)
        if should_stop is not None and should_stop():
            break
    return computed


def lazy_slice(stack: Any, z: int) -> Any:
    """Slice ``z`` of a stack without reading it (a ``Stack`` flat over its leading axes, or any array)."""
    if isinstance(stack, Stack):
        key = np.unravel_index(z, stack.leading_shape) if stack.leading_shape else ()
        return SliceView(stack.array, tuple(int(k) for k in key))
    return slice_view(stack, (z,))


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m napari_ovsam.precompute",
        description="Precompute OV-SAM image embeddings for every slice of a stack (every tile of large slices) "
        "into an embedding cache folder.",
    )
    parser.add_argument(
        "stack",
        help="image stack or one large image: .zarr directory (OME-Zarr: level 0), .tif/.tiff (pyramidal: level "
        "0) or .npy (slices: flat over the leading axes; large slices are embedded tile by tile)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="embedding cache folder (created, or resumed; a new, empty or cache folder)",
    )
    parser.add_argument("--model", default="demo", help="model name or config JSON (default: demo)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file for the model (optional)")
    parser.add_argument("--start", type=int, default=0, help="first slice (default 0)")
    parser.add_argument("--stop", type=int, default=None, help="slice after the last one (default: the end)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    parser.add_argument(
        "--contrast-limits",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="intensity range mapped to the model input, as in the viewer (default: per-slice percentiles)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler (tcp://HOST:PORT): one task per slice",
    )
    where.add_argument("--workers", type=int, default=None, help="start a local Dask cluster of N processes")
    return parser


def load_predictor(model: str, checkpoint: str | None, device: str) -> Any:
    """Build the model and its predictor (a separate function so tests can replace it)."""
    # tiling="auto", as in the widget: large slices are embedded tile by tile, with the same cache keys
    return OVSAMPredictor(build_ovsam(model, checkpoint=checkpoint, device=device), tiling="auto")


def open_stack(path: str) -> Any:
    """Open a stack lazily with ``ovsam_model.data.stacks.open_stack``; (Z, H, W[, C])."""
    return open_lazy_stack(path)


# ------------------------------------------------------------------------------------ Dask workers
# One predictor per worker process (built by its first task, kept for the next), with its cache fingerprint.
_WORKER_LOCK = threading.Lock()
_WORKER: dict[str, Any] = {"key": None, "predictor": None, "fingerprint": None}


def worker_predictor(model: str, checkpoint: str | None, device: str) -> tuple[Any, str]:
    """This process's predictor and its model fingerprint (built now unless built for the same model)."""
    key = (model, checkpoint, device)
    if _WORKER["key"] != key:
        _WORKER.update(key=None, predictor=None, fingerprint=None)
        predictor = load_predictor(model, checkpoint, device)
        _WORKER.update(key=key, predictor=predictor, fingerprint=model_fingerprint(predictor.model))
    return _WORKER["predictor"], _WORKER["fingerprint"]


def worker_fingerprint(model: str, checkpoint: str | None, device: str) -> str:
    """Build the worker's predictor (errors in the model's name or files show here) and name its model."""
    with _WORKER_LOCK:
        return worker_predictor(model, checkpoint, device)[1]


def embed_slice(
    z: int,
    *,
    path: str,
    cache_path: str,
    model: str,
    checkpoint: str | None,
    device: str,
    contrast_limits: Sequence[float] | None,
) -> int:
    """The Dask task of slice ``z``: read it from ``path``, embed it unless cached, write the cache entry (or
    its tiles' entries); returns how many embeddings it computed."""
    with _WORKER_LOCK:
        predictor, fingerprint = worker_predictor(model, checkpoint, device)
        cache = EmbeddingCache(max_items=1, store_path=cache_path)
        with open_lazy_stack(path) as stack:
            return precompute_stack(
                stack, predictor, cache, start=z, stop=z + 1, contrast_limits=contrast_limits,
                fingerprint=fingerprint,
            )  # fmt: skip


def _main_on_cluster(args: argparse.Namespace, parser: argparse.ArgumentParser, indices: range) -> int:
    """``main`` with --scheduler or --workers: one task per slice, the counts streamed back."""
    failed: list[tuple[int, BaseException]] = []
    computed = 0
    options = {"model": args.model, "checkpoint": args.checkpoint, "device": args.device}
    with ExitStack() as stack:
        try:
            client = stack.enter_context(dask_client(args.scheduler, args.workers))
            run_on_cluster(worker_fingerprint, client=client, **options)
            EmbeddingCache(max_items=1, store_path=args.out)  # refuses a folder that is not a cache
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        bar = stack.enter_context(tqdm(total=len(indices), unit="slice", desc="embeddings"))

        def finished(z: int, count: int) -> None:
            nonlocal computed
            computed += count
            bar.update(1)

        try:
            run_tasks(
                embed_slice, indices, client=client, on_result=finished,
                on_failure=lambda z, error: failed.append((z, error)), retries=DEFAULT_RETRIES,
                path=str(Path(args.stack).absolute()), cache_path=str(Path(args.out).absolute()),
                contrast_limits=args.contrast_limits, **options,
            )  # fmt: skip
        except KeyboardInterrupt:
            print("Interrupted; run the same command again to resume.", file=sys.stderr)
            return 130
    for z, problem in failed:
        print(f"slice {z} failed: {type(problem).__name__}: {problem}", file=sys.stderr)
    done = len(indices) - len(failed)
    print(f"{done} of {len(indices)} slice(s) done, {computed} embedding(s) computed; cache: {args.out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 some slices failed on a cluster, 130
    interrupted); bad arguments, a missing stack, a folder that is not a cache, a model that cannot be built
    or a scheduler that does not answer exit with one line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}.")
    try:
        stack = open_stack(args.stack)
    except (ValueError, OSError) as error:  # a missing or unreadable stack: one line, no traceback
        parser.error(str(error))
    if args.scheduler is not None or args.workers is not None:
        indices = range(int(stack.shape[0]))[slice(args.start, args.stop)]
        if hasattr(stack, "close"):
            stack.close()  # the workers read their own slices
        return _main_on_cluster(args, parser, indices)
    try:
        cache = EmbeddingCache(max_items=1, store_path=args.out)  # refuses a folder that is not a cache
        predictor = load_predictor(args.model, args.checkpoint, args.device)
    except (ValueError, FileNotFoundError) as error:
        if hasattr(stack, "close"):
            stack.close()
        parser.error(str(error))
    total = len(range(int(stack.shape[0]))[slice(args.start, args.stop)])
    tiled = tiles_slices_of(predictor, tuple(int(s) for s in stack.shape[1:3]))  # type: ignore[arg-type]
    unit = "tile" if tiled else "slice"

    def report(done: int, count: int) -> None:
        nonlocal total
        total = bar.total = count
        bar.update(done - bar.n)

    try:
        with tqdm(total=None if tiled else total, unit=unit, desc="embeddings") as bar:
            computed = precompute_stack(
                stack,
                predictor,
                cache,
                start=args.start,
                stop=args.stop,
                contrast_limits=args.contrast_limits,
                progress=report,
            )
    except KeyboardInterrupt:
        print("Interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if hasattr(stack, "close"):
            stack.close()
    print(f"{computed} {unit}(s) embedded, {total - computed} already cached; cache: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
