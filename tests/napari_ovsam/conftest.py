"""Shared setup of the plugin tests."""

from __future__ import annotations

import pytest

from napari_ovsam._compat import block_triton_if_llvm_loaded


@pytest.fixture(autouse=True)
def _private_backend_settings(tmp_path_factory, monkeypatch):
    """The widget remembers its backend in a config folder: each test gets its own, never the user's."""
    monkeypatch.setenv("NAPARI_OVSAM_CONFIG_DIR", str(tmp_path_factory.mktemp("napari-ovsam-config")))


@pytest.fixture(autouse=True)
def _no_triton_after_a_viewer():
    """A test's viewer maps Mesa's libLLVM; a later ``import torchvision`` (another test module, run alone)
    would then load Triton's LLVM and crash the process. The widget guards itself this way when it is built;
    tests that make a viewer without it get the same guard (see ``napari_ovsam._compat``)."""
    yield
    block_triton_if_llvm_loaded()


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (pytest-qt / napari's fixture), closed after the test."""
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, qtbot):
    """The OV-SAM dock widget in ``viewer``; closed after the test once its jobs have ended."""
    from napari_ovsam._qt.widget import OVSAMWidget  # Qt: only the GUI tests that ask for it import it

    widget = OVSAMWidget(viewer)
    viewer.window.add_dock_widget(widget, name="OV-SAM Annotator", area="right")
    yield widget
    widget.close()
    qtbot.waitUntil(lambda: not widget._jobs.jobs, timeout=60000)
