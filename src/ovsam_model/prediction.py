"""What a predictor answers: ``Prediction`` (numpy, original-image frame) and the step that builds it.

One owner for the result type and its assembly, shared by ``OVSAMPredictor`` and the SAM + CLIP baselines, so
that every predictor names, ranks and returns objects the same way. Masks come in one of two forms: dense bool
(N, M, H, W) arrays for images encoded whole, and ``CompactMasks`` (each object cropped to its bounding box,
with the crop's offset) for tiled images, where N full-size masks would not fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NO_IMAGE = "No image is set: call predictor.set_image(image) before predict()."
NO_VOCABULARY = "No vocabulary is set: call predictor.set_vocabulary(['class a', 'class b, synonym', ...])."
# The most bytes CompactMasks.dense() (and numpy conversion) allocates before refusing with advice.
MAX_DENSE_BYTES = 2 * 1024**3


class CompactMasks:
    """N objects' masks, each cropped to its bounding box: the mask form of tiled (large) images.

    crops: N bool arrays (M, h_i, w_i), M masks per object (best first), cropped to the bounding box of the
    object's M masks together (h_i = w_i = 0 when all are empty). offsets: int64 (N, 2), the (row, col) of
    each crop's top-left pixel in the full image. image_size: (H, W) of the full image. masks_per_object: M
    (default: that of the first crop; give it for N = 0).

    It behaves as a read-only bool (N, M, H, W) array where that is affordable: ``masks[i]`` and
    ``masks[i, m]`` build one object's full-size masks, ``np.asarray(masks)`` / ``masks[:, 0]`` /
    ``dense()`` build all of them (refused above ``MAX_DENSE_BYTES``). For large images use ``paint`` (a
    label image, numpy or zarr, written crop by crop) or the crops themselves.
    """

    dtype = np.dtype(bool)
    ndim = 4

    def __init__(
        self,
        crops: Sequence[np.ndarray],
        offsets: np.ndarray,
        image_size: tuple[int, int],
        masks_per_object: int | None = None,
    ) -> None:
        self.crops = list(crops)
        self.offsets = np.asarray(offsets, np.int64).reshape(len(self.crops), 2)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        default = int(self.crops[0].shape[0]) if self.crops else 1
        self.masks_per_object = default if masks_per_object is None else int(masks_per_object)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.crops), self.masks_per_object, *self.image_size)

    def __len__(self) -> int:
        return len(self.crops)

    def boxes(self) -> np.ndarray:
        """(N, 4) int64 XYXY pixel bounds of the crops (end exclusive)."""
        sizes = np.array([c.shape[1:] for c in self.crops], np.int64).reshape(-1, 2)
        return np.concatenate([self.offsets[:, ::-1], self.offsets[:, ::-1] + sizes[:, ::-1]], axis=1)

    def object(self, index: int) -> np.ndarray:
        """Full-size bool (M, H, W) masks of object ``index``."""
        out = np.zeros((self.masks_per_object, *self.image_size), bool)
        crop, (r, c) = self.crops[index], self.offsets[index]
        out[:, r : r + crop.shape[1], c : c + crop.shape[2]] = crop
        return out

    def dense(self) -> np.ndarray:
        """Bool (N, M, H, W) full-size masks; a ValueError when they need more than ``MAX_DENSE_BYTES``."""
        n, m, h, w = self.shape
        if n * m * h * w > MAX_DENSE_BYTES:
            raise ValueError(
                f"{n} full-size masks of this {w}x{h} image need {n * m * h * w / 1024**3:.1f} GiB: paint them "
                "into a label image with prediction.masks.paint(labels, ids), or use masks.crops and "
                "masks.offsets."
            )
        out = np.zeros(self.shape, bool)
        for i, (crop, (r, c)) in enumerate(zip(self.crops, self.offsets)):
            out[i, :, r : r + crop.shape[1], c : c + crop.shape[2]] = crop
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        dense = self.dense()
        return dense if dtype is None else dense.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            return self.object(int(first))[rest]
        return self.dense()[key]

    def paint(
        self, labels: Any, ids: Sequence[int], *, mask_index: int = 0, only_background: bool = False
    ) -> Any:
        """Write object i's mask ``mask_index`` into ``labels`` with value ``ids[i]``, in order (a later object
        paints over an earlier one), reading and writing only each crop's rectangle (numpy, zarr and other
        arrays that take slice assignment). only_background: leave pixels that are already non-zero.
        Returns ``labels``."""
        if tuple(labels.shape[-2:]) != self.image_size:
            raise ValueError(f"labels of shape {labels.shape} do not match the image size {self.image_size}.")
        if len(ids) != len(self.crops):
            raise ValueError(f"{len(ids)} ids for {len(self.crops)} objects: give one label id per object.")
        for value, crop, (r, c) in zip(ids, self.crops, self.offsets):
            mask = crop[mask_index]
            if not mask.any():
                continue
            where = (slice(r, r + mask.shape[0]), slice(c, c + mask.shape[1]))
            region = np.array(labels[where])
            paint = mask & (region == 0) if only_background else mask
            region[paint] = value
            labels[where] = region
        return labels


def crop_to_pixels(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, tuple[int, int]]:
    """A bool (h, w) mask as (a view of it cropped to its pixels, the crop's (row, col) offset: ``offset`` plus
    its first row and column); an empty mask as a 0 x 0 crop at ``offset``."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), bool), offset
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return crop, (offset[0] + int(rows[0]), offset[1] + int(cols[0]))


