"""Bad input to ``python -m ovsam_model.annotate``: one line on stderr, exit status 2, no traceback, nothing
written or changed. One row per case: a name, how to make it (files in a folder and the arguments), and the
message."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from annotate_helpers import FAST, synthetic_stack

from ovsam_model.annotate import cli, cluster, output
from ovsam_model.annotate.cli import main

Setup = Callable[[Path], list[str]]
OUR_COCO = '{"info": {"description": "ovsam_model.annotate"}, "images": [], "annotations": []}'


def _stack(folder: Path) -> str:
    path = folder / "stack.tif"
    if not path.exists():
        tifffile.imwrite(path, synthetic_stack(2), photometric="minisblack")
    return str(path)


def _file(folder: Path, name: str, data: bytes | str) -> str:
    path = folder / name
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return str(path)


def _empty_npy(folder: Path) -> list[str]:
    np.save(folder / "empty.npy", np.zeros((2, 0, 10), np.uint8))
    return [str(folder / "empty.npy")]


def _labels(folder: Path, shape: tuple[int, ...], ours: bool = True) -> str:
    """A zarr label array, marked as this tool's (``ours``) or not."""
    array = zarr.open_array(str(folder / "labels.zarr"), mode="w", shape=shape, dtype=np.int32)
    if ours:
        array.attrs["written_by"] = output.MARKER
    return str(folder / "labels.zarr")


def _input_zarr(folder: Path) -> str:
    path = folder / "stack.zarr"
    zarr.open_array(str(path), mode="w", shape=(2, 96, 96), dtype=np.uint16)[:] = synthetic_stack(2)
    return str(path)


def _mine(folder: Path) -> str:
    (folder / "mine").mkdir()
    (folder / "mine" / "thesis.tex").write_text("keep")
    return str(folder / "mine")


def _two_sizes(folder: Path) -> list[str]:
    tifffile.imwrite(folder / "a.tif", np.zeros((40, 40), np.uint16))
    tifffile.imwrite(folder / "b.tif", np.zeros((50, 40), np.uint16))
    return [str(folder / "a.tif"), str(folder / "b.tif")]


def _out(folder: Path) -> list[str]:
    return ["--out", str(folder / "annotations.json")]


