"""Synthetic fluorescence-microscopy images with instance masks: the ``demo`` model's training images.

Four classes that differ in shape and texture (category ids 1..4, in this order, see ``CLASS_NAMES``):

- ``nucleus``: round or elliptic blobs with a slightly wavy outline and smooth internal texture, dimmer rim;
- ``rod``: elongated capsules, possibly slightly bent, brightest along their axis;
- ``ring``: hollow vesicles, a bright annulus around a dim lumen (the mask is the whole vesicle, lumen
  included);
- ``cluster``: a clump of 3-7 small touching blobs, each with its own brightness, annotated as one instance.

Three extra classes the ``demo`` model never saw (``extra_classes=True``; category ids 5..7, see
``EXTRA_CLASS_NAMES``), to measure naming from examples:

- ``crescent``: a sickle, a disk minus an offset disk that sticks out of it, smooth profile brightest where it
  is thickest;
- ``dumbbell``: a dividing cell, two round lobes joined by a narrow, dimmer neck;
- ``speckled``: a nucleus in outline and size, but a dim body holding several small bright granules.

Objects touch and overlap; overlaps are resolved by depth order (later objects lie on top), so masks are the
visible, non-overlapping pixels, as in COCO. Every object keeps at least ``MIN_VISIBLE_FRACTION`` of its
area and ``MIN_AREA`` pixels visible. Images are 16-bit: blurred by a Gaussian PSF, uneven illumination,
per-image brightness, Poisson shot noise, camera offset and Gaussian read noise. Generation is deterministic:
image ``i`` of a split depends only on (seed, split, i).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..vocabulary import DEMO_CLASSES

CLASS_NAMES = DEMO_CLASSES  # the demo model's vocabulary is this dataset's classes
EXTRA_CLASS_NAMES: tuple[str, ...] = ("crescent", "dumbbell", "speckled")  # labels 4..6, never trained on
ALL_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES + EXTRA_CLASS_NAMES
MIN_AREA = 40  # above the datasets' 32 px filter, with a margin
MIN_VISIBLE_FRACTION = 0.4
MAX_OVERLAP_FRACTION = 0.3
TOUCH_PROBABILITY = 0.35
SPLIT_CODES = {"train": 0, "val": 1}


@dataclass
class Shape:
    """One object before placement: a local (h, w) patch with its centre at the patch centre."""

    label: int  # class index into ALL_CLASS_NAMES (the first four are CLASS_NAMES)
    mask: np.ndarray  # bool (h, w)
    profile: np.ndarray  # float32 (h, w), relative brightness (about 0..1) inside the mask
    texture: tuple[float, float]  # weights of the coarse and fine noise fields


@dataclass
class SyntheticImage:
    """A generated image and its instances. Masks are (row, col) indexed, disjoint and visible-only."""

    image: np.ndarray  # uint16 (size, size)
    masks: np.ndarray  # bool (M, size, size)
    labels: np.ndarray  # int64 (M,) class indices into ALL_CLASS_NAMES (category id = label + 1)


def _grid(radius: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) offsets from a sub-pixel centre over a square patch that holds a disk of ``radius``."""
    half = int(np.ceil(radius)) + 2
    centre = half + rng.uniform(-0.5, 0.5, size=2)
    yy, xx = np.mgrid[0 : 2 * half + 1, 0 : 2 * half + 1].astype(np.float32)
    return xx - centre[0], yy - centre[1]


