"""The outputs of a batch run: one COCO JSON written at the end, a journal that makes the run resumable, and
an optional zarr label array written slice by slice.

The journal, ``<out>.partial.jsonl`` beside the output, is JSON lines: first a header with the run's options
(model, vocabulary, settings, inputs, ...), then one line per finished slice (its index and COCO
annotations), each flushed to disk when the slice is done. A run started again with the same command reads
it, skips the finished slices and appends; a header with other options is refused. When every slice is done
the COCO file is written atomically (complete, or not at all: ``ovsam_model.atomic``) and the journal removed.
The final file depends only on the options, not on the order slices finished in or on interruptions.

Nothing that exists is replaced without ``overwrite``, and ``overwrite`` removes only this tool's outputs:
the COCO file, its journal, and a zarr array at ``--labels-out`` (never a folder that is not one).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..atomic import unique_temporary
from ..automatic import coco_categories
from .inputs import SliceRef

MARKER = "ovsam_model.annotate"  # names this tool in each output, so --overwrite replaces only its own files
JOURNAL_SUFFIX = ".partial.jsonl"
JOURNAL_FORMAT = f"{MARKER} journal"
JOURNAL_HEAD = json.dumps({"format": JOURNAL_FORMAT})[:-1].encode()
COCO_HEAD = json.dumps({"info": {"description": MARKER}})[:-2].encode()
JOURNAL_VERSION = 1
LABELS_DTYPE = np.int32


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + JOURNAL_SUFFIX)


def normalised(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as they read back from JSON (tuples become lists), so a header compares equal."""
    return json.loads(json.dumps(options))


