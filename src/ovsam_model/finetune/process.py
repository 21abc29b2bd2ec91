"""Fine-tuning in a background process: ``run_in_process(data, model, options, output_dir)``.

The generator snapshots ``model`` (the weights in use now, as one of our checkpoints) into a temporary work
folder, starts a fresh Python process (``spawn``: no state shared with the GUI, and a run that crashes or runs
out of memory takes nothing else down) that runs ``run.finetune`` on it, and yields the process's events as
they come (dicts, see ``finetune``'s ``report``); it returns the ``FinetuneResult``.

Cancel: close the generator (a napari worker's cancel does) or let it be garbage-collected. The process is
asked to stop after its current step (it ends with ``Cancelled``); one that does not end within
``cancel_wait`` seconds is terminated, and the temporary files its checkpoint write may have left are
removed; a checkpoint that was finished just as the cancel came is deleted. The work folder goes in every
case. So after a cancel or a failure there is no new file in ``output_dir`` and nothing to load.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint
from ..modeling.ovsam import OVSAM
from .dataset import FinetuneSet
from .options import FinetuneOptions
from .run import Cancelled, FinetuneResult, checkpoint_stem, finetune, leftovers

Event = dict[str, Any]
ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}


def _child(
    data: FinetuneSet,
    source: Path,
    options: FinetuneOptions,
    output_dir: Path,
    work_dir: Path,
    events: Any,
    stop: Any,
) -> None:
    """The process's main: run ``finetune`` and send its events, then one of done / cancelled / error."""
    try:
        result = finetune(
            data, source, options, output_dir, work_dir=work_dir, report=events.put, stop=stop.is_set
        )
        events.put({"event": "done", "result": result.to_dict()})
    except Cancelled:
        events.put({"event": "cancelled"})
    except Exception as error:  # noqa: BLE001 (every failure is reported to the parent, which raises it)
        events.put({"event": "error", "kind": type(error).__name__, "message": str(error)})


def _raise(event: Event) -> None:
    kind = ERRORS.get(event.get("kind", ""), RuntimeError)
    message = event.get("message", "")
    if kind is RuntimeError:
        message = f"Fine-tuning failed ({event.get('kind')}): {message}"
    raise kind(message)


def _drain(events: Any, timeout: float) -> list[Event]:
    """The events that arrived within ``timeout`` seconds of waiting for the first one."""
    out: list[Event] = []
    try:
        out.append(events.get(timeout=timeout))
        while True:
            out.append(events.get_nowait())
    except queue_module.Empty:
        return out


def run_in_process(
    data: FinetuneSet,
    model: OVSAM,
    options: FinetuneOptions,
    output_dir: Path | str,
    *,
    poll_seconds: float = 0.1,
    heartbeat_seconds: float = 0.5,
    cancel_wait: float = 30.0,
) -> Generator[Event, None, FinetuneResult]:
    """Fine-tune a copy of ``model`` on ``data`` in another process (see the module docstring).

    Yields event dicts, and ``{"event": "waiting"}`` after ``heartbeat_seconds`` without one (so that a
    consumer that cancels at its next item, such as a napari worker, never waits long); returns the
    ``FinetuneResult`` (its checkpoint is in ``output_dir``).

    Raises:
        ValueError: bad options or output folder (from the process: the message is its message).
        Cancelled: the process was asked to stop some other way. RuntimeError: it failed or died.
    """
    options.check()
    output_dir = Path(output_dir).expanduser()
    if not output_dir.is_dir():
        raise ValueError(f"{output_dir} is not a folder: choose the folder to save the fine-tuned model in.")
    work_dir = Path(tempfile.mkdtemp(prefix="ovsam-finetune-"))
    stem, ended = checkpoint_stem(model), False
    context = multiprocessing.get_context("spawn")
    events, stop = context.Queue(), context.Event()
    process: Any = None
    try:
        source = save_checkpoint(model, work_dir / "source.safetensors")
        process = context.Process(
            target=_child, args=(data, source, options, output_dir, work_dir, events, stop), daemon=True
        )
        process.start()
        quiet_since = time.perf_counter()
        while True:
            arrived = _drain(events, poll_seconds)
            if arrived:
                quiet_since = time.perf_counter()
            elif time.perf_counter() - quiet_since >= heartbeat_seconds:
                quiet_since = time.perf_counter()
                yield {"event": "waiting"}
            for event in arrived:
                if event["event"] in ("done", "cancelled", "error"):
                    ended = True
                    if event["event"] == "done":
                        return FinetuneResult.from_dict(event["result"])
                    if event["event"] == "cancelled":
                        raise Cancelled
                    _raise(event)
                yield event
            if not process.is_alive() and events.empty():
                ended = True
                raise RuntimeError(
                    f"The fine-tuning process ended unexpectedly (exit code {process.exitcode}), perhaps out "
                    "of memory: try fewer prompts (num_prompts) or a smaller batch_size. Nothing was saved."
                )
    finally:
        if process is not None:
            _stop(process, events, stop, output_dir, stem, cancel_wait, asked=not ended)
        shutil.rmtree(work_dir, ignore_errors=True)


def _stop(
    process: Any, events: Any, stop: Any, output_dir: Path, stem: str, wait: float, *, asked: bool
) -> None:
    """End the process (asked to stop first, terminated if it does not); remove what a cancelled run left."""
    if asked:
        stop.set()
    process.join(wait if asked else 10.0)
    if process.is_alive():
        process.terminate()
        process.join(5.0)
    if process.is_alive():
        process.kill()
        process.join()
    if asked:  # a checkpoint finished as the cancel came is not wanted
        for event in _drain(events, 0.0):
            if event.get("event") == "done":
                FinetuneResult.from_dict(event["result"]).remove()
        for path in leftovers(output_dir, stem, process.pid):
            path.unlink(missing_ok=True)
    events.close()
