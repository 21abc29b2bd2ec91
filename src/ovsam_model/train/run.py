"""One training run from a ``TrainConfig``: ``train(config)``, the library side of ``python -m ovsam_model.train``.

Order of work: every option is checked, the model is built and the data read, and only then is the output
folder touched (cleared of an earlier run's outputs with ``--overwrite``, or trimmed to the resume step with
``--resume``). Ctrl-C stops after the current step and saves the resume state; ``--resume`` continues exactly
there (same data order, optimiser, scheduler and RNG states), and ``metrics.jsonl`` keeps one row per step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..build import assemble, build_ovsam
from ..checkpoint import load_pretrained_sources
from ..config import load_config
from ..data.coco import collate_instances
from ..device import resolve_device
from ..modeling.ovsam import OVSAM
from .engine import (
    InterruptRequest,
    ResumableSampler,
    Schedule,
    StageLoss,
    Trainer,
    init_distributed,
    is_main,
    read_resume_state,
    trainable_parameters,
)
from .options import STAGE_DEFAULTS, TrainConfig, check_config, resume_differences
from .outputs import (
    MODEL_FILE,
    RESUME_STATE,
    check_output_dir,
    clear_run_outputs,
    resume_state_path,
    trim_metrics,
    write_marker,
)
from .stages import Stage, setup_stage


@dataclass
class _Run:
    """What the loop needs besides the trainer."""

    config: TrainConfig
    stage: Stage
    model: OVSAM
    loader: DataLoader
    sampler: ResumableSampler
    steps_per_epoch: int
    total_steps: int


def build_model(config: TrainConfig, device: torch.device) -> OVSAM:
    """The model to train: from its config's sources / ``--init-checkpoint``, or from scratch."""
    options = config.model
    if not options.from_scratch:
        return build_ovsam(
            options.name,
            checkpoint=options.init_checkpoints or None,
            sam_checkpoint=options.sam_checkpoint,
            clip_pretrained=options.clip_pretrained,
            device=device,
        )
    model = assemble(load_config(options.name), options.clip_pretrained)
    if options.sam_checkpoint:
        load_pretrained_sources(model, sam_checkpoint=options.sam_checkpoint, use_config_sources=False)
    return model.to(device)


def make_loader(
    dataset: Any, config: TrainConfig, rank: int, world: int
) -> tuple[DataLoader, ResumableSampler]:
    """A loader whose epoch order depends only on (seed, epoch); it has its own generator for the worker
    seeds, so loading never draws from the global RNG that the steps use."""
    sampler = ResumableSampler(dataset, world_size=world, rank=rank, seed=config.run.seed)
    workers = config.data.workers
    loader = DataLoader(
        dataset,
        batch_size=config.optim.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_instances,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.run.seed),
        persistent_workers=workers > 0,
    )
    return loader, sampler


def _steps_per_epoch(loader: DataLoader, dataset: Any, config: TrainConfig, world: int) -> int:
    steps = len(loader)
    if len(dataset) == 0:
        source = config.data.train_ann or config.data.images
        raise ValueError(f"The training data ({source}) has no usable images.")
    if steps == 0:
        per_process = f" per process ({world} processes)" if world > 1 else ""
        raise ValueError(
            f"--batch-size {config.optim.batch_size}{per_process} is larger than the {len(dataset)} training "
            f"images: an epoch would have no step. Use --batch-size {max(1, len(dataset) // world)} or less."
        )
    return steps


def _check_resume(payload: dict[str, Any], config: TrainConfig, where: Path) -> None:
    saved = payload.get("options")
    if saved is None:
        return  # a resume state from before options were stored
    differences = resume_differences(json.loads(saved), config)
    if differences:
        raise ValueError(
            f"--resume: {where} was saved by a run with other options ({'; '.join(differences)}). Resume with "
            "the same options, or start a new run in another --output-dir."
        )


