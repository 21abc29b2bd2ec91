"""A user's annotations as a fine-tuning set: images, label images and a class name per label, split into the
objects that train and the held-out objects that score the model before and after.

Frames: label images are (H, W) integer arrays in (row, col) pixels, 0 = background, one id per object; an
image is (H, W) or (H, W, C) of any dtype, mapped to the model's 0..255 RGB input by the contrast rule of
``ovsam_model.image`` (with the given contrast limits, as the predictor does). Objects whose label has no
class name, an empty name or the name ``unknown`` are skipped (hand-painted labels the user never named),
as are ids without pixels.

The split is per class, seeded: ``holdout_fraction`` of each class's objects (at least one) are held out; the
training images keep only the training objects. The minimum counts (``MIN_PER_CLASS``, ``MIN_OBJECTS``) are
checked before anything is written or trained; see their comments for why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..image import check_contrast_limits, to_model_rgb
from ..rle import label_rles
from ..tiling import resolve_tiling, tile_grid
from ..vocabulary import Vocabulary

# With the default 20 % held out, 5 objects of a class leave 4 to train on and 1 to score: fewer than 4 is
# below where even the exemplar classifier names reliably (5 examples per class: 65-76 % in the issue's
# measurements), and a class with no held-out object could not be scored at all.
MIN_PER_CLASS = 5
# At least 20 objects in all, so that the held-out score rests on 4 or more objects (one object is 25
# points of accuracy there) and a training batch of prompts has objects to draw from.
MIN_OBJECTS = 20
DEFAULT_HOLDOUT = 0.2
UNNAMED = ("", "unknown")  # class names that do not name a class (``napari_ovsam.naming.UNKNOWN_CLASS``)


@dataclass
class AnnotatedImage:
    """One annotated 2D image (a 2D layer, or one slice of a stack).

    image: (H, W) or (H, W, C) array, any dtype. labels: (H, W) integer array, 0 = background.
    class_names: label id -> class name (ids missing here are not used). contrast_limits: (low, high) in the
    image's units (None: the contrast rule's percentiles). source: what it is, for messages ("cells.tif, z 3").
    """

    image: np.ndarray
    labels: np.ndarray
    class_names: Mapping[int, str]
    contrast_limits: tuple[float, float] | None = None
    source: str = ""


@dataclass(frozen=True)
class ObjectRef:
    """One object of the set: which image, which label id, which class (index into ``FinetuneSet.classes``)."""

    image: int
    label_id: int
    label: int


@dataclass
class FinetuneSet:
    """The objects to train on and to score, over ``images`` (see the module docstring).

    classes: the fine-tuned model's vocabulary (the base vocabulary's classes first, then the new ones);
    new_classes: names of ``classes`` the base vocabulary did not have; train / heldout: the split objects;
    skipped: objects left out, by reason ("unnamed", "empty").
    """

    images: list[AnnotatedImage]
    classes: Vocabulary
    new_classes: list[str]
    train: list[ObjectRef]
    heldout: list[ObjectRef]
    skipped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Objects per class (training + held-out), for classes that have any, in vocabulary order."""
        totals = np.bincount([o.label for o in self.train + self.heldout], minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes.names, totals) if n}

    def summary(self) -> str:
        """One line: how many objects of how many classes, how many held out, what was skipped."""
        counts = ", ".join(f"{name} {n}" for name, n in self.counts().items())
        skipped = "".join(f"; {n} {why} skipped" for why, n in self.skipped.items() if n)
        return (
            f"{len(self.train) + len(self.heldout)} objects on {len(self.images)} images ({counts}); "
            f"{len(self.heldout)} held out{skipped}"
        )


