"""Bad arguments to the command lines of the model package: one line on stderr, exit status 2, no traceback,
nothing written. One row per case; the training and evaluation CLIs have their own tables beside their tests."""

from __future__ import annotations

import pytest

from ovsam_model import demo
from ovsam_model.data import synthetic

DEMO_CASES = [
    ("size too small", ["--size", "0"], "--size must be between 64 and 4096"),
    ("size too large", ["--size", "100000"], "--size must be between 64 and 4096"),
    ("negative seed", ["--seed", "-1"], "--seed must be 0 or more"),
    ("unknown model", ["--model", "nope"], "Unknown model 'nope'"),
    ("blank class", ["--vocabulary", " "], "has no class name"),
    ("unknown device", ["--device", "tpu"], "Unknown device 'tpu'"),
    ("no such output folder", ["--out", "/nonexistent/dir/x.png"], "does not exist"),
    ("size not a number", ["--size", "big"], "invalid int value"),
]

SYNTHETIC_CASES = [
    ("size 0", ["--size", "0"], "size must be between 64 and 4096"),
    ("size huge", ["--size", "100000"], "size must be between 64 and 4096"),
    ("negative count", ["--num-train", "-1"], "must be >= 0"),
    ("nothing to write", ["--num-train", "0", "--num-val", "0"], "not both 0"),
    ("no objects", ["--objects-per-image", "0"], "1 <= min <= max"),
    ("min above max", ["--objects-per-image", "5", "2"], "1 <= min <= max"),
    ("three numbers", ["--objects-per-image", "1", "2", "3"], "one or two numbers"),
    ("negative seed", ["--seed", "-1"], "seed must be 0 or more"),
]


def _fails_cleanly(main, argv, message, capsys) -> str:
    with pytest.raises(SystemExit) as error:
        main(argv)
    err = capsys.readouterr().err
    assert error.value.code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()[-1]) > 0
    return err


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in DEMO_CASES], ids=[c[0] for c in DEMO_CASES])
def test_demo_cli_bad_arguments(argv, message, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _fails_cleanly(demo.main, argv, message, capsys)
    assert list(tmp_path.iterdir()) == []  # no overlay written


@pytest.mark.parametrize(
    ("argv", "message"), [c[1:] for c in SYNTHETIC_CASES], ids=[c[0] for c in SYNTHETIC_CASES]
)
def test_synthetic_cli_bad_arguments(argv, message, tmp_path, capsys) -> None:
    out = tmp_path / "data"
    _fails_cleanly(synthetic.main, ["--out", str(out), "--quiet", *argv], message, capsys)
    assert not out.exists()
