"""The classical baseline of the automatic protocol: Otsu threshold + distance-transform watershed (scikit-image).

What a microscopist would try first, class-agnostic: smooth the image (Gaussian), threshold it at Otsu's level,
drop small specks, split touching objects by a watershed of the negated distance transform, flooded only within
the foreground, and drop objects left below ``min_area`` pixels.

Markers: the h-maxima of the distance transform (smoothed by ``distance_sigma``): regional maxima that stand at
least ``h`` pixels above their surroundings, one marker per object centre. ``peak_local_max`` markers (local
maxima at least ``min_distance`` apart) split rods and rings along their ridges; on 40 images of the synthetic
val split (seed 0) they gave class-agnostic AP 0.05 (min_distance 5) to 0.18 (30), plain connected components
0.19 and the h-maxima (h = 1) 0.215, so the h-maxima are the default (``markers="peaks"`` keeps the other).

Score (what COCO ranks by): the object's mean smoothed intensity relative to the brightest object's, in 0..1.
Bright, solid objects are the surest ones in a fluorescence image, and dim fragments (halo, uneven background
cut by the threshold) come last; ranking by area instead gave AP 0.171 against 0.215 on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import watershed

MARKERS = ("h_maxima", "peaks")


@dataclass(frozen=True)
class OtsuWatershed:
    """Otsu + watershed instance segmentation of one (H, W) or (H, W, C) image (channels averaged).

    sigma: Gaussian smoothing in pixels before thresholding; markers: "h_maxima" (default) or "peaks" (see
    the module docstring); h: height in pixels of an h-maximum of the distance transform; distance_sigma:
    smoothing in pixels of the distance transform before the h-maxima; min_distance: smallest distance in
    pixels between two "peaks" markers; min_area: smallest object in pixels (specks and fragments below it go).
    """

    sigma: float = 1.0
    markers: str = "h_maxima"
    h: float = 1.0
    distance_sigma: float = 1.0
    min_distance: int = 5
    min_area: int = 16

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and self.distance_sigma >= 0):
            raise ValueError(
                f"sigma and distance_sigma must be >= 0 pixels, got {self.sigma!r} and {self.distance_sigma!r}."
            )
        if self.markers not in MARKERS:
            raise ValueError(f"Unknown markers {self.markers!r}; use one of {MARKERS}.")
        if not self.h > 0:
            raise ValueError(f"h must be > 0 pixels, got {self.h!r}.")
        if self.min_distance < 1 or self.min_area < 1:
            raise ValueError(
                f"min_distance and min_area must be >= 1 pixel, got {self.min_distance!r} and {self.min_area!r}."
            )

    def segment(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """(labels int32 (H, W), 0 = background and objects 1..N; scores float32 (N,) in 0..1 by label id)."""
        gray = np.asarray(image, dtype=np.float32)
        if gray.ndim == 3:
            gray = gray.mean(axis=-1)
        if gray.ndim != 2 or gray.size == 0:
            raise ValueError(f"The image has shape {np.shape(image)}: give one (H, W) or (H, W, C) image.")
        smooth = gaussian(gray, sigma=self.sigma, preserve_range=True) if self.sigma > 0 else gray
        if float(smooth.max()) <= float(smooth.min()):  # a flat image has no foreground
            return np.zeros(gray.shape, np.int32), np.zeros(0, np.float32)
        foreground = remove_small_objects(smooth > threshold_otsu(smooth), max_size=self.min_area - 1)
        distance = ndimage.distance_transform_edt(foreground)
        if self.distance_sigma > 0:
            distance = gaussian(distance, sigma=self.distance_sigma, preserve_range=True)
        labels = watershed(-distance, self._markers(distance, foreground), mask=foreground)
        return _renumber_and_score(labels, smooth, self.min_area)

    def _markers(self, distance: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        """int32 (H, W) watershed markers, 1..M, one per object centre."""
        if self.markers == "h_maxima":
            return ndimage.label(h_maxima(distance, self.h) & foreground)[0].astype(np.int32)
        components, _ = ndimage.label(foreground)
        peaks = peak_local_max(
            distance, min_distance=self.min_distance, labels=components, exclude_border=False
        )
        markers = np.zeros(distance.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        return markers


def _renumber_and_score(
    labels: np.ndarray, intensity: np.ndarray, min_area: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop objects under ``min_area`` pixels, renumber the rest 1..N and score each by its mean intensity
    relative to the brightest object's."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    kept = ids[counts >= min_area]
    if kept.size == 0:
        return np.zeros(labels.shape, np.int32), np.zeros(0, np.float32)
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    out = lookup[labels]
    means = np.asarray(ndimage.mean(intensity, labels=out, index=np.arange(1, len(kept) + 1)), np.float64)
    low = float(intensity.min())
    scores = (means - low) / max(float(means.max()) - low, 1e-12)
    return out, scores.astype(np.float32)
