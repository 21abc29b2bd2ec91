"""One fine-tuning run, in the calling process: ``finetune(data, source, options, output_dir, work_dir=...)``.

Order of work: the training objects are written as a COCO file into ``work_dir``; the starting model (the
checkpoint ``source``) is scored on the held-out objects; ``ovsam_model.train`` trains it (its ``train()``,
the code behind ``python -m ovsam_model.train``, outputs in ``work_dir``); the trained model is scored again
and saved as a new checkpoint in ``output_dir`` (see ``save_new_checkpoint``: a new name, never an existing
file). ``stop()`` is asked between steps and phases; when it says so, ``Cancelled`` is raised and nothing is
left in ``output_dir``.

Class names: every class is named by its text embedding from the model's own text tower, as training and
the plugin's model loading compute it; for the closed-vocabulary ``demo`` model (an untrained text tower) a
new name such as "crescent" gets a fixed embedding of its own that the trained head learns to match, and the
checkpoint stores the whole vocabulary with those embeddings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import unique_temporary
from ..build import build_ovsam
from ..checkpoint import read_own_checkpoint, save_checkpoint
from ..exemplars import SUFFIX as EXAMPLES_SUFFIX
from ..modeling.ovsam import OVSAM
from ..predictor import OVSAMPredictor
from ..text import encode_vocabulary
from ..train.engine import read_resume_state
from ..train.outputs import METRICS, MODEL_FILE, resume_state_path
from ..train.run import train
from .dataset import FinetuneSet, write_coco
from .options import FinetuneOptions, repeats_for, train_config
from .scoring import Scores, score_objects, teach

Report = Callable[[dict[str, Any]], None]
SUFFIX = ".safetensors"


class Cancelled(Exception):
    """The run was asked to stop; nothing was saved."""


@dataclass
class FinetuneResult:
    """A finished run: the new ``checkpoint`` and its ``examples`` file (the training objects as examples of
    the new model; None when that name was taken), the held-out scores ``before`` (the starting model with
    the training objects as examples), ``after`` (the same on the new model) and ``after_text_only`` (the new
    model without examples), the optimiser ``steps`` and wall ``seconds``, the vocabulary entries it names
    (``classes``) and the new ones."""

    checkpoint: Path
    before: Scores
    after: Scores
    steps: int
    seconds: float
    classes: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    after_text_only: Scores | None = None
    examples: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "examples": None if self.examples is None else str(self.examples),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "after_text_only": None if self.after_text_only is None else self.after_text_only.to_dict(),
            "steps": self.steps,
            "seconds": self.seconds,
            "classes": self.classes,
            "new_classes": self.new_classes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneResult:
        text_only, examples = data.get("after_text_only"), data.get("examples")
        return cls(
            Path(data["checkpoint"]), Scores(**data["before"]), Scores(**data["after"]), int(data["steps"]),
            float(data["seconds"]), list(data["classes"]), list(data["new_classes"]),
            None if text_only is None else Scores(**text_only), None if examples is None else Path(examples),
        )  # fmt: skip

    def remove(self) -> None:
        """Delete the files this run wrote (a result that came as it was cancelled)."""
        for path in (self.checkpoint, self.examples):
            if path is not None:
                path.unlink(missing_ok=True)


def checkpoint_stem(model: OVSAM) -> str:
    """The name a fine-tuned checkpoint of ``model`` starts with: '<config name>_finetuned'."""
    name = model.config.name.removesuffix("_finetuned") or "model"
    return f"{name}_finetuned"


def candidate_names(stem: str) -> list[str]:
    """'<stem>.safetensors', '<stem>_2.safetensors', ... (the first 1000)."""
    return [f"{stem}{'' if n == 1 else f'_{n}'}{SUFFIX}" for n in range(1, 1001)]


def partial_name(stem: str, pid: int) -> str:
    """The name the temporary files of process ``pid``'s checkpoint start from (``leftovers`` finds them)."""
    return f"{stem}.partial-{pid}"


