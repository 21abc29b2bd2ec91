"""Peak memory while annotating a 2 GiB uint16 zarr stack: it stays below 1.5 GiB above the model's own
footprint, because the stack is read one slice at a time and the labels are written one bounding box at a time.

The stack (default 64 slices x 4096 x 4096 uint16 = 2 GiB, chunks (1, 1024, 1024)) is written chunk by chunk
with zarr under a temporary folder (creating it never holds more than one chunk; the folder is deleted at the
end; free disk space is checked first). A child process then reads its own peak resident memory
(``resource.getrusage`` ``ru_maxrss``) after each step of what annotating does, without a GUI, on the same
code path as the widget. Where Linux allows it, the kernel's peak is reset after each step (``clear_refs``),
so every step's own peak is known (which step allocates what); the overall peak is the largest of them:

1. imports, then building the model and its predictor: the model's footprint (the reference);
2. an ``AnnotationSession`` (default 16-slice in-memory embedding cache) given the lazy zarr array, and a
   zarr labels array of the stack's shape made by ``_layers.new_labels_array`` (what the widget creates for
   a lazy image: one (1, 4096, 4096) uint32 chunk per slice, in a folder next to the stack);
3. for each visited slice: ``session.ensure_embedding`` (reads and encodes the slice), ``session.segment``
   with a few box prompts (masks at full 4096 x 4096 resolution), the preview array built as
   ``_layers.show_preview`` builds it (numpy only: ``ObjectResults.label_image`` into a (1, H, W) uint32
   array), and ``session.commit`` into the zarr labels (``labels.paint_masks``);
4. one ``session.undo``.

Reported: each step's peak and the resident memory after it, the overall peak minus the model's footprint
(the peak while building it), and its ratio to 1.5 GiB; also the share of each slice the commits painted
and the bytes the undo history keeps. The GUI's own copies (napari's data and textures of the preview and
labels layers) are not included. The tiny model has random weights: its masks can be far larger than real
objects, and the commit and undo-history costs grow with the painted area.

    python benchmarks/bench_stack_memory.py [--slices 64] [--size 4096] [--visits 4] [--boxes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

GIB = 1024**3
MIB = 1024**2
TARGET_GIB = 1.5


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def current_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Meter:
    """Peak and resident memory per step. After each step the kernel's peak (what ru_maxrss reports) is
    reset through ``/proc/self/clear_refs`` where allowed, so each step's own peak is known; the overall peak
    is the largest step peak, i.e. what ru_maxrss would say without the resets."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.resets = True
        self.reset()

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.resets = False  # step peaks are then running peaks

    def step(self, name: str) -> None:
        self.steps.append({"name": name, "peak": peak_bytes(), "resident": current_bytes()})
        self.reset()

    def overall(self) -> int:
        return max(s["peak"] for s in self.steps)


def write_stack(path: Path, slices: int, size: int, chunk: int) -> Any:
    """A (slices, size, size) uint16 zarr stack written one (1, chunk, chunk) chunk at a time: blobs on noise
    from one precomputed tile, shifted per chunk so that every slice has its own content (and cache key)."""
    import zarr

    array = zarr.create_array(
        store=str(path), shape=(slices, size, size), dtype=np.uint16, chunks=(1, chunk, chunk), fill_value=0
    )
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:chunk, :chunk]
    centres = rng.uniform(0, chunk, (6, 2))
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (chunk / 16) ** 2)) for cy, cx in centres)
    tile = (3000 * blobs + rng.normal(400, 40, (chunk, chunk))).clip(0, 60000).astype(np.uint16)
    for z in range(slices):
        for i, y in enumerate(range(0, size, chunk)):
            for j, x in enumerate(range(0, size, chunk)):
                shift = (7 * z + 3 * i + j) % chunk
                array[z, y : y + chunk, x : x + chunk] = np.roll(tile, shift, axis=1) + np.uint16(z + i + j)
    return array


def child(args: argparse.Namespace) -> None:
    """Annotate the stack in this process and print the memory of each step as one JSON line."""
    meter = Meter()
    import torch
    import zarr

    from napari_ovsam import _layers
    from napari_ovsam.session import AnnotationSession
    from ovsam_model.build import build_ovsam
    from ovsam_model.predictor import OVSAMPredictor
    from ovsam_model.vocabulary import DEMO_CLASSES

    meter.step("imports")
    torch.manual_seed(0)
    predictor = OVSAMPredictor(build_ovsam(args.model, device="cpu"), tiling="off")  # as the plugin
    text = torch.nn.functional.normalize(
        torch.randn(len(DEMO_CLASSES), 1, predictor.model.config.embed_dim), dim=-1
    )
    predictor.set_vocabulary(list(DEMO_CLASSES), text_embeddings=text)
    meter.step("model")
    stack = zarr.open_array(args.stack, mode="r")
    session = AnnotationSession(predictor)
    session.set_image(stack)
    image = SimpleNamespace(data=stack, multiscale=False, rgb=False, name="stack")  # what the widget reads
    target = session.attach_labels(_layers.new_labels_array(image, Path(args.stack).parent))
    meter.step("session + zarr labels")
    visits = np.linspace(0, stack.shape[0] - 1, args.visits).round().astype(int)
    seconds = {"embed": 0.0, "segment": 0.0, "commit": 0.0}
    painted = []
    for z in visits:
        where = (int(z),)
        start = time.perf_counter()
        session.ensure_embedding(where)
        seconds["embed"] += time.perf_counter() - start
        meter.step(f"z={z}: ensure_embedding")
        start = time.perf_counter()
        results = session.segment(
            np.zeros((0, 3)), np.zeros(0, bool), slice_boxes(args.boxes, stack.shape[-1], where, z),
            ["rectangle"] * args.boxes, where,
        )  # fmt: skip
        seconds["segment"] += time.perf_counter() - start
        assert len(results) == args.boxes, results.messages
        meter.step(f"z={z}: segment {args.boxes} boxes")
        preview = np.zeros((1, *results.masks.shape[-2:]), np.uint32)  # as _layers.show_preview builds it
        preview[0] = results.label_image()
        del preview
        meter.step(f"z={z}: preview array")
        start = time.perf_counter()
        group = session.commit(results)
        seconds["commit"] += time.perf_counter() - start
        assert group is not None
        painted.append(sum(r.num_pixels for r in group.records) / results.masks[0].size)
        del results, group
        meter.step(f"z={z}: commit (paint_masks)")
    assert session.undo() is not None
    meter.step("undo")
    history = sum(
        r.changed.nbytes + r.old_values.nbytes + r.new_values.nbytes
        for g in target.history
        for r in g.records
    )
    print(
        json.dumps(
            {
                "steps": meter.steps, "resets": meter.resets, "overall": meter.overall(),
                "seconds": seconds, "visits": [int(z) for z in visits], "painted": painted,
                "history_bytes": history, "image_size": predictor.model.config.image_size,
            }
        )
    )  # fmt: skip