def _check_image(item: AnnotatedImage, where: str) -> None:
    labels = np.asarray(item.labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(
            f"{where}: the labels must be a 2D integer image (H, W), got {labels.dtype} {labels.shape}."
        )
    shape = np.shape(item.image)
    if len(shape) not in (2, 3) or tuple(shape[:2]) != labels.shape:
        raise ValueError(
            f"{where}: the image is {tuple(shape)} but its labels are {labels.shape}: give each image its "
            "own label image of the same height and width."
        )
    if item.contrast_limits is not None:
        check_contrast_limits(item.contrast_limits)


def _entry_of(vocabulary: Vocabulary | None) -> dict[str, str]:
    """Lower-cased class name -> the entry's text ("name, synonym, ...") of a base vocabulary."""
    if vocabulary is None:
        return {}
    return {s[0].lower(): ", ".join(s) for s in vocabulary.synonyms}


def _clean_name(name: object) -> str:
    return " ".join(str(name).split()) if name is not None and name == name else ""  # NaN -> ""


def _objects(
    images: Sequence[AnnotatedImage],
) -> tuple[list[tuple[int, int, str]], dict[str, int]]:
    """(image index, label id, class name) of every usable object, and the skipped counts."""
    found: list[tuple[int, int, str]] = []
    skipped = {"unnamed": 0, "empty": 0}
    for index, item in enumerate(images):
        where = item.source or f"image {index + 1}"
        _check_image(item, where)
        present = {int(i) for i in np.unique(np.asarray(item.labels)) if i != 0}
        names = {int(k): _clean_name(v) for k, v in item.class_names.items()}
        for label_id in sorted(present):
            name = names.get(label_id, "")
            if name.lower() in UNNAMED:
                skipped["unnamed"] += 1
            else:
                found.append((index, label_id, name))
        skipped["empty"] += sum(1 for k, v in names.items() if k not in present and v.lower() not in UNNAMED)
    return found, skipped


def _vocabulary(names: Sequence[str], base: Vocabulary | None) -> tuple[Vocabulary, list[str]]:
    """The base vocabulary's entries, then each new name once (first-seen order, case-insensitive)."""
    entries = _entry_of(base)
    new: list[str] = []
    for name in names:
        if name.lower() not in entries and name.lower() not in {n.lower() for n in new}:
            new.append(name)
    for name in new:
        if "," in name:
            raise ValueError(
                f"Class name {name!r} holds a comma, which separates synonyms in a vocabulary: rename the "
                "objects (e.g. 'mitotic cell'), or add the class with its synonyms to the vocabulary first."
            )
    return Vocabulary([*entries.values(), *new]), new


def _check_counts(per_class: Mapping[str, int], min_per_class: int, min_objects: int) -> None:
    total = sum(per_class.values())
    short = {name: n for name, n in per_class.items() if n < min_per_class}
    if total >= min_objects and not short:
        return
    problems = []
    if short:
        listed = ", ".join(f"'{name}' has {n} (commit {min_per_class - n} more)" for name, n in short.items())
        problems.append(f"at least {min_per_class} named objects of each class: {listed}")
    if total < min_objects:
        problems.append(f"at least {min_objects} named objects in all: there are {total}")
    raise ValueError(
        "Too few objects to fine-tune on: it needs " + "; and ".join(problems) + ". Annotate and commit more "
        "objects (or rename the rare class), then fine-tune again."
    )


def _split(
    objects: Sequence[ObjectRef], num_classes: int, fraction: float, seed: int
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    rng = np.random.default_rng(seed)
    train: list[ObjectRef] = []
    heldout: list[ObjectRef] = []
    for label in range(num_classes):
        members = [o for o in objects if o.label == label]
        if not members:
            continue
        order = rng.permutation(len(members))
        count = max(1, math.floor(fraction * len(members) + 0.5)) if fraction > 0 else 0
        held = set(order[:count].tolist())
        for i, obj in enumerate(members):
            (heldout if i in held else train).append(obj)
    return train, heldout


def build_finetune_set(
    images: Sequence[AnnotatedImage],
    *,
    base_vocabulary: Vocabulary | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    min_objects: int = MIN_OBJECTS,
) -> FinetuneSet:
    """Check the annotations and split them (see the module docstring).

    base_vocabulary: the vocabulary of the model being fine-tuned: its classes stay in the fine-tuned
    vocabulary (with their synonyms), and labelled names that match one (case-insensitively) are that class.

    Raises:
        ValueError: no image; an image and its labels of different sizes; a class name with a comma; fewer
            objects than ``min_per_class`` of some class or ``min_objects`` in all (the message says how many
            more of which class).
    """
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
    if not images:
        raise ValueError("There are no annotated images: commit some named objects first.")
    found, skipped = _objects(images)
    vocabulary, new = _vocabulary([name for _, _, name in found], base_vocabulary)
    lowered = [n.lower() for n in vocabulary.names]
    objects = [ObjectRef(i, label_id, lowered.index(name.lower())) for i, label_id, name in found]
    per_class: dict[str, int] = {}
    for obj in objects:
        per_class[vocabulary.names[obj.label]] = per_class.get(vocabulary.names[obj.label], 0) + 1
    _check_counts(per_class, min_per_class, min_objects)
    train, heldout = _split(objects, len(vocabulary), holdout_fraction, seed)
    return FinetuneSet(list(images), vocabulary, new, train, heldout, skipped)


# ------------------------------------------------------------------------------------------------ writing
def model_input(item: AnnotatedImage) -> np.ndarray:
    """The image as the model sees it: uint8 (H, W, 3) by the contrast rule with its contrast limits."""
    return np.round(to_model_rgb(np.asarray(item.image), item.contrast_limits)).astype(np.uint8)


def object_masks(
    data: FinetuneSet, objects: Sequence[ObjectRef], image: int
) -> tuple[np.ndarray, np.ndarray]:
    """bool (M, H, W) masks and int64 (M,) class labels of ``objects`` that lie on image ``image``."""
    mine = [o for o in objects if o.image == image]
    labels = np.asarray(data.images[image].labels)
    masks = np.stack([labels == o.label_id for o in mine]) if mine else np.zeros((0, *labels.shape), bool)
    return masks, np.array([o.label for o in mine], dtype=np.int64)


def training_windows(shape: tuple[int, int], model_size: int | None) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) crops an image of (H, W) is trained on: the whole image, or, when the predictor tiles
    it (``tiling="auto"``: longer side above ``AUTO_FACTOR`` model inputs), its tile grid, so that objects
    are trained on at the native resolution they are segmented at."""
    spec = resolve_tiling("auto", model_size) if model_size else None
    if spec is None or max(shape) <= spec.min_factor * model_size:  # type: ignore[operator]
        return [(0, 0, *shape)]
    return [window.bounds for window in tile_grid(shape, spec)]


def _assign(labels: np.ndarray, ids: list[int], windows: list[tuple[int, int, int, int]]) -> dict[int, int]:
    """label id -> the window its box lies in with the most margin (clipped to it when none holds it)."""
    out = {}
    for label_id in ids:
        rows, cols = np.nonzero(labels == label_id)
        y0, x0, y1, x1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
        margins = [min(y0 - a, x0 - b, c - y1, d - x1) for a, b, c, d in windows]
        out[label_id] = int(np.argmax(margins))
    return out


def write_coco(data: FinetuneSet, folder: Path, *, repeats: int = 1, model_size: int | None = None) -> Path:
    """Write the training objects as a COCO instance file ``folder/train.json`` with the model inputs as
    ``folder/images/<i>_<crop>.npy`` (uint8 RGB); the categories are ``data.classes`` (entry text, synonyms
    included). Images the predictor tiles for a model of ``model_size`` are cut into its tiles, each object
    going to the tile that holds it best (``training_windows``). Each crop is listed ``repeats`` times (an
    epoch then holds more steps: the augmentation differs per listing). Returns the JSON path."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": k + 1, "name": ", ".join(s), "supercategory": "object"}
        for k, s in enumerate(data.classes.synonyms)
    ]
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": categories}
    label_of = {(o.image, o.label_id): o.label for o in data.train}
    for index, item in enumerate(data.images):
        labels = np.asarray(item.labels)
        ids = sorted(lid for (i, lid) in label_of if i == index)
        if not ids:
            continue
        windows = training_windows(labels.shape, model_size)
        where = _assign(labels, ids, windows)
        pixels = model_input(item)
        for w, (y0, x0, y1, x1) in enumerate(windows):
            mine = [lid for lid in ids if where[lid] == w]
            crop = labels[y0:y1, x0:x1]
            rles = label_rles(np.where(np.isin(crop, mine), crop, 0)) if mine else []
            if not rles:
                continue
            name = f"images/{index}_{w}.npy"
            np.save(folder / name, np.ascontiguousarray(pixels[y0:y1, x0:x1]))
            for _ in range(repeats):
                image_id = len(coco["images"]) + 1
                coco["images"].append(
                    {"id": image_id, "file_name": name, "height": y1 - y0, "width": x1 - x0}
                )
                for label_id, rle, area, box in rles:
                    coco["annotations"].append(
                        {"id": len(coco["annotations"]) + 1, "image_id": image_id,
                         "category_id": label_of[(index, label_id)] + 1, "segmentation": rle, "area": area,
                         "bbox": box, "iscrowd": 0}
                    )  # fmt: skip
    path = folder / "train.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path
