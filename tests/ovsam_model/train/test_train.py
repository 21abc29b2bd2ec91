"""Training smoke runs on the tiny config: both stages, frozen parts, resume, output-dir safety."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovsam_model.build import build_ovsam
from ovsam_model.checkpoint import read_own_checkpoint, read_safetensors
from ovsam_model.modeling.ovsam import Decoded
from ovsam_model.train.cli import main
from ovsam_model.train.clip2sam import Clip2SamLossConfig, _decode_losses, _training_rois
from ovsam_model.train.sam2clip import TeacherCache


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_clip2sam_trains_only_its_parts_and_writes_a_checkpoint(train_data, tmp_path, base_args):
    out = tmp_path / "run"
    torch.manual_seed(0)
    before = build_ovsam("tiny", device="cpu").state_dict()
    torch.manual_seed(0)  # the run's model starts from the same random weights
    results = main(
        base_args(
            train_data,
            out,
            "--stage",
            "clip2sam",
            "--epochs",
            "2",
            "--seed",
            "0",
            "--val-ann",
            str(train_data["val"]),
            "--lr",
            "1e-3",
        )
    )
    assert {"box_miou", "point_miou", "box_acc", "point_acc"} <= set(results)
    model = build_ovsam(out / "model.safetensors", device="cpu")
    after = model.state_dict()
    for name, value in before.items():
        frozen = name.startswith(("backbone.", "clip_text.", "neck.", "prompt_encoder."))
        changed = not torch.equal(value, after[name])
        if frozen:
            assert not changed, f"frozen {name} changed"
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("mask_decoder."))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("fpn."))
    records = _metrics(out)
    assert records[0]["event"] == "start" and records[-1]["event"] == "done"
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 4 and all(r["loss"] > 0 for r in steps)
    assert any(r.get("event") == "val" for r in records)
    assert model.checkpoint_extras.vocabulary.names == ["nucleus", "rod", "ring", "cluster"]


def test_resume_continues_instead_of_restarting(train_data, tmp_path, base_args):
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--epochs", "1"))
    assert (out / "last.safetensors").is_file()
    main(base_args(train_data, out, "--stage", "clip2sam", "--epochs", "2", "--resume"))
    records = _metrics(out)
    starts = [r for r in records if r.get("event") == "start"]
    assert starts[-1]["resumed_at"] == 2
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4]  # the second run took steps 3 and 4, it did not start over


def test_existing_output_dir_is_never_overwritten_silently(train_data, tmp_path, base_args, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(SystemExit) as info:
        main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1"))
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(SystemExit):
        main(base_args(train_data, tmp_path / "fresh", "--stage", "clip2sam", "--resume"))
    assert "last.safetensors" in capsys.readouterr().err


def test_sam2clip_distils_the_adapter_with_a_teacher_cache(train_data, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "teacher"
    images = train_data["root"] / "train"
    args = [
        "--stage",
        "sam2clip",
        "--model",
        "tiny",
        "--images",
        str(images),
        "--teacher",
        "tiny",
        "--teacher-cache",
        str(cache),
        "--output-dir",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--epochs",
        "2",
        "--warmup-iters",
        "1",
        "--log-every",
        "1",
        "--device",
        "cpu",
    ]
    main(args)
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 4  # one fp16 file per image, written in epoch 1, read in epoch 2
    assert all(read_safetensors(p)[0]["feature"].dtype == torch.float16 for p in files)
    steps = [r for r in _metrics(out) if "loss_mse" in r]
    assert len(steps) == 4


def test_end2end_trains_the_trunk_of_a_from_scratch_model(train_data, tmp_path, base_args):
    out = tmp_path / "run"
    config = json.loads((Path(__file__).parents[3] / "src/ovsam_model/configs/tiny.json").read_text())
    config["clip"]["frozen"] = False
    config_path = tmp_path / "tiny_scratch.json"
    config_path.write_text(json.dumps(config))
    args = base_args(train_data, out, "--stage", "end2end", "--max-steps", "2", "--from-scratch")
    args[args.index("tiny")] = str(config_path)
    main(args)
    model = build_ovsam(out / "model.safetensors", device="cpu")
    assert not model.backbone.frozen
    state = read_own_checkpoint(out / "model.safetensors")[1]["state_dict"]
    assert any(k.startswith("backbone.visual.") for k in state)  # a from-scratch trunk is stored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_clip2sam_trains_on_cuda(train_data, tmp_path, base_args, precision):
    out = tmp_path / "run"
    args = base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "12", "--device", "cuda")
    main([*args, "--precision", precision, "--val-ann", str(train_data["val"]), "--val-every", "6"])
    steps = [r for r in _metrics(out) if "loss" in r]
    assert len(steps) == 12 and all(np.isfinite(r["loss"]) for r in steps)
    # fp16: the gradient scaler starts high and skips the first steps whose gradients overflow (norm inf/nan)
    settled = steps if precision != "fp16" else steps[-4:]
    assert all(np.isfinite(r["grad_norm"]) for r in settled)
    assert build_ovsam(out / "model.safetensors", device="cpu").checkpoint_extras.vocabulary.names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sam2clip_teacher_cache_on_cuda(train_data, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "teacher"
    args = ["--stage", "sam2clip", "--model", "tiny", "--images", str(train_data["root"] / "train")]
    args += ["--teacher", "tiny", "--teacher-cache", str(cache), "--output-dir", str(out), "--epochs", "2"]
    args += ["--batch-size", "2", "--workers", "0", "--warmup-iters", "1", "--log-every", "1"]
    args += ["--device", "cuda"]
    main(args)
    assert len(list(cache.glob("*.safetensors"))) == 4
    assert len([r for r in _metrics(out) if "loss_mse" in r]) == 4


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_cpu_processes_stay_in_sync(train_data, tmp_path, base_args):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "ovsam_model.train",
        *base_args(
            train_data, out, "--stage", "clip2sam", "--epochs", "1", "--batch-size", "1", "--threads", "1"
        ),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = _metrics(out)
    sync = [r for r in records if r.get("event") == "ddp_sync"]
    assert len(sync) == 1 and len(sync[0]["checksums"]) == 2
    assert sync[0]["checksums"][0] == sync[0]["checksums"][1]
    start = next(r for r in records if r.get("event") == "start")
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 2  # 4 images / (2 ranks x 1)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.tmp"))


def test_training_rois_follow_the_prediction_only_where_it_matches_the_gt():
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0], [10.0, 10.0, 50.0, 50.0]])
    predicted = torch.tensor([[12.0, 11.0, 49.0, 52.0], [60.0, 60.0, 90.0, 90.0]])
    rois = _training_rois(gt, predicted)
    assert rois[0].tolist() == predicted[0].tolist()  # close to the GT: named as at inference
    assert rois[1].tolist() == gt[1].tolist()  # a wrong mask does not teach a wrong name
    assert torch.equal(_training_rois(gt, None), gt)


def test_training_rois_take_partial_masks_down_to_the_given_iou_but_never_empty_ones():
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0]] * 3)
    predicted = torch.tensor([[10.0, 10.0, 30.0, 30.0], [45.0, 45.0, 80.0, 80.0], [0.0, 0.0, 0.0, 0.0]])
    # box IoUs 0.25 (a part of the object), 0.009 (mostly elsewhere), 0 (empty mask)
    assert _training_rois(gt, predicted).tolist() == gt.tolist()
    assert _training_rois(gt, predicted, 0.2).tolist() == [
        predicted[0].tolist(),
        gt[1].tolist(),
        gt[2].tolist(),
    ]
    assert _training_rois(gt, predicted, 0.0).tolist() == [*predicted[:2].tolist(), gt[2].tolist()]


def test_clicks_are_named_in_training_from_the_clicked_part_of_their_mask(monkeypatch):
    model = build_ovsam("tiny", device="cpu")
    size = model.config.image_size
    logits = torch.full((1, 3, 32, 32), -5.0)
    logits[0, :, 4:8, 4:8] = 5.0  # the clicked part
    logits[0, :, 20:28, 20:28] = 5.0  # a stray patch elsewhere
    monkeypatch.setattr(model, "decode", lambda *a, **k: Decoded(logits, torch.zeros(1, 3)))
    cell = size / 32
    click = {"points": torch.tensor([[[6 * cell, 6 * cell]]]), "point_labels": torch.ones(1, 1)}
    targets = torch.zeros(1, 1, size, size)
    boxes = {}
    for clean in (False, True):
        cfg = Clip2SamLossConfig(num_points=16, roi_from_prediction=True, roi_clean_clicks=clean)
        boxes[clean] = _decode_losses(model, None, click, targets, cfg, is_box=False)["pred_boxes"][
            0
        ].tolist()
    assert boxes[False] == [4 * cell, 4 * cell, 28 * cell, 28 * cell]  # stretched by the stray patch
    assert boxes[True] == [
        4 * cell,
        4 * cell,
        8 * cell,
        8 * cell,
    ]  # the clicked part, as the predictor names it


def test_a_damaged_teacher_cache_entry_is_a_miss_and_is_rewritten(tmp_path, caplog):
    cache = TeacherCache(tmp_path)
    feature = torch.randn(8, 4, 4)
    cache.put("image.tif#None", feature)
    torch.testing.assert_close(cache.get("image.tif#None"), feature.half())
    path = next(tmp_path.glob("*.safetensors"))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.get("image.tif#None") is None and "damaged" in caplog.text
    assert cache.get("another.tif#None") is None and (cache.hits, cache.misses) == (1, 2)
    cache.put("image.tif#None", feature)
    torch.testing.assert_close(cache.get("image.tif#None"), feature.half())
