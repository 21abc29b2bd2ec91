"""The Otsu + watershed baseline of the automatic protocol (``ovsam_model.evaluation.classical``)."""

from __future__ import annotations

import numpy as np
import pytest

from ovsam_model.evaluation.classical import OtsuWatershed

SIZE = 96
# (row, col, radius) of bright disks: three apart, and two that touch (centres 14 px apart, radii 9).
DISKS = [(20, 20, 8), (20, 70, 6), (75, 20, 7), (70, 60, 9), (70, 74, 9)]


def blobs() -> tuple[np.ndarray, list[np.ndarray]]:
    """A noisy (96, 96) float image of the disks (brightness 100 on 10) and each disk's mask."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    masks = [(rows - r) ** 2 + (cols - c) ** 2 <= radius**2 for r, c, radius in DISKS]
    image = np.full((SIZE, SIZE), 10.0) + 100.0 * np.any(masks, axis=0)
    image += np.random.default_rng(0).normal(0, 3, image.shape)
    return image.astype(np.float32), masks


def best_iou(labels: np.ndarray, mask: np.ndarray) -> float:
    ious = [(mask & (labels == i)).sum() / (mask | (labels == i)).sum() for i in range(1, labels.max() + 1)]
    return max(ious, default=0.0)


@pytest.mark.parametrize("markers", ["h_maxima", "peaks"])
def test_finds_each_separate_and_touching_blob(markers):
    image, masks = blobs()
    labels, scores = OtsuWatershed(markers=markers, min_distance=5, min_area=16).segment(image)
    assert labels.dtype == np.int32 and labels.max() == len(DISKS) == len(scores)
    assert all(best_iou(labels, mask) > 0.8 for mask in masks)
    assert scores.max() == pytest.approx(1.0) and (scores > 0).all() and (scores <= 1).all()


def test_colour_images_are_averaged_and_specks_dropped():
    image, _ = blobs()
    image[2:4, 90:92] = 300.0  # a 4-pixel speck brighter than every object
    labels, _ = OtsuWatershed(min_area=16).segment(np.repeat(image[..., None], 3, axis=-1))
    assert labels.max() == len(DISKS) and labels[2, 90] == 0


def test_the_dimmer_object_scores_lower():
    image, masks = blobs()
    image[masks[0]] -= 40.0  # still far above the background, but dimmer than the others
    labels, scores = OtsuWatershed().segment(image)
    dim = int(np.bincount(labels[masks[0]]).argmax())
    assert scores[dim - 1] == scores.min() and scores.min() < 0.8


def test_a_flat_image_has_no_objects():
    labels, scores = OtsuWatershed().segment(np.full((32, 32), 7.0))
    assert labels.shape == (32, 32) and labels.max() == 0 and len(scores) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": -1}, "sigma and distance_sigma must be >= 0"),
        ({"min_distance": 0}, "min_distance and min_area must be >= 1"),
        ({"markers": "blobs"}, "Unknown markers"),
        ({"h": 0}, "h must be > 0"),
    ],
)
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OtsuWatershed(**kwargs)


def test_an_empty_image_is_refused():
    with pytest.raises(ValueError, match="give one"):
        OtsuWatershed().segment(np.zeros((0, 5)))