def leftovers(folder: Path, stem: str, pid: int) -> list[Path]:
    """Temporary files a killed process ``pid`` may have left in ``folder`` while saving (none otherwise)."""
    return sorted(folder.glob(f".*{partial_name(stem, pid)}*.tmp"))


def save_new_checkpoint(write: Callable[[Path], None], folder: Path, stem: str) -> Path:
    """Write a checkpoint with ``write(path)`` into a temporary file in ``folder``, then give it the first free
    name of ``candidate_names(stem)``: a hard link fails on an existing name, so no file is ever replaced,
    not even one made meanwhile by another run. Returns the new path."""
    temporary = unique_temporary(folder / partial_name(stem, os.getpid()))
    try:
        write(temporary)
        for name in candidate_names(stem):
            target = folder / name
            try:
                os.link(temporary, target)
            except FileExistsError:
                continue
            except OSError:  # a file system without hard links: claim the name if it is still free
                if target.exists():
                    continue
                os.replace(temporary, target)
            return target
        raise ValueError(f"{folder} holds {stem}.safetensors to {stem}_1000: move some away first.")
    finally:
        temporary.unlink(missing_ok=True)


def _predictor(model: OVSAM, data: FinetuneSet) -> OVSAMPredictor:
    predictor = OVSAMPredictor(model, cuda_graphs=False)
    predictor.set_vocabulary(data.classes)  # the model's text tower, as training and the plugin encode it
    return predictor