def _prepare_output(config: TrainConfig, step: int | None) -> None:
    """Touch the output folder (only now, after every check): clear an earlier run's outputs (--overwrite)
    or drop the metrics rows after the resume ``step``; write the run marker."""
    output = Path(config.run.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if step is not None:
        trim_metrics(output, step)
    elif config.run.overwrite:
        clear_run_outputs(output)
    write_marker(output, config.to_dict())


def _validate_now(run: _Run, trainer: Trainer, *, rank: int) -> dict[str, Any] | None:
    every = run.config.run.val_every
    due = every and (trainer.state.epoch % every == 0 or trainer.state.step >= run.total_steps)
    if not (is_main(rank) and run.stage.validate is not None and due):
        return None
    devices = [run.model.device.index or 0] if run.model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # validation leaves the training RNG as it was
        results = run.stage.validate(run.model)
    trainer.log({"event": "val", "epoch": trainer.state.epoch, "step": trainer.state.step, **results})
    return results


def _run_epochs(
    run: _Run, trainer: Trainer, rank: int, on_step: Callable[[int], None] | None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    batch_size = run.config.optim.batch_size
    while trainer.state.epoch < run.config.optim.epochs and trainer.state.step < run.total_steps:
        run.sampler.set_epoch(trainer.state.epoch)
        run.sampler.skip = trainer.state.epoch_step * batch_size
        if hasattr(run.stage.dataset, "set_epoch"):
            run.stage.dataset.set_epoch(trainer.state.epoch)
        trainer.train_epoch(
            run.loader, num_batches=run.steps_per_epoch, max_steps=run.total_steps, on_step=on_step
        )
        if trainer.state.epoch_step >= run.steps_per_epoch:
            trainer.state.epoch += 1
            trainer.state.epoch_step = 0
        results = _validate_now(run, trainer, rank=rank) or results
        trainer.save_resume()
    return results


def _make_trainer(run: _Run, rank: int, world: int) -> Trainer:
    config = run.config
    named = trainable_parameters(run.model, config.stage)
    schedule = Schedule(
        total_steps=run.total_steps,
        warmup_steps=min(config.optim.warmup_iters, max(1, run.total_steps // 10)),
        kind=STAGE_DEFAULTS[config.stage].schedule,
        milestones=tuple(e * run.steps_per_epoch for e in config.optim.lr_steps),
    )
    return Trainer(
        StageLoss(run.model, run.stage.loss_fn, run.stage.extra),
        named,
        output_dir=Path(config.run.output_dir),
        lr=config.optim.lr,
        weight_decay=config.optim.weight_decay,
        schedule=schedule,
        grad_clip=config.optim.grad_clip,
        precision=config.optim.precision,
        rank=rank,
        world_size=world,
        log_every=config.run.log_every,
        save_every_steps=config.run.save_every_steps,
        options=config.to_dict(),
    )


def _setup(
    config: TrainConfig, device: torch.device, rank: int, world: int
) -> tuple[_Run, dict[str, Any] | None]:
    """Check everything and build the run; nothing is written yet."""
    output = Path(config.run.output_dir)
    check_output_dir(output, overwrite=config.run.overwrite, resume=config.run.resume)
    payload = read_resume_state(resume_state_path(output)) if config.run.resume else None
    if payload is not None:
        _check_resume(payload, config, output / RESUME_STATE)
    model = build_model(config, device)
    stage = setup_stage(config, model)
    loader, sampler = make_loader(stage.dataset, config, rank, world)
    steps = _steps_per_epoch(loader, stage.dataset, config, world)
    total = config.optim.max_steps or config.optim.epochs * steps
    return _Run(config, stage, model, loader, sampler, steps, total), payload


def _log_start(run: _Run, trainer: Trainer) -> None:
    record: dict[str, Any] = {"event": "start", "stage": run.config.stage, "model": run.model.config.name}
    record |= {"world_size": trainer.world_size, "steps_per_epoch": run.steps_per_epoch}
    trainer.log(record | {"total_steps": run.total_steps, "resumed_at": trainer.state.step})


def _finish(run: _Run, trainer: Trainer, results: dict[str, Any]) -> None:
    """Save the trained model (rank 0) and, under DDP, check that the replicas agree."""
    output, state = Path(run.config.run.output_dir), trainer.state
    if is_main(trainer.rank):
        metadata = {"stage": run.config.stage, "steps": state.step, "epochs": state.epoch, "val": results}
        run.stage.save(run.model, output / MODEL_FILE, metadata)
        trainer.log({"event": "done", "step": state.step, "checkpoint": str(output / MODEL_FILE)})
    if trainer.world_size > 1:
        trainer.check_replicas_in_sync()
        torch.distributed.destroy_process_group()


def train(config: TrainConfig, *, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the training ``config`` describes; returns the last validation results (empty without any).

    ``on_step(step)`` is called after every optimiser step (tests, progress hooks).

    Raises:
        ValueError: a bad option, data or output folder (checked before anything is written).
        KeyboardInterrupt: Ctrl-C; the resume state of the last finished step is saved first.
    """
    check_config(config)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    torch.manual_seed(config.run.seed)
    device = resolve_device(config.run.device)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    run, payload = _setup(config, device, rank, world)
    if is_main(rank):
        _prepare_output(config, None if payload is None else int(payload["step"]))
    if world > 1:
        torch.distributed.barrier()
    trainer = _make_trainer(run, rank, world)
    if payload is not None:
        trainer.restore(payload, Path(config.run.output_dir) / RESUME_STATE)
    _log_start(run, trainer)
    with InterruptRequest() as interrupt:
        trainer.interrupt = interrupt
        try:
            results = _run_epochs(run, trainer, rank, on_step)
        except KeyboardInterrupt:
            trainer.save_resume()
            state = trainer.state
            trainer.log(
                {"event": "interrupted", "step": state.step, "epoch": state.epoch, "resume": RESUME_STATE}
            )
            raise
    _finish(run, trainer, results)
    return results
