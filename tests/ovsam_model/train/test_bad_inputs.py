"""Bad command lines of ``python -m ovsam_model.train``: one table of (bad input -> expected message); each row
must end with one line on stderr, exit status 2, no traceback, and the output folder untouched: an earlier
run's folder (marker, metrics, the user's own file) given with --overwrite keeps every byte. New cases join the
table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ovsam_model.train.cli import main

NO_FILE = "/path/that/does/not/exist"


def _empty_coco(tmp: Path) -> str:
    path = tmp / "empty.json"
    image = {"id": 1, "file_name": "a.tif", "height": 8, "width": 8}
    path.write_text(
        json.dumps({"images": [image], "annotations": [], "categories": [{"id": 1, "name": "x"}]})
    )
    return str(path)


def _a_file(tmp: Path) -> str:
    path = tmp / "a_file.txt"
    path.write_text("not a folder")
    return str(path)


# (id, extra arguments (a callable of the temporary folder where a file must exist), expected fragment)
BAD_INPUTS = [
    ("missing-annotations", ["--train-ann", f"{NO_FILE}.json"], f"--train-ann {NO_FILE}.json: no such file"),
    ("missing-val-annotations", ["--val-ann", f"{NO_FILE}.json"], "--val-ann"),
    ("missing-image-root", ["--train-images", NO_FILE], f"--train-images {NO_FILE}: no such folder"),
    ("missing-init-checkpoint", ["--init-checkpoint", f"{NO_FILE}.pt"], "not a known weights source name"),
    ("missing-sam-checkpoint", ["--sam-checkpoint", f"{NO_FILE}.pth"], "--sam-checkpoint"),
    ("unknown-model", ["--model", "no_such_model"], "Unknown model 'no_such_model'"),
    ("zero-epochs", ["--epochs", "0"], "--epochs must be at least 1"),
    ("zero-max-steps", ["--max-steps", "0"], "--max-steps must be at least 1"),
    ("zero-prompts", ["--num-prompts", "0"], "--num-prompts must be at least 1"),
    ("zero-batch", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("batch-over-images", ["--batch-size", "8"], "--batch-size 8 is larger than the 4 training images"),
    ("negative-lr", ["--lr", "-1"], "--lr must be positive"),
    ("box-fraction", ["--box-fraction", "1.5"], "--box-fraction must be between 0 and 1"),
    ("resize-ratio", ["--resize-ratio", "2", "1"], "--resize-ratio needs 0 < MIN <= MAX"),
    ("negative-points", ["--num-points", "-1"], "--num-points must be 0 (dense: every logit) or more"),
    ("negative-background-prompts", ["--background-prompts", "-1"], "--background-prompts must be 0 (none)"),
    ("negative-background-margin", ["--background-margin", "-2"], "--background-margin must be 0 or more"),
    (
        "negative-background-weight",
        ["--background-prompt-weight", "-1"],
        "--background-prompt-weight must be",
    ),
    ("background-prompts-not-a-number", ["--background-prompts", "some"], "invalid int value: 'some'"),
    ("negative-save-every", ["--save-every-steps", "-1"], "--save-every-steps must be 0"),
    ("zero-log-every", ["--log-every", "0"], "--log-every must be at least 1"),
    ("negative-workers", ["--workers", "-1"], "--workers must be 0 or more"),
    ("fp16-on-cpu", ["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
    ("unknown-device", ["--device", "toaster"], "--device toaster"),
    ("not-a-number", ["--num-prompts", "many"], "invalid int value: 'many'"),
    ("unknown-choice", ["--base-classes", "imagenet"], "invalid choice: 'imagenet'"),
    ("resume-and-overwrite", ["--resume"], "--resume continues a run and --overwrite replaces it"),
    (
        "scratch-and-init",
        ["--from-scratch", "--init-checkpoint", "tiny"],
        "--from-scratch starts from random",
    ),
    ("no-usable-images", lambda tmp: ["--train-ann", _empty_coco(tmp)], "has no annotations"),
    ("output-is-a-file", lambda tmp: ["--output-dir", _a_file(tmp)], "is a file, not a folder"),
    ("sam2clip-without-images", ["--stage", "sam2clip"], "--stage sam2clip needs --images"),
    ("several-problems-at-once", ["--epochs", "0", "--lr", "0"], "--epochs must be at least 1; --lr must be"),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    train_data, tmp_path, base_args, capsys, extra, expected
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    before = {
        "notes.txt": "the user's own file",
        "ovsam_run.json": '{"options": {}}',
        "metrics.jsonl": "{}\n",
    }
    for name, text in before.items():
        (precious / name).write_text(text)
    extra = extra(tmp_path) if callable(extra) else extra
    argv = base_args(train_data, precious, "--stage", "clip2sam", "--epochs", "1", "--overwrite") + extra
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_text() for p in precious.iterdir()} == before


def test_overwrite_refuses_a_folder_that_is_not_a_run_output(train_data, tmp_path, base_args, capsys) -> None:
    here = tmp_path / "project"
    here.mkdir()
    (here / "analysis.py").write_text("print('mine')")
    cwd = Path.cwd()
    os.chdir(here)
    try:
        with pytest.raises(SystemExit) as info:
            main(base_args(train_data, Path("."), "--stage", "clip2sam", "--max-steps", "1", "--overwrite"))
    finally:
        os.chdir(cwd)
    assert info.value.code == 2
    assert "not the output of a training run" in capsys.readouterr().err
    assert [p.name for p in here.iterdir()] == ["analysis.py"]


def test_overwrite_replaces_only_what_a_run_wrote(train_data, tmp_path, base_args) -> None:
    out = tmp_path / "run"
    main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "2"))
    (out / "my_notes.txt").write_text("kept")
    main(base_args(train_data, out, "--stage", "clip2sam", "--max-steps", "1", "--overwrite"))
    assert (out / "my_notes.txt").read_text() == "kept"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1]  # the earlier run's rows are gone
    assert {p.name for p in out.iterdir()} == {
        "my_notes.txt",
        "ovsam_run.json",
        "metrics.jsonl",
        "last.safetensors",
        "model.safetensors",
    }
