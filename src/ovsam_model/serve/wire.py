"""What travels between ``RemotePredictor`` and the server: arrays, masks, predictions and instances.

Arrays travel as ``.npy`` bytes (``np.save``, read back with ``allow_pickle=False``: nothing a client sends can
run code), optionally zlib-compressed (``Content-Encoding: deflate``), with a cap on the decompressed size so a
small upload cannot unpack into gigabytes. Masks travel run-length encoded, each object's masks cropped to
their common bounding box: counts of alternating runs (zeros first) over the crop's (M, h, w) pixels in C order.
Everything else is JSON.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..prediction import CompactMasks, Prediction, crop_to_pixels

NPY = "application/x-npy"
DEFLATE = "deflate"
API = "/v1"


class WireError(ValueError):
    """A body that is not what the endpoint takes (the message says what is)."""


def encode_array(array: np.ndarray, *, compress: bool = True, level: int = 1) -> bytes:
    """``.npy`` bytes of an array (zlib-compressed when ``compress``; level 1 is fast on microscopy data)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    raw = buffer.getvalue()
    return zlib.compress(raw, level) if compress else raw


def decode_array(body: bytes, encoding: str | None, max_bytes: int) -> np.ndarray:
    """The array of an ``.npy`` body (``encoding``: None / "identity" or "deflate"), at most ``max_bytes``
    once decompressed; a ``WireError`` that says what was wrong otherwise."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == DEFLATE:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, max_bytes + 1)
        except zlib.error as error:
            raise WireError(
                f"The body is not zlib-compressed data ({error}): send np.save bytes, "
                "compressed with zlib.compress, with Content-Encoding: deflate."
            ) from None
        if len(raw) > max_bytes or inflater.unconsumed_tail:
            raise WireError(f"The image is larger than this server's limit of {max_bytes} bytes.")
    elif encoding == "identity":
        raw = body
    else:
        raise WireError(f"Content-Encoding {encoding!r} is not supported: use deflate (zlib) or none.")
    if len(raw) > max_bytes:
        raise WireError(f"The image is larger than this server's limit of {max_bytes} bytes.")
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise WireError(f"The body is not an .npy array ({error}): send the bytes np.save writes.") from None
    if not isinstance(array, np.ndarray):
        raise WireError("The body is not a single .npy array.")
    return array


def array_to_text(array: np.ndarray) -> str:
    """An array as base64 of compressed ``.npy`` bytes, for a JSON field."""
    return base64.b64encode(encode_array(array)).decode("ascii")


def array_from_text(text: str, max_bytes: int) -> np.ndarray:
    try:
        body = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise WireError("An array field is not base64 text.") from None
    return decode_array(body, DEFLATE, max_bytes)


# ---------------------------------------------------------------------------------------------- masks


def mask_runs(crop: np.ndarray) -> list[int]:
    """Alternating run lengths (zeros first) of a bool array's pixels in C order."""
    flat = np.ascontiguousarray(crop, bool).reshape(-1)
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(np.concatenate([[0], changes, [flat.size]]))
    out = lengths.tolist()
    return [0, *out] if flat[0] else out


