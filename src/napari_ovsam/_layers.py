"""The napari layers the widget creates and reuses; napari but no Qt, so each helper is easy to test.

Layer names: "ovsam points" (Points, feature ``positive``: green positive, red negative), "ovsam boxes" (Shapes,
rectangles), "ovsam preview" (Labels of one slice; on a tiled slice, of the box around its objects only),
"ovsam labels" (Labels with a ``features`` table; one per image, later ones named "ovsam labels [<image>]";
zarr-backed for lazy or large images) and "ovsam names" (Points without symbols, drawing each object's
``class_name`` on its slice). Prompt and result layers get the image layer's dimensionality, scale
and translate, so their data coordinates are the image's pixel coordinates (``prompts`` relies on it).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from napari.layers import Image, Labels, Points, Shapes

from .frames import current_slice, empty_prompt_data
from .painting import mask_bbox
from .results import CroppedMasks, ObjectResults
from .targets import LabelsTarget

if TYPE_CHECKING:
    import napari

POINTS, BOXES, PREVIEW = "ovsam points", "ovsam boxes", "ovsam preview"
LABELS, NAMES = "ovsam labels", "ovsam names"
POSITIVE_COLORS = {True: "lime", False: "red"}
LAZY_PIXELS = 64 * 2**20  # images above this many pixels (or not numpy) get zarr-backed labels
LABELS_DTYPE = np.uint32


def image_layers(viewer: napari.Viewer) -> list[Image]:
    """The image layers of the viewer, in layer-list order."""
    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def find(viewer: napari.Viewer, name: str) -> Any:
    """The layer called ``name``, or None."""
    return viewer.layers[name] if name in viewer.layers else None


def geometry(image: Image) -> dict[str, Any]:
    """Keyword arguments giving a new layer the image's spatial frame."""
    return {"scale": tuple(image.scale), "translate": tuple(image.translate)}


def _full_shape(image: Image) -> tuple[int, ...]:
    """The shape of the image's data at full resolution (level 0 of a multiscale image)."""
    return tuple(image.data[0].shape if image.multiscale else image.data.shape)


def slice_of(viewer: napari.Viewer, image: Image) -> tuple[int, ...]:
    """The leading indices of the image slice in view (``()`` for a 2D image)."""
    shape = _full_shape(image)
    return current_slice(
        viewer.dims.point, image.ndim + int(image.rgb), image.rgb,
        scale=image.scale, translate=image.translate, shape=shape,
    )  # fmt: skip


def keep_selection(viewer: napari.Viewer) -> _KeepSelection:
    """``with keep_selection(viewer):`` adding layers does not change the active layer."""
    return _KeepSelection(viewer)


class _KeepSelection:
    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer

    def __enter__(self) -> None:
        self.active = self.viewer.layers.selection.active

    def __exit__(self, *exc: object) -> None:
        if self.active is not None and self.active in self.viewer.layers:
            self.viewer.layers.selection.active = self.active


# ---------------------------------------------------------------------------------------------- prompts


def ensure_prompt_layers(viewer: napari.Viewer, image: Image) -> tuple[Points, Shapes]:
    """The "ovsam points" and "ovsam boxes" layers, created with the image's ndim (recreated if it differs)."""
    ndim = image.ndim
    points, boxes = find(viewer, POINTS), find(viewer, BOXES)
    if points is None or points.ndim != ndim:
        if points is not None:
            viewer.layers.remove(points)
        points = viewer.add_points(
            empty_prompt_data(ndim), ndim=ndim, name=POINTS, size=max(6.0, _pixels(image) / 40),
            features={"positive": np.zeros(0, bool)}, feature_defaults={"positive": True},
            face_color="positive", face_color_cycle=POSITIVE_COLORS, border_color="white", **geometry(image),
        )  # fmt: skip
    if boxes is None or boxes.ndim != ndim:
        if boxes is not None:
            viewer.layers.remove(boxes)
        boxes = viewer.add_shapes(
            None, ndim=ndim, name=BOXES, shape_type="rectangle", face_color="transparent",
            edge_color="cyan", edge_width=max(1.0, _pixels(image) / 300), **geometry(image),
        )  # fmt: skip
        boxes.mode = "add_rectangle"
    for layer in (points, boxes):
        if not (
            np.array_equal(layer.scale, image.scale) and np.array_equal(layer.translate, image.translate)
        ):
            layer.scale, layer.translate = image.scale, image.translate
    return points, boxes


