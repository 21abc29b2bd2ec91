"""The synthetic generator's extra classes (never seen by the demo model) and the unchanged default output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from pycocotools.coco import COCO
from scipy import ndimage
from skimage.morphology import convex_hull_image

from ovsam_model.data.synthetic import main
from ovsam_model.data.synthetic_images import (
    ALL_CLASS_NAMES,
    CLASS_NAMES,
    EXTRA_CLASS_NAMES,
    EXTRA_SHAPE_MAKERS,
    MIN_AREA,
    SHAPE_MAKERS,
    generate_image,
    image_rng,
    make_crescent,
    make_dumbbell,
    make_nucleus,
    make_speckled,
)

# sha256 over (image, masks, labels) of the cases below, computed from the generator before the extra classes
# existed: the shipped demo weights, the benchmarks and many tests depend on these exact images.
DEFAULT_OUTPUT_SHA256 = "7596954b45128f41819d82c5663301df673032fdcac0a0a39766069fe7edca8f"


def _default_output_digest() -> str:
    digest = hashlib.sha256()
    cases = [(0, "train", i, 256, (5, 15)) for i in range(6)]
    cases += [(11, "val", i, 256, (5, 15)) for i in range(4)]
    cases += [(1, "train", 0, 96, (3, 6)), (7, "train", 3, 128, (5, 15))]
    samples = [generate_image(image_rng(*case[:3]), case[3], case[4]) for case in cases]
    samples.append(generate_image(np.random.default_rng(3), 256, (6, 10)))  # the demo command's call
    for sample in samples:
        for array in (sample.image, sample.masks, sample.labels):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_default_output_is_byte_identical_to_before() -> None:
    assert _default_output_digest() == DEFAULT_OUTPUT_SHA256


def test_extra_option_off_is_the_default() -> None:
    a = generate_image(image_rng(3, "val", 2), 128)
    b = generate_image(image_rng(3, "val", 2), 128, extra_classes=False)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_names_order_and_labels() -> None:
    assert EXTRA_CLASS_NAMES == ("crescent", "dumbbell", "speckled")
    assert ALL_CLASS_NAMES == CLASS_NAMES + EXTRA_CLASS_NAMES
    rng = np.random.default_rng(0)
    for index, make in enumerate(SHAPE_MAKERS + EXTRA_SHAPE_MAKERS):
        assert make(rng).label == index  # label = index into ALL_CLASS_NAMES, category id = label + 1
    assert [make(rng).label for make in EXTRA_SHAPE_MAKERS] == [4, 5, 6]


def test_extra_images_mix_all_seven_classes_with_valid_disjoint_masks() -> None:
    samples = [generate_image(image_rng(0, "train", i), 256, extra_classes=True) for i in range(8)]
    labels = np.concatenate([s.labels for s in samples])
    assert set(labels.tolist()) == set(range(7))
    for sample in samples:
        assert sample.image.dtype == np.uint16 and sample.image.shape == (256, 256)
        assert sample.masks.dtype == bool and len(sample.masks) == len(sample.labels)
        assert sample.masks.sum(axis=0).max() == 1  # no pixel in two instances
        assert sample.masks.sum(axis=(1, 2)).min() >= MIN_AREA
    again = generate_image(image_rng(0, "train", 0), 256, extra_classes=True)
    np.testing.assert_array_equal(again.image, samples[0].image)  # deterministic with the option on too


def test_extra_classes_are_about_as_large_as_the_known_ones() -> None:
    rng = np.random.default_rng(1)
    median_area = {
        make.__name__: np.median([make(rng).mask.sum() for _ in range(40)])
        for make in (*SHAPE_MAKERS, *EXTRA_SHAPE_MAKERS)
    }
    known = [median_area[make.__name__] for make in SHAPE_MAKERS]
    for make in EXTRA_SHAPE_MAKERS:
        assert min(known) <= median_area[make.__name__] <= max(known)


def test_crescent_is_a_sickle_not_a_disk() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        crescent, nucleus = make_crescent(rng), make_nucleus(rng)
        assert crescent.mask.sum() / convex_hull_image(crescent.mask).sum() < 0.75  # bitten out
        assert nucleus.mask.sum() / convex_hull_image(nucleus.mask).sum() > 0.9
        assert ndimage.label(crescent.mask)[1] == 1


def _erosions_until_split(mask: np.ndarray) -> int:
    """Pieces of >= 10 px left when erosion first changes their number (0: the mask shrank away whole).

    Stray pixels of a diagonal neck's last rows are not pieces.
    """
    for k in range(1, 30):
        parts, count = ndimage.label(ndimage.binary_erosion(mask, iterations=k))
        pieces = int(np.count_nonzero(np.bincount(parts.ravel())[1:] >= 10))
        if pieces != 1:
            return pieces
    return 1


def test_dumbbell_is_two_lobes_joined_by_a_narrow_neck() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        dumbbell = make_dumbbell(rng)
        assert ndimage.label(dumbbell.mask)[1] == 1  # one object
        assert _erosions_until_split(dumbbell.mask) == 2  # the neck goes first, the two lobes remain
        assert _erosions_until_split(make_nucleus(rng).mask) == 0


def _bright_spots(profile: np.ndarray, mask: np.ndarray) -> int:
    peaks = (profile == ndimage.maximum_filter(profile, size=3)) & (profile > 0.6) & mask
    return int(ndimage.label(peaks)[1])


def test_speckled_is_a_dim_nucleus_with_bright_granules() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        speckled, nucleus = make_speckled(rng), make_nucleus(rng)
        assert _bright_spots(speckled.profile, speckled.mask) >= 4
        assert _bright_spots(nucleus.profile, nucleus.mask) <= 1
        assert np.median(speckled.profile[speckled.mask]) < 0.5  # the body is dim
        assert speckled.mask.sum() / convex_hull_image(speckled.mask).sum() > 0.9  # a nucleus's outline


def test_speckled_looks_granular_in_the_rendered_images() -> None:
    roughness: dict[int, list[float]] = {0: [], 6: []}
    for i in range(12):
        sample = generate_image(image_rng(0, "train", i), 256, extra_classes=True)
        image = sample.image.astype(np.float64)
        detail = image - ndimage.gaussian_filter(image, 2.0)
        for mask, label in zip(sample.masks, sample.labels):
            inner = ndimage.binary_erosion(mask, iterations=2)
            if int(label) in roughness and inner.sum() >= 30:
                roughness[int(label)].append(detail[inner].std() / (image[inner].mean() - 100.0))
    assert len(roughness[0]) >= 5 and len(roughness[6]) >= 5
    assert np.median(roughness[6]) > 1.4 * np.median(roughness[0])


def test_cli_writes_seven_categories(tmp_path: Path) -> None:
    out = tmp_path / "extra"
    argv = ["--out", str(out), "--num-train", "3", "--num-val", "1", "--size", "128", "--seed", "2"]
    assert main([*argv, "--extra-classes", "--quiet"]) == 0
    for name in ("train.json", "val.json", "val_stack.json"):
        data = json.loads((out / name).read_text())
        assert data["categories"] == [
            {"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(ALL_CLASS_NAMES)
        ]
    coco = COCO(str(out / "train.json"))
    category_ids = set()
    for image in coco.dataset["images"]:
        sample = generate_image(image_rng(2, "train", image["id"] - 1), 128, extra_classes=True)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert [a["category_id"] for a in anns] == (sample.labels + 1).tolist()
        for ann, mask in zip(anns, sample.masks):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        np.testing.assert_array_equal(tifffile.imread(out / image["file_name"]), sample.image)
        category_ids |= {a["category_id"] for a in anns}
    assert category_ids & {5, 6, 7}


def test_cli_without_the_option_writes_four_categories(tmp_path: Path) -> None:
    argv = ["--out", str(tmp_path / "known"), "--num-train", "1", "--num-val", "0", "--size", "64", "--quiet"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "known" / "train.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES)


def test_cli_help_names_the_extra_classes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--extra-classes" in capsys.readouterr().out