def paint_labels(
    masks: np.ndarray | CompactMasks,
    labels: Any,
    ids: Sequence[int],
    *,
    mask_index: int = 0,
    only_background: bool = False,
) -> Any:
    """Paint a ``Prediction``'s masks of either form into a label image (H, W) (numpy, zarr, ...) with
    ``ids[i]`` for object i, in order; see ``CompactMasks.paint``. Returns ``labels``."""
    if not isinstance(masks, CompactMasks):
        dense = np.asarray(masks, bool)
        if dense.ndim != 4:
            raise ValueError(f"masks must be (N, M, H, W) or CompactMasks, got shape {dense.shape}.")
        offsets = np.zeros((len(dense), 2), np.int64)
        masks = CompactMasks(list(dense), offsets, dense.shape[2:], dense.shape[1])
    return masks.paint(labels, ids, mask_index=mask_index, only_background=only_background)


@dataclass
class Prediction:
    """Result of ``OVSAMPredictor.predict`` for N prompts (objects).

    masks: bool (N, M, H, W) at the original image size; M = 3 with multimask output, else 1; sorted by
        predicted IoU, best first. iou: float32 (N, M). class_ids: int64 (N,) indices into the vocabulary;
        class_names: N names; scores: float32 (N,) probability of the named class; topk_ids / topk_scores:
        (N, k) best classes and their probabilities; topk_names: N lists of k names; low_res_logits: float16
        (N, M, 4g, 4g) mask logits in the padded model-input frame (g = embedding grid; float16 halves what
        thousands of prompts hold, and the masks are thresholded from the float32 logits before rounding).

    For a tiled image, masks is a ``CompactMasks`` (each object cropped to its box; it indexes like the dense
    array where that fits in memory; ``paint_labels`` paints either form into a label image), low_res_logits
    are in the padded input frame of the view each object was decoded on, and tiles gives that view: (N,) int64 grid
    tile index, -1 for a view made for the prompt (see ``ovsam_model.tiling.route``). Untiled: tiles is None.
    background: float32 (N,) probability of the background class (not an object: the model's objectness, where
    it was trained for it); None from baselines, which have no background class. unknown: bool (N,), with
    examples only (else None): the object fits no example and no class without examples is likely.
    class_ids index ``predictor.class_names`` (the vocabulary's names, then classes with examples only).
    """

    masks: np.ndarray | CompactMasks
    iou: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    topk_ids: np.ndarray
    topk_scores: np.ndarray
    topk_names: list[list[str]]
    low_res_logits: np.ndarray
    tiles: np.ndarray | None = None
    background: np.ndarray | None = None
    unknown: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.class_ids)

    def probabilities(self, k: int) -> np.ndarray:
        """float32 (N, k + 1) class probabilities, background last, of a prediction made with top_k = k (all
        its classes; zeros where it has no background)."""
        out = np.zeros((len(self), k + 1), np.float32)
        np.put_along_axis(out, self.topk_ids, self.topk_scores, axis=1)
        if self.background is not None:
            out[:, -1] = self.background
        return out


@dataclass
class TorchPrediction:
    """The torch form of ``Prediction`` (no masks at original size): see ``OVSAMPredictor.predict_torch``.

    low_res_logits: [N, M, 4g, 4g]; iou: [N, M]; probabilities: [N, K + 1], background last.
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    probabilities: torch.Tensor


def check_top_k(top_k: object) -> int:
    """``top_k`` (alternatives per object) as a whole number >= 1, else a ValueError; it is capped at K later."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1 (alternatives per object), got {top_k!r}.")
    return int(top_k)


def to_prediction(
    masks: np.ndarray | CompactMasks,
    iou: torch.Tensor,
    low_res_logits: torch.Tensor,
    class_probabilities: torch.Tensor,
    names: Sequence[str],
    top_k: int,
    background: torch.Tensor | None = None,
) -> Prediction:
    """Rank the classes of N objects and return them as a ``Prediction``.

    masks: bool (N, M, H, W) or their ``CompactMasks``; iou: [N, M]; low_res_logits: [N, M, 4g, 4g] (stored as float16);
    class_probabilities: [N, K] over the vocabulary's classes only (no background column); names: K class
    names; top_k: alternatives kept per object (at most K).
    """
    k = min(top_k, class_probabilities.shape[1])
    topk_scores, topk_ids = class_probabilities.topk(k, dim=1)
    ids = topk_ids.cpu().numpy().astype(np.int64)
    return Prediction(
        masks=masks,
        iou=iou.float().cpu().numpy(),
        class_ids=ids[:, 0].copy(),
        class_names=[names[i] for i in ids[:, 0]],
        scores=topk_scores[:, 0].float().cpu().numpy(),
        topk_ids=ids,
        topk_scores=topk_scores.float().cpu().numpy(),
        topk_names=[[names[i] for i in row] for row in ids],
        low_res_logits=low_res_logits.to(torch.float16).cpu().numpy(),
        background=None if background is None else background.float().cpu().numpy(),
    )
