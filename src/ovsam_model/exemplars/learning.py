"""Example features on a predictor's image, and naming with examples: what ``OVSAMPredictor`` delegates to.

An object's features (``feature_layout``): the naming head's region embedding of the mask's box, L2-normalised
(not the frozen CLIP's: its attention pooling costs as much as decoding the prompt on a full-size model, and
the text probabilities that ``predict`` fuses carry its opinion), then the shape features of
``exemplars.features`` on the mask and the image's own pixels (not the contrast-stretched model input: the
features are relative). The same function computes them for an example and for an object being named.

Masks: bool (N, H, W), (N, M, H, W) (the first mask of each object), (H, W) for one object, or a
``CompactMasks``; all in the original image's frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..prediction import CompactMasks, Prediction, crop_to_pixels, to_prediction
from ..prompts import normalize_prompts
from ..tiled import prompt_routes
from .classifier import ExemplarClassifier
from .features import SHAPE_FEATURE_NAMES, ObjectCrop, context_window, shape_features, to_grey
from .fusion import FusionSettings, class_union, fuse
from .store import ExampleSet, check_class_name

NO_PIXELS = (
    "The image's pixels are not known (its embedding was restored from a cache): pass them with "
    "predictor.set_image_embedding(state, image=image), or call predictor.set_image(image)."
)
Reader = Callable[[slice, slice], np.ndarray]


def feature_layout(model: Any) -> str:
    """The layout name of a model's example features: embedding widths and the shape features' version."""
    return f"head{model.config.embed_dim}+shape{len(SHAPE_FEATURE_NAMES)}:1"


def embedding_width(model: Any) -> int:
    return int(model.config.embed_dim)


def as_object_masks(masks: Any, size: tuple[int, int]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Each object's bool mask cropped to its bounding box, with the crop's (row, col) offset."""
    if isinstance(masks, CompactMasks):
        return [crop_to_pixels(crop[0], (int(r), int(c))) for crop, (r, c) in zip(masks.crops, masks.offsets)]
    dense = np.asarray(masks)
    if dense.ndim == 2:
        dense = dense[None]
    if dense.ndim == 4:
        dense = dense[:, 0]
    if dense.ndim != 3 or tuple(dense.shape[1:]) != tuple(size):
        raise ValueError(
            f"Masks of shape {dense.shape} do not fit the image of {size[1]}x{size[0]} pixels: give bool "
            "(N, H, W) masks made on this image (or a label image of its size)."
        )
    if dense.dtype != bool:
        raise ValueError(f"Masks must be bool, got {dense.dtype}: for a label image give it with its names.")
    return [crop_to_pixels(mask, (0, 0)) for mask in dense]


def object_features(predictor: Any, masks: Any, read: Reader) -> np.ndarray:
    """float32 (N, F) features of the masks on the predictor's image; ``read(rows, cols)`` gives its pixels."""
    return crop_features(predictor, as_object_masks(masks, predictor.original_size), read)


def crop_features(
    predictor: Any, objects: Sequence[tuple[np.ndarray, tuple[int, int]]], read: Reader
) -> np.ndarray:
    """``object_features`` of masks already cropped to their boxes (``as_object_masks``)."""
    size = predictor.original_size
    empty = [i for i, (crop, _) in enumerate(objects) if crop.size == 0]
    if empty:
        raise ValueError(
            f"Mask {empty[0]} (of {len(objects)}) is empty: an example needs at least one pixel of its object."
        )
    boxes = np.array(
        [[c, r, c + crop.shape[1], r + crop.shape[0]] for crop, (r, c) in objects], np.float32
    ).reshape(-1, 4)
    embeddings = region_embeddings(predictor, boxes)
    shapes = np.zeros((len(objects), len(SHAPE_FEATURE_NAMES)), np.float32)
    for i, (crop, (r, c)) in enumerate(objects):
        rows, cols = context_window((r, c, r + crop.shape[0], c + crop.shape[1]), size)
        window = np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool)
        window[
            r - rows.start : r - rows.start + crop.shape[0], c - cols.start : c - cols.start + crop.shape[1]
        ] = crop
        grey = to_grey(read(rows, cols))
        shapes[i] = shape_features(ObjectCrop(window, grey, (rows.start, cols.start)))
    return np.concatenate([embeddings, shapes], axis=1)


@torch.no_grad()
def region_embeddings(predictor: Any, boxes: np.ndarray) -> np.ndarray:
    """float32 (N, W) L2-normalised region embeddings of the naming head for XYXY boxes (original frame)."""
    model = predictor.model
    out = np.zeros((len(boxes), embedding_width(model)), np.float32)
    if len(boxes) == 0:
        return out
    if predictor.tiles is None:
        (h, w), (hi, wi) = predictor.original_size, predictor.input_size
        scale = np.array([wi / w, hi / h, wi / w, hi / h], np.float32)
        groups = [(predictor.features, np.arange(len(boxes)), boxes * scale)]
    else:
        routes = prompt_routes(predictor.tiles, normalize_prompts(None, None, boxes, predictor.original_size))
        by_window: dict[Any, list[int]] = {}
        for i, (_, window) in enumerate(routes):
            by_window.setdefault(window, []).append(i)
        groups = []
        for window, members in by_window.items():
            corners = window.to_input(boxes[members].reshape(-1, 2, 2)).reshape(-1, 4)
            groups.append((predictor.tiles.get(window, routes[members[0]][0]), np.array(members), corners))
    for features, rows, rois in groups:
        boxes_in = torch.as_tensor(rois, device=predictor.device)
        head, _ = model.region_embeddings(features, boxes_in, with_clip=False)
        out[rows] = F.normalize(head.float(), dim=-1).cpu().numpy()
    return out