def _pixels(image: Image) -> float:
    return float(max(_spatial_shape(image)))


def prompt_arrays(
    points: Points, boxes: Shapes
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str]]:
    """(points data, positive flags, box vertices, shape types) in layer data coordinates (..., row, col)."""
    positive = points.features["positive"].to_numpy(bool) if len(points.data) else np.zeros(0, bool)
    return np.asarray(points.data), positive, list(boxes.data), list(boxes.shape_type)


def toggle_points(points: Points) -> str:
    """In select mode, flip the selected points between positive and negative; otherwise (napari selects each
    point it adds) flip the mode of the next points."""
    selected = sorted(points.selected_data)
    if selected and points.mode == "select":
        table = points.features.copy()
        table.loc[selected, "positive"] = ~table.loc[selected, "positive"].astype(bool)
        points.features = table
        return f"{len(selected)} point(s) toggled"
    positive = not bool(points.feature_defaults["positive"].iloc[0])
    points.feature_defaults = {"positive": positive}
    return f"next points are {'positive' if positive else 'negative'}"


def clear_prompts(points: Points | None, boxes: Shapes | None) -> None:
    if points is not None and len(points.data):
        points.data = empty_prompt_data(points.ndim)
    if boxes is not None and len(boxes.data):
        boxes.data = []


# ---------------------------------------------------------------------------------------------- results


def show_preview(viewer: napari.Viewer, image: Image, results: ObjectResults | None) -> Labels:
    """Draw the objects of a prediction in "ovsam preview": one slice, placed on its slice of the stack (for a
    large, tiled slice only the box around its objects)."""
    if results is not None and isinstance(results.masks, CroppedMasks):
        return _show_cropped_preview(viewer, image, results)
    height, width = _spatial_shape(image)
    lead = len(results.slice_index) if results is not None else image.ndim - 2
    shape = (1,) * lead + (height, width)
    index = results.slice_index if results is not None else (0,) * lead
    translate = np.asarray(image.translate, float) + np.r_[np.asarray(index, float), 0, 0] * np.asarray(
        image.scale
    )
    count = len(results) if results is not None else 0
    layer = find(viewer, PREVIEW)
    if (
        layer is not None
        and isinstance(layer.data, np.ndarray)
        and layer.data.shape == shape
        and np.iinfo(layer.data.dtype).max >= count
    ):
        # The same frame as last time (the live-preview case): change only the pixels that differ.
        if not (np.array_equal(layer.scale, image.scale) and np.array_equal(layer.translate, translate)):
            layer.scale, layer.translate = image.scale, translate
        _update_preview(layer, results)
        return layer
    # The smallest dtype that holds the objects' numbers: napari colours uint8 labels about twice as fast.
    data = np.zeros(shape, np.min_scalar_type(max(count, 255)))
    if results is not None:
        data[(0,) * lead] = results.label_image()
    layer = _put_preview(viewer, layer, data, image, translate)
    layer.metadata[_PREVIEW_BOX] = _masks_box(results)
    return layer


def _put_preview(
    viewer: napari.Viewer, layer: Labels | None, data: np.ndarray, image: Image, translate: Any
) -> Labels:
    """Show ``data`` in the preview layer (made, or remade for another dimensionality), below the names."""
    if layer is not None and layer.ndim != data.ndim:
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        with keep_selection(viewer):
            layer = viewer.add_labels(
                data, name=PREVIEW, opacity=0.55, scale=image.scale, translate=translate
            )
        if find(viewer, NAMES) is not None:
            _to_top(viewer, find(viewer, NAMES))
    else:
        layer.data, layer.scale, layer.translate = data, image.scale, translate
    return layer