class _MetricsTail:
    """The newest rows of a run's ``metrics.jsonl`` (it logs every step: ``log_every=1``)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def last_loss(self) -> float | None:
        if not self.path.is_file():
            return None
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            lines = f.read().splitlines()
            self.offset = f.tell()
        losses = [row["loss"] for row in map(json.loads, lines) if isinstance(row.get("loss"), float)]
        return losses[-1] if losses else None


def _train(config_path: Path, source: Path, train_ann: Path, options: FinetuneOptions, run_dir: Path,
           steps_per_epoch: int, report: Report, stop: Callable[[], bool]) -> int:  # fmt: skip
    """Run ``ovsam_model.train``; returns the steps done: ``options.steps``, or fewer when the time budget ran
    out (the run was then stopped like a Ctrl-C, which saves the weights of that step in its resume state)."""
    config = train_config(
        options, model_config=config_path, init_checkpoint=source, train_ann=train_ann, output_dir=run_dir,
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    tail = _MetricsTail(run_dir / METRICS)
    started, done, time_up = time.perf_counter(), 0, False

    def on_step(step: int) -> None:
        nonlocal done, time_up
        done, seconds = step, time.perf_counter() - started
        report({"event": "step", "step": step, "total": options.steps, "loss": tail.last_loss(),
                "seconds": seconds})  # fmt: skip
        time_up = options.max_seconds is not None and seconds >= options.max_seconds
        if stop() or (time_up and step < options.steps):
            raise KeyboardInterrupt  # train() saves its resume state and re-raises: the run ends here

    try:
        train(config, on_step=on_step)
    except KeyboardInterrupt:
        if not time_up or stop():
            raise Cancelled from None
        report({"event": "phase", "phase": f"time budget spent after {done} of {options.steps} steps"})
    return done


def _trained_model(source: Path, run_dir: Path, device: str, finished: bool) -> OVSAM:
    """The trained model: the run's final checkpoint, or (stopped by the time budget) the starting model
    with the trainable weights and buffers of the resume state (what ``Trainer.restore`` puts back)."""
    if finished:
        return build_ovsam(run_dir / MODEL_FILE, device=device)
    model = build_ovsam(source, device=device)
    payload = read_resume_state(resume_state_path(run_dir))
    with torch.no_grad():
        state = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, value in {**payload["weights"], **payload.get("buffers", {})}.items():
            state[name].copy_(value)
    return model


def _save(
    result: FinetuneResult,
    predictor: OVSAMPredictor,
    data: FinetuneSet,
    options: FinetuneOptions,
    folder: Path,
    stem: str,
) -> None:
    """Save the trained model (vocabulary, text embeddings, the run's record) as a new checkpoint in
    ``folder`` and its examples beside it; sets ``result.checkpoint`` and ``result.examples``."""
    trained = predictor.model
    embeddings = encode_vocabulary(data.classes, trained.text_encoder)  # as the training stage computed them
    run = {k: v for k, v in result.to_dict().items() if k not in ("checkpoint", "examples")}
    metadata = {"stage": options.stage, "steps": result.steps, "trained_classes": data.classes.names}
    metadata["finetune"] = {**run, "options": asdict(options), "data": data.summary()}

    def write(path: Path) -> None:
        save_checkpoint(trained, path, vocabulary=data.classes, text_embeddings=embeddings, metadata=metadata)

    result.checkpoint = save_new_checkpoint(write, folder, stem)
    examples = result.checkpoint.with_name(result.checkpoint.name.removesuffix(SUFFIX) + EXAMPLES_SUFFIX)
    if not examples.exists():  # a file of the user's is never replaced: then the run has no examples file
        result.examples = predictor.examples.save(examples)


def finetune(
    data: FinetuneSet,
    source: Path,
    options: FinetuneOptions,
    output_dir: Path,
    *,
    work_dir: Path,
    report: Report | None = None,
    stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Fine-tune the checkpoint ``source`` on ``data`` (see the module docstring).

    report: called with event dicts ({"event": "phase", "phase": ...}, {"event": "scores", "when": "before",
    ...}, {"event": "step", "step", "total", "loss", "seconds"}). stop: returns True to cancel.

    Raises:
        ValueError: bad options, or ``output_dir`` is not a folder. Cancelled: ``stop()`` said so.
    """
    report = report or (lambda _: None)
    stop = stop or (lambda: False)
    options.check()
    if not output_dir.is_dir():
        raise ValueError(f"{output_dir} is not a folder: choose the folder to save the fine-tuned model in.")
    started = time.perf_counter()

    def phase(name: str) -> None:
        if stop():
            raise Cancelled
        report({"event": "phase", "phase": name})

    phase("writing the training set")
    model_size = read_own_checkpoint(source)[0].image_size
    repeats = repeats_for(len({o.image for o in data.train}), options.batch_size)
    train_ann = write_coco(data, work_dir / "data", repeats=repeats, model_size=model_size)
    phase("scoring the model before fine-tuning")
    if options.threads:
        torch.set_num_threads(options.threads)
    model = build_ovsam(source, device=options.device)
    start = _predictor(model, data)
    teach(start, data)
    before = score_objects(start, data)
    report({"event": "scores", "when": "before", **before.to_dict()})
    stem = checkpoint_stem(model)
    config_path = work_dir / "model_config.json"
    config_path.write_text(json.dumps(read_own_checkpoint(source)[0].to_dict()), encoding="utf-8")
    del model, start
    phase("training")
    steps_per_epoch = max(1, len(json.loads(train_ann.read_text())["images"]) // options.batch_size)
    run_dir = work_dir / "run"
    steps = _train(config_path, source, train_ann, options, run_dir, steps_per_epoch, report, stop)
    phase("scoring the fine-tuned model")
    trained = _trained_model(source, run_dir, options.device, finished=steps >= options.steps)
    predictor = _predictor(trained, data)
    text_only = score_objects(predictor, data)
    teach(predictor, data)
    after = score_objects(predictor, data)
    report({"event": "scores", "when": "after", **after.to_dict()})
    phase("saving")
    result = FinetuneResult(
        output_dir, before, after, steps, time.perf_counter() - started,
        [", ".join(s) for s in data.classes.synonyms], list(data.new_classes), text_only,
    )  # fmt: skip
    _save(result, predictor, data, options, output_dir, stem)
    if stop():  # asked while saving: the user does not want it
        result.remove()
        raise Cancelled
    result.seconds = time.perf_counter() - started
    return result
