"""Unlabelled image folders and the SA-1B layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from ovsam_model.data.folders import ImageFolderDataset


@pytest.fixture
def sa1b_root(tmp_path: Path) -> Path:
    """Two SA-1B shards of one JPEG each (with the ignored JSON), plus a 3-slice TIFF stack at the top."""
    rng = np.random.default_rng(0)
    for shard, size in (("sa_000000", (30, 40)), ("sa_000001", (50, 20))):
        (tmp_path / shard).mkdir()
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / shard / "sa_1.jpg")
        (tmp_path / shard / "sa_1.json").write_text("{}")
    tifffile.imwrite(
        tmp_path / "stack.tif", rng.integers(0, 999, (3, 16, 16), dtype=np.uint16), photometric="minisblack"
    )
    return tmp_path


def test_folder_lists_images_and_slices(sa1b_root: Path) -> None:
    ds = ImageFolderDataset(sa1b_root, image_size=64)
    assert [ds.key(i) for i in range(len(ds))] == [
        "sa_000000/sa_1.jpg",
        "sa_000001/sa_1.jpg",
        "stack.tif#0",
        "stack.tif#1",
        "stack.tif#2",
    ]
    item = ds[1]
    assert item["image"].shape == (3, 64, 26) and item["image"].dtype == torch.float32
    assert item["original_size"] == (50, 20) and item["scale"] == pytest.approx(64 / 50)
    assert ds[3]["slice_index"] == 1 and ds[3]["image"].shape == (3, 64, 64)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 255.0


def test_list_file_selects_shards(sa1b_root: Path, tmp_path: Path) -> None:
    list_file = tmp_path / "train.txt"
    list_file.write_text("# the 1% subset\nsa_000001\n")
    ds = ImageFolderDataset(sa1b_root, list_file=list_file, image_size=32)
    assert len(ds) == 1 and ds.key(0) == "sa_000001/sa_1.jpg"
    list_file.write_text("sa_000009\n")
    with pytest.raises(FileNotFoundError, match="line 1: .*sa_000009"):
        ImageFolderDataset(sa1b_root, list_file=list_file)


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No images found"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(tmp_path / "missing")
