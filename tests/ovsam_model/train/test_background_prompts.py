"""Background prompts (``--background-prompts N``): points and boxes on empty areas, trained to an empty mask,
the background class (index K of the K + 1 logits) and IoU 0, so that a model learns to reject non-objects.

The sampler keeps its margin to every object and finds nothing where objects cover the image; the loss of a
batch with background prompts is finite, targets class K and IoU 0; the object prompts of an item do not change
when background prompts are added; runs saved before the option existed still resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from ovsam_model import build_ovsam
from ovsam_model.data.background import MAX_OBJECT_FRACTION, sample_background_prompts
from ovsam_model.data.coco import CocoInstanceDataset
from ovsam_model.predictor import _EMPTY_MASK_HALF_BOX
from ovsam_model.tensorfile import read_state, write_state
from ovsam_model.text import encode_vocabulary
from ovsam_model.train import clip2sam
from ovsam_model.train.cli import main
from ovsam_model.train.clip2sam import Clip2SamLossConfig, clip2sam_loss
from ovsam_model.train.losses import classification_loss
from ovsam_model.vocabulary import Vocabulary


def _objects() -> np.ndarray:
    """Three objects on a 64 x 96 image: a disc, a bar and a small square."""
    rows, cols = np.mgrid[:64, :96]
    masks = np.zeros((3, 64, 96), dtype=bool)
    masks[0] = (rows - 20) ** 2 + (cols - 20) ** 2 <= 10**2
    masks[1, 40:50, 30:80] = True
    masks[2, 8:14, 70:76] = True
    return masks


@pytest.mark.parametrize("margin", [0.0, 4.0, 9.0])
def test_background_points_keep_the_margin_to_every_object(margin) -> None:
    masks = _objects()
    out = sample_background_prompts(
        masks, np.random.default_rng(0), num_prompts=200, box_fraction=0.0, margin=margin
    )
    points = out["background_points"]
    assert points.shape == (200, 1, 2) and out["background_point_labels"].shape == (200, 1)
    distance = distance_transform_edt(~masks.any(axis=0))
    cols, rows = points[:, 0, 0].long().numpy(), points[:, 0, 1].long().numpy()
    assert not masks.any(axis=0)[rows, cols].any()  # no point inside an object
    assert (distance[rows, cols] > margin).all()


def test_background_boxes_hold_almost_nothing_of_any_object() -> None:
    masks = _objects()
    out = sample_background_prompts(masks, np.random.default_rng(1), num_prompts=40, box_fraction=0.5)
    boxes = out["background_boxes"].long().numpy()
    assert len(boxes) >= 15 and out["background_points"].shape[0] == 20
    areas = masks.reshape(3, -1).sum(axis=1)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64
        inside = masks[:, y0:y1, x0:x1].reshape(3, -1).sum(axis=1)
        assert (inside <= MAX_OBJECT_FRACTION * areas).all()
    sides = boxes[:, 2:] - boxes[:, :2]
    assert len(np.unique(sides[:, 0])) > 2  # boxes of several sizes


def test_an_image_covered_by_objects_gets_no_background_prompts() -> None:
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, :, :16], masks[1, :, 16:] = True, True
    out = sample_background_prompts(masks, np.random.default_rng(0), num_prompts=8, margin=2.0)
    assert out["background_boxes"].shape == (0, 4)
    assert out["background_points"].shape == (0, 1, 2)
    assert out["background_point_labels"].shape == (0, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_prompts": -1}, "num_prompts must be 0 or more"),
        ({"num_prompts": 2, "margin": -1.0}, "margin must be 0 or more"),
        ({"num_prompts": 2, "points_per_prompt": 0}, "points_per_prompt must be >= 1"),
    ],
)
def test_bad_sampler_options_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        sample_background_prompts(_objects(), np.random.default_rng(0), **options)


def _dataset(train_data, background: int) -> CocoInstanceDataset:
    return CocoInstanceDataset(
        train_data["train"], image_size=128, num_prompts=6, background_prompts=background
    )


def test_background_prompts_leave_the_object_prompts_as_they_were(train_data) -> None:
    plain, with_background = _dataset(train_data, 0)[1], _dataset(train_data, 4)[1]
    assert not any(key.startswith("background") for key in plain["prompts"])
    for key, value in plain["prompts"].items():
        assert torch.equal(with_background["prompts"][key], value), key
    assert torch.equal(with_background["image"], plain["image"])
    extra = with_background["prompts"]
    assert extra["background_boxes"].shape[0] + extra["background_points"].shape[0] >= 3


@pytest.fixture(scope="module")
def demo_batch(train_data):
    model = build_ovsam("demo", device="cpu")  # 256 px: the 128 px items fit its input frame
    dataset = _dataset(train_data, 6)
    text = encode_vocabulary(Vocabulary(dataset.class_names), model.text_encoder)
    return model, [dataset[0], dataset[1]], text


def test_background_prompts_target_class_k_an_empty_mask_and_iou_0(demo_batch) -> None:
    model, batch, text = demo_batch
    model.eval()  # the decoder is then deterministic, so its IoU can be recomputed below
    cfg = Clip2SamLossConfig(num_points=0, roi_from_prediction=True, roi_min_iou=0.0, roi_clean_clicks=True)
    features = model.encode_image([item["image"] for item in batch])
    prompts = clip2sam._prompt_losses(model, features, batch, cfg, num_classes=len(text))
    labels, background = torch.cat(prompts.labels), torch.cat(prompts.background)
    counts = [
        i["prompts"]["background_boxes"].shape[0] + i["prompts"]["background_points"].shape[0] for i in batch
    ]
    assert int(background.sum()) == sum(counts) > 0
    assert (labels[background] == len(text)).all() and (labels[~background] < len(text)).all()
    assert len(torch.cat(prompts.parts["dice"])) == int((~background).sum())  # no dice on empty targets
    assert len(torch.cat(prompts.parts["bce"])) == len(labels)
    # IoU target 0: the IoU loss of background points is the mean square of the predicted IoUs
    item = {k: v for k, v in batch[0]["prompts"].items()}
    decoded = model.decode(
        features.select(0),
        points=item["background_points"],
        point_labels=item["background_point_labels"],
        multimask_output=True,
    )
    empty = torch.zeros(len(item["background_points"]), 1, 256, 256)
    losses = clip2sam._decode_losses(
        model, features.select(0), item, empty, cfg, is_box=False, background=True
    )
    torch.testing.assert_close(losses["iou"], (decoded.iou**2).mean(dim=1))
    assert losses["pred_boxes"].shape == (len(empty), 4)


@pytest.mark.parametrize("prompt_weight", [None, 1.0])
def test_the_loss_with_background_prompts_is_finite_and_trains(demo_batch, prompt_weight) -> None:
    model, batch, text = demo_batch
    model.train()
    cfg = Clip2SamLossConfig(num_points=0, background_prompt_weight=prompt_weight)
    loss, logs = clip2sam_loss(model, batch, text, cfg)
    loss.backward()
    assert torch.isfinite(loss) and 0.0 <= logs["acc_background"] <= 1.0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_row_weights_weigh_the_background_prompts_apart() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.5], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2, 2])
    rows = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    plain = classification_loss(logits, targets, 0.1)
    torch.testing.assert_close(plain, (rows[0] + 0.1 * rows[1] + 0.1 * rows[2]) / 1.2)
    weighted = classification_loss(logits, targets, 0.1, torch.tensor([1.0, 1.0, 0.1]))
    torch.testing.assert_close(weighted, (rows[0] + rows[1] + 0.1 * rows[2]) / 2.1)


def test_the_empty_mask_fallback_box_is_the_predictors() -> None:
    assert clip2sam.EMPTY_MASK_HALF_BOX == _EMPTY_MASK_HALF_BOX


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_background_prompts_logs_their_accuracy(train_data, tmp_path, base_args) -> None:
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "2", "--background-prompts", "4"))
    rows = [r for r in _metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["acc_background"] <= 1.0 for r in rows)


def test_a_run_saved_before_background_prompts_existed_still_resumes(
    train_data, tmp_path, base_args, capsys
) -> None:
    out = tmp_path / "run"
    args = base_args(train_data, out, "--stage", "clip2sam")
    main([*args, "--max-steps", "1"])
    state, metadata = read_state(out / "last.safetensors")
    options = json.loads(state["options"])
    for key in ("background_prompts", "background_margin"):
        del options["data"][key]  # what a run of an older version saved
    state["options"] = json.dumps(options)
    write_state(out / "last.safetensors", state, metadata=metadata)
    with pytest.raises(SystemExit) as info:
        main([*args, "--max-steps", "2", "--resume", "--background-prompts", "2"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "data.background_prompts was 0, now 2" in err, err
    main([*args, "--max-steps", "2", "--resume"])
    assert [r["step"] for r in _metrics(out) if "loss" in r] == [1, 2]