CASES: list[tuple[str, Setup, str]] = [
    ("input missing", lambda d: [str(d / "missing.tif"), *_out(d)], "Input not found"),
    ("not an image", lambda d: [_file(d, "notes.txt", "hello"), *_out(d)], "is not an image: expected"),
    ("broken png", lambda d: [_file(d, "x.png", b"garbage"), *_out(d)], "is not an image that can be read"),
    ("empty image", lambda d: [*_empty_npy(d), *_out(d)], "is empty (size 0 x 10 x 2)"),
    ("folder without images", lambda d: [_mine(d), *_out(d)], "holds no images"),
    (
        "output exists",
        lambda d: [_stack(d), "--out", _file(d, "annotations.json", OUR_COCO)],
        "annotations.json exists: pass --overwrite",
    ),
    (
        "output exists, not ours",
        lambda d: [_stack(d), "--out", _file(d, "annotations.json", "{}"), "--overwrite"],
        "annotations.json exists and was not written by ovsam_model.annotate: it is never replaced",
    ),
    (
        "output is an input",
        lambda d: [_stack(d), "--out", _stack(d), "--overwrite"],
        "stack.tif exists and was not written by ovsam_model.annotate",
    ),
    (
        "output folder missing",
        lambda d: [_stack(d), "--out", str(d / "no" / "a.json")],
        "folder of --out does",
    ),
    ("output is a folder", lambda d: [_stack(d), "--out", _mine(d)], "is a folder"),
    (
        "vocabulary missing",
        lambda d: [_stack(d), *_out(d), "--vocabulary", str(d / "classes.txt")],
        "Vocabulary file not found",
    ),
    (
        "vocabulary empty",
        lambda d: [_stack(d), *_out(d), "--vocabulary", _file(d, "classes.txt", "# none\n\n")],
        "The vocabulary is empty",
    ),
    (
        "class not in the vocabulary file",
        lambda d: [_stack(d), *_out(d), "--vocabulary", _file(d, "v.txt", "nucleus\n"), "--classes", "rod"],
        "--classes: the vocabulary has no class 'rod'; its classes are nucleus.",
    ),
    (
        "class not in the model's vocabulary",
        lambda d: [_stack(d), *_out(d), "--classes", "nucleus,cell"],
        "has no class 'cell'; its classes are nucleus, rod, ring, cluster",
    ),
    ("no class named", lambda d: [_stack(d), *_out(d), "--classes", " , "], "--classes names no class"),
    (
        "model without a vocabulary",
        lambda d: [_stack(d), *_out(d), "--model", "tiny"],
        "no vocabulary of its own",
    ),
    ("unknown model", lambda d: [_stack(d), *_out(d), "--model", "nope"], "Unknown model 'nope'"),
    (
        "scheduler that does not answer",
        lambda d: [_stack(d), *_out(d), "--scheduler", "tcp://127.0.0.1:9"],
        "No Dask scheduler answered at tcp://127.0.0.1:9 within 1 s",
    ),
    ("malformed scheduler", lambda d: [_stack(d), *_out(d), "--scheduler", "nonsense"], "No Dask scheduler"),
    (
        "scheduler and workers",
        lambda d: [_stack(d), *_out(d), "--scheduler", "tcp://h:1", "--workers", "2"],
        "not allowed with argument",
    ),
    ("no workers", lambda d: [_stack(d), *_out(d), "--workers", "0"], "--workers must be 1 or more"),
    (
        "bad setting",
        lambda d: [_stack(d), *_out(d), "--min-iou", "2"],
        "min_iou must be a number between 0 and 1",
    ),
    ("bad grid", lambda d: [_stack(d), *_out(d), "--points-per-side", "0"], "points_per_side must be"),
    (
        "labels-out a folder of the user's",
        lambda d: [_stack(d), *_out(d), "--labels-out", _mine(d), "--overwrite"],
        "mine exists and was not written by ovsam_model.annotate: it is never replaced",
    ),
    (
        "labels-out a zarr array of the user's",
        lambda d: [_stack(d), *_out(d), "--labels-out", _labels(d, (2, 96, 96), ours=False), "--overwrite"],
        "labels.zarr exists and was not written by ovsam_model.annotate",
    ),
    (
        "labels-out is the input",
        lambda d: [_input_zarr(d), *_out(d), "--labels-out", _input_zarr(d), "--overwrite"],
        "stack.zarr exists and was not written by ovsam_model.annotate",
    ),
    (
        "labels-out exists, of another shape",
        lambda d: [_stack(d), *_out(d), "--labels-out", _labels(d, (2, 50, 50))],
        "labels.zarr exists (a int32 array of shape (2, 50, 50); these inputs need (2, 96, 96)): pass --overwrite",
    ),
    (
        "labels-out for images of two sizes",
        lambda d: [*_two_sizes(d), *_out(d), "--labels-out", str(d / "l.zarr")],
        "--labels-out needs images of one size",
    ),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("setup", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(setup: Setup, message: str, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)
    argv = [*FAST, *setup(tmp_path)]  # the case's own settings come last and win
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as error:
        main(argv)
    err = capsys.readouterr().err
    assert error.value.code == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("python -m ovsam_model.annotate: error: ")
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed


def test_labels_of_another_shape_are_refused_on_resume(tmp_path, capsys, monkeypatch):
    argv = [_stack(tmp_path), *_out(tmp_path), "--labels-out", str(tmp_path / "labels.zarr"), *FAST]
    real = cli.annotate_slice

    def interrupt(ref, **kwargs):
        if ref.index == 1:
            raise KeyboardInterrupt
        return real(ref, **kwargs)

    monkeypatch.setattr(cli, "annotate_slice", interrupt)
    assert main(argv) == 130
    _labels(tmp_path, (2, 50, 50))  # replaced by another array
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as error:
        main(argv)
    err = capsys.readouterr().err
    assert error.value.code == 2
    assert "holds a int32 array of shape (2, 50, 50); these inputs need int32 (2, 96, 96)" in err
    assert _snapshot(tmp_path) == before and output.journal_path(tmp_path / "annotations.json").exists()


def test_the_module_runs_and_fails_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ovsam_model.annotate", str(tmp_path / "missing.tif"), "--out", "a.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "Input not found" in done.stderr and not (tmp_path / "a.json").exists()


def test_without_dask_a_cluster_run_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it fails
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as error:
        main([*FAST, _stack(tmp_path), *_out(tmp_path), "--workers", "2"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "pip install 'napari-ovsam[batch]'" in err
    assert len(err.strip().splitlines()) == 1
    assert set(_snapshot(tmp_path)) - set(before) == {str(tmp_path / "stack.tif")}
