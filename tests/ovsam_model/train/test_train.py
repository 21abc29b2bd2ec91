"""Training smoke runs on the tiny config: both stages, frozen parts, resume, output-dir safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ovsam_model.build import build_ovsam
from ovsam_model.train.cli import main


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
    model = build_ovsam(out / "model.pt", device="cpu")
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
    assert (out / "last.pt").is_file()
    main(base_args(train_data, out, "--stage", "clip2sam", "--epochs", "2", "--resume"))
    records = _metrics(out)
    starts = [r for r in records if r.get("event") == "start"]
    assert starts[-1]["resumed_at"] == 2
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4]  # the second run took steps 3 and 4, it did not start over


def test_existing_output_dir_is_never_overwritten_silently(train_data, tmp_path, base_args):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1"))
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(FileNotFoundError, match="last.pt"):
        main(base_args(train_data, tmp_path / "fresh", "--stage", "clip2sam", "--resume"))


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
    assert len(list(cache.glob("*.pt"))) == 4  # one fp16 file per image, written in epoch 1, read in epoch 2
    assert all(torch.load(p, weights_only=True).dtype == torch.float16 for p in cache.glob("*.pt"))
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
    model = build_ovsam(out / "model.pt", device="cpu")
    assert not model.backbone.frozen
    state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert any(k.startswith("backbone.visual.") for k in state)  # a from-scratch trunk is stored


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_two_cpu_processes_stay_in_sync(train_data, tmp_path, base_args):
    import subprocess
    import sys

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
    assert (out / "model.pt").is_file() and not list(out.glob("*.tmp"))


def test_training_rois_follow_the_prediction_only_where_it_matches_the_gt():
    from ovsam_model.train.clip2sam import _training_rois

    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0], [10.0, 10.0, 50.0, 50.0]])
    predicted = torch.tensor([[12.0, 11.0, 49.0, 52.0], [60.0, 60.0, 90.0, 90.0]])
    rois = _training_rois(gt, predicted)
    assert rois[0].tolist() == predicted[0].tolist()  # close to the GT: named as at inference
    assert rois[1].tolist() == gt[1].tolist()  # a wrong mask does not teach a wrong name
    assert torch.equal(_training_rois(gt, None), gt)
