"""``ReviewPanel``: the review queue's keys and its one-line summary ("12 / 40 reviewed").

Keys (bound by the widget on the viewer, the prompt layers and the dock; none is one of napari's defaults for
Labels, Points, Shapes or Image layers):

- **N** / **Shift+N**: the next / previous unreviewed object in the uncertainty order
  (:mod:`napari_ovsam.review`), wrapping around. The objects table switches to that order and selects the
  object, the labels layer's ``selected_label`` becomes its id, the slice follows in stacks (the slice in view
  if the object is there, else its first slice), the camera centres on it (its centroid on that slice) and a
  yellow frame around it in the "ovsam review" shapes layer shows which object it is;
- **K** (keep): accept the selected object's name (``session.mark_reviewed``), then go to the next one;
- **Alt+1** … **Alt+5**: rename the selected object to its k-th alternative (1 is the model's best guess),
  through the objects table's alternative picking (``session.rename``, which marks it reviewed), then go to
  the next one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from .. import _layers
from ..features import ensure_features
from ..results import SliceIndex
from ..review import ALTERNATIVE_KEYS, Place, ReviewQueue, alternative, locate, margin_of, review_summary
from ..session import AnnotationSession, SessionBusy
from .labels_view import LabelsView
from .status import StatusPanel

REVIEW_LAYER = "ovsam review"  # the frame around the object under review
FRAME_MARGIN = 2  # pixels between an object and its frame
FRAME_WIDTH = 1.5  # pixels
FRAME_SIDE = 16  # pixels: the side of the frame when the object's extent is not read (lazy labels)
KEYS_HELP = (
    "<b>Review</b> (most uncertain first): <b>N</b> / <b>Shift+N</b> next / previous · <b>K</b> accept · "
    "<b>Alt+1</b>…<b>5</b> take alternative k"
)


class ReviewPanel(QWidget):
    """The review queue's summary line and actions (see the module docstring).

    Args:
        viewer: the napari viewer (dims and camera follow the object). session: marks objects reviewed.
        status: where to report. labels: the labels layer and objects table of the chosen image.
        slice_in_view: the chosen image's slice in view (None without an image).
    """

    def __init__(
        self,
        *,
        viewer: napari.Viewer,
        session: AnnotationSession,
        status: StatusPanel,
        labels: LabelsView,
        slice_in_view: Callable[[], SliceIndex | None],
    ) -> None:
        super().__init__()
        self._viewer, self._session, self._status, self._labels = viewer, session, status, labels
        self._slice_in_view = slice_in_view
        self._queue = ReviewQueue()
        self._queue_target: Any = None  # the labels target the queue's position belongs to
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._summary = QLabel()
        self._summary.setWordWrap(True)
        self._summary.setToolTip(
            "The review queue walks the unreviewed objects, most uncertain first: named unknown, then the "
            "smallest margin between the two best class probabilities, then the lowest score. Accepted and "
            "renamed objects are reviewed (✓) and leave the queue."
        )
        layout.addWidget(self._summary)
        labels.table.shown.connect(self._show_summary)
        self._show_summary(labels.table.features)

    def key_actions(self) -> dict[str, Callable[[], Any]]:
        """napari key name -> action, for the widget to bind."""
        actions: dict[str, Callable[[], Any]] = {
            "N": lambda: self.next(), "Shift-N": lambda: self.previous(), "K": lambda: self.accept(),
        }  # fmt: skip
        for k in range(1, ALTERNATIVE_KEYS + 1):
            actions[f"Alt-{k}"] = functools.partial(self.take_alternative, k)
        return actions

    # ------------------------------------------------------------------------------------------ actions

    def next(self) -> int | None:
        """Go to the next unreviewed object, most uncertain first; returns its label id (None: none left)."""
        return self._go(forward=True)

    def previous(self) -> int | None:
        """Go to the previous unreviewed object; returns its label id (None: none left)."""
        return self._go(forward=False)

    def accept(self) -> int | None:
        """Accept the selected object's name (marks it reviewed), then go to the next; returns the next id."""
        label_id = self._selected()
        if label_id is None:
            return None
        self._labels.take_user_edits()
        try:
            self._session.mark_reviewed(label_id)
        except (ValueError, SessionBusy, RuntimeError) as error:
            self._status.set_status(str(error))
            return None
        self._labels.show(refresh=False)
        row = self._row(label_id)
        return self._go(forward=True, done=f"Object {label_id} accepted as '{row.get('class_name', '')}'")

    def take_alternative(self, k: int) -> int | None:
        """Rename the selected object to its k-th alternative (1: the best guess), as the table's picker
        does, then go to the next; returns the next id."""
        label_id = self._selected()
        if label_id is None:
            return None
        self._labels.take_user_edits()
        name = alternative(self._features(), label_id, k)
        if name is None:
            self._status.set_status(f"Object {label_id} has no alternative {k}.")
            return None
        self._labels.table.pick_alternative(label_id, name)
        row = self._row(label_id)
        if row.get("class_name") != name or not row.get("reviewed"):
            return None  # refused (the table's rename said why in the status line)
        return self._go(forward=True, done=f"Object {label_id} is now '{name}'")

    # ------------------------------------------------------------------------------------------ moving

    def _go(self, *, forward: bool, done: str = "") -> int | None:
        target = self._session.target
        if target is None or self._labels.layer is None:
            self._status.set_status("No objects to review: choose an image and commit some objects first.")
            return None
        if target is not self._queue_target:
            self._queue.forget()
            self._queue_target = target
        self._labels.take_user_edits()
        features = self._features()
        step = self._queue.next if forward else self._queue.previous
        label_id = step(features, self._labels.selected_label())
        prefix = f"{done} · " if done else ""
        if label_id is None:
            self._frame(None)
            what = "No objects to review yet" if features.empty else "Every object is reviewed"
            self._status.set_status(f"{prefix}{what} ({review_summary(features)}).")
            return None
        self._show(target, label_id)
        row = self._row(label_id)
        self._status.set_status(
            f"{prefix}Object {label_id}: '{row['class_name']}' (score {float(row['score']):.2f}, margin "
            f"{margin_of(row):.2f}) · {review_summary(features)}"
        )
        return label_id

    def _show(self, target: Any, label_id: int) -> None:
        """Select the object in the table and the labels layer; bring its slice and centroid into view."""
        table, layer = self._labels.table, self._labels.layer
        table.sort_by("uncertainty")
        table.select_label(label_id, notify=False)  # no table pick: it would jump to the first slice first
        layer.selected_label = label_id
        place = locate(target, label_id, self._slice_in_view())
        self._frame(place)
        if place is None:
            return
        world = np.asarray(layer.data_to_world((*place.slice_index, place.row, place.col)), float)
        dims = self._viewer.dims
        offset = dims.ndim - layer.ndim  # the layer's axes are the viewer's last ones
        for axis in range(layer.ndim):
            if offset + axis not in dims.displayed:
                dims.set_point(offset + axis, float(world[axis]))
        point = np.asarray(dims.point, float)
        point[offset:] = world
        self._viewer.scene.camera.center = tuple(float(point[axis]) for axis in dims.displayed)

    def _frame(self, place: Place | None) -> None:
        """Frame the object under review (on its slice) in the "ovsam review" layer; None: no frame."""
        labels = self._labels.layer
        frame = _layers.find(self._viewer, REVIEW_LAYER)
        if frame is not None and (labels is None or frame.ndim != labels.ndim):
            self._viewer.layers.remove(frame)  # made for another image
            frame = None
        if place is None or labels is None:
            if frame is not None:
                frame.data = []
            return
        if frame is None:
            with _layers.keep_selection(self._viewer):
                frame = self._viewer.add_shapes(
                    name=REVIEW_LAYER, ndim=labels.ndim, scale=labels.scale, translate=labels.translate,
                    edge_color="yellow", face_color="transparent", edge_width=FRAME_WIDTH, opacity=0.9,
                )  # fmt: skip
        frame.scale = labels.scale  # the labels' geometry, also after an image switch
        frame.translate = labels.translate
        half = FRAME_SIDE / 2
        around = (place.row - half, place.row + half, place.col - half, place.col + half)
        r0, r1, c0, c1 = place.box if place.box is not None else around
        # Pixel i covers [i - 0.5, i + 0.5) in napari's data coordinates.
        low = (r0 - 0.5 - FRAME_MARGIN, c0 - 0.5 - FRAME_MARGIN)
        high = (r1 - 0.5 + FRAME_MARGIN, c1 - 0.5 + FRAME_MARGIN)
        lead = list(place.slice_index)
        corners = [[*lead, low[0], low[1]], [*lead, low[0], high[1]], [*lead, high[0], high[1]],
                   [*lead, high[0], low[1]]]  # fmt: skip
        frame.data = []
        frame.add_rectangles(
            np.asarray(corners, float), edge_width=FRAME_WIDTH, edge_color="yellow", face_color="transparent"
        )

    # ------------------------------------------------------------------------------------------ helpers

    def _selected(self) -> int | None:
        label_id = self._labels.selected_label()
        if label_id is None:
            self._status.set_status("Select an object first (N: the most uncertain one).")
        return label_id

    def _features(self) -> Any:
        target = self._session.target
        return ensure_features(None if target is None else target.features)

    def _row(self, label_id: int) -> dict[str, Any]:
        target = self._session.target
        row = None if target is None else target.row(label_id)
        return row or {}

    def _show_summary(self, features: Any) -> None:
        self._summary.setText(f"{KEYS_HELP} · {review_summary(features)}")
