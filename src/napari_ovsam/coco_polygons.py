"""Polygons of a label's pixels, for COCO files that tools without RLE support import (Label Studio; CVAT's
polygon tools).

A mask's outer boundaries are traced with ``skimage.measure.find_contours`` at level 0.5 (holes filled first:
COCO polygons of one object are united, so a hole cannot be expressed); points are converted to COCO's
continuous pixel frame, where pixel (row r, col c) covers x in [c, c + 1), y in [r, r + 1): straight edges
lie on pixel edges, corners are cut by half a pixel. Collinear points are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import approximate_polygon, find_contours

SIMPLIFY_TOLERANCE = 0.25  # pixels a simplified polygon may deviate from the traced boundary


def mask_polygons(rows: np.ndarray, cols: np.ndarray) -> list[list[float]]:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` of the pixels at (rows, cols) (one per outer boundary).

    Works on the pixels' bounding box only, so a small object in a large image costs little.
    """
    if rows.size == 0:
        return []
    r0, c0 = int(rows.min()), int(cols.min())
    crop = np.zeros((int(rows.max()) - r0 + 3, int(cols.max()) - c0 + 3), bool)
    crop[rows - r0 + 1, cols - c0 + 1] = True
    crop = ndimage.binary_fill_holes(crop)
    polygons = []
    for contour in find_contours(crop.astype(np.float32), 0.5):
        contour = approximate_polygon(contour, tolerance=SIMPLIFY_TOLERANCE)[:-1]  # closed: drop the repeat
        if len(contour) < 3:
            continue
        xs = contour[:, 1] + c0 - 1 + 0.5
        ys = contour[:, 0] + r0 - 1 + 0.5
        polygons.append([round(float(v), 2) for v in np.stack([xs, ys], axis=1).ravel()])
    return polygons
