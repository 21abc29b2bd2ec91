"""Interrupting and resuming training: Ctrl-C saves the resume state at the current step, --save-every-steps
saves it on the way, and a resumed run takes exactly the steps an uninterrupted run takes (same weights, same
losses) with one metrics row per step; resuming with other options is refused up front."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from ovsam_model.checkpoint import read_own_checkpoint
from ovsam_model.config import CONFIG_DIR
from ovsam_model.tensorfile import read_state
from ovsam_model.train import cli, run
from ovsam_model.train.cli import main, parse_config

EPOCHS = ("--epochs", "2", "--batch-size", "1")  # 4 images: 4 steps per epoch, 8 in all


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _steps(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in _rows(out) if "loss" in r]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return read_own_checkpoint(out / "model.safetensors")[1]["state_dict"]


def _stop_at(step: int, action):
    def hook(current: int) -> None:
        if current == step:
            action()

    return hook


def _sigint() -> None:
    signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends


class _Crash(Exception):
    """A fault that kills the run without the interrupt path (like SIGKILL)."""


def _crash() -> None:
    raise _Crash


@pytest.fixture(scope="module")
def uninterrupted(train_data, tmp_path_factory, request) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    base_args = request.getfixturevalue("base_args")
    main(base_args(train_data, out, "--stage", "clip2sam", *EPOCHS))
    return out


def _assert_same_run(out: Path, reference: Path) -> None:
    assert [s for s, _ in _steps(out)] == list(range(1, 9))  # one row per step, none repeated
    assert _steps(out) == _steps(reference)  # the same losses: same data, same RNG draws
    expected = _weights(reference)
    for name, value in _weights(out).items():
        assert torch.equal(value, expected[name]), name


def test_ctrl_c_mid_epoch_saves_and_resume_is_exact(train_data, tmp_path, base_args, uninterrupted) -> None:
    out = tmp_path / "run"
    args = base_args(train_data, out, "--stage", "clip2sam", *EPOCHS)
    with pytest.raises(KeyboardInterrupt):
        run.train(parse_config(args), on_step=_stop_at(3, _sigint))
    state, _ = read_state(out / "last.safetensors")  # no pickle: tensors and a JSON skeleton
    assert (state["step"], state["epoch"], state["epoch_step"]) == (3, 0, 3)  # mid-epoch, not the epoch end
    assert not (out / "model.safetensors").exists()
    assert _rows(out)[-1] == {"event": "interrupted", "step": 3, "epoch": 0, "resume": "last.safetensors"}
    main([*args, "--resume"])
    _assert_same_run(out, uninterrupted)
    assert [r["resumed_at"] for r in _rows(out) if r.get("event") == "start"] == [0, 3]


def test_a_crash_resumes_from_the_last_periodic_save_without_repeated_rows(
    train_data, tmp_path, base_args, uninterrupted
) -> None:
    out = tmp_path / "run"
    args = base_args(train_data, out, "--stage", "clip2sam", *EPOCHS, "--save-every-steps", "2")
    with pytest.raises(_Crash):
        run.train(parse_config(args), on_step=_stop_at(7, _crash))
    assert read_state(out / "last.safetensors")[0]["step"] == 6
    assert [s for s, _ in _steps(out)] == list(range(1, 8))  # step 7 was logged, but not saved
    main([*args, "--resume"])
    _assert_same_run(out, uninterrupted)  # step 7's first row was dropped, the redone step logged once


def test_ctrl_c_through_the_cli_exits_130_and_says_how_to_resume(
    train_data, tmp_path, base_args, capsys, monkeypatch
) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(cli, "train", lambda config: run.train(config, on_step=_stop_at(1, _sigint)))
    with pytest.raises(SystemExit) as info:
        main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "3"))
    assert info.value.code == 130
    assert f"{out}/last.safetensors; continue with --resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--batch-size", "1"], "optim.batch_size was 2, now 1"),
        (["--num-prompts", "4"], "data.num_prompts was 6, now 4"),
        (["--seed", "5"], "run.seed was 0, now 5"),
        ("other-model", "model.name was 'tiny'"),
    ],
    ids=["batch-size", "num-prompts", "seed", "model"],
)
def test_resuming_with_options_that_must_match_is_refused(
    train_data, tmp_path, base_args, capsys, change, expected
) -> None:
    out = tmp_path / "run"
    args = base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1")
    main(args)
    before = (out / "metrics.jsonl").read_text()
    if change == "other-model":
        other = json.loads((CONFIG_DIR / "tiny.json").read_text()) | {"name": "tiny_copy"}
        (tmp_path / "tiny_copy.json").write_text(json.dumps(other))
        change = []
        args[args.index("tiny")] = str(tmp_path / "tiny_copy.json")
    with pytest.raises(SystemExit) as info:
        main([*args, *change, "--max-steps", "2", "--resume"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err, err
    assert (out / "metrics.jsonl").read_text() == before  # nothing was written


def test_resume_may_extend_the_run(train_data, tmp_path, base_args) -> None:
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1"))
    main(
        base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "3", "--log-every", "1", "--resume")
    )
    assert [s for s, _ in _steps(out)] == [1, 2, 3]


def test_an_older_runs_torch_resume_state_still_resumes(train_data, tmp_path, base_args) -> None:
    """Runs from before the safetensors resume state wrote last.pt (a torch file): --resume reads it."""
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--epochs", "1"))
    state, _ = read_state(out / "last.safetensors")
    torch.save(state, out / "last.pt")
    (out / "last.safetensors").unlink()
    main(base_args(train_data, out, "--stage", "clip2sam", "--epochs", "2", "--resume"))
    starts = [r for r in _rows(out) if r.get("event") == "start"]
    assert starts[-1]["resumed_at"] == state["step"] and (out / "last.safetensors").is_file()


def test_a_damaged_resume_state_is_refused_with_a_message(train_data, tmp_path, base_args, capsys) -> None:
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1"))
    data = bytearray((out / "last.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (out / "last.safetensors").write_bytes(bytes(data))
    with pytest.raises(SystemExit) as info:
        main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "2", "--resume"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "checksum does not match" in err and "Traceback" not in err
