"""The shipped ``demo`` model: it loads offline and still segments and names objects of a fresh synthetic split
(a split it never saw: another seed) above a bar a little below the one recorded in benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovsam_model.build import build_ovsam
from ovsam_model.data.coco import CocoInstanceDataset
from ovsam_model.data.synthetic import write_dataset
from ovsam_model.evaluation.gt_prompts import evaluate_gt_prompts
from ovsam_model.hub import resolve_source
from ovsam_model.predictor import OVSAMPredictor

# Recorded on the 100-image held-out split (benchmarks/README.md): box mIoU 0.816, acc 95.6 %; point mIoU
# 0.726, acc 90.4 %. This fresh split is small (106 objects; the shipped model scores 0.786 / 96.2 % with
# boxes and 0.674 / 90.6 % with clicks on it), so its bar sits a little lower.
BARS = {"box": (0.72, 90.0), "point": (0.62, 85.0)}


def test_the_demo_weights_ship_inside_the_package_and_are_small():
    path = resolve_source("ovsam_demo", download=False)
    assert path.is_file() and path.stat().st_size < 25 * 1024**2


@pytest.fixture(scope="module")
def demo_predictor() -> OVSAMPredictor:
    return OVSAMPredictor(build_ovsam("demo", device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["box", "point"])
def test_demo_model_meets_its_bar_on_a_fresh_split(demo_predictor, tmp_path: Path, prompt):
    assert demo_predictor.vocabulary.names == ["nucleus", "rod", "ring", "cluster"]
    paths = write_dataset(tmp_path / "fresh", num_train=1, num_val=12, size=256, seed=2026)
    dataset = CocoInstanceDataset(paths["val"], image_size=256, train=False)
    metrics = evaluate_gt_prompts(demo_predictor, dataset, prompt=prompt)
    min_iou, min_acc = BARS[prompt]
    assert metrics["count"] > 50
    assert metrics["miou"] >= min_iou, metrics
    assert metrics["acc"] >= min_acc, metrics