def read_journal(path: Path, options: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """The finished slices of a journal: {index: annotations}. A last line cut short (a crash while writing)
    is ignored (that slice runs again).

    Raises:
        ValueError: the file is not a journal, or was written by a run with other options.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
        raise ValueError(
            f"{path} is not a journal of this tool; move it away, or pass --overwrite to start again."
        )
    if header.get("options") != normalised(options):
        changed = sorted(
            key
            for key in set(header.get("options", {})) | set(options)
            if header.get("options", {}).get(key) != normalised(options).get(key)
        )
        raise ValueError(
            f"{path} belongs to a run with other options ({', '.join(changed)} differ): run the same command "
            "as before to resume it, or pass --overwrite to start again."
        )
    done: dict[int, list[dict[str, Any]]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            done[int(entry["index"])] = list(entry["annotations"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # cut short by a crash: that slice is annotated again
    return done


class Journal:
    """Appends one line per finished slice to the journal, flushed and synced to disk."""

    def __init__(self, path: Path, options: dict[str, Any], *, resume: bool) -> None:
        self.path = path
        if resume:
            _drop_partial_last_line(path)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        else:
            self._file = open(path, "x", encoding="utf-8")  # noqa: SIM115
            header = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "options": normalised(options)}
            self._write(header)

    def record(self, index: int, annotations: list[dict[str, Any]]) -> None:
        self._write({"index": index, "annotations": annotations})

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that a crash left without its newline, so that appended lines start on their own."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def check_outputs(
    out: Path, labels_out: Path | None, labels_shape: tuple[int, ...] | None, *, overwrite: bool
) -> bool:
    """Check the outputs before anything runs; returns True when a journal is there to resume.

    Raises:
        ValueError: the output's folder does not exist; an output exists (without ``overwrite``); a path that
            exists but was not written by this tool (never replaced, ``overwrite`` or not); on resuming, a
            label array of another shape or dtype, or one that is gone.
    """
    if not out.parent.is_dir():
        raise ValueError(f"The folder of --out does not exist: {out.parent}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the path of the COCO JSON file to write.")
    for path, ours in (
        (out, _is_our_coco),
        (journal_path(out), _is_our_journal),
        (labels_out, _is_our_labels),
    ):
        if path is not None and path.exists() and not ours(path):
            raise ValueError(
                f"{path} exists and was not written by {MARKER}: it is never replaced; choose another path."
            )
    if overwrite:
        return False
    if out.exists():
        raise ValueError(f"{out} exists: pass --overwrite to replace it, or choose another --out.")
    resume = journal_path(out).exists()
    if labels_out is None:
        return resume
    if resume and not labels_out.exists():
        raise ValueError(
            f"{journal_path(out)} is a run that wrote labels to {labels_out}, which is gone: pass --overwrite "
            "to start again."
        )
    if labels_out.exists():
        array = zarr.open_array(str(labels_out), mode="r")
        found = f"a {array.dtype} array of shape {tuple(array.shape)}"
        if not resume:
            raise ValueError(
                f"--labels-out {labels_out} exists ({found}; these inputs need {labels_shape}): pass "
                "--overwrite to replace it, or choose another path."
            )
        if tuple(array.shape) != labels_shape or np.dtype(array.dtype) != LABELS_DTYPE:
            raise ValueError(
                f"--labels-out {labels_out} holds {found}; these inputs need {np.dtype(LABELS_DTYPE)} "
                f"{labels_shape}: choose another path, or --overwrite."
            )
    return resume


def remove_outputs(out: Path, labels_out: Path | None) -> None:
    """``--overwrite``: remove this tool's COCO file, journal and zarr label array (nothing else)."""
    for path, ours in ((out, _is_our_coco), (journal_path(out), _is_our_journal)):
        if path.is_file() and ours(path):
            path.unlink()
    if labels_out is not None and _is_our_labels(labels_out):
        shutil.rmtree(labels_out) if labels_out.is_dir() else labels_out.unlink()


def _is_our_coco(path: Path) -> bool:
    """A COCO file written by ``write_coco`` (its first bytes name this tool)."""
    with open(path, "rb") as handle:
        return handle.read(len(COCO_HEAD)) == COCO_HEAD


def _is_our_journal(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(JOURNAL_HEAD)) == JOURNAL_HEAD


def _is_our_labels(path: Path) -> bool:
    """A zarr array that ``open_labels`` made (marked in its attributes)."""
    try:
        array = zarr.open(str(path), mode="r")
    except Exception:  # anything zarr cannot open is not our label array
        return False
    return isinstance(array, zarr.Array) and array.attrs.get("written_by") == MARKER


def labels_shape_of(refs: Sequence[SliceRef]) -> tuple[int, ...]:
    """(H, W) for one image, (Z, H, W) for several; a ValueError when their sizes differ."""
    sizes = sorted({(r.height, r.width) for r in refs})
    if len(sizes) > 1:
        raise ValueError(
            f"--labels-out needs images of one size; these have {len(sizes)} sizes ({sizes[0]}, "
            f"{sizes[1]}, ...): annotate each size separately, or leave out --labels-out."
        )
    return sizes[0] if len(refs) == 1 else (len(refs), *sizes[0])


def open_labels(path: Path, shape: tuple[int, ...]) -> Any:
    """The zarr label array at ``path`` (created, filled with 0, unless there), one chunk per slice."""
    if path.exists():
        return zarr.open_array(str(path), mode="r+")
    chunks = shape if len(shape) == 2 else (1, *shape[1:])
    array = zarr.open_array(
        str(path), mode="w-", shape=shape, chunks=chunks, dtype=LABELS_DTYPE, fill_value=0
    )
    array.attrs["written_by"] = MARKER
    return array


def write_labels(array: Any, index: int, labels: np.ndarray) -> None:
    if array.ndim == 2:
        array[:] = labels
    else:
        array[index] = labels


def write_coco(
    out: Path,
    refs: Sequence[SliceRef],
    names: Sequence[str],
    done: dict[int, list[dict[str, Any]]],
    info: dict[str, Any],
) -> int:
    """Write the COCO file atomically (images in input order, annotations by slice, ids 1..N); returns N."""
    annotations: list[dict[str, Any]] = []
    for ref in refs:
        for annotation in done[ref.index]:
            annotations.append({**annotation, "id": len(annotations) + 1})
    coco = {
        "info": {"description": MARKER, **info},  # first: what tells --overwrite the file is this tool's
        "images": [ref.image_entry() for ref in refs],
        "categories": coco_categories(names),
        "annotations": annotations,
    }
    temporary = unique_temporary(out)
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(coco, handle)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return len(annotations)
