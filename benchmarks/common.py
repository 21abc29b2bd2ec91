"""Shared helpers for the benchmark scripts: timing, peak memory, model construction with random weights."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def machine(device: str = "cpu") -> str:
    """The processor, torch threads and version, and the GPU's name when ``device`` is a CUDA device."""
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(device)}" if torch.device(device).type == "cuda" else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}{gpu}"


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    fns: dict[str, Callable[[], object]], *, rounds: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median times of several functions measured in alternation (so load changes hit all of them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def synced(fn: Callable[[], object], device: torch.device | str) -> Callable[[], object]:
    """``fn`` followed by waiting for the device's queued work, so that wall time measures it (CUDA)."""
    if torch.device(device).type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def random_ovsam(name: str):
    """An OV-SAM model of config ``name`` with random weights everywhere (cost does not depend on weights)."""
    from ovsam_model.build import assemble
    from ovsam_model.config import load_config

    torch.manual_seed(0)
    return assemble(load_config(name), clip_pretrained="none").eval()


def random_sam(kind: str = "vit_h"):
    """segment_anything's SAM of ``kind`` with random weights."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    return sam_model_registry[kind](checkpoint=None).eval()


def blob_image(size: int, offset: int = 0):
    """A (size, size) uint16 image of Gaussian blobs on a noisy background (``offset`` makes another image)."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0, size, (12, 2))
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 25) ** 2)) for cy, cx in centres)
    return (2000 * blobs + rng.normal(300, 30, (size, size)) + offset).clip(0, 65535).astype(np.uint16)