def masks_and_names(masks: Any, class_names: Any) -> tuple[Any, list[str]]:
    """(bool (N, H, W) masks, N names) from masks with a name each, or from an integer label image with a
    mapping {label id: name} or a list of names for its non-zero ids in ascending order."""
    array = None if isinstance(masks, CompactMasks) else np.asarray(masks)
    if array is not None and array.ndim == 2 and array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"A label image must be of an integer dtype, got {array.dtype}.")
        ids = [int(i) for i in np.unique(array) if i != 0]
        if isinstance(class_names, Mapping):
            missing = [i for i in ids if i not in class_names]
            if missing:
                raise ValueError(
                    f"Label {missing[0]} has no class name: give a name for every non-zero label."
                )
            names = [class_names[i] for i in ids]
        else:
            names = list(class_names)
            if len(names) != len(ids):
                raise ValueError(
                    f"{len(names)} class names for {len(ids)} labels: give one per non-zero label id, in "
                    "ascending order, or a mapping {label id: name}."
                )
        return np.stack([array == i for i in ids]) if ids else np.zeros((0, *array.shape), bool), names
    names = [class_names] if isinstance(class_names, str) else list(class_names)
    count = len(masks) if array is None or array.ndim != 2 else 1
    if len(names) != count:
        raise ValueError(f"{len(names)} class names for {count} masks: give one class name per mask.")
    return masks, names


def check_new_names(names: Sequence[str]) -> list[str]:
    return [check_class_name(n) for n in names]


class ExemplarNaming:
    """A predictor's examples and the classifier fitted on them, refitted when the vocabulary changes.

    The classifier sees each object's features and, as one more block, the log of the text-based
    probabilities of its region embedding (``text_features``): the examples teach it where the text is right
    (a nucleus) and where it is fooled (a speckled body the text calls a nucleus).
    """

    def __init__(self, examples: ExampleSet, settings: FusionSettings) -> None:
        self.examples = examples
        self.settings = settings
        self._fitted: tuple[Any, ExemplarClassifier] | None = None

    def classifier(self, predictor: Any) -> ExemplarClassifier:
        key = predictor.text_embeddings
        if self._fitted is None or self._fitted[0] is not key:
            features = self.inputs(predictor, self.examples.features)
            classifier = ExemplarClassifier(
                features,
                self.examples.labels(),
                len(self.examples.classes),
                weights=self.weights(predictor.model, features.shape[1]),
                c=self.settings.c,
            )
            self._fitted = (key, classifier)
        return self._fitted[1]

    def weights(self, model: Any, width: int) -> np.ndarray:
        """Per-feature weights: embedding block, shape block (1), text block."""
        s = self.settings
        out = np.ones(width)
        out[: embedding_width(model)] = s.embedding_weight
        out[embedding_width(model) + len(SHAPE_FEATURE_NAMES) :] = s.text_feature_weight
        return out

    @staticmethod
    @torch.no_grad()
    def inputs(predictor: Any, features: np.ndarray) -> np.ndarray:
        """The classifier's input: the features, then log text probabilities (n, K + 1) of their embeddings."""
        model = predictor.model
        tensor = torch.tensor(np.asarray(features, np.float32), device=predictor.device)
        head = tensor[:, : embedding_width(model)]
        text = model.classify(head, None, predictor.text_embeddings, predictor.seen)
        return np.concatenate([features, np.log(text.float().cpu().numpy() + 1e-4)], axis=1)

    def probabilities(
        self, predictor: Any, text: np.ndarray, features: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(fused (n, C + 1) probabilities, unknown (n,), the C class names) from text (n, K + 1)."""
        classifier = self.classifier(predictor)
        inputs = self.inputs(predictor, features)
        vocabulary = list(predictor.vocabulary.names)
        classes = self.examples.classes
        fused, unknown = fuse(
            text,
            vocabulary,
            classifier.predict_proba(inputs),
            classes,
            classifier.novelty(inputs),
            self.settings,
        )
        return fused, unknown, class_union(vocabulary, classes)


def renamed(
    prediction: Prediction, fused: np.ndarray, unknown: np.ndarray, names: list[str], top_k: int
) -> Prediction:
    """``prediction`` with its classes ranked from the fused probabilities (n, C + 1)."""
    probs = torch.from_numpy(fused)
    out = to_prediction(
        prediction.masks,
        torch.from_numpy(prediction.iou),
        torch.from_numpy(prediction.low_res_logits),
        probs[:, :-1],
        names,
        top_k,
        background=probs[:, -1],
    )
    out.tiles, out.unknown = prediction.tiles, unknown
    return out
