"""Training prompt sampling, as OV-SAM's ``OVSAMDataPreprocessor`` (``use_point_det=True``, 40 proposals).

Per image, exactly ``num_prompts`` prompts: the instance list is tiled (repeated) and truncated to
``num_prompts``, shuffled, and the first ``round(num_prompts * box_fraction)`` become box prompts (the
target's box, optionally jittered) while the rest become positive point prompts drawn uniformly from the
target mask's pixels (each duplicate draws its own points). Points are (x, y) = (col, row) pixel indices as
floats (SAM's prompt encoder adds the half-pixel shift itself); boxes are XYXY pixels with exclusive
right/bottom edges.
"""

from __future__ import annotations

import numpy as np
import torch


def tiled_targets(num_instances: int, num_prompts: int, rng: np.random.Generator) -> np.ndarray:
    """Instance indices tiled to ``num_prompts`` and shuffled -> int64 (num_prompts,)."""
    if num_instances <= 0:
        raise ValueError("Cannot sample prompts for an image without instances.")
    reps = -(-num_prompts // num_instances)
    targets = np.tile(np.arange(num_instances, dtype=np.int64), reps)[:num_prompts]
    return rng.permutation(targets)


def jitter_boxes(
    boxes: torch.Tensor, jitter: float, image_hw: tuple[int, int], rng: np.random.Generator
) -> torch.Tensor:
    """Move each XYXY box edge by Gaussian noise of std ``jitter`` x the box side, kept inside the image.

    ``jitter=0.1`` matches SAM's training noise (10% of the side). Boxes keep at least one pixel of extent.
    """
    if jitter <= 0 or boxes.shape[0] == 0:
        return boxes.clone()
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2).numpy()
    noise = rng.normal(0.0, 1.0, size=wh.shape) * jitter * wh
    out = boxes.numpy() + noise.astype(np.float32)
    h, w = image_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    x0, x1 = np.minimum(out[:, 0], out[:, 2]), np.maximum(out[:, 0], out[:, 2])
    y0, y1 = np.minimum(out[:, 1], out[:, 3]), np.maximum(out[:, 1], out[:, 3])
    x1 = np.maximum(x1, np.minimum(x0 + 1, w))
    y1 = np.maximum(y1, np.minimum(y0 + 1, h))
    x0, y0 = np.minimum(x0, x1 - 1), np.minimum(y0, y1 - 1)
    return torch.from_numpy(np.stack([x0, y0, x1, y1], axis=1).astype(np.float32))


def sample_mask_points(
    mask: np.ndarray, num_points: int, rng: np.random.Generator, pixels: np.ndarray | None = None
) -> np.ndarray:
    """``num_points`` (x, y) pixels drawn uniformly from a bool (h, w) mask -> float32 (num_points, 2).

    Points are distinct while the mask has enough pixels, drawn with replacement otherwise.
    """
    flat = np.flatnonzero(mask) if pixels is None else pixels
    if flat.size == 0:
        raise ValueError("Cannot sample a point from an empty mask.")
    chosen = rng.choice(flat, size=num_points, replace=flat.size < num_points)
    rows, cols = np.divmod(chosen, mask.shape[1])
    return np.stack([cols, rows], axis=1).astype(np.float32)


def sample_prompts(
    masks: torch.Tensor | np.ndarray,
    boxes: torch.Tensor,
    rng: np.random.Generator,
    *,
    num_prompts: int = 40,
    box_fraction: float = 21 / 40,
    box_jitter: float = 0.0,
    points_per_prompt: int = 1,
) -> dict[str, torch.Tensor]:
    """Sample box and point prompts for the instances of one image.

    Args:
        masks: bool [M, h, w] instance masks (M >= 1, none empty), torch or numpy.
        boxes: float32 [M, 4] XYXY boxes of the masks.
        rng: the random generator (the caller seeds it, for reproducible epochs).
        num_prompts: total prompts Nb + Np.
        box_fraction: share of box prompts; Nb = round(num_prompts * box_fraction).
        box_jitter: std of box edge noise as a fraction of the box side (0 = exact GT boxes).
        points_per_prompt: positive points per point prompt (P).

    Returns:
        ``boxes`` float32 [Nb, 4], ``box_targets`` int64 [Nb], ``points`` float32 [Np, P, 2] (x, y),
        ``point_labels`` float32 [Np, P] (all 1), ``point_targets`` int64 [Np]; targets index ``masks``.
    """
    if points_per_prompt < 1:
        raise ValueError(f"points_per_prompt must be >= 1, got {points_per_prompt}.")
    targets = (
        tiled_targets(int(masks.shape[0]), num_prompts, rng) if num_prompts > 0 else np.zeros(0, np.int64)
    )
    num_boxes = int(round(num_prompts * box_fraction))
    box_targets, point_targets = targets[:num_boxes], targets[num_boxes:]
    masks_np = masks.numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks, dtype=bool)
    pixels: dict[int, np.ndarray] = {}
    points = np.zeros((len(point_targets), points_per_prompt, 2), dtype=np.float32)
    for i, target in enumerate(point_targets.tolist()):
        if target not in pixels:
            pixels[target] = np.flatnonzero(masks_np[target])
        points[i] = sample_mask_points(masks_np[target], points_per_prompt, rng, pixels[target])
    image_hw = (int(masks.shape[1]), int(masks.shape[2]))
    return {
        "boxes": jitter_boxes(boxes[torch.from_numpy(box_targets)], box_jitter, image_hw, rng),
        "box_targets": torch.from_numpy(box_targets),
        "points": torch.from_numpy(points),
        "point_labels": torch.ones((len(point_targets), points_per_prompt), dtype=torch.float32),
        "point_targets": torch.from_numpy(point_targets),
    }