def _rotate(x: np.ndarray, y: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return x * c + y * s, -x * s + y * c


def make_nucleus(rng: np.random.Generator) -> Shape:
    a = rng.uniform(7.0, 22.0)
    b = a * rng.uniform(0.65, 1.0)
    x, y = _grid(a * 1.15, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    r = np.hypot(u / a, v / b)
    phi = np.arctan2(v / b, u / a)
    edge = np.ones_like(r)
    for k in (2, 3, 4):  # a slightly wavy outline
        edge += rng.uniform(0, 0.05) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    rel = r / edge
    profile = np.clip(1.0 - 0.4 * rel**2, 0.0, 1.0)
    return Shape(0, rel <= 1.0, profile.astype(np.float32), (0.3, 0.05))


def make_rod(rng: np.random.Generator) -> Shape:
    length = rng.uniform(10.0, 44.0)
    radius = rng.uniform(3.0, 6.5)
    x, y = _grid(length / 2 + radius + 6, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    v = v - rng.uniform(-0.012, 0.012) * u**2  # parabolic bend
    beyond = np.maximum(np.abs(u) - length / 2, 0.0)
    d = np.hypot(beyond, v) / radius
    profile = np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)) * 0.8 + 0.2
    return Shape(1, d <= 1.0, profile.astype(np.float32), (0.05, 0.1))


def make_ring(rng: np.random.Generator) -> Shape:
    outer = rng.uniform(8.0, 24.0)
    squash = rng.uniform(0.8, 1.0)
    thickness = rng.uniform(2.5, max(3.0, 0.4 * outer))
    x, y = _grid(outer, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    rho = np.hypot(u, v / squash)
    rim = np.exp(-(((rho - (outer - thickness / 2)) / (thickness / 2)) ** 2))
    profile = np.maximum(rim, 0.12)
    return Shape(2, rho <= outer, profile.astype(np.float32), (0.1, 0.1))


def make_cluster(rng: np.random.Generator) -> Shape:
    count = int(rng.integers(3, 8))
    radii = rng.uniform(3.0, 6.0, size=count)
    centres = np.zeros((count, 2))
    for i in range(1, count):  # each blob touches (slightly overlaps) an earlier one
        j = int(rng.integers(0, i))
        angle = rng.uniform(0, 2 * np.pi)
        dist = (radii[i] + radii[j]) * rng.uniform(0.7, 0.95)
        centres[i] = centres[j] + dist * np.array([np.cos(angle), np.sin(angle)])
    centres -= centres.mean(axis=0)
    x, y = _grid(float(np.max(np.linalg.norm(centres, axis=1) + radii)), rng)
    profile = np.zeros_like(x)
    for (cx, cy), r, bright in zip(centres, radii, rng.uniform(0.55, 1.0, size=count)):
        d = np.hypot(x - cx, y - cy) / r
        profile = np.maximum(profile, bright * np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)))
    return Shape(3, profile > 0, (profile * 0.85 + 0.15).astype(np.float32), (0.05, 0.15))


def make_crescent(rng: np.random.Generator) -> Shape:
    outer = rng.uniform(9.0, 22.0)
    inner = outer * rng.uniform(0.7, 0.9)
    shift = outer * rng.uniform(0.4, 0.6)  # shift + inner > outer: the cut opens the disk into a sickle
    x, y = _grid(outer, rng)
    u, v = _rotate(x, y, rng.uniform(0, 2 * np.pi))
    mask = (np.hypot(u, v) <= outer) & (np.hypot(u - shift, v) > inner)
    parts, count = ndimage.label(mask)
    if count > 1:  # the tips can leave stray pixels: keep the sickle itself, one piece
        mask = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
    depth = ndimage.distance_transform_edt(mask)
    profile = 0.45 + 0.55 * np.sqrt(depth / max(float(depth.max()), 1.0))
    return Shape(4, mask, profile.astype(np.float32), (0.15, 0.05))


