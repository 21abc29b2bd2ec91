"""A tiny synthetic dataset for training smoke runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovsam_model.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 train and 2 val images of 128 px (the tiny model's input size)."""
    root = tmp_path_factory.mktemp("train-synthetic")
    return write_dataset(root, num_train=4, num_val=2, size=128, objects_per_image=(3, 5), seed=3)


@pytest.fixture(scope="session")
def base_args():
    """Command-line arguments of a tiny, fast run: base_args(data, out, *extra)."""
    return _base_args


def _base_args(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        "tiny",
        "--train-ann",
        str(data["train"]),
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--num-prompts",
        "6",
        "--num-points",
        "64",
        "--warmup-iters",
        "1",
        "--log-every",
        "1",
        "--device",
        "cpu",
        *extra,
    ]