_PREVIEW_BOX = "ovsam_preview_box"  # (r0, r1, c0, c1) around the preview's objects, or None


def _show_cropped_preview(viewer: napari.Viewer, image: Image, results: ObjectResults) -> Labels:
    """The preview of a tiled slice's cropped masks: a labels layer of the box around the objects only,
    translated to its place (a full-size preview of a 16k x 16k slice would take 256 MB)."""
    assert isinstance(results.masks, CroppedMasks)
    r0, r1, c0, c1 = results.masks.bbox() or (0, 1, 0, 1)
    lead = len(results.slice_index)
    data = np.zeros((1,) * lead + (r1 - r0, c1 - c0), np.min_scalar_type(max(len(results), 255)))
    data[(0,) * lead] = results.label_image((slice(r0, r1), slice(c0, c1)), data.dtype)
    offset = np.r_[np.asarray(results.slice_index, float), r0, c0] * np.asarray(image.scale)
    translate = np.asarray(image.translate, float) + offset
    layer = _put_preview(viewer, find(viewer, PREVIEW), data, image, translate)
    layer.metadata[_PREVIEW_BOX] = (0, r1 - r0, 0, c1 - c0)  # in the layer's own pixels
    return layer


def clear_preview(viewer: napari.Viewer) -> None:
    """Empty "ovsam preview" (the layer stays, ready for the next live update)."""
    layer = find(viewer, PREVIEW)
    if layer is not None:
        layer.data = np.zeros_like(layer.data)
        layer.metadata[_PREVIEW_BOX] = None


def _masks_box(results: ObjectResults | None) -> tuple[int, int, int, int] | None:
    """The (r0, r1, c0, c1) box around all objects' pixels, None when there are none."""
    if results is None or not len(results.masks):
        return None
    if isinstance(results.masks, CroppedMasks):
        return results.masks.bbox()
    return mask_bbox(results.masks)


def _update_preview(layer: Labels, results: ObjectResults | None) -> None:
    """Write the pixels of the preview that change, inside the old and new objects' boxes only.

    ``Labels.data_setitem`` re-textures just those pixels' region (a full refresh recolours the whole slice:
    3-7 ms for 1024x1024), unless most of the slice changes. It also records napari's paint history, which
    the preview does not need: that is dropped, so the history cannot grow with every live update.
    """
    old_box, new_box = layer.metadata.get(_PREVIEW_BOX), _masks_box(results)
    boxes = [b for b in (old_box, new_box) if b is not None]
    layer.metadata[_PREVIEW_BOX] = new_box
    if not boxes:
        return
    r0, r1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    c0, c1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    lead = layer.data.ndim - 2
    window = (slice(r0, r1), slice(c0, c1))
    if results is not None:
        new = results.label_image(window, layer.data.dtype)
    else:
        new = np.zeros((r1 - r0, c1 - c0), layer.data.dtype)
    region = (0,) * lead + window
    rows, cols = np.nonzero(layer.data[region] != new)
    if not rows.size:
        return
    if rows.size > layer.data.size // 8:  # most of the slice changes: one full redraw is cheaper
        layer.data[region] = new
        layer.refresh()
        return
    lead_index = tuple(np.zeros_like(rows) for _ in range(lead))
    layer.data_setitem((*lead_index, rows + r0, cols + c0), new[rows, cols])
    for history in (getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)):
        if history is not None:
            history.clear()


def _spatial_shape(image: Image) -> tuple[int, int]:
    shape = _full_shape(image)
    spatial = shape[-3:-1] if image.rgb else shape[-2:]
    return int(spatial[0]), int(spatial[1])


