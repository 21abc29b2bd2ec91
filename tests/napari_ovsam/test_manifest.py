"""The npe2 manifest: it validates, every command imports, and the sample data loads (no viewer needed)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest

from napari_ovsam import _sample_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_file(ROOT / "napari.yaml")


def test_package_manifest_is_the_top_level_file(manifest):
    installed = PluginManifest.from_distribution("napari-ovsam")
    assert installed.name == manifest.name == "napari-ovsam"
    assert (ROOT / "src" / "napari_ovsam" / "napari.yaml").resolve() == (ROOT / "napari.yaml").resolve()


def test_every_python_name_imports(manifest):
    for command in manifest.contributions.commands:
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), command.python_name
    manifest.validate_imports()


def test_contributions(manifest):
    contributions = manifest.contributions
    [widget] = contributions.widgets
    assert widget.display_name == "OV-SAM Annotator"
    assert [item.command for item in contributions.menus["napari/layers/segment"]] == [widget.command]
    assert {w.filename_extensions[0] for w in contributions.writers} == {".json", ".tif", ".zarr"}
    assert contributions.readers[0].filename_patterns == ["*.json"]
    assert {s.key for s in contributions.sample_data} == {"synthetic_2d", "synthetic_stack"}


def test_npe2_validate_command():
    npe2 = shutil.which("npe2") or str(Path(sys.executable).parent / "npe2")
    result = subprocess.run([npe2, "validate", "napari-ovsam"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_sample_data_is_small_and_loads():
    [(image, attributes, kind)] = _sample_data.sample_2d()
    assert kind == "image" and image.shape == (256, 256) and image.dtype == np.uint16
    [(stack, attributes, kind)] = _sample_data.sample_stack()
    assert stack.shape == (8, 256, 256) and stack.dtype == np.uint16 and attributes["name"]
    assert 0 < image.std() and all(0 < stack[z].std() for z in range(len(stack)))
    for data, limits in (
        (image, _sample_data.sample_2d()[0][1]["contrast_limits"]),
        (stack, attributes["contrast_limits"]),
    ):
        low, high = limits  # from the pixels, not uint16's 0..65535 (which shows the samples almost black)
        assert data.min() <= low < high <= data.max() and high < 0.5 * np.iinfo(data.dtype).max
    sizes = [path.stat().st_size for path in _sample_data.SAMPLES_DIR.iterdir()]
    assert len(sizes) == 2 and sum(sizes) < 2 * 2**20
