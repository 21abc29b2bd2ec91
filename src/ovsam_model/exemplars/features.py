"""What an example object is to the exemplar classifier: region embedding + the mask's shape and intensity.

The region embedding of the naming head was trained to tell the model's own classes apart, so on its own it
separates new classes poorly; the mask's morphology (area, elongation, convexity, holes, moments) and its
intensity relative to its surroundings (contrast, texture, a bright rim or core) carry what tells a crescent
from a nucleus. They are computed the same way when an example is learned and when an object is named.

Frames: masks are bool (H, W) in pixels of the original image; ``ObjectCrop`` holds one object's mask and its
grey values in a window around its box (``CONTEXT_MARGIN`` of its size on each side, at least
``MIN_CONTEXT`` pixels), with the window's (row, col) offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import moments_central, moments_hu, moments_normalized, perimeter

# Context around an object's box, for the background it is compared with: a share of its size per side.
CONTEXT_MARGIN = 0.25
MIN_CONTEXT = 4
_EPS = 1e-6

_DISK = np.hypot(*np.mgrid[-2:3, -2:3]) <= 2.2
SHAPE_FEATURE_NAMES: tuple[str, ...] = (
    "log_area",
    "log_perimeter",
    "compactness",  # perimeter^2 / (4 pi area): 1 for a disk, large for thin or ragged shapes
    "eccentricity",
    "solidity",
    "extent",
    "log_major_axis",
    "log_minor_axis",
    "axis_ratio",
    "holes",  # 1 - Euler number of the mask (0 for a solid object)
    "parts",  # connected parts of the mask
    *(f"hu_{i}" for i in range(7)),
    "contrast",  # (mean inside - background) / background spread, log-compressed
    "inside_spread",  # std of the inside's grey values / their mean above background
    "core_rim",  # mean of the inner half / mean of the outer rim (above background)
    "bright_fraction",  # share of inside pixels above the midpoint between background and the 95th percentile
    "texture",  # mean |Laplacian| inside / mean above background: granular vs smooth
    "skewness",  # of the inside's grey values
    "spots",  # white top-hat (bright details smaller than ~5 px) inside / mean above background
    "peaks",  # log(1 + local brightness maxima inside)
    "lobes",  # log(1 + local maxima of the distance to the mask's edge): blobs joined by necks
)


@dataclass
class ObjectCrop:
    """One object: bool mask (h, w) and float32 grey values (h, w) of a window around it, at ``offset``."""

    mask: np.ndarray
    grey: np.ndarray
    offset: tuple[int, int]


def context_window(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """The window around a (y0, x0, y1, x1) box (end exclusive) in an image of (H, W), clipped to it."""
    y0, x0, y1, x1 = box
    margin_y = max(MIN_CONTEXT, int(np.ceil(CONTEXT_MARGIN * (y1 - y0))))
    margin_x = max(MIN_CONTEXT, int(np.ceil(CONTEXT_MARGIN * (x1 - x0))))
    return (
        slice(max(0, y0 - margin_y), min(size[0], y1 + margin_y)),
        slice(max(0, x0 - margin_x), min(size[1], x1 + margin_x)),
    )


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, C) pixels of any dtype -> float32 (h, w): the mean over channels."""
    values = np.asarray(pixels)
    if values.ndim == 3:
        return values.astype(np.float32).mean(axis=2)
    return values.astype(np.float32)


def shape_features(crop: ObjectCrop) -> np.ndarray:
    """float32 (len(SHAPE_FEATURE_NAMES),) features of one object (an empty mask gives zeros).

    The measurements of ``skimage.measure.regionprops`` (area, perimeter, eccentricity, solidity, extent, axis
    lengths, Euler number, Hu moments), from its low-level functions: regionprops' per-object bookkeeping
    costs more than the measurements themselves, and an object is measured on every naming."""
    mask = crop.mask
    out = np.zeros(len(SHAPE_FEATURE_NAMES), np.float32)
    area = int(mask.sum())
    if area == 0:
        return out
    central = moments_central(mask.astype(np.float64), order=3)
    variance = np.array([[central[2, 0], central[1, 1]], [central[1, 1], central[0, 2]]]) / area
    small, large = np.maximum(np.linalg.eigvalsh(variance), 0.0)
    major, minor = max(4 * np.sqrt(large), 1.0), max(4 * np.sqrt(small), 1.0)
    edge = max(float(perimeter(mask)), 1.0)
    hu = moments_hu(moments_normalized(central, 3))
    parts = ndimage.label(mask)[1]
    holes = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)[1]
    out[:18] = [
        np.log(area),
        np.log(edge),
        edge**2 / (4 * np.pi * area),
        np.sqrt(1.0 - small / large) if large > 0 else 0.0,
        area / _hull_area(mask),
        _extent(mask, area),
        np.log(major),
        np.log(minor),
        minor / major,
        holes,
        parts,
        *(np.sign(h) * np.log1p(abs(h) * 1e3) for h in hu),  # Hu moments span decades
    ]
    out[18:] = _intensity_features(crop)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _extent(mask: np.ndarray, area: int) -> float:
    """Area over the area of the mask's bounding box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return area / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixels as unit squares: the hull of the edge pixels' centres
    grown by half a pixel (area + perimeter / 2 + 1, the area of its sum with a unit square, near enough)."""
    rim = np.argwhere(mask & ~ndimage.binary_erosion(mask)).astype(np.float64)
    try:
        hull = ConvexHull(rim)
    except (QhullError, ValueError):  # fewer than three points, or all on one line
        return float(mask.sum())
    return max(float(hull.volume + hull.area / 2 + 1), 1.0)


def _intensity_features(crop: ObjectCrop) -> list[float]:
    """Grey-value features of the inside relative to the window's background (pixels outside the mask)."""
    mask, grey = crop.mask, crop.grey
    inside = grey[mask]
    outside = grey[~mask]
    low, background, high_out = np.percentile(outside, (10, 50, 90)) if outside.size > 4 else (0, 0, 0)
    background = float(background) if outside.size > 4 else float(inside.min())
    spread = float(high_out - low)
    above = inside - background
    level = max(float(above.mean()), _EPS)
    scale = max(spread, 0.05 * abs(background), _EPS)
    distance = ndimage.distance_transform_edt(mask)
    depth = float(distance.max())
    core = mask & (distance > depth / 2)
    rim = mask & (distance <= max(1.0, depth / 4))
    core_mean = float(grey[core].mean() - background) if core.any() else level
    rim_mean = float(grey[rim].mean() - background) if rim.any() else level
    high = float(np.percentile(above, 95))
    centred = above - above.mean()
    std = float(centred.std())
    smooth = ndimage.gaussian_filter(grey, 1.0)
    laplace = np.abs(ndimage.laplace(smooth))[mask].mean()
    spots = ndimage.white_tophat(smooth, footprint=_DISK)[mask].mean()
    peak = (smooth == ndimage.maximum_filter(smooth, size=3)) & mask & (smooth > background + level / 2)
    peak &= smooth > ndimage.uniform_filter(smooth, size=3) + 0.02 * level  # a summit, not a plateau
    lobe = (distance == ndimage.maximum_filter(distance, size=5)) & (distance >= 2)
    return [
        float(np.sign(level) * np.log1p(abs(above.mean()) / scale)),
        std / level,
        float(np.clip(core_mean / max(rim_mean, _EPS), 0.0, 10.0)),
        float((above > high / 2).mean()),
        float(laplace / level),
        float((centred**3).mean() / max(std, _EPS) ** 3),
        float(spots / level),
        float(np.log1p(peak.sum())),
        float(np.log1p(lobe.sum())),
    ]