def runs_mask(counts: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The bool array of ``shape`` whose C-order pixels have these alternating runs (zeros first)."""
    lengths = np.asarray(counts, np.int64).reshape(-1)
    size = int(np.prod(shape))
    if (lengths.size and (lengths.min() < 0 or int(lengths.sum()) != size)) or (not lengths.size and size):
        raise WireError(
            f"Mask runs sum to {int(lengths.sum())} pixels, not the {size} of a {tuple(shape)} crop."
        )
    values = (np.arange(lengths.size) % 2).astype(bool)
    return np.repeat(values, lengths).reshape(tuple(int(s) for s in shape))


def masks_to_wire(masks: np.ndarray | CompactMasks) -> list[dict[str, Any]]:
    """Each object's masks (dense (N, M, H, W) or ``CompactMasks``) as its crop's offset, shape and runs."""
    items = []
    pairs: Any
    if isinstance(masks, CompactMasks):
        pairs = zip(masks.crops, (tuple(int(v) for v in o) for o in masks.offsets))
    else:
        pairs = (_crop_object(np.asarray(m, bool)) for m in masks)
    for crop, offset in pairs:
        items.append({"offset": list(offset), "shape": list(crop.shape), "runs": mask_runs(crop)})
    return items


def _crop_object(masks: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(M, H, W) masks -> their crop to the bounding box of all M, and its (row, col) offset."""
    union, (r, c) = crop_to_pixels(np.asarray(masks.any(axis=0)))
    return masks[:, r : r + union.shape[0], c : c + union.shape[1]], (r, c)


def masks_from_wire(
    items: Sequence[dict[str, Any]], image_size: tuple[int, int], masks_per_object: int, dense: bool
) -> np.ndarray | CompactMasks:
    crops, offsets = [], []
    height, width = image_size
    for item in items:
        shape = [int(s) for s in item["shape"]]
        r, c = (int(v) for v in item["offset"])
        if len(shape) != 3 or r < 0 or c < 0 or r + shape[1] > height or c + shape[2] > width:
            raise WireError(f"A mask crop {shape} at ({r}, {c}) does not fit the {width}x{height} image.")
        crops.append(runs_mask(item["runs"], shape))
        offsets.append((r, c))
    compact = CompactMasks(crops, np.array(offsets, np.int64).reshape(-1, 2), image_size, masks_per_object)
    return compact.dense() if dense else compact


# ---------------------------------------------------------------------------------------------- results


def prediction_to_wire(prediction: Prediction) -> dict[str, Any]:
    """A ``Prediction`` as JSON (masks cropped and run-length encoded; no low-resolution logits)."""
    masks = prediction.masks
    return {
        "masks": masks_to_wire(masks),
        "masks_per_object": int(prediction.iou.shape[1]) if prediction.iou.ndim == 2 else 1,
        "iou": prediction.iou.tolist(),
        "class_ids": prediction.class_ids.tolist(),
        "class_names": list(prediction.class_names),
        "scores": prediction.scores.tolist(),
        "topk_ids": prediction.topk_ids.tolist(),
        "topk_scores": prediction.topk_scores.tolist(),
        "topk_names": [list(row) for row in prediction.topk_names],
        "tiles": None if prediction.tiles is None else prediction.tiles.tolist(),
        "background": None if prediction.background is None else prediction.background.tolist(),
        "unknown": None if prediction.unknown is None else prediction.unknown.tolist(),
        "compact": isinstance(masks, CompactMasks),
    }


def prediction_from_wire(data: dict[str, Any], image_size: tuple[int, int]) -> Prediction:
    """The ``Prediction`` of ``prediction_to_wire`` (dense masks unless the server's were compact, as the local
    predictor gives them); ``low_res_logits`` is an empty (N, M, 0, 0) array: logits stay on the server."""
    m = int(data["masks_per_object"])
    n = len(data["class_ids"])
    k = len(data["topk_ids"][0]) if n else 0
    masks = masks_from_wire(data["masks"], image_size, m, dense=not data["compact"])
    return Prediction(
        masks=masks,
        iou=np.asarray(data["iou"], np.float32).reshape(n, m),
        class_ids=np.asarray(data["class_ids"], np.int64).reshape(n),
        class_names=[str(s) for s in data["class_names"]],
        scores=np.asarray(data["scores"], np.float32).reshape(n),
        topk_ids=np.asarray(data["topk_ids"], np.int64).reshape(n, k),
        topk_scores=np.asarray(data["topk_scores"], np.float32).reshape(n, k),
        topk_names=[[str(s) for s in row] for row in data["topk_names"]],
        low_res_logits=np.zeros((n, m, 0, 0), np.float16),
        tiles=None if data["tiles"] is None else np.asarray(data["tiles"], np.int64).reshape(n),
        background=None if data["background"] is None else np.asarray(data["background"], np.float32),
        unknown=None if data["unknown"] is None else np.asarray(data["unknown"], bool),
    )


_INSTANCE_ARRAYS = ("ids", "boxes", "class_ids", "scores", "iou", "stability", "background", "confidence",
                    "topk_scores")  # fmt: skip


def instances_to_wire(instances: Any) -> dict[str, Any]:
    """An ``automatic.Instances`` as JSON: its label image compressed, the per-object fields as lists."""
    out: dict[str, Any] = {"labels": array_to_text(instances.labels)}
    for name in _INSTANCE_ARRAYS:
        out[name] = array_to_text(np.asarray(getattr(instances, name)))
    out["class_names"] = list(instances.class_names)
    out["topk_names"] = [list(row) for row in instances.topk_names]
    out["names"] = list(instances.names)
    return out


def instances_from_wire(data: dict[str, Any], max_bytes: int) -> Any:
    from ..automatic.instances import Instances

    arrays = {name: array_from_text(data[name], max_bytes) for name in ("labels", *_INSTANCE_ARRAYS)}
    return Instances(
        **arrays,
        class_names=[str(s) for s in data["class_names"]],
        topk_names=[[str(s) for s in row] for row in data["topk_names"]],
        names=[str(s) for s in data["names"]],
    )
