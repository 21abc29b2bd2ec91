"""npe2 writers for a Labels layer: COCO JSON (RLE masks, class names, scores), label TIFF, label zarr.

Each writer has npe2's single-layer signature ``(path, data, attributes) -> list[str]``: ``data`` is the
Labels layer's array (a multiscale list is written at full resolution) and ``attributes`` the layer state, of
which ``features`` (the per-label table, see :mod:`napari_ovsam.features`), ``metadata['ovsam']``
(``vocabulary`` entries, ``image_name`` and ``examples``) and ``name`` are read. The COCO writers also write the
layer's examples (what it taught the model, see :mod:`napari_ovsam.examples`) next to the JSON file, as
``<name>.examples.safetensors``, and name that file in the JSON's ``ovsam`` section.

Writes are atomic: the file (or zarr directory) is written under a temporary name in the destination folder
and renamed over the destination at the end, so an interrupted save never leaves a half-written file. Stacks
are read and written one leading index at a time and never materialised.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ovsam_model.atomic import unique_temporary

from .coco_io import category_names, features_to_json, labels_to_coco
from .examples_files import layer_examples, write_side_file
from .features import ensure_features

MAX_TILE = 4096  # zarr chunks cover a whole slice up to this many pixels per side


def write_coco(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as COCO JSON with RLE masks (see :mod:`napari_ovsam.coco_io`).

    Returns:
        ``[path]`` (``.json`` appended when the path has no suffix).
    """
    return _write_coco(path, data, attributes, polygons=False)


