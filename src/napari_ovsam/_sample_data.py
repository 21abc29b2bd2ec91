"""Sample data: a 2D image and a 3D stack of the demo model's classes (nucleus, rod, ring, cluster).

The two files in ``samples/`` are small uint16 TIFFs made once by :func:`make_samples` from
``ovsam_model.data.synthetic`` (``python -m napari_ovsam._sample_data``). In the stack, each object lives on a
run of consecutive slices and drifts by about a pixel per slice, so "Segment through stack" has objects that
appear, move and disappear.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ovsam_model.data.synthetic import CLASS_NAMES, generate_image, image_rng, place_objects, render

SAMPLES_DIR = Path(__file__).parent / "samples"
IMAGE_2D = "synthetic_2d.tif"
STACK_3D = "synthetic_stack.tif"
SEED = 2024

LayerData = tuple[Any, dict[str, Any], str]


def _read(name: str) -> np.ndarray:
    path = SAMPLES_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; recreate it with `python -m napari_ovsam._sample_data`.")
    return tifffile.imread(path)


def sample_2d() -> list[LayerData]:
    """A 256x256 uint16 fluorescence-like image with about a dozen objects of the four demo classes."""
    image = _read(IMAGE_2D)
    return [(image, {"name": "ovsam sample 2D", "contrast_limits": display_range(image)}, "image")]


def sample_stack() -> list[LayerData]:
    """An 8x256x256 uint16 stack (z, row, col) whose objects span several slices."""
    stack = _read(STACK_3D)
    return [(stack, {"name": "ovsam sample stack", "contrast_limits": display_range(stack)}, "image")]


def display_range(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits from the pixels (0.5 and 99.5 percentiles), not the dtype's range: the uint16 samples
    use a few thousand grey levels of 65,536 and would open almost black."""
    low, high = (float(v) for v in np.percentile(data, (0.5, 99.5)))
    return (low, high) if high > low else (low, low + 1.0)


# ---------------------------------------------------------------------------------------------- generation


def make_samples(out: Path = SAMPLES_DIR, *, size: int = 256, num_slices: int = 8) -> list[Path]:
    """Write the two sample TIFFs (zlib-compressed) into ``out`` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    image = generate_image(image_rng(SEED, "val", 0), size, (10, 14)).image
    stack = _drifting_stack(np.random.default_rng(SEED), size, num_slices)
    paths = [out / IMAGE_2D, out / STACK_3D]
    for path, data in zip(paths, (image, stack)):
        tifffile.imwrite(path, data, photometric="minisblack", compression="zlib")
    return paths


def _drifting_stack(rng: np.random.Generator, size: int, num_slices: int) -> np.ndarray:
    """(Z, size, size) uint16: one set of placed objects, each visible on a z-run and drifting per slice."""
    weights = np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES))
    _, placed = place_objects(rng, size, 12, weights)
    first = rng.integers(-2, num_slices // 2, size=len(placed))
    length = rng.integers(num_slices // 2, num_slices + 2, size=len(placed))
    drift = rng.uniform(-1.5, 1.5, size=(len(placed), 2))
    slices = []
    for z in range(num_slices):
        present = [
            (int(round(top + drift[k, 0] * z)), int(round(left + drift[k, 1] * z)), shape)
            for k, (top, left, shape) in enumerate(placed)
            if first[k] <= z < first[k] + length[k]
        ]
        slices.append(render(rng, _label_map(present, size), present))
    return np.stack(slices)


def _label_map(placed: list, size: int) -> np.ndarray:
    """The label map ``render`` expects: object k's visible pixels hold k + 1, later objects on top."""
    labels = np.zeros((size, size), dtype=np.int16)
    for k, (top, left, shape) in enumerate(placed):
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + shape.mask.shape[0], size), min(left + shape.mask.shape[1], size)
        if r1 > r0 and c1 > c0:
            part = shape.mask[r0 - top : r1 - top, c0 - left : c1 - left]
            labels[r0:r1, c0:c1][part] = k + 1
    return labels


if __name__ == "__main__":
    for written in make_samples():
        print(f"{written} ({written.stat().st_size / 1024:.0f} KiB)", file=sys.stdout)
