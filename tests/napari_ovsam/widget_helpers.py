"""Helpers of the widget tests (shown viewer, Xvfb): waiting for the widget's jobs, loading the tiny model."""

from __future__ import annotations

import torch

from ovsam_model.vocabulary import DEMO_CLASSES


def idle(qtbot, widget, timeout=30000):
    """Wait until the widget runs no job (model loading, embeddings, stack jobs)."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def load_tiny(qtbot, widget):
    """Load the tiny model (random weights, seeded) on the CPU, as a user would pick it, and wait for it."""
    torch.manual_seed(0)  # the tiny model's random weights, reproducibly
    widget._model_panel._model.setCurrentText("tiny")
    widget._model_panel._device.setCurrentText("cpu")
    assert widget.load_model().lane == "model"
    idle(qtbot, widget)
    assert widget.session.predictor is not None, widget.status
    assert widget.session.vocabulary.names == list(DEMO_CLASSES)