def write_coco_polygons(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as COCO JSON with polygons, for tools that import only polygons (Label Studio;
    see docs/coco-interop.md). Holes are filled and corners cut by half a pixel; RLE (:func:`write_coco`)
    is exact.

    Returns:
        ``[path]`` (``.json`` appended when the path has no suffix).
    """
    return _write_coco(path, data, attributes, polygons=True)


def _write_coco(path: str, data: Any, attributes: dict, *, polygons: bool) -> list[str]:
    target = _with_suffix(path, ".json")
    labels = _checked_layer(data, attributes, "COCO JSON")
    ovsam = _ovsam_metadata(attributes)
    vocabulary = _vocabulary_entries(ovsam.get("vocabulary"))
    image_name = str(ovsam.get("image_name") or attributes.get("name") or Path(target).stem)
    try:
        coco = labels_to_coco(
            labels,
            attributes.get("features"),
            vocabulary_names=category_names(vocabulary),
            image_name=image_name,
            vocabulary=vocabulary,
            polygons=polygons,
        )
    except ValueError as err:
        raise ValueError(f"Cannot save {_layer_name(attributes)} as COCO JSON: {err}") from None
    examples = _write_examples(target, attributes)
    if examples is not None:
        coco["ovsam"]["examples"] = examples
    with _atomic_file(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(coco, handle)
    return [target]


def _write_examples(target: str, attributes: dict) -> dict[str, Any] | None:
    """The layer's examples (``metadata['ovsam']['examples']``, see :mod:`napari_ovsam.examples`) written
    next to the COCO file as ``<name>.examples.safetensors``; the entry naming them in the COCO file's
    ``ovsam`` section, or None when the layer has none."""
    book, problem = layer_examples(attributes.get("metadata"))
    if problem:  # the labels are saved all the same; what could not be read is not rewritten
        warnings.warn(f"{_layer_name(attributes)}: {problem}", stacklevel=3)
    if book is None:
        return None
    return write_side_file(book, ensure_features(attributes.get("features")), target)


def write_label_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as a zlib-compressed TIFF, features and vocabulary in its JSON description.

    Returns:
        ``[path]`` (``.tif`` appended when the path has no suffix).
    """
    import tifffile

    target = _with_suffix(path, ".tif")
    labels = _checked_layer(data, attributes, "a label TIFF")
    metadata = {"axes": _axes(labels.ndim), "ovsam": _provenance(attributes)}
    with _atomic_file(target) as tmp:
        tifffile.imwrite(
            tmp,
            _pages(labels) if labels.ndim > 2 else np.asarray(labels),
            shape=tuple(labels.shape),
            dtype=np.dtype(labels.dtype),
            photometric="minisblack",  # else a leading axis of 3 or 4 is taken for RGB(A) planes
            compression="zlib",
            metadata=metadata,
        )
    return [target]


def write_label_zarr(path: str, data: Any, attributes: dict) -> list[str]:
    """Write a Labels layer as a zarr v3 array (one chunk per slice), features and vocabulary in its attrs.

    The array is the root of the directory ``path`` (so ``zarr.open(path)`` is the labels); chunks are one
    slice each, tiled at :data:`MAX_TILE` pixels per side for very large slices.

    Returns:
        ``[path]`` (``.zarr`` appended when the path has no suffix).
    """
    import zarr

    target = Path(_with_suffix(path, ".zarr"))
    labels = _checked_layer(data, attributes, "a label zarr")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        chunks = (1,) * (labels.ndim - 2) + tuple(min(int(s), MAX_TILE) for s in labels.shape[-2:])
        array = zarr.create_array(
            store=str(tmp),
            shape=tuple(int(s) for s in labels.shape),
            dtype=np.dtype(labels.dtype),
            chunks=chunks,
            attributes={"ovsam": _provenance(attributes)},
            zarr_format=3,
            overwrite=True,
        )
        for index in np.ndindex(*labels.shape[:-2]):
            array[index] = np.asarray(labels[index])
        _replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [str(target)]


# ---------------------------------------------------------------------------------------------- helpers


def _with_suffix(path: str, suffix: str) -> str:
    path = os.fspath(path)
    return path if Path(path).suffix else path + suffix


def _full_resolution(data: Any) -> Any:
    """A Labels layer's array; level 0 of a multiscale list."""
    if isinstance(data, (list, tuple)) and data:
        return data[0]
    return data


def _layer_name(attributes: Any) -> str:
    name = attributes.get("name") if isinstance(attributes, dict) else None
    return repr(name) if name else "the labels layer"


def _checked_layer(data: Any, attributes: Any, what: str) -> Any:
    """The full-resolution labels array, after checking the layer; else ``ValueError("Cannot save ...")``."""
    labels = _full_resolution(data)
    problem = None
    if not isinstance(attributes, dict):
        problem = f"the layer attributes must be a dict, got {type(attributes).__name__}"
    elif not (hasattr(labels, "shape") and hasattr(labels, "dtype")):
        problem = f"labels must be an array, got {type(labels).__name__}"
    elif np.dtype(labels.dtype).kind not in "biu":
        problem = f"labels must be integers (a Labels layer), got dtype {np.dtype(labels.dtype)}"
    elif len(labels.shape) < 2:
        problem = f"labels must have at least 2 dimensions (H, W), got shape {tuple(labels.shape)}"
    elif 0 in tuple(labels.shape):
        problem = f"labels must not be empty, got shape {tuple(labels.shape)}"
    else:
        problem = _attribute_problem(attributes)
    if problem:
        raise ValueError(f"Cannot save {_layer_name(attributes)} as {what}: {problem}.")
    return labels


def _attribute_problem(attributes: dict) -> str | None:
    import pandas as pd  # the napari extra's dependency, as the features table

    features = attributes.get("features")
    if features is not None and not isinstance(features, (pd.DataFrame, dict)):
        return f"features must be a table (pandas DataFrame), got {type(features).__name__}"
    metadata = attributes.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"metadata must be a dict, got {type(metadata).__name__}"
    ovsam = (metadata or {}).get("ovsam")
    if ovsam is not None and not isinstance(ovsam, dict):
        return f"metadata['ovsam'] must be a dict, got {type(ovsam).__name__}"
    vocabulary = (ovsam or {}).get("vocabulary")
    if not (
        vocabulary is None or isinstance(vocabulary, (str, list, tuple)) or hasattr(vocabulary, "to_text")
    ):
        return f"the vocabulary must be text or a list of entries, got {type(vocabulary).__name__}"
    return None


def _ovsam_metadata(attributes: dict) -> dict:
    metadata = attributes.get("metadata") or {}
    ovsam = metadata.get("ovsam") or {}
    return dict(ovsam)


def _vocabulary_entries(vocabulary: Any) -> list[str]:
    """Vocabulary entries ("name, synonym, ...") from layer metadata: a list of entries, the text form (one
    entry per line, ``#`` comments) or an ``ovsam_model.vocabulary.Vocabulary``."""
    if vocabulary is None:
        return []
    if hasattr(vocabulary, "to_text"):
        vocabulary = vocabulary.to_text()
    if isinstance(vocabulary, str):
        lines = (line.strip() for line in vocabulary.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    return [str(entry) for entry in vocabulary]


def _provenance(attributes: dict) -> dict[str, Any]:
    """The JSON the TIFF and zarr writers keep next to the labels: vocabulary, image name, features."""
    ovsam = _ovsam_metadata(attributes)
    return {
        "vocabulary": _vocabulary_entries(ovsam.get("vocabulary")),
        "image_name": str(ovsam.get("image_name") or attributes.get("name") or ""),
        **features_to_json(ensure_features(attributes.get("features"))),
    }


def _axes(ndim: int) -> str:
    names = {2: "YX", 3: "ZYX", 4: "TZYX"}
    return names.get(ndim, "Q" * (ndim - 2) + "YX")


def _pages(labels: Any) -> Iterator[np.ndarray]:
    """Yield each (H, W) slice in C order of the leading axes: the TIFF pages, read one at a time."""
    for index in np.ndindex(*labels.shape[:-2]):
        yield np.asarray(labels[index])


class _atomic_file:
    """Context manager giving a temporary path next to ``target``, renamed onto it on success only."""

    def __init__(self, target: str) -> None:
        self.target = Path(target)

    def __enter__(self) -> str:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = str(
            unique_temporary(self.target)
        )  # the user's umask applies, unlike tempfile.mkstemp's 0600
        return self.tmp

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def _replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside first and deleted after."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.{os.getpid()}.old")
        os.replace(target, backup)
    try:
        os.replace(source, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        if backup.is_dir():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink()
