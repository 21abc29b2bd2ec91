"""Large images: prompt latency and memory on a 16384 x 16384 uint16 zarr image, measured side by side.

Writes the image (chunked 1024 x 1024, Gaussian blobs on noise) to a temporary folder, then per model:

- per-prompt latency on a small image (one model input, encoded whole): ``small``;
- one tile encoding (``encode_image`` on a model-input tile): ``encode``;
- the first prompt at an unvisited place of the zarr image (reads the tile, encodes it, decodes): ``first``.
  Target: first <= encode + 2 x small;
- a prompt on an already encoded tile: ``again``. Target: again <= 1.3 x small;

measured in alternation round by round (medians), so that load changes hit all of them alike. Then the peak
memory of annotating 50 objects spread over the image (one box prompt each, painted into a zarr labels image
of the full size), sampled every 5 ms above the footprint after the model is built. Target: < 1.5 GiB.

Models: ``demo`` (its own weights) and any config with random weights (``--models demo ovsam_rn50x16``; the
cost does not depend on the weights).

    python benchmarks/bench_tiling_latency.py [--models demo ovsam_rn50x16] [--side 16384] [--rounds 5]
        [--image /tmp/mosaic.zarr]   # written there the first time, reused after
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, random_ovsam
from ovsam_model.build import build_ovsam
from ovsam_model.predictor import OVSAMPredictor

GIB = 1024**3
CHUNK = 1024


def write_image(path: Path, side: int) -> object:
    """A (side, side) uint16 zarr array of blobs on noise, written band by band (never whole in memory)."""
    import zarr  # the storage the issue asks about; an optional dependency of the package

    image = zarr.open_array(path, mode="w", shape=(side, side), chunks=(CHUNK, CHUNK), dtype="u2")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:CHUNK, :side]
    for top in range(0, side, CHUNK):
        band = rng.normal(300, 30, (CHUNK, side))
        for cx in rng.uniform(0, side, side // 64):
            cy = rng.uniform(0, CHUNK)
            near = slice(max(0, int(cx) - 40), int(cx) + 40)
            band[:, near] += 2000 * np.exp(-((yy[:, near] - cy) ** 2 + (xx[:, near] - cx) ** 2) / (2 * 12**2))
        image[top : top + CHUNK] = band.clip(0, 65535).astype(np.uint16)
    return image


def rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Samples the resident memory every 5 ms in a thread; ``peak`` is the highest seen."""

    def __enter__(self) -> PeakMemory:
        self.peak, self._stop = rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def build(name: str):
    return build_ovsam("demo", device="cpu") if name == "demo" else random_ovsam(name)


def predictor(model, **kwargs) -> OVSAMPredictor:
    p = OVSAMPredictor(model, **kwargs)
    text = torch.nn.functional.normalize(torch.randn(20, 2, model.config.embed_dim), dim=-1)
    p.set_vocabulary([f"class {i}" for i in range(20)], text_embeddings=text)
    return p


def latency(model, image, rounds: int, rng: np.random.Generator) -> dict[str, float]:
    size = model.config.image_size
    small = predictor(model, tiling="off")
    small.set_image(np.asarray(image[:size, :size]))
    tiled = predictor(model)
    tiled.set_image(image)
    tensor = torch.rand(1, 3, size, size) * 255
    box = np.array([size * 0.4, size * 0.4, size * 0.55, size * 0.6])
    times: dict[str, list[float]] = {"small": [], "encode": [], "first": [], "again": []}
    side = min(image.shape)
    for round_ in range(rounds + 1):  # round 0 warms up
        x, y = rng.uniform(0, side - size, 2)
        start = time.perf_counter()
        small.predict(boxes=box)
        t_small = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            model.encode_image(tensor)
            t_encode = time.perf_counter() - start
        start = time.perf_counter()
        tiled.predict(boxes=box + np.array([x, y, x, y]))
        t_first = time.perf_counter() - start
        start = time.perf_counter()
        tiled.predict(boxes=box + np.array([x + 5, y + 5, x + 5, y + 5]))
        t_again = time.perf_counter() - start
        if round_:
            for key, value in zip(times, (t_small, t_encode, t_first, t_again)):
                times[key].append(value)
    return {key: statistics.median(values) for key, values in times.items()}


def annotate(model, image, labels, objects: int, rng: np.random.Generator) -> tuple[int, int]:
    """Annotate ``objects`` boxes spread over the image, painting each into ``labels``; (tiles encoded,
    labelled pixels)."""
    tiled = predictor(model)
    tiled.set_image(image)
    side, painted = image.shape[0], 0
    for i in range(objects):
        x, y = rng.uniform(0, side - 80, 2)
        w, h = rng.uniform(15, 70, 2)
        result = tiled.predict(boxes=np.array([x, y, x + w, y + h]))
        result.masks.paint(labels, [i + 1])
        painted += int(result.masks.crops[0].sum())
    assert tiled.tiles is not None
    return tiled.tiles.encodings, painted


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="+", default=["demo"], help="configs (random weights but demo)")
    p.add_argument("--side", type=int, default=16384, help="image side in pixels")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per model")
    p.add_argument("--objects", type=int, default=50, help="objects annotated for the memory peak")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--image", type=Path, default=None, help="zarr image to reuse (written there if missing)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import zarr

    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        if args.image is not None and args.image.exists():
            image = zarr.open_array(args.image, mode="r")
            print(
                f"{image.shape[1]}x{image.shape[0]} {image.dtype} zarr image {args.image} ({image.chunks} chunks)"
            )
        else:
            image = write_image(args.image or Path(folder) / "image.zarr", args.side)
            print(
                f"{args.side}x{args.side} uint16 zarr image ({CHUNK} px chunks) "
                f"written in {time.perf_counter() - start:.0f} s"
            )
        for name in args.models:
            model = build(name)
            t = latency(model, image, args.rounds, np.random.default_rng(1))
            print(f"\n{name} ({model.config.image_size} px input), medians of {args.rounds} rounds:")
            print(f"  small image, per prompt      {1000 * t['small']:8.1f} ms")
            print(f"  one tile encoding            {1000 * t['encode']:8.1f} ms")
            bound = t["encode"] + 2 * t["small"]
            print(
                f"  first prompt, unvisited tile {1000 * t['first']:8.1f} ms = "
                f"{t['first'] / bound:.2f} x (encode + 2 x small), target <= 1"
            )
            print(
                f"  prompt on an encoded tile    {1000 * t['again']:8.1f} ms = "
                f"{t['again'] / t['small']:.2f} x small, target <= 1.3"
            )
            labels = zarr.open_array(
                Path(folder) / f"labels-{name}.zarr",
                mode="w",
                shape=image.shape,
                chunks=(CHUNK, CHUNK),
                dtype="u4",
            )
            base = rss()
            with PeakMemory() as memory:
                tiles, painted = annotate(model, image, labels, args.objects, np.random.default_rng(2))
            print(
                f"  annotating {args.objects} objects spread over the image ({tiles} tiles encoded, {painted} "
                f"pixels painted into a zarr labels image): peak {(memory.peak - base) / GIB:.2f} GiB above the "
                f"model's footprint ({base / GIB:.2f} GiB), target < 1.5 GiB"
            )
            del model


if __name__ == "__main__":
    main()