def make_dumbbell(rng: np.random.Generator) -> Shape:
    radii = rng.uniform(5.0, 12.0, size=2)
    gap = float(radii.sum()) * rng.uniform(1.05, 1.3)  # centre distance; the lobes do not touch
    neck = float(radii.min()) * rng.uniform(0.3, 0.45)  # half-width of the neck
    x, y = _grid(gap / 2 + float(radii.max()) + 1, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    centres = (-gap / 2 + (radii[0] - radii[1]) / 2, gap / 2 + (radii[0] - radii[1]) / 2)
    profile = np.zeros_like(u)
    for cx, r in zip(centres, radii):
        d = np.hypot(u - cx, v) / r
        profile = np.maximum(profile, np.where(d <= 1.0, 1.0 - 0.4 * d**2, 0.0))
    in_neck = (u >= centres[0]) & (u <= centres[1]) & (np.abs(v) <= neck)
    profile = np.maximum(profile, np.where(in_neck, 0.55, 0.0))
    return Shape(5, profile > 0, profile.astype(np.float32), (0.3, 0.05))


def make_speckled(rng: np.random.Generator) -> Shape:
    a = rng.uniform(8.0, 22.0)
    b = a * rng.uniform(0.65, 1.0)
    x, y = _grid(a * 1.1, rng)
    u, v = _rotate(x, y, rng.uniform(0, np.pi))
    rel = np.hypot(u / a, v / b)
    profile = np.where(rel <= 1.0, 0.3, 0.0)
    count = int(rng.integers(5, 9)) + int(a * b / 60)  # more granules in a larger body
    for _ in range(count):  # granules at uniform positions inside the inner 80 % of the body
        rho, phi = 0.8 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        gx, gy = rho * a * np.cos(phi), rho * b * np.sin(phi)
        spot = rng.uniform(0.75, 1.0) * np.exp(
            -((u - gx) ** 2 + (v - gy) ** 2) / (2 * rng.uniform(1.0, 1.8) ** 2)
        )
        profile = np.maximum(profile, np.where(rel <= 1.0, spot, 0.0))
    return Shape(6, rel <= 1.0, profile.astype(np.float32), (0.05, 0.1))


SHAPE_MAKERS: tuple[Callable[[np.random.Generator], Shape], ...] = (
    make_nucleus,
    make_rod,
    make_ring,
    make_cluster,
)
EXTRA_SHAPE_MAKERS: tuple[Callable[[np.random.Generator], Shape], ...] = (
    make_crescent,
    make_dumbbell,
    make_speckled,
)


def _clip_patch(mask: np.ndarray, top: int, left: int, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The image window (rows, cols) a patch placed at (top, left) covers, and the patch part inside it."""
    h, w = mask.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, size), min(left + w, size)
    if r1 <= r0 or c1 <= c0:
        return (slice(0, 0), slice(0, 0)), mask[:0, :0]
    return (slice(r0, r1), slice(c0, c1)), mask[r0 - top : r1 - top, c0 - left : c1 - left]


def _propose_position(
    rng: np.random.Generator, shape: Shape, placed: list[tuple[int, int, Shape]], size: int
) -> tuple[int, int]:
    """Top-left of the patch: uniform, or next to a placed object so that objects touch or overlap."""
    h, w = shape.mask.shape
    if placed and rng.random() < TOUCH_PROBABILITY:
        top, left, other = placed[int(rng.integers(len(placed)))]
        oh, ow = other.mask.shape
        reach = (np.sqrt(shape.mask.sum() / np.pi) + np.sqrt(other.mask.sum() / np.pi)) * rng.uniform(
            0.85, 1.05
        )
        angle = rng.uniform(0, 2 * np.pi)
        cy, cx = top + oh / 2 + reach * np.sin(angle), left + ow / 2 + reach * np.cos(angle)
        return int(round(cy - h / 2)), int(round(cx - w / 2))
    top = int(rng.integers(-h // 3, max(size - 2 * h // 3, 1 - h // 3)))
    left = int(rng.integers(-w // 3, max(size - 2 * w // 3, 1 - w // 3)))
    return top, left


def place_objects(
    rng: np.random.Generator,
    size: int,
    count: int,
    class_weights: np.ndarray,
    makers: Sequence[Callable[[np.random.Generator], Shape]] = SHAPE_MAKERS,
) -> tuple[np.ndarray, list[tuple[int, int, Shape]]]:
    """Place up to ``count`` objects in depth order, of classes drawn from ``makers`` with ``class_weights``.

    Returns:
        label map int16 (size, size) with 0 = background and k + 1 = the k-th placed object (its visible
        pixels), and the placed objects as (top, left, Shape).
    """
    labels = np.zeros((size, size), dtype=np.int16)
    placed: list[tuple[int, int, Shape]] = []
    full_area: list[int] = []
    visible: list[int] = []
    for _ in range(count * 6):
        if len(placed) == count:
            break
        shape = makers[int(rng.choice(len(makers), p=class_weights))](rng)
        top, left = _propose_position(rng, shape, placed, size)
        window, part = _clip_patch(shape.mask, top, left, size)
        area = int(shape.mask.sum())
        if part.sum() < max(MIN_AREA, MIN_VISIBLE_FRACTION * area):
            continue
        below = labels[window][part]
        below = below[below > 0]
        if below.size > MAX_OVERLAP_FRACTION * area:
            continue
        lost = np.bincount(below, minlength=len(placed) + 1)[1:]
        remaining = np.asarray(visible) - lost
        if np.any(remaining < np.maximum(MIN_AREA, MIN_VISIBLE_FRACTION * np.asarray(full_area))):
            continue
        labels[window][part] = len(placed) + 1
        visible = [*remaining.tolist(), int(part.sum())]
        full_area.append(area)
        placed.append((top, left, shape))
    return labels, placed


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth multiplicative field: a broad off-centre bump plus a linear gradient, about 0.5..1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(-0.3, 1.3, size=2)
    width = rng.uniform(0.5, 1.5)
    bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    gx, gy = rng.uniform(-0.15, 0.15, size=2)
    strength = rng.uniform(0.1, 0.5)
    return np.clip((1 - strength) + strength * bump + gx * (xx - 0.5) + gy * (yy - 0.5), 0.2, None)


def render(rng: np.random.Generator, labels: np.ndarray, placed: list[tuple[int, int, Shape]]) -> np.ndarray:
    """Render the label map to a 16-bit fluorescence-like image (uint16, same shape)."""
    size = labels.shape[0]
    coarse, fine = _smooth_noise(rng, size, 3.0), _smooth_noise(rng, size, 1.0)
    signal = np.zeros((size, size), dtype=np.float32)
    for k, (top, left, shape) in enumerate(placed):
        window, part = _clip_patch(shape.mask, top, left, size)
        rows, cols = window
        prof = shape.profile[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
        mine = labels[window] == k + 1
        texture = 1.0 + shape.texture[0] * coarse[window] + shape.texture[1] * fine[window]
        amplitude = rng.uniform(450.0, 2500.0)
        signal[window] = np.where(mine, amplitude * prof * np.clip(texture, 0.3, None), signal[window])
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.4))
    background = rng.uniform(40.0, 300.0)
    photons = (signal + background) * _illumination(rng, size) * rng.uniform(0.4, 2.5)
    counts = (
        rng.poisson(photons).astype(np.float32)
        + 100.0
        + rng.normal(0.0, rng.uniform(3.0, 15.0), photons.shape)
    )
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def generate_image(
    rng: np.random.Generator,
    size: int = 256,
    objects_per_image: tuple[int, int] = (5, 15),
    *,
    extra_classes: bool = False,
) -> SyntheticImage:
    """Generate one image with between ``objects_per_image[0]`` and ``[1]`` objects (fewer when crowded).

    ``extra_classes`` mixes the ``EXTRA_CLASS_NAMES`` in with the four known classes (labels 0..6 of
    ``ALL_CLASS_NAMES``); without it, the image is exactly what it was before the extra classes existed.
    """
    makers = SHAPE_MAKERS + EXTRA_SHAPE_MAKERS if extra_classes else SHAPE_MAKERS
    count = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    class_weights = rng.dirichlet(np.full(len(makers), 2.0))  # images differ in their class mix
    labels, placed = place_objects(rng, size, count, class_weights, makers)
    image = render(rng, labels, placed)
    masks = labels[None] == np.arange(1, len(placed) + 1, dtype=np.int16)[:, None, None]
    classes = np.array([shape.label for _, _, shape in placed], dtype=np.int64)
    return SyntheticImage(image, masks, classes)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of how many images are generated."""
    return np.random.default_rng([seed, SPLIT_CODES[split], index])