def new_labels_array(image: Image, store_dir: str | Path | None = None) -> Any:
    """A zero labels array for an image: numpy for in-memory images, else a zarr array (1024-pixel tiles per slice)
    in ``store_dir`` (default: a temporary folder, removed when Python exits), written slice by slice and
    never held in memory."""
    data = image.data[0] if image.multiscale else image.data
    shape = _labels_shape(image)
    if isinstance(data, np.ndarray) and np.prod(shape) <= LAZY_PIXELS:
        return np.zeros(shape, LABELS_DTYPE)
    if store_dir:
        folder = Path(store_dir)
    else:  # like in-memory labels, these last as long as the session: save them with a writer
        folder = Path(tempfile.mkdtemp(prefix="ovsam-labels-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # 1024-pixel tiles: a commit rewrites only the tiles its objects touch, not the whole slice
    chunks = (1,) * (len(shape) - 2) + tuple(min(s, 1024) for s in shape[-2:])
    path = folder / f"{_safe(image.name)}.labels.zarr"
    return zarr.create_array(store=str(path), shape=shape, dtype=LABELS_DTYPE, chunks=chunks, fill_value=0)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


def labels_layer_for(viewer: napari.Viewer, image: Image) -> Labels | None:
    """The labels layer that annotates ``image`` (by ``metadata['ovsam']['image_name']`` and shape), if any:
    e.g. ours from before, or one read back from a COCO file, to go on annotating."""
    shape = _labels_shape(image)
    for layer in viewer.layers:
        ovsam = layer.metadata.get("ovsam", {}) if isinstance(layer, Labels) else {}
        if ovsam.get("image_name") == image.name and tuple(layer.data.shape) == shape:
            return layer
    return None


def _labels_shape(image: Image) -> tuple[int, ...]:
    shape = _full_shape(image)
    return tuple(int(s) for s in (shape[:-1] if image.rgb else shape))


def add_labels_layer(viewer: napari.Viewer, image: Image, data: Any, vocabulary: Iterable[str]) -> Labels:
    """Add the labels layer of an image ("ovsam labels", or "ovsam labels [<image>]" if that is taken)."""
    name = LABELS if LABELS not in viewer.layers else f"{LABELS} [{image.name}]"
    metadata = {"ovsam": {"image_name": image.name, "vocabulary": list(vocabulary)}}
    with keep_selection(viewer):
        return viewer.add_labels(data, name=name, metadata=metadata, opacity=0.5, **geometry(image))


def show_names(viewer: napari.Viewer, labels: Labels, target: LabelsTarget) -> Points:
    """Draw each object's class name at its anchors (one text per object and slice) in "ovsam names"."""
    names = dict(zip(target.features["index"].astype(int), target.features["class_name"].astype(str)))
    keys = [key for key in target.anchors if key[0] in names]
    data = np.array([[*s, *target.anchors[(i, s)]] for i, s in keys], float).reshape(-1, labels.ndim)
    features = {"label_id": [i for i, _ in keys], "class_name": [names[i] for i, _ in keys]}
    layer = find(viewer, NAMES)
    if layer is None or layer.ndim != labels.ndim:
        if layer is not None:
            viewer.layers.remove(layer)
        text = {"string": "{class_name}", "color": "yellow", "size": 11, "anchor": "center"}
        with keep_selection(viewer):
            layer = viewer.add_points(
                data, ndim=labels.ndim, name=NAMES, features=features, text=text, size=1,
                face_color="transparent", border_width=0, scale=labels.scale, translate=labels.translate,
            )  # fmt: skip
        layer.editable = False
        _to_top(viewer, layer)
        return layer
    layer.scale, layer.translate = labels.scale, labels.translate
    layer.data = data
    layer.features = features
    _to_top(viewer, layer)
    return layer


def _to_top(viewer: napari.Viewer, layer: Any) -> None:
    """Keep the names above the preview and the labels they describe."""
    index = viewer.layers.index(layer)
    if index != len(viewer.layers) - 1:
        viewer.layers.move(index, len(viewer.layers))
