"""``ImagePanel``: which image layer is annotated, the slice of it in view, and the contrast the model sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from .. import _layers
from ..results import SliceIndex
from ..session import AnnotationSession


class ImagePanel(QWidget):
    """The image chooser. Choosing an image hands it to the session (lazy, read slice by slice) and calls
    ``on_change(layer)``; with "use the layer's contrast limits" on, contrast changes go to the session as
    they happen (a new contrast is a new embedding).

    Args:
        viewer: the napari viewer. session: the annotation session.
        on_change: called with the newly chosen image layer (not called when the choice is cleared).
        is_open: False once the widget is closed (nothing is done then).
        report: shows why an image cannot be annotated (e.g. a multiscale layer whose levels disagree).
    """

    def __init__(
        self,
        *,
        viewer: napari.Viewer,
        session: AnnotationSession,
        on_change: Callable[[Any], None],
        is_open: Callable[[], bool],
        report: Callable[[str, BaseException], None],
    ) -> None:
        super().__init__()
        self._viewer, self._session, self._on_change, self._is_open = viewer, session, on_change, is_open
        self._report = report
        self._layer: Any = None
        self._refused: Any = None  # the last layer the session refused (reported once)
        self._use_contrast = False
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self._image = QComboBox()
        self._image.setToolTip("The image layer to annotate; its labels go to its own 'ovsam labels' layer")
        self._image.currentIndexChanged.connect(self._on_choice)
        form.addRow("Image", self._image)

    @property
    def layer(self) -> Any:
        """The chosen image layer, None if there is none or it was removed from the viewer."""
        return self._layer if self._layer is not None and self._layer in self._viewer.layers else None

    def slice_in_view(self) -> SliceIndex | None:
        """Leading indices of the chosen image's slice in view (``()`` for 2D), None without an image."""
        layer = self.layer
        return None if layer is None else _layers.slice_of(self._viewer, layer)

    def contrast_limits(self) -> tuple[float, float] | None:
        """The layer's contrast limits when they are used for the model input, else None (percentiles)."""
        if self._layer is None or not self._use_contrast:
            return None
        low, high = self._layer.contrast_limits
        return float(low), float(high)

    def set_use_contrast(self, use: bool) -> None:
        self._use_contrast = bool(use)
        self._session.set_contrast_limits(self.contrast_limits())

    def refresh(self, *_: Any) -> None:
        """Refill the combo (layers added, removed, moved or renamed); the chosen layer stays chosen."""
        if not self._is_open():
            return
        layers = _layers.image_layers(self._viewer)
        for layer in layers:
            layer.events.name.connect(self.refresh)  # napari ignores a repeated connection
        chosen = self._layer if self._layer in layers else None
        self._image.blockSignals(True)
        self._image.clear()
        self._image.addItems([layer.name for layer in layers])
        if layers:
            self._image.setCurrentIndex(layers.index(chosen) if chosen is not None else 0)
        self._image.blockSignals(False)
        self._on_choice()

    def shutdown(self) -> None:
        self._hook(self._layer, connect=False)

    def _on_choice(self, *_: Any) -> None:
        name = self._image.currentText()
        layer = self._viewer.layers[name] if name in self._viewer.layers else None
        if layer is self._layer or (layer is not None and layer is self._refused) or not self._is_open():
            return
        self._hook(self._layer, connect=False)
        self._layer = layer
        if layer is None:
            return
        # A multiscale layer's levels go as they are: the session checks them and annotates level 0 (full
        # resolution), read slice by slice, or tile by tile for large slices.
        try:
            self._session.set_image(layer.data, rgb=layer.rgb, contrast_limits=self.contrast_limits())
        except ValueError as error:
            self._layer, self._refused = None, layer
            self._session.clear_image()
            self._report(f"Cannot annotate the image '{layer.name}'", error)
            return
        self._hook(layer)
        self._on_change(layer)

    def _hook(self, layer: Any, *, connect: bool = True) -> None:
        if layer is None:
            return
        layer.events.contrast_limits.disconnect(self._on_contrast)
        if connect:
            layer.events.contrast_limits.connect(self._on_contrast)

    def _on_contrast(self, *_: Any) -> None:
        if self._use_contrast:
            self._session.set_contrast_limits(self.contrast_limits())
