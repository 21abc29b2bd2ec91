"""Small builders for the panels' controls (no behaviour)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QWidget


def single_shot_timer(parent: QObject, interval_ms: int, timeout: Callable[[], Any]) -> QTimer:
    """A timer that calls ``timeout`` once, ``interval_ms`` after each ``start()`` (restarting delays it)."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(interval_ms)
    timer.timeout.connect(timeout)
    return timer


def button(text: str, tip: str) -> QPushButton:
    """A push button with a tooltip."""
    widget = QPushButton(text)
    widget.setToolTip(tip)
    return widget


def row(*widgets: QWidget, stretch: int | None = None) -> QHBoxLayout:
    """Widgets side by side; the one at index ``stretch`` takes the spare width."""
    layout = QHBoxLayout()
    for i, item in enumerate(widgets):
        layout.addWidget(item, stretch=1 if i == stretch else 0)
    return layout


def row_widget(*widgets: QWidget, stretch: int | None = None) -> QWidget:
    """:func:`row` in a margin-less widget (to show or hide it as one)."""
    holder = QWidget()
    layout = row(*widgets, stretch=stretch)
    layout.setContentsMargins(0, 0, 0, 0)
    holder.setLayout(layout)
    return holder
