"""What ``pip install napari-ovsam`` gets: the sdist and the wheel built from this tree carry every file the
code loads at run time, the top-level manifest, the licence and the metadata the package index shows.

The list of runtime files is derived from the source tree (every file in the package folders that is not
Python source or bytecode), so a data file added later without its package-data entry fails here. The builds
run offline, without build isolation (the installed setuptools), by the steps of ``scripts/smoke_wheel.py``.
"""

from __future__ import annotations

import importlib.util
import re
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

import ovsam_model
from napari_ovsam import _sample_data
from ovsam_model import config, hub

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# The build steps CI runs before its smoke test (checkout copy, sdist, wheel from the sdist), imported from
# the script so both build the same way.
_spec = importlib.util.spec_from_file_location("smoke_wheel", ROOT / "scripts" / "smoke_wheel.py")
assert _spec is not None and _spec.loader is not None
smoke_wheel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke_wheel)
PACKAGES = ("ovsam_model", "napari_ovsam")
# The folders the code reads data from, by the code's own constants (presets: vocabulary.py reads them
# through importlib.resources from the package's "presets" folder).
LOOKUP_DIRS = (
    config.CONFIG_DIR,
    config.CLIP_CONFIG_DIR,
    hub.PACKAGE_WEIGHTS_DIR,
    _sample_data.SAMPLES_DIR,
    Path(ovsam_model.__file__).parent / "presets",
)


def package_files(src: Path) -> tuple[set[str], set[str]]:
    """(runtime data files, Python modules) under ``src``'s packages, as paths relative to ``src``."""
    data, modules = set(), set()
    for package in PACKAGES:
        for path in (src / package).rglob("*"):
            relative = path.relative_to(src)
            if path.is_dir() or "__pycache__" in relative.parts or path.name.startswith("."):
                continue
            if path.suffix in (".pyc", ".pyo"):
                continue
            (modules if path.suffix == ".py" else data).add(relative.as_posix())
    return data, modules


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of a fresh checkout (what is expected is read from it, not from the live tree)."""
    return smoke_wheel.checkout_copy(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def built(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{".gz": sdist, ".whl": wheel}; the wheel is built from the sdist, so it also proves the sdist builds."""
    return smoke_wheel.build(tree, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def wheel_names(built: dict[str, Path]) -> set[str]:
    with zipfile.ZipFile(built[".whl"]) as wheel:
        return set(wheel.namelist())


@pytest.fixture(scope="module")
def sdist_members(built: dict[str, Path]) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(built[".gz"]) as sdist:
        members = sdist.getmembers()
    top = f"napari_ovsam-{ovsam_model.__version__}/"
    assert all(m.name.startswith(top) or m.name == top.rstrip("/") for m in members)
    return {m.name[len(top) :]: m for m in members if m.name.startswith(top)}


def wheel_metadata(built: dict[str, Path]) -> tuple[dict, list[tuple[str, str]]]:
    with zipfile.ZipFile(built[".whl"]) as wheel:
        text = wheel.read(f"napari_ovsam-{ovsam_model.__version__}.dist-info/METADATA").decode()
    message = Parser().parsestr(text)
    return dict(message.items()), list(message.items())


# ------------------------------------------------------------------------------------- the file lists


def test_the_lookup_folders_are_package_data() -> None:
    data, _ = package_files(ROOT / "src")
    for folder in LOOKUP_DIRS:
        files = sorted(p.relative_to(ROOT / "src").as_posix() for p in folder.glob("*") if p.is_file())
        assert files, f"{folder} holds no files"
        assert set(files) <= data, folder


def test_wheel_carries_every_runtime_file_and_module(tree: Path, wheel_names: set[str]) -> None:
    data, modules = package_files(tree / "src")
    assert {"ovsam_model/configs/clip/ovsam-demo-RN.json", "napari_ovsam/napari.yaml"} <= data
    assert sorted(data - wheel_names) == []
    assert sorted(modules - wheel_names) == []
    packaged = {
        n for n in wheel_names if not n.startswith(f"napari_ovsam-{ovsam_model.__version__}.dist-info/")
    }
    assert sorted(packaged - data - modules) == []  # nothing else (no tests, no stray build files)


def test_sdist_carries_the_sources_the_manifest_and_the_records(tree: Path, sdist_members: dict) -> None:
    data, modules = package_files(tree / "src")
    names = set(sdist_members)
    assert sorted({f"src/{n}" for n in data | modules} - names) == []
    records = {"pyproject.toml", "README.md", "LICENSE", "napari.yaml", "CHANGELOG.md", "CITATION.cff"}
    assert sorted(records - names) == []
    tests = {p.relative_to(tree).as_posix() for p in (tree / "tests").rglob("*.py")}
    assert sorted(tests - names) == []
    linked = re.findall(r"\]\(((?!https?:)[^)#\s]+)\)", (tree / "README.md").read_text())
    assert sorted({link for link in linked if (tree / link).is_file()} - names) == []
    manifest = sdist_members["src/napari_ovsam/napari.yaml"]
    assert manifest.isfile(), "the package's napari.yaml must be a file in the sdist, not a link"


def test_the_shipped_manifest_is_the_top_level_one(tree: Path, built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built[".whl"]) as wheel:
        shipped = wheel.read("napari_ovsam/napari.yaml")
        entry_points = wheel.read(f"napari_ovsam-{ovsam_model.__version__}.dist-info/entry_points.txt")
    assert shipped == (tree / "napari.yaml").read_bytes()
    assert "[napari.manifest]\nnapari-ovsam = napari_ovsam:napari.yaml" in entry_points.decode()


def test_metadata_the_index_shows(built: dict[str, Path], wheel_names: set[str]) -> None:
    fields, items = wheel_metadata(built)
    assert fields["Name"] == "napari-ovsam"
    assert fields["Version"] == ovsam_model.__version__
    assert fields["License-Expression"] == "BSD-3-Clause"
    assert fields["License-File"] == "LICENSE"
    assert f"napari_ovsam-{ovsam_model.__version__}.dist-info/licenses/LICENSE" in wheel_names
    classifiers = {value for key, value in items if key == "Classifier"}
    assert {"Framework :: napari", "Intended Audience :: Science/Research"} <= classifiers
    urls = dict(value.split(", ", 1) for key, value in items if key == "Project-URL")
    assert set(urls) == {"Homepage", "Source Code", "Bug Tracker", "Documentation", "Changelog"}
    assert all(url.startswith("https://github.com/napari-ovsam/napari-ovsam") for url in urls.values())


def test_one_version_string() -> None:
    import napari_ovsam

    assert napari_ovsam.__version__ == ovsam_model.__version__
    assert 'version = "' not in (ROOT / "pyproject.toml").read_text().split("[tool.", 1)[0]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{ovsam_model.__version__}]" in changelog and "## [Unreleased]" in changelog
    assert f"version: {ovsam_model.__version__}" in (ROOT / "CITATION.cff").read_text()


