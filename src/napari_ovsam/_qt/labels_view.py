"""``LabelsView``: each image's "ovsam labels" layer, the names drawn on it, and the table of its objects.

Each image layer gets its own labels layer (found again by ``metadata['ovsam']['image_name']``, or created:
numpy for in-memory images, zarr for lazy ones) and, in the session, its own target (undo history and name
anchors), so switching images or models never loses committed objects. The session's features table is the
one table; the layer's ``features`` is its view, and what the user edits there (a value typed in, a column
added) is taken back in before the session writes (:meth:`take_user_edits`).

On a labels layer, Ctrl+Z first undoes brush strokes made after the last commit (napari's painting undo), then
commits. Brush strokes also tell the session which ids are in use (napari's paint events), so new objects get
ids of their own on lazy stacks too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari

from .. import _layers
from ..session import AnnotationSession, SessionBusy
from .objects_table import ObjectsTable
from .status import StatusPanel


class LabelsView:
    """The labels, names overlay and objects table of the chosen image (see the module docstring).

    Args:
        viewer: the napari viewer. session: the annotation session. status: where to report.
        image: the chosen image layer (or None). store_dir: the folder for new zarr labels (None: temporary).
        undo: the widget's undo (Ctrl+Z on the labels, once no brush stroke is left to undo).
        is_open: False once the widget is closed (key bindings then do nothing).
    """

    def __init__(
        self,
        *,
        viewer: napari.Viewer,
        session: AnnotationSession,
        status: StatusPanel,
        image: Callable[[], Any],
        store_dir: Callable[[], Path | None],
        undo: Callable[[], Any],
        is_open: Callable[[], bool],
    ) -> None:
        self._viewer, self._session, self._status = viewer, session, status
        self._image, self._store_dir, self._undo, self._is_open = image, store_dir, undo, is_open
        self._layer: Any = None
        self._by_image: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # image -> labels
        self._hooked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._paints_since_commit = 0
        self._table = ObjectsTable()
        self._table.renamed.connect(self._on_rename)
        self._table.picked.connect(self._on_pick)

    @property
    def table(self) -> ObjectsTable:
        """The objects table widget (placed by the annotate panel)."""
        return self._table

    @property
    def layer(self) -> Any:
        """The labels layer of the chosen image, None until :meth:`ensure` found or made it, or once deleted."""
        return self._layer if self._layer is not None and self._layer in self._viewer.layers else None

    def selected_label(self) -> int | None:
        return self._table.selected_label()

    def ensure(self) -> Any:
        """The labels layer of the chosen image (found, or created empty), attached in the session."""
        image = self._image()
        if image is None:
            self._status.set_status("Add or choose an image layer first.")
            return None
        layer = self._by_image.get(image)  # the same layer after the image is renamed
        if layer is None or layer not in self._viewer.layers:
            layer = _layers.labels_layer_for(self._viewer, image)
            if layer is None:
                vocabulary = self._session.vocabulary
                names = vocabulary.to_text().splitlines() if vocabulary is not None else []
                data = _layers.new_labels_array(image, self._store_dir())
                layer = _layers.add_labels_layer(self._viewer, image, data, names)
            if layer not in self._hooked:
                self._hook(layer)
            self._by_image[image] = layer
        self._layer = layer
        self._session.attach_labels(layer.data, layer.features)
        self.show(refresh=False)
        return layer

    def take_user_edits(self) -> None:
        """Before the session writes: the layer's features as the user left them become the session's."""
        layer, target = self.layer, self._session.target
        if layer is not None and target is not None and target.labels is layer.data:
            target.adopt_features(layer.features)

    def committed(self) -> None:
        """A commit was written: earlier brush strokes are no longer undone before it."""
        self._paints_since_commit = 0
        layer = self.layer
        if layer is not None and self._session.vocabulary is not None:  # the writers export it
            metadata = layer.metadata.setdefault("ovsam", {})
            metadata["vocabulary"] = self._session.vocabulary.to_text().splitlines()

    def show(self, *, refresh: bool = True) -> None:
        """Push the target's features, names and table to the labels, the names layer and the table."""
        layer, target = self.layer, self._session.target
        if layer is None or target is None:
            return
        layer.features = target.features
        if refresh:
            layer.refresh()
        with _layers.keep_selection(self._viewer):
            _layers.show_names(self._viewer, layer, target)
        self._table.show_features(target.features)

    def refresh_pixels(self) -> None:
        layer = self.layer
        if layer is not None:
            layer.refresh()

    def on_layer_removed(self, event: Any) -> None:
        """A labels layer of ours was deleted: the session forgets its target (undo history), and its names
        and table go."""
        layer = event.value
        if layer not in self._hooked:
            return
        self._hook(layer, connect=False)
        self._session.detach_labels(layer.data)
        if layer is self._layer:
            self._layer = None
            self._table.setRowCount(0)
            names = _layers.find(self._viewer, _layers.NAMES)
            if names is not None:
                self._viewer.layers.remove(names)

    def shutdown(self) -> None:
        """Give napari's own painting undo back to every labels layer."""
        for layer in list(self._hooked):
            self._hook(layer, connect=False)

    def _hook(self, layer: Any, *, connect: bool = True) -> None:
        """Follow brush strokes and take over Ctrl+Z on a labels layer (or give both back)."""
        layer.events.paint.disconnect(self._on_paint)
        if connect:
            self._hooked.add(layer)
            layer.events.paint.connect(self._on_paint)
        else:
            self._hooked.discard(layer)
        layer.bind_key("Control-Z", self._labels_undo if connect else None, overwrite=True)

    def _on_paint(self, event: Any) -> None:
        self._paints_since_commit += 1
        target = self._session.target_of(event.source.data)
        if target is not None:  # hand-painted ids: the next commits' ids go above them
            target.note_painted(event.value)

    def _labels_undo(self, *_: Any) -> None:
        """Ctrl+Z on the labels: brush strokes made after the last commit first, then commits, then the
        strokes made before any commit (napari's painting undo)."""
        layer, target = self.layer, self._session.target
        if layer is None or not self._is_open():
            return
        if self._paints_since_commit > 0 or target is None or not target.history:
            self._paints_since_commit = max(self._paints_since_commit - 1, 0)
            layer.undo()
        else:
            self._undo()

    def _on_rename(self, label_id: int, name: str) -> None:
        self.take_user_edits()
        try:
            self._session.rename(label_id, name)
        except (ValueError, SessionBusy, RuntimeError) as error:
            self._status.set_status(str(error))
            return
        self.show(refresh=False)
        self._status.set_status(f"Object {label_id} is now '{name}' (reviewed).")

    def _on_pick(self, label_id: int) -> None:
        """A row was selected: select its label and show its first slice."""
        layer, image, target = self.layer, self._image(), self._session.target
        if layer is not None:
            layer.selected_label = label_id
        slices = target.slices_of(label_id) if target is not None else []
        if slices and image is not None and slices[0]:
            offset = self._viewer.dims.ndim - image.ndim
            for axis, index in enumerate(slices[0]):
                world = image.translate[axis] + index * image.scale[axis]
                self._viewer.dims.set_point(offset + axis, world)
