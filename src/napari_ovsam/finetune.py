"""What fine-tuning learns from in napari: the committed, named objects of every open image and stack.

No Qt. Each image layer's "ovsam labels" layer (``_layers.labels_layer_for``) holds its objects; their names
are the ``class_name`` column of the layer's ``features``: the view of the session's table that every
commit, rename and undo refreshes (``LabelsView.show``), with what the user typed into it, and the only
table of labels opened from a file. A 2D image is one training image; a stack gives one per slice that
holds a named object, and only those slices are read. Objects without a name, or named ``unknown``, are left out (by
``ovsam_model.finetune.build_finetune_set``, which counts them).

The fine-tuned model is saved next to the data: in the folder of the first image (or labels) layer opened
from a file (``default_output_folder``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ovsam_model.finetune import AnnotatedImage

from . import _layers
from .features import ensure_features
from .naming import UNKNOWN_CLASS


@dataclass
class AnnotatedLayer:
    """An image layer's data and its labels, as plain arrays (no napari).

    image: (..., H, W) or (..., H, W, C) with ``rgb`` (full resolution); labels: (..., H, W) integers with
    the same leading shape; features: its features table (``label_id``, ``class_name``, ...);
    contrast_limits: what maps the image to the model input (None: the percentile rule).
    """

    name: str
    image: Any
    labels: Any
    features: pd.DataFrame
    rgb: bool = False
    contrast_limits: tuple[float, float] | None = None


def class_names_of(features: pd.DataFrame) -> dict[int, str]:
    """label id -> class name of the named rows of a features table (no name, or ``unknown``: left out)."""
    table = ensure_features(features)
    names: dict[int, str] = {}
    for label_id, name in zip(table["label_id"].to_numpy(), table["class_name"].to_numpy()):
        text = "" if not isinstance(name, str) else " ".join(name.split())
        if text and text.lower() != UNKNOWN_CLASS:
            names[int(label_id)] = text
    return names


def _slices(layer: AnnotatedLayer, names: dict[int, str]) -> Iterable[tuple[tuple[int, ...], np.ndarray]]:
    """(slice index, labels of that slice) for every slice holding a named object (``()`` for 2D)."""
    leading = np.ndim(layer.labels) - 2
    named = np.array(sorted(names), dtype=np.int64)
    for index in np.ndindex(*np.shape(layer.labels)[:leading]):
        labels = np.asarray(layer.labels[index])
        if np.isin(labels, named).any():
            yield tuple(int(i) for i in index), labels


def annotated_images(layers: Sequence[AnnotatedLayer]) -> list[AnnotatedImage]:
    """Every 2D image (or stack slice) of ``layers`` that holds a named object, with its labels and names.

    Raises:
        ValueError: an image whose leading shape differs from its labels' (not the layer's labels).
    """
    out: list[AnnotatedImage] = []
    for layer in layers:
        names = class_names_of(layer.features)
        spatial = np.shape(layer.image)[: np.ndim(layer.image) - (1 if layer.rgb else 0)]
        if tuple(spatial) != tuple(np.shape(layer.labels)):
            raise ValueError(
                f"The labels of '{layer.name}' are {tuple(np.shape(layer.labels))} but the image is "
                f"{tuple(spatial)}: fine-tuning needs each image's own labels layer."
            )
        if not names:
            continue
        for index, labels in _slices(layer, names):
            where = f"{layer.name}, slice {index}" if index else layer.name
            image = np.asarray(layer.image[index] if index else layer.image)
            out.append(AnnotatedImage(image, labels, names, layer.contrast_limits, where))
    return out


def annotated_layers(viewer: Any, *, use_contrast: bool = False) -> list[AnnotatedLayer]:
    """Each image layer of ``viewer`` that has an "ovsam labels" layer, with its labels and their names;
    ``use_contrast``: the model input follows the image layers' contrast limits (else the percentiles)."""
    out = []
    for image in _layers.image_layers(viewer):
        labels = _layers.labels_layer_for(viewer, image)
        if labels is None:
            continue
        features = ensure_features(labels.features)
        low, high = image.contrast_limits
        data = image.data[0] if image.multiscale else image.data
        limits = (float(low), float(high)) if use_contrast else None
        out.append(AnnotatedLayer(image.name, data, labels.data, features, bool(image.rgb), limits))
    return out


def _source_folder(layer: Any) -> Path | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path:
        return None
    folder = Path(path).expanduser()
    folder = folder if folder.is_dir() and folder.suffix.lower() != ".zarr" else folder.parent
    return folder if folder.is_dir() else None


def default_output_folder(viewer: Any) -> Path | None:
    """The folder of the first image layer opened from a file (else of a labels layer), or None."""
    for layer in [
        *_layers.image_layers(viewer),
        *(x for x in viewer.layers if x.name.startswith(_layers.LABELS)),
    ]:
        folder = _source_folder(layer)
        if folder is not None:
            return folder
    return None