def slice_boxes(n: int, size: int, where: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """``n`` rectangles (Shapes layer vertices on slice ``where``), 5%..30% of the slice side."""
    from napari_ovsam.prompts import box_to_shape_vertices

    rng = np.random.default_rng(seed)
    sides = rng.uniform(0.05, 0.3, (n, 2)) * size
    corners = rng.uniform(0, size - sides)
    return [box_to_shape_vertices((*c, *(c + s)), where) for c, s in zip(corners, sides)]


def run_child(args: argparse.Namespace, stack: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--stack", str(stack), "--model", args.model]
    command += ["--visits", str(args.visits), "--boxes", str(args.boxes)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"The child process failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, m: dict[str, Any], stack_bytes: int, write_s: float) -> float:
    steps = m["steps"]
    model = next(s["peak"] for s in steps if s["name"] == "model")
    print(
        f"annotating a {args.slices}x{args.size}x{args.size} uint16 zarr stack ({stack_bytes / GIB:.2f} GiB, "
        f"chunks (1, {args.chunk}, {args.chunk}); written chunk-wise in {write_s:.1f} s), model '{args.model}' "
        f"({m['image_size']} px input), {args.visits} slices visited (z = {m['visits']}), {args.boxes} boxes each"
    )
    kind = (
        "its own peak (kernel peak reset after each step)"
        if m["resets"]
        else "running peak (no reset allowed)"
    )
    print(
        f"  memory of the child process per step: {kind}, and resident after it; MiB above the model's peak"
    )
    for s in steps:
        print(
            f"    {s['name']:<34} peak {s['peak'] / GIB:6.3f} GiB ({(s['peak'] - model) / MIB:+8.1f} MiB)"
            f"   resident after {s['resident'] / GIB:6.3f} GiB ({(s['resident'] - model) / MIB:+8.1f} MiB)"
        )
    t = m["seconds"]
    print(
        f"  time: embedding {t['embed']:.1f} s, segmenting {t['segment']:.1f} s, committing {t['commit']:.1f} s; "
        f"painted per commit: {', '.join(f'{100 * f:.0f}%' for f in m['painted'])} of the slice; "
        f"undo history holds {m['history_bytes'] / MIB:.0f} MiB"
    )
    above = (m["overall"] - model) / GIB
    verdict = "met" if above < TARGET_GIB else "NOT met"
    print(f"  model footprint (peak after building it): {model / GIB:.3f} GiB")
    print(f"  overall peak (max ru_maxrss over the steps): {m['overall'] / GIB:.3f} GiB")
    print(f"  peak above the model's footprint: {above:.3f} GiB (target < {TARGET_GIB} GiB: {verdict})")
    print(f"  ratio peak above the model / target: {above / TARGET_GIB:.3f}")
    return above


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="model name (tiny: random weights, 128 px)")
    p.add_argument("--slices", type=int, default=64, help="slices in the stack")
    p.add_argument("--size", type=int, default=4096, help="slice side in pixels")
    p.add_argument("--chunk", type=int, default=1024, help="chunk side in pixels (chunks are (1, c, c))")
    p.add_argument("--visits", type=int, default=4, help="slices annotated")
    p.add_argument("--boxes", type=int, default=3, help="box prompts per slice")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="where the stack and its labels are written")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stack", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        child(args)
        return {}
    stack_bytes = args.slices * args.size * args.size * 2
    free = shutil.disk_usage(args.tmp).free
    print(
        f"free disk space in {args.tmp}: {free / GIB:.1f} GiB (the stack needs up to {stack_bytes / GIB:.1f} GiB)"
    )
    if free < 1.5 * stack_bytes + 1 * GIB:  # stack, its labels (mostly zeros, compressed), some room
        print("  too little disk space: not run (use --tmp elsewhere or a smaller --slices)")
        return {}
    folder = Path(tempfile.mkdtemp(prefix="bench-stack-memory-", dir=args.tmp))
    try:
        start = time.perf_counter()
        write_stack(folder / "stack.zarr", args.slices, args.size, args.chunk)
        write_s = time.perf_counter() - start
        print(
            f"  writing the stack: peak memory of this process {peak_bytes() / GIB:.3f} GiB (never all in memory)"
        )
        m = run_child(args, folder / "stack.zarr")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  load average: {os.getloadavg()[0]:.2f} (2 cores)")
    above = report(args, m, stack_bytes, write_s)
    return {"peak_above_model_gib": above, "ratio": above / TARGET_GIB}


if __name__ == "__main__":
    main()