# ----------------------------------------------------------------------------- the check can fail


def test_a_file_left_out_of_package_data_is_caught(tmp_path: Path) -> None:
    """The same check on a copy of the tree whose package-data forgets configs/clip (the bug of issue 11)."""
    copy = smoke_wheel.checkout_copy(tmp_path / "tree")
    pyproject = (copy / "pyproject.toml").read_text()
    assert '"configs/clip/*.json", ' in pyproject
    (copy / "pyproject.toml").write_text(pyproject.replace('"configs/clip/*.json", ', ""))
    wheel = smoke_wheel.build(copy, tmp_path / "dist")[
        ".whl"
    ]  # as the fixture: sdist, then the wheel from it
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data, _ = package_files(copy / "src")
    clip_configs = {f"ovsam_model/configs/clip/{p.name}" for p in config.CLIP_CONFIG_DIR.glob("*.json")}
    assert data - names == clip_configs


# ----------------------------------------------------------------------------------- napari hub page


def test_napari_hub_listing_agrees_with_the_package(built: dict[str, Path]) -> None:
    hub_config = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text())
    _, items = wheel_metadata(built)
    urls = {value.split(", ", 1)[1] for key, value in items if key == "Project-URL"}
    for name, url in hub_config["project_urls"].items():
        assert url in urls, name
    assert {"Image segmentation", "2D image", "3D image"} <= set(hub_config["labels"]["terms"])
    description = (ROOT / ".napari-hub" / "DESCRIPTION.md").read_text()
    image = "https://raw.githubusercontent.com/napari-ovsam/napari-ovsam/main/docs/images/widget_2d.png"
    assert image in description and (ROOT / "docs" / "images" / "widget_2d.png").is_file()
    assert "pip install" in description and "non-commercial" in description
