"""napari layer data for a COCO file: ours as one Labels layer, other tools' files with their images.

Files from CVAT (``annotations/instances_default.json`` beside ``images/``), Label Studio, Roboflow or COCO
itself hold several images, often of different sizes. :func:`coco_layer_data` gives:

- images of one size: one (N, H, W) labels stack (image-id order) and, where the images are found, one image
  stack beside it;
- images of different sizes: one image layer and one Labels layer per image (the first pair visible); above
  :data:`MAX_IMAGE_LAYERS` images, one stack padded to the largest size (top-left aligned, so pixel
  coordinates are the images' own).

Images are looked for by ``file_name`` (absolute, or relative to the JSON's folder, its ``images/`` folder and,
for a JSON inside ``annotations/``, the folder above it, its ``images/`` and, for COCO's
``instances_<split>.json``, ``<split>/``), then by the file name alone in the same folders. Missing images
give a warning that says where they were looked for; the labels open alone.

Labels are rasterised per image when first read (:class:`LazyLabelStack`): opening a file with thousands of
images rasterises only what napari shows. Small files (up to :data:`EAGER_PIXELS`) are rasterised at once into
plain numpy arrays. Every Labels layer has a features table with the category names (``class_name``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ovsam_model.data.stacks import load_image

from .coco_read import (
    annotation_features,
    category_table,
    check_coco,
    coco_to_labels,
    paint_annotations,
    with_label_ids,
)

LayerData = tuple[Any, dict[str, Any], str]
MAX_IMAGE_LAYERS = 32
EAGER_PIXELS = 2**25  # labels up to this many pixels are rasterised when the file is opened


def coco_layer_data(coco: dict[str, Any], path: str) -> list[LayerData]:
    """The layers of a COCO file (see the module docstring); ``ValueError`` for any malformed entry."""
    check_coco(coco, path)
    stem = Path(path).stem
    if coco.get("ovsam"):  # ours: the labels of one image or stack, exactly as written
        labels, features, metadata = coco_to_labels(coco, path)
        metadata["source_path"] = str(path)
        return [(labels, {"name": stem, "features": features, "metadata": {"ovsam": metadata}}, "labels")]
    images = sorted(coco["images"], key=lambda im: im["id"])
    folders = image_folders(path)
    files = {im["id"]: find_image(im, folders) for im in images}
    _warn_missing(path, images, files, folders)
    sizes = {(im["height"], im["width"]) for im in images}
    if len(sizes) == 1 or len(images) > MAX_IMAGE_LAYERS:
        return _stack_layers(coco, images, files, path, stem, padded=len(sizes) > 1)
    layers: list[LayerData] = []
    for k, image in enumerate(images):
        layers.extend(_image_layers(coco, image, files[image["id"]], path, visible=k == 0))
    return layers


def image_folders(path: str) -> list[Path]:
    """The folders searched for the images of the COCO file at ``path``, in order."""
    json_path = Path(path).resolve()
    here = json_path.parent
    folders = [here, here / "images"]
    if here.name == "annotations":
        folders += [here.parent, here.parent / "images"]
        if json_path.stem.startswith("instances_"):  # COCO: annotations/instances_val2017.json, val2017/
            folders.append(here.parent / json_path.stem.removeprefix("instances_"))
    return folders


def find_image(image: dict[str, Any], folders: list[Path]) -> Path | None:
    """The file of an image entry: by ``file_name`` (absolute or under a folder), then by its base name."""
    name = image.get("file_name")
    if not isinstance(name, str) or not name:
        return None
    given = Path(name)
    if given.is_absolute() and given.is_file():
        return given
    for candidate in [folder / given for folder in folders] + [folder / given.name for folder in folders]:
        if candidate.is_file():
            return candidate
    return None


def _warn_missing(path: str, images: list[dict], files: dict[int, Path | None], folders: list[Path]) -> None:
    missing = [im for im in images if files[im["id"]] is None]
    if not missing:
        return
    example = missing[0].get("file_name") or f"(image {missing[0]['id']} has no file_name)"
    looked = ", ".join(str(folder) for folder in folders)
    what = "the labels open alone" if len(missing) == len(images) else "those slices stay empty"
    warnings.warn(
        f"{path}: {len(missing)} of {len(images)} images not found (e.g. {example}); looked in {looked}. "
        f"Put the images there to see them; {what}.",
        stacklevel=3,
    )


def _metadata(coco: dict[str, Any], images: list[dict], path: str) -> dict[str, Any]:
    categories = category_table(coco)
    return {
        "vocabulary": [categories[k] for k in sorted(categories)],
        "image_name": images[0].get("file_name", "") if len(images) == 1 else Path(path).name,
        "categories": list(coco.get("categories", [])),
        "images": images,
        "source": "coco",
        "source_path": str(path),
    }


def _image_layers(
    coco: dict[str, Any], image: dict[str, Any], file: Path | None, path: str, *, visible: bool
) -> list[LayerData]:
    """An image layer (when its file is found) and a Labels layer for one image entry."""
    annotations = with_label_ids(
        [a for a in coco["annotations"] if a["image_id"] == image["id"]], np.dtype(np.int64), path
    )
    labels = np.zeros((image["height"], image["width"]), np.int64 if _large(annotations) else np.int32)
    paint_annotations(labels, annotations, {image["id"]: ()})
    name = Path(str(image.get("file_name") or f"image {image['id']}")).stem
    attributes = {
        "name": f"{name} labels",
        "features": annotation_features(annotations, category_table(coco)),
        "metadata": {"ovsam": _metadata(coco, [image], path)},
        "visible": visible,
    }
    layers: list[LayerData] = []
    if file is not None:
        layers.append((_read(file, image), {"name": name, "visible": visible}, "image"))
    return [*layers, (labels, attributes, "labels")]


def _stack_layers(
    coco: dict[str, Any],
    images: list[dict],
    files: dict[int, Path | None],
    path: str,
    stem: str,
    padded: bool,
) -> list[LayerData]:
    """One labels stack (and one image stack where images are found) over all image entries."""
    annotations = with_label_ids(coco["annotations"], np.dtype(np.int64), path)
    dtype = np.dtype(np.int64 if _large(annotations) else np.int32)
    labels = LazyLabelStack(images, annotations, dtype)
    data: Any = labels if labels.size > EAGER_PIXELS else np.asarray(labels)
    if len(images) == 1:
        data = data[0]
    attributes = {
        "name": stem,
        "features": annotation_features(annotations, category_table(coco)),
        "metadata": {"ovsam": {**_metadata(coco, images, path), "padded": padded}},
    }
    layers: list[LayerData] = []
    if any(f is not None for f in files.values()):
        stack = ImageStack(images, files, labels.shape[1:])
        image_data = stack if stack.size > EAGER_PIXELS else np.asarray(stack)
        layers.append((image_data if len(images) > 1 else image_data[0], {"name": f"{stem} images"}, "image"))
    return [*layers, (data, attributes, "labels")]


def _large(annotations: list[dict]) -> bool:
    return bool(annotations) and max(a["_label"] for a in annotations) > np.iinfo(np.int32).max


def _read(file: Path, image: dict[str, Any]) -> np.ndarray | None:
    """An image file as (H, W[, C]) numpy, or None (with a warning) when unreadable or of another size."""
    try:
        pixels = load_image(file, image.get("slice_index"))  # one slice of a stack, per entry
    except Exception as err:  # any reader error: the labels still open
        warnings.warn(f"Cannot read {file} ({err}); its labels open without it.", stacklevel=4)
        return None
    if pixels.shape[:2] != (image["height"], image["width"]):
        warnings.warn(
            f"{file} is {pixels.shape[0]} x {pixels.shape[1]} pixels, but its COCO entry says "
            f"{image['height']} x {image['width']}; not shown.",
            stacklevel=4,
        )
        return None
    return pixels


class _LazySlices:
    """An (N, *slice_shape) array-like whose slices are made on first access and then kept (edits stay).

    Indexing follows numpy: ``a[k]``, ``a[k, rows, cols]``, ``a[z_idx, y_idx, x_idx]`` (what napari paints
    with), slices over the first axis; ``np.asarray(a)`` makes every slice.
    """

    def __init__(self, count: int, slice_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = (count, *slice_shape)
        self.dtype = np.dtype(dtype)
        self._slices: dict[int, np.ndarray] = {}

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def _make(self, k: int) -> np.ndarray:
        raise NotImplementedError

    def slice(self, k: int) -> np.ndarray:
        """Slice ``k`` (made now if not yet)."""
        k = range(self.shape[0])[k]
        if k not in self._slices:
            self._slices[k] = self._make(k)
        return self._slices[k]

    @property
    def made(self) -> list[int]:
        """Indices of the slices made so far."""
        return sorted(self._slices)

    def _split(self, key: Any) -> tuple[Any, tuple]:
        key = key if isinstance(key, tuple) else (key,)
        return (key[0] if key else slice(None)), key[1:]

    def __getitem__(self, key: Any) -> Any:
        first, rest = self._split(key)
        if isinstance(first, (int, np.integer)):
            return self.slice(int(first))[rest]
        if isinstance(first, slice):
            first = np.arange(self.shape[0])[first]
        index = np.asarray(first)
        if rest and all(np.shape(r) == index.shape for r in rest):  # one index array per axis, as napari's
            out = np.zeros(index.shape, self.dtype)  # paint history reads: only the slices named are made
            for k in np.unique(index):
                where = index == k
                out[where] = self.slice(int(k))[tuple(np.asarray(r)[where] for r in rest)]
            return out
        stacked = np.zeros((index.size, *self.shape[1:]), self.dtype)
        for i, k in enumerate(index.ravel()):
            stacked[i] = self.slice(int(k))
        return stacked.reshape(*index.shape, *self.shape[1:])[(slice(None),) * index.ndim + rest]

    def __setitem__(self, key: Any, value: Any) -> None:
        first, rest = self._split(key)
        if isinstance(first, (int, np.integer)):
            self.slice(int(first))[rest] = value
            return
        if isinstance(first, slice):
            for i, k in enumerate(range(self.shape[0])[first]):
                self.slice(k)[rest] = value[i] if np.ndim(value) == len(self.shape) else value
            return
        first = np.asarray(first)  # fancy indexing: one index array per axis, as napari paints
        values = np.broadcast_to(np.asarray(value), first.shape)
        for k in np.unique(first):
            where = first == k
            self.slice(int(k))[tuple(np.asarray(r)[where] for r in rest)] = values[where]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.stack([self.slice(k) for k in range(self.shape[0])]) if self.shape[0] else None
        out = np.zeros(self.shape, self.dtype) if out is None else out
        return out if dtype is None else out.astype(dtype)


class LazyLabelStack(_LazySlices):
    """(N, H, W) labels of N COCO images, each rasterised from its annotations on first access.

    H, W is the largest image size; smaller images fill the top-left corner (their own pixel frame).
    Annotations must carry ``_label`` (:func:`napari_ovsam.coco_io.with_label_ids`) and be validated.
    """

    def __init__(self, images: list[dict[str, Any]], annotations: list[dict], dtype: np.dtype) -> None:
        height = max(im["height"] for im in images)
        width = max(im["width"] for im in images)
        super().__init__(len(images), (height, width), dtype)
        self.images = images
        self._annotations: dict[int, list[dict]] = {}
        for ann in annotations:
            self._annotations.setdefault(ann["image_id"], []).append(ann)

    def _make(self, k: int) -> np.ndarray:
        image = self.images[k]
        labels = np.zeros((image["height"], image["width"]), self.dtype)
        paint_annotations(labels, self._annotations.get(image["id"], []), {image["id"]: ()})
        full = np.zeros(self.shape[1:], self.dtype)
        full[: labels.shape[0], : labels.shape[1]] = labels
        return full


class ImageStack(_LazySlices):
    """(N, H, W[, C]) pixels of N COCO images, each read on first access; missing ones are zeros.

    The channels and dtype are those of the first image found; grey images are repeated to colour where that
    one is colour, colour ones averaged where it is grey.
    """

    def __init__(self, images: list[dict[str, Any]], files: dict[int, Path | None], size: tuple) -> None:
        first = next(im for im in images if files[im["id"]] is not None)
        sample = _read(files[first["id"]], first)  # type: ignore[arg-type]
        sample = np.zeros((*size, 3), np.uint8) if sample is None else sample
        super().__init__(len(images), (*size, *sample.shape[2:3]), sample.dtype)
        self.images, self.files = images, files

    def _make(self, k: int) -> np.ndarray:
        image = self.images[k]
        out = np.zeros(self.shape[1:], self.dtype)
        file = self.files[image["id"]]
        pixels = None if file is None else _read(file, image)
        if pixels is not None:
            pixels = _conform(pixels, out.ndim)
            rows, cols = pixels.shape[:2]
            if out.ndim == 3:
                channels = min(out.shape[2], pixels.shape[2])
                out[:rows, :cols, :channels] = pixels[..., :channels]
            else:
                out[:rows, :cols] = pixels
        return out


def _conform(pixels: np.ndarray, ndim: int) -> np.ndarray:
    """Grey (H, W) <-> colour (H, W, C) as the stack holds them (grey repeated, colour averaged)."""
    if pixels.ndim == 2 and ndim == 3:
        return np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim == 3 and ndim == 2:
        return pixels[..., : min(3, pixels.shape[2])].mean(axis=2)
    return pixels
