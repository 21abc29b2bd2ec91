"""Geometric augmentation of an image with its instance masks: flip, random resize, random crop, eval resize.

Conventions: images are numpy float32 (H, W, 3) in 0..255 on input (``to_model_rgb`` output) and torch float32
[3, h, w] on output; masks are bool (M, H, W) numpy in and out (the dataset converts them to torch at the
end); both are indexed (row, col) = (y, x). Boxes are XYXY in pixels with exclusive right/bottom edges:
pixel (row r, col c) covers [c, c + 1) x [r, r + 1), so a mask's box is (min col, min row, max col + 1,
max row + 1), as COCO's bbox.

Resizing follows ``F.interpolate``'s pixel-centre mapping (``align_corners=False``): output pixel i samples
the input at (i + 0.5) * in / out - 0.5. The image is interpolated bilinearly (antialiased when shrinking);
masks take the nearest input pixel by the same mapping, so image and masks stay aligned. The crop is taken
from the resized frame, but only the cropped rows and columns of the masks are ever computed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of an (H, W) image scaled by ``scale``, rounded half up as SAM's ``ResizeLongestSide``."""
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def longest_side_scale(height: int, width: int, size: int) -> float:
    """The scale that makes the longest side of an (H, W) image equal to ``size``."""
    return size / max(height, width)


def hflip(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an (H, W, C) image and (M, H, W) masks left-right (views, no copy)."""
    return image[:, ::-1], masks[:, :, ::-1]


def random_resize_scale(
    rng: np.random.Generator, height: int, width: int, size: int, ratio_range: tuple[float, float]
) -> float:
    """Scale of mmdet's ``RandomResize(scale=(size, size), ratio_range, keep_ratio=True)``.

    A ratio r is drawn uniformly from ``ratio_range`` and the longest side becomes ``size * r``.
    """
    ratio = rng.uniform(*ratio_range)
    return size * ratio / max(height, width)


def random_crop_window(
    rng: np.random.Generator, height: int, width: int, crop_size: int
) -> tuple[int, int, int, int]:
    """A random (top, left, h, w) window of at most ``crop_size`` x ``crop_size`` inside an (H, W) frame."""
    ch, cw = min(crop_size, height), min(crop_size, width)
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    return top, left, ch, cw


def _nearest_indices(start: int, length: int, in_size: int, out_size: int) -> np.ndarray:
    """Input indices sampled (nearest, pixel-centre mapping) by output pixels start..start+length-1."""
    out = (np.arange(start, start + length, dtype=np.float64) + 0.5) * (in_size / out_size)
    return np.clip(np.floor(out).astype(np.int64), 0, in_size - 1)


def resize_image(image: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a float32 (H, W, C) numpy image to a torch float32 [C, h, w] tensor (bilinear)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    if tuple(tensor.shape[1:]) == tuple(out_hw):
        return tensor.contiguous()
    shrink = out_hw[0] < tensor.shape[1] or out_hw[1] < tensor.shape[2]
    out = F.interpolate(tensor[None], size=out_hw, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return out.clamp_(0.0, 255.0)


def resize_crop(
    image: np.ndarray,
    masks: np.ndarray,
    scale: float,
    window: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Resize by ``scale`` then crop ``window`` = (top, left, h, w) of the resized frame (None: no crop).

    Args:
        image: float32 (H, W, 3) numpy image.
        masks: bool (M, H, W) numpy masks.
        scale: resized / original size.
        window: crop window in resized-frame pixels (row, col order).

    Returns:
        image float32 [3, h, w] torch tensor and masks bool (M, h, w) numpy array (numpy, because gathering,
        counting and bounding bool masks is several times faster there than in torch on the CPU).
    """
    height, width = image.shape[:2]
    rh, rw = resized_shape(height, width, scale)
    top, left, ch, cw = window if window is not None else (0, 0, rh, rw)
    resized = resize_image(image, (rh, rw))
    out_image = resized[:, top : top + ch, left : left + cw].contiguous()
    rows = _nearest_indices(top, ch, height, rh)
    cols = _nearest_indices(left, cw, width, rw)
    out_masks = np.asarray(masks, dtype=bool).take(rows, axis=1).take(cols, axis=2)
    return out_image, out_masks


def resize_longest_side(
    image: np.ndarray, masks: np.ndarray, size: int
) -> tuple[torch.Tensor, np.ndarray, float]:
    """Evaluation resize: longest side becomes ``size``, aspect ratio kept. Returns (image, masks, scale)."""
    scale = longest_side_scale(image.shape[0], image.shape[1], size)
    out_image, out_masks = resize_crop(image, masks, scale)
    return out_image, out_masks, scale


def masks_to_boxes(masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """XYXY boxes (exclusive right/bottom edges, pixels) of bool masks [M, h, w]; empty masks give zeros.

    Returns:
        float32 tensor [M, 4].
    """
    masks_np = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks, dtype=bool)
    num, h, w = masks_np.shape
    rows: np.ndarray = np.any(masks_np, axis=2)
    cols: np.ndarray = np.any(masks_np, axis=1)
    y0, y1 = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32).reshape(num, 4)
    boxes[~np.any(rows, axis=1)] = 0.0
    return torch.from_numpy(boxes)


def mask_areas(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pixel count of each bool mask [M, h, w] -> int64 numpy (M,)."""
    masks_np = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks, dtype=bool)
    return np.count_nonzero(masks_np.reshape(len(masks_np), -1), axis=1).astype(np.int64)
