"""``FinetunePanel``: fine-tune the loaded model on the committed, named objects of the open images and stacks.

The button gathers the objects (``napari_ovsam.finetune``), checks there are enough (the refusal says how many
more of which class), and runs ``ovsam_model.finetune.run_in_process`` in the job runner's "finetune" lane:
training happens in a background process, the panel shows the step, the loss, and the held-out scores before
and after. The result is a new checkpoint in the chosen folder (by default the data's); when "load when done"
is on, it is loaded like any checkpoint file and its classes become the vocabulary. Cancel (here or in the
status row) stops the process: nothing is saved and the model in use stays.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import napari
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ovsam_model.finetune import (
    DEFAULT_STEPS,
    FinetuneOptions,
    FinetuneResult,
    FinetuneSet,
    Scores,
    build_finetune_set,
    run_in_process,
)

from ..examples_files import load_examples
from ..finetune import annotated_images, annotated_layers, default_output_folder
from ..session import AnnotationSession
from .controls import button, row
from .jobs import Job, JobRunner
from .model_panel import local_model_needed
from .status import StatusPanel

LANE = "finetune"
Progress = tuple[int, int, str]


class FinetunePanel(QWidget):
    """The Fine-tune tab (see the module docstring).

    Args:
        viewer: the napari viewer (its image layers and their "ovsam labels"). session: the loaded model and
            the committed objects. jobs: runs the job. status: where to report.
        use_contrast: whether the model input uses the layers' contrast limits (else the percentile rule).
        load_model: loads a checkpoint file (its path) in the background; returns the job (None if refused).
        set_vocabulary: names the next objects from a vocabulary text (one class per line).
    """

    def __init__(
        self,
        *,
        viewer: napari.Viewer,
        session: AnnotationSession,
        jobs: JobRunner,
        status: StatusPanel,
        use_contrast: Callable[[], bool],
        load_model: Callable[[str], Job | None],
        set_vocabulary: Callable[[str], Any],
    ) -> None:
        super().__init__()
        self._viewer, self._session, self._jobs, self._status = viewer, session, jobs, status
        self._use_contrast, self._load_model, self._set_vocabulary = use_contrast, load_model, set_vocabulary
        self.result: FinetuneResult | None = None  # the last finished run
        layout = QVBoxLayout(self)
        layout.addWidget(self._settings_box())
        layout.addWidget(self._run_box())
        layout.addStretch(1)
        self._start_btn.clicked.connect(lambda: self.finetune())
        self._cancel_btn.clicked.connect(self.cancel)
        self._browse.clicked.connect(self._choose_folder)
        self.set_busy(set())

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Fine-tune on my labels")
        form = QFormLayout(box)
        self._folder = QLineEdit()
        self._folder.setPlaceholderText("the data's folder (choose one for images not opened from a file)")
        self._folder.setToolTip("Where the new checkpoint is saved; an existing file is never replaced")
        self._browse = button("…", "Choose the folder for the new checkpoint")
        self._steps = QSpinBox()
        self._steps.setRange(1, 100_000)
        self._steps.setValue(DEFAULT_STEPS)
        self._steps.setToolTip("Optimiser steps of 4 images each")
        self._minutes = QDoubleSpinBox()
        self._minutes.setRange(0.1, 24 * 60)
        self._minutes.setValue((FinetuneOptions.max_seconds or 600.0) / 60)
        self._minutes.setToolTip("Training stops after this many minutes and keeps what it learnt")
        self._trunk = QCheckBox("train the image trunk too (models trained here, e.g. demo)")
        self._load_when_done = QCheckBox("load the new model when done")
        self._load_when_done.setChecked(True)
        form.addRow("Save in", row(self._folder, self._browse, stretch=0))
        form.addRow("Steps · at most (min)", row(self._steps, self._minutes))
        form.addRow(self._trunk)
        form.addRow(self._load_when_done)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run")
        form = QFormLayout(box)
        self._start_btn = button("Fine-tune", "Train the loaded model on the committed, named objects")
        self._cancel_btn = button("Cancel", "Stop fine-tuning: nothing is saved, the model in use stays")
        self._progress = QProgressBar()
        self._loss = QLabel("–")
        self._before = QLabel("–")
        self._after = QLabel("–")
        for label in (self._before, self._after):
            label.setWordWrap(True)
        form.addRow(row(self._start_btn, self._cancel_btn))
        form.addRow("Progress", self._progress)
        form.addRow("Loss", self._loss)
        form.addRow("Held out, before", self._before)
        form.addRow("Held out, after", self._after)
        return box

    # ------------------------------------------------------------------------------------------ state

    def set_busy(self, lanes: set[str]) -> None:
        running = LANE in lanes
        self._start_btn.setEnabled(not running)
        self._cancel_btn.setEnabled(running)

    def options(self) -> FinetuneOptions:
        """The run's options from the controls (the model's device)."""
        predictor = self._session.predictor
        device = predictor.device.type if predictor is not None else "cpu"
        return FinetuneOptions(
            steps=self._steps.value(), max_seconds=self._minutes.value() * 60, train_trunk=self._trunk.isChecked(),
            device=device,
        )  # fmt: skip

    def output_folder(self) -> Path | None:
        """The folder the field names, else the data's (shown in the field), else None."""
        text = self._folder.text().strip()
        if text:
            return Path(text).expanduser()
        folder = default_output_folder(self._viewer)
        if folder is not None:
            self._folder.setText(str(folder))
        return folder

    # ------------------------------------------------------------------------------------------ the job

    def training_set(self) -> FinetuneSet | None:
        """The committed, named objects of the open images, checked; None with the reason in the status line."""
        layers = annotated_layers(self._viewer, use_contrast=self._use_contrast())
        options = self.options()
        try:
            return build_finetune_set(
                annotated_images(layers), base_vocabulary=self._session.vocabulary,
                holdout_fraction=options.holdout_fraction, min_per_class=options.min_per_class,
                min_objects=options.min_objects,
            )  # fmt: skip
        except ValueError as error:
            self._status.set_status(str(error))
            return None

    def finetune(self) -> Job | None:
        """Fine-tune in the background; returns the job, or None (the reason in the status line)."""
        predictor = self._session.predictor
        if predictor is None:
            self._status.set_status("Load a model first (Model: choose one, then Load).")
            return None
        if note := local_model_needed(predictor, "Fine-tuning"):  # a served model has no weights here
            self._status.set_status(note)
            return None
        if self._jobs.busy(LANE):
            self._status.set_status("Fine-tuning is running already: wait for it or cancel it.")
            return None
        folder = self.output_folder()
        if folder is None or not folder.is_dir():
            self._status.set_status(
                "Choose an existing folder to save the fine-tuned model in (Save in)"
                + (f": {folder} is not one." if folder is not None else ".")
            )
            return None
        data = self.training_set()
        if data is None:
            return None
        for label in (self._loss, self._before, self._after):
            label.setText("–")
        self.result = None  # until this run ends
        self._progress.setRange(0, 0)
        job = self._jobs.start(
            LANE, _steps, data, predictor.model, self.options(), folder,
            on_step=lambda item, _: self._on_item(item), on_done=lambda result, job: self._on_done(result),
            on_error=lambda error, _: self._status.report("Fine-tuning failed", error),
            on_finish=self._on_finish, progress="OV-SAM: fine-tuning",
        )  # fmt: skip
        if job is not None:
            self._status.set_status(f"Fine-tuning on {data.summary()}…")
        return job

    def cancel(self) -> None:
        """Stop fine-tuning (the process ends after its step; nothing is saved)."""
        self._jobs.cancel(LANE)
        if self._jobs.busy(LANE):
            self._status.set_status("Cancelling fine-tuning…")

    def _on_item(self, item: Any) -> None:
        if isinstance(item, dict) and item.get("event") == "scores":
            scores = Scores(**{k: v for k, v in item.items() if k not in ("event", "when")})
            (self._before if item["when"] == "before" else self._after).setText(scores.line())
        elif isinstance(item, tuple) and len(item) == 3:
            done, total, message = item
            self._progress.setRange(0, max(total, 1))
            self._progress.setValue(done)
            if " · loss " in message:
                self._loss.setText(message.rsplit(" · loss ", 1)[1])

    def _on_done(self, result: FinetuneResult) -> None:
        self.result = result
        self._after.setText(result.after.line())
        self._status.set_status(
            f"Fine-tuned in {result.seconds / 60:.1f} min ({result.steps} steps): saved {result.checkpoint}. "
            f"Held out: {result.before.accuracy:.1f} -> {result.after.accuracy:.1f} % named right."
        )
        if self._load_when_done.isChecked():
            self.load_result(result)

    def load_result(self, result: FinetuneResult) -> Job | None:
        """Load the new checkpoint; once it is in the session its classes become the vocabulary and the
        training objects, as examples of the new model, join the labels being annotated."""
        job = self._load_model(str(result.checkpoint))
        if job is not None:
            job.worker.returned.connect(lambda *_: None if self._jobs.closed else self._on_loaded(result))
        return job

    def _on_loaded(self, result: FinetuneResult) -> None:
        self._set_vocabulary("\n".join(result.classes))
        if result.examples is None or self._session.target is None:
            return
        try:
            added = load_examples(self._session, result.examples)
        except ValueError as error:
            self._status.set_status(f"The fine-tuned model is loaded; its examples are not: {error}")
            return
        self._status.set_status(f"Fine-tuned model loaded, with {added} examples of its training objects.")

    def _on_finish(self, job: Job) -> None:
        self._progress.setRange(0, 1)
        self._progress.setValue(1 if self.result is not None and not job.cancel.is_set() else 0)
        if job.cancel.is_set():
            self._status.set_status("Fine-tuning was cancelled: nothing was saved; the model in use stays.")

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the fine-tuned model")
        if folder:
            self._folder.setText(folder)


def _steps(
    data: FinetuneSet, model: Any, options: FinetuneOptions, folder: Path
) -> Generator[Progress | dict[str, Any], None, FinetuneResult]:
    """Worker: the background process's events as progress tuples (steps) or dicts (scores, waiting)."""
    run = run_in_process(data, model, options, folder)
    done = 0
    try:
        while True:
            try:
                event = next(run)
            except StopIteration as stop:
                return stop.value
            if event["event"] == "step":
                done = event["step"]
                loss = f" · loss {event['loss']:.3f}" if event.get("loss") is not None else ""
                yield (
                    event["step"],
                    event["total"],
                    f"Fine-tuning: step {event['step']} of {event['total']}{loss}",
                )
            elif event["event"] == "phase":
                yield done, options.steps, f"Fine-tuning: {event['phase']}…"
            else:
                yield event
    finally:
        run.close()  # a cancelled job: the process stops and nothing is saved
