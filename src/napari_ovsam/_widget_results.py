"""The widget's results: the labels layer of each image, its names layer, and the table of objects.

A mixin of :class:`~napari_ovsam._widget.OVSAMWidget`. Each image layer gets its own labels layer (found again
by ``metadata['ovsam']['image_name']``, or created: numpy for in-memory images, zarr for lazy ones) and its own
:class:`~napari_ovsam.annotations.LabelsTarget` (undo history and name anchors), so switching images or models
never loses committed objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _layers
from .session import SessionBusy


class ResultsView:
    """Labels, names and the objects table for the widget (see the module docstring)."""

    def _ensure_labels(self) -> Any:
        """The labels layer of the current image (found, or created empty) and its session target."""
        image = self._image_layer
        if image is None:
            self._set_status("Add or choose an image layer first.")
            return None
        layer = self._labels_layer
        if layer is None or layer not in self.viewer.layers:
            layer = _layers.labels_layer_for(self.viewer, image)
            if layer is None:
                store = Path(self._cache_path.text()).parent if self._cache_path.text().strip() else None
                vocabulary = self.session.vocabulary.to_text().splitlines() if self.session.vocabulary else []
                layer = _layers.add_labels_layer(
                    self.viewer, image, _layers.new_labels_array(image, store), vocabulary
                )
            self._hook_labels_layer(layer)
            self._labels_layer = self._labels_by_image[id(image)] = layer
        target = self._targets.get(id(layer))
        if target is None or target.labels is not layer.data:
            target = self.session.attach_labels(layer.data, layer.features)
            self._targets[id(layer)] = target
        self.session.use_target(target)
        self._show_labels(refresh=False)
        return layer

    def _hook_labels_layer(self, layer: Any, *, connect: bool = True) -> None:
        """Count brush strokes and take over Ctrl+Z on a labels layer (or give both back)."""
        layer.events.paint.disconnect(self._on_paint)
        if connect:
            layer.events.paint.connect(self._on_paint)
        layer.bind_key("Control-Z", self._alive(self._labels_undo) if connect else None, overwrite=True)

    def _on_paint(self, event: Any) -> None:
        self._paints_since_commit += 1
        target = self._targets.get(id(event.source))
        if target is not None:  # hand-painted ids: the next commits' ids go above them
            target.note_painted(event.value)

    def _on_layer_removed(self, event: Any) -> None:
        """A labels layer of ours was deleted: forget its target (undo history, names) and its names."""
        layer = event.value
        for image_id, labels in list(self._labels_by_image.items()):
            if labels is layer:
                del self._labels_by_image[image_id]
        target = self._targets.pop(id(layer), None)
        if target is None:
            return
        self._hook_labels_layer(layer, connect=False)
        self.session.drop_target(target)
        if layer is self._labels_layer:
            self._labels_layer = None
            self._table.show_features(target.features.iloc[0:0])
            names = _layers.find(self.viewer, _layers.NAMES)
            if names is not None:
                self.viewer.layers.remove(names)

    def _labels_undo(self) -> None:
        """Ctrl+Z on the labels: brush strokes made after the last commit first, then commits, then the
        strokes made before any commit (napari's painting undo)."""
        layer, target = self._labels_layer, self.session.target
        if layer is None:
            return
        if self._paints_since_commit > 0 or target is None or not target.history:
            self._paints_since_commit = max(self._paints_since_commit - 1, 0)
            layer.undo()
        else:
            self.undo()

    def _show_labels(self, *, refresh: bool = True) -> None:
        """Push the target's features, names and table to the labels, names layer and table."""
        layer, target = self._labels_layer, self.session.target
        if layer is None or target is None:
            return
        layer.features = target.features
        if refresh:
            layer.refresh()
        with _layers.keep_selection(self.viewer):
            _layers.show_names(self.viewer, layer, target)
        self._table.show_features(target.features)

    def _on_rename(self, label_id: int, name: str) -> None:
        try:
            self.session.rename(label_id, name)
        except (KeyError, SessionBusy) as error:
            self._set_status(str(error))
            return
        self._show_labels(refresh=False)
        self._set_status(f"Object {label_id} is now '{name}' (reviewed).")

    def _on_pick(self, label_id: int) -> None:
        if self._labels_layer is not None:
            self._labels_layer.selected_label = label_id
        slices = self.session.target.slices_of(label_id) if self.session.target else []
        if slices and self._image_layer is not None and slices[0]:
            image = self._image_layer
            offset = self.viewer.dims.ndim - image.ndim
            for axis, index in enumerate(slices[0]):
                world = image.translate[axis] + index * image.scale[axis]
                self.viewer.dims.set_point(offset + axis, world)
