"""The output folder of a training run: what a run writes there, and the rules for reusing the folder.

A run writes only ``RUN_OUTPUTS``: the marker ``ovsam_run.json`` (the run's options; it says the folder is a
run's output), ``metrics.jsonl``, the resume state ``last.safetensors`` and the final model ``model.safetensors``
(and, during atomic writes, their temporary ``*.tmp`` siblings). ``--overwrite`` removes exactly those, and
only in a folder that is a run's output (it has the marker, or holds nothing but run outputs): a folder with
the user's own files and no marker, e.g. ``--output-dir .``, is refused. Like the synthetic-data generator
(``data.synthetic``), anything else in the folder stays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import unique_temporary

MARKER = "ovsam_run.json"
METRICS = "metrics.jsonl"
RESUME_STATE = "last.safetensors"
MODEL_FILE = "model.safetensors"
LEGACY_RESUME_STATE = "last.pt"  # the resume state of runs before it was a safetensors file
LEGACY_MODEL_FILE = "model.pt"  # the final model of runs before checkpoint format 2
RUN_OUTPUTS = (MARKER, METRICS, RESUME_STATE, MODEL_FILE, LEGACY_RESUME_STATE, LEGACY_MODEL_FILE)


def resume_state_path(path: Path) -> Path:
    """The resume state to continue from in a run folder: ``last.safetensors``, else an older run's
    ``last.pt``; the first when neither exists."""
    legacy = path / LEGACY_RESUME_STATE
    return legacy if legacy.is_file() and not (path / RESUME_STATE).is_file() else path / RESUME_STATE


def _is_temporary_output(name: str) -> bool:
    """Temporary files of the atomic writes of run outputs (``.last.safetensors.x1y2.tmp``, ``last.pt.tmp``)."""
    return name.endswith(".tmp") and any(output in name for output in RUN_OUTPUTS)


def is_run_output_dir(path: Path) -> bool:
    """True for a folder with the run marker, or one that holds nothing but run outputs (older runs)."""
    if (path / MARKER).is_file():
        return True
    names = [entry.name for entry in path.iterdir()]
    return bool(names) and all(name in RUN_OUTPUTS or _is_temporary_output(name) for name in names)


def check_output_dir(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse a folder the run may not write into, before anything is written (see the module docstring).

    Raises:
        ValueError: not a folder; not empty without --overwrite / --resume; --overwrite on a folder that is not
            a run's output; --resume without a resume state.
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output-dir {path} is a file, not a folder.")
    if resume:
        if not resume_state_path(path).is_file():
            raise ValueError(f"--resume: there is no {path / RESUME_STATE} to continue from.")
        return
    if not path.exists() or not any(path.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"Output directory {path} is not empty; pass --overwrite to replace an earlier run's outputs, "
            "--resume to continue it, or choose another --output-dir."
        )
    if not is_run_output_dir(path):
        raise ValueError(
            f"--overwrite refuses {path.resolve()}: it is not the output of a training run (no {MARKER}) and "
            "holds other files, which --overwrite would not know to keep. Choose an empty or new --output-dir."
        )


def clear_run_outputs(path: Path) -> None:
    """Remove what a run writes (``RUN_OUTPUTS`` and their temporary files) from ``path``; nothing else."""
    for entry in path.iterdir():
        if entry.is_file() and (entry.name in RUN_OUTPUTS or _is_temporary_output(entry.name)):
            entry.unlink()


def write_marker(path: Path, options: dict[str, Any]) -> None:
    """Write ``ovsam_run.json``: the run's options (JSON), which also mark the folder as a run's output."""
    _write_text(path / MARKER, json.dumps({"kind": "ovsam_model.train run", "options": options}, indent=2))


def read_marker(path: Path) -> dict[str, Any] | None:
    """The options stored in ``path``'s marker, or None (no marker, or an unreadable one)."""
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    options = data.get("options") if isinstance(data, dict) else None
    return options if isinstance(options, dict) else None


def trim_metrics(path: Path, step: int) -> int:
    """Drop the rows of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again); unreadable
    lines (a row cut by a kill) go too. Returns the number of rows dropped."""
    metrics = path / METRICS
    if not metrics.is_file():
        return 0
    kept, dropped = [], 0
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        _write_text(metrics, "".join(f"{line}\n" for line in kept))
    return dropped


def _write_text(path: Path, text: str) -> None:
    temporary = unique_temporary(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
