"""Helpers of the batch-annotation tests: small synthetic stacks, the fast settings every run uses (a 4 x 4
grid, no IoU or stability filter: the demo model finds objects on 96 px images), and a way to damage one
slice of a zarr stack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ovsam_model.data.synthetic import generate_image

FAST = ["--points-per-side", "4", "--min-iou", "0", "--min-stability", "0", "--device", "cpu"]
SIZE = 96


def synthetic_stack(slices: int = 3, seed: int = 0) -> np.ndarray:
    """(slices, 96, 96) uint16 synthetic images with 2-4 objects each."""
    rng = np.random.default_rng(seed)
    return np.stack([generate_image(rng, size=SIZE, objects_per_image=(2, 4)).image for _ in range(slices)])


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def break_chunk(array_path: Path, index: int) -> bytes:
    """Overwrite the stored chunk of slice ``index`` of a (Z, H, W) zarr array with garbage; returns its
    bytes, so a test can put it back (``repair_chunk``)."""
    chunk = _chunk_file(array_path, index)
    data = chunk.read_bytes()
    chunk.write_bytes(b"not a chunk")
    return data


def repair_chunk(array_path: Path, index: int, data: bytes) -> None:
    _chunk_file(array_path, index).write_bytes(data)


def _chunk_file(array_path: Path, index: int) -> Path:
    candidates = [array_path / "c" / str(index) / "0" / "0", array_path / f"{index}.0.0"]
    found = [c for c in candidates if c.is_file()]
    assert found, f"no chunk file for slice {index} in {array_path}"
    return found[0]
