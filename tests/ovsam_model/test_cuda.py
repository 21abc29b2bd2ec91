"""The predictor on a CUDA device gives what it gives on the CPU (skipped where no GPU is present; CI has none)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ovsam_model.predictor import OVSAMPredictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_predictions_match_the_cpu(tiny_model, image16):
    cpu = OVSAMPredictor(tiny_model)
    gpu = OVSAMPredictor(copy.deepcopy(tiny_model).to("cuda"))
    boxes = np.array([[40, 30, 80, 60], [0, 0, 149, 89], [10, 5, 60, 70]], dtype=float)
    points = np.array([[[60, 45]], [[20, 20]], [[120, 70]]], dtype=float)
    labels = np.ones((3, 1), dtype=int)
    results = []
    for predictor in (cpu, gpu):
        predictor.set_image(image16)
        predictor.set_vocabulary(["nucleus", "rod, bacterium", "ring"])
        results.append(
            (
                predictor.predict(boxes=boxes),
                predictor.predict(points=points, point_labels=labels, multimask_output=True),
            )
        )
    for on_cpu, on_gpu in zip(results[0], results[1], strict=True):
        assert on_gpu.masks.shape == on_cpu.masks.shape
        assert on_cpu.masks.shape[0] == len(boxes) and on_cpu.masks.shape[-2:] == (90, 150)
        assert (on_gpu.masks == on_cpu.masks).mean() > 0.99  # TF32 / kernel order move a few edge pixels
        np.testing.assert_allclose(on_gpu.topk_scores, on_cpu.topk_scores, atol=2e-3)
        np.testing.assert_array_equal(on_gpu.class_ids, on_cpu.class_ids)


def test_embedding_moves_between_devices(tiny_model, image16):
    gpu = OVSAMPredictor(copy.deepcopy(tiny_model).to("cuda"))
    gpu.set_image(image16)
    state = gpu.get_image_embedding()
    cpu = OVSAMPredictor(tiny_model)
    cpu.set_image_embedding(state)
    cpu.set_vocabulary(["nucleus", "ring"])
    gpu.set_vocabulary(["nucleus", "ring"])
    box = np.array([[40, 30, 80, 60]], dtype=float)
    assert (cpu.predict(boxes=box).masks == gpu.predict(boxes=box).masks).mean() > 0.99


def test_cuda_graph_replays_give_what_eager_decoding_gives(tiny_model, image16):
    model = copy.deepcopy(tiny_model).to("cuda")
    graphs, eager = OVSAMPredictor(model), OVSAMPredictor(model, cuda_graphs=False)
    rng = np.random.default_rng(0)
    other = image16[::-1].copy()
    for image, vocabulary in (
        (image16, ["nucleus", "ring"]),
        (other, ["nucleus", "ring"]),
        (other, ["a", "b", "c"]),
    ):
        for predictor in (graphs, eager):
            predictor.set_image(image)
            predictor.set_vocabulary(vocabulary)
        for n in (1, 1, 3, 1):  # replays of one captured graph, a second prompt count, back to the first
            x0, y0 = rng.uniform(0, 100, n), rng.uniform(0, 50, n)
            boxes = np.stack([x0, y0, x0 + rng.uniform(5, 45, n), y0 + rng.uniform(5, 35, n)], 1)
            got, want = graphs.predict(boxes=boxes), eager.predict(boxes=boxes)
            np.testing.assert_array_equal(got.masks, want.masks)
            np.testing.assert_allclose(got.topk_scores, want.topk_scores, atol=1e-5)
            np.testing.assert_array_equal(got.class_ids, want.class_ids)
    assert graphs.cuda_graphs and len(graphs._graphs) == 2  # captured, not fallen back to eager decoding
