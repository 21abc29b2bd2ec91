"""The training loop shared by the stages: optimiser, schedule, AMP, DDP, exact resume, interrupts, logs.

Resuming is exact: the resume state (``last.safetensors``) holds the trainable weights, optimiser, scheduler, gradient
scaler, RNG states and the position in the epoch; the data order of an epoch depends only on (seed, epoch)
(``ResumableSampler``) and the dataset's augmentation on (seed, epoch, index), so a run interrupted after step
k and resumed takes the same steps as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm

from ..modeling.ovsam import OVSAM
from ..tensorfile import is_safetensors, read_state, write_state
from .outputs import RESUME_STATE

NO_DECAY_KEYS = ("norm", "pos_embed", "level_encoding", "rel_pos", "token", "bias")


@dataclass
class Schedule:
    """Linear warm-up from ``warmup_ratio`` x lr, then "cosine" (to ``min_ratio``) or "step" decay."""

    total_steps: int
    warmup_steps: int = 500
    warmup_ratio: float = 0.001
    kind: str = "step"  # "step" or "cosine"
    milestones: tuple[int, ...] = ()  # steps where a "step" schedule multiplies by ``gamma``
    gamma: float = 0.1
    min_ratio: float = 0.01

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_ratio + (1 - self.warmup_ratio) * step / max(1, self.warmup_steps)
        if self.kind == "cosine":
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.gamma ** sum(step >= m for m in self.milestones)


def trainable_parameters(model: nn.Module, stage: str) -> list[tuple[str, nn.Parameter]]:
    """Set requires_grad for ``stage`` and return the trainable (name, parameter) pairs.

    sam2clip: the adapter (``neck``). clip2sam: mask decoder + FPN + region head (+ label MLP).
    end2end (the from-scratch demo model): everything but the text tower.
    """
    prefixes = {
        "sam2clip": ("neck.",),
        "clip2sam": ("mask_decoder.", "fpn.", "region_head.", "label_mlp."),
        "end2end": ("backbone.", "neck.", "fpn.", "region_head.", "prompt_encoder.", "mask_decoder."),
    }[stage]
    frozen_trunk = isinstance(model, OVSAM) and model.backbone.frozen
    out = []
    for name, param in model.named_parameters():
        train = name.startswith(prefixes) and not (name.startswith("backbone.") and frozen_trunk)
        param.requires_grad_(train)
        if train:
            out.append((name, param))
    if not out:
        raise ValueError(f"Stage '{stage}' has no trainable parameter in this model.")
    return out


def build_optimizer(
    named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW without weight decay on norms, biases, embeddings and tokens."""
    decay = [p for n, p in named if p.ndim > 1 and not any(k in n for k in NO_DECAY_KEYS)]
    no_decay = [p for n, p in named if not (p.ndim > 1 and not any(k in n for k in NO_DECAY_KEYS))]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )


def autocast_context(precision: str, device: torch.device):
    """A single precision string decides dtype and autocast: "fp32", "bf16" or "fp16" (CUDA only)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("--precision fp16 needs a CUDA device; use bf16 on the CPU.")
        return torch.autocast("cuda", dtype=torch.float16)
    raise ValueError(f"Unknown precision '{precision}'; use fp32, bf16 or fp16.")


# ----------------------------------------------------------------------------- distributed
def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group started by torchrun (env RANK/WORLD_SIZE); (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def is_main(rank: int) -> bool:
    return rank == 0


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # noqa: NPY002 (the global state is what workers and users seed)
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class StageLoss(nn.Module):
    """Puts a stage's loss function behind ``forward`` so that DDP sees (and synchronises) the whole step."""

    def __init__(
        self,
        model: OVSAM,
        fn: Callable[[OVSAM, list[dict[str, Any]]], tuple[torch.Tensor, dict[str, float]]],
        extra: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.fn = fn
        self.extra = extra  # e.g. the frozen teacher, so it moves with the module

    def forward(self, batch: list[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.fn(self.model, batch)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (order seeded by (seed, epoch), also for one process) that can skip the first
    ``skip`` samples of this rank's share of the epoch: a run resumed mid-epoch sees the batches the
    interrupted one had not reached yet (skip whole batches: ``skip = batches done x batch size``)."""

    def __init__(self, dataset: Dataset, *, world_size: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


class InterruptRequest:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current step, so the resume state is
    saved at a step boundary; a second Ctrl-C interrupts at once. A no-op outside the main thread (signal
    handlers can only be installed there)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C goes through

    def __enter__(self) -> InterruptRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@dataclass
class LoopState:
    """Where the run is: optimiser steps done, the epoch in progress, and steps done in that epoch."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0


def read_resume_state(path: Path) -> dict[str, Any]:
    """The resume state written by ``Trainer.save_resume``: a checksummed safetensors file
    (``ovsam_model.tensorfile.write_state``: no pickle); an older run's torch file is read with
    ``weights_only=True``, so nothing in it can run code."""
    try:
        if is_safetensors(path):
            payload, _ = read_state(path)
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"--resume: cannot read the resume state {path} ({error}).") from error
    if not isinstance(payload, dict) or not {"weights", "optimizer", "step", "epoch"} <= set(payload):
        raise ValueError(f"--resume: {path} is not a resume state written by python -m ovsam_model.train.")
    return payload


class Trainer:
    """Runs ``loss_fn`` over batches with AdamW, a schedule, gradient clipping, AMP and DDP.

    Writes ``metrics.jsonl`` (one JSON object per logged step / validation) and ``last.safetensors`` (the
    resume state, see ``save_resume``) to ``output_dir`` on rank 0: at epoch ends, every ``save_every_steps`` steps
    (0: never mid-epoch) and when the run is interrupted.
    """

    def __init__(
        self,
        loss_module: StageLoss,
        named_params: list[tuple[str, nn.Parameter]],
        *,
        output_dir: Path,
        lr: float,
        weight_decay: float,
        schedule: Schedule,
        grad_clip: float,
        precision: str,
        rank: int = 0,
        world_size: int = 1,
        log_every: int = 10,
        save_every_steps: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.loss_module = loss_module
        self.model = loss_module.model
        self.named_params = named_params
        self.output_dir = output_dir
        self.optimizer = build_optimizer(named_params, lr, weight_decay)
        self.schedule = schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule.factor)
        self.grad_clip = grad_clip
        self.precision = precision
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.rank, self.world_size = rank, world_size
        self.log_every = log_every
        self.save_every_steps = save_every_steps
        self.options = options or {}  # the run's options, stored in the resume state
        self.state = LoopState()
        self.interrupt: InterruptRequest | None = None
        self.ddp: nn.Module | None = None
        if world_size > 1:
            self.ddp = nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=True)

    # ------------------------------------------------------------------ state
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named_params}

    def save_resume(self) -> None:
        """Write the resume state (``last.safetensors``, no pickle) atomically: trainable weights, the trunk's
        and adapter's buffers (BN statistics), optimiser, scheduler, gradient scaler, the loop position, RNG
        states and the run's options (JSON)."""
        if not is_main(self.rank):
            return
        payload = {
            "weights": self.trainable_state(),
            "buffers": {n: b for n, b in self.model.named_buffers() if n.startswith(("backbone.", "neck."))},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "epoch_step": self.state.epoch_step,
            "rng": rng_state(),
            "options": json.dumps(self.options),
        }
        write_state(self.output_dir / RESUME_STATE, payload)

    def restore(self, payload: dict[str, Any], where: Path) -> None:
        """Continue from a resume state (``read_resume_state``) exactly where it was saved."""
        params = dict(self.named_params)
        missing = sorted(set(params) - set(payload["weights"]))
        if missing:
            raise ValueError(f"--resume: {where} does not fit this model/stage: missing {missing[:5]}.")
        with torch.no_grad():
            for name, value in payload["weights"].items():
                params[name].copy_(value)
            buffers = dict(self.model.named_buffers())
            for name, value in payload.get("buffers", {}).items():
                buffers[name].copy_(value)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.state = LoopState(payload["step"], payload["epoch"], payload.get("epoch_step", 0))
        set_rng_state(payload["rng"])

    def check_replicas_in_sync(self) -> None:
        """All ranks must end with identical weights (DDP); rank 0 logs every rank's checksum."""
        checksum = float(sum(p.detach().double().sum() for _, p in self.named_params))
        checksums: list[float] = [0.0] * self.world_size
        dist.all_gather_object(checksums, checksum)
        self.log({"event": "ddp_sync", "checksums": checksums})
        if len(set(checksums)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter checksums per rank {checksums}.")

    def log(self, record: dict[str, Any]) -> None:
        if is_main(self.rank):
            with open(self.output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------- loop
    def _stop_requested(self) -> bool:
        """Whether any rank was asked to stop (ranks must stop at the same step under DDP)."""
        stop = self.interrupt is not None and self.interrupt.requested
        if self.world_size > 1:
            flag = torch.tensor([float(stop)], device=self.model.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _optimizer_step(self, batch: list[dict[str, Any]]) -> tuple[dict[str, float], torch.Tensor]:
        step_module = self.ddp if self.ddp is not None else self.loss_module
        with autocast_context(self.precision, self.model.device):
            loss, logs = step_module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in self.named_params], self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.state.step += 1
        self.state.epoch_step += 1
        return logs, grad_norm

    def train_epoch(
        self,
        batches: Iterable[list[dict[str, Any]]],
        *,
        num_batches: int,
        max_steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """The rest of the epoch in ``batches``; stops early at ``max_steps`` (total optimiser steps).

        Raises:
            KeyboardInterrupt: after the step during which Ctrl-C was pressed (the state is at a step
                boundary: the caller saves it).
        """
        self.model.train()
        bar = tqdm(
            total=num_batches,
            initial=self.state.epoch_step,
            disable=not is_main(self.rank),
            desc=f"epoch {self.state.epoch}",
            dynamic_ncols=True,
            leave=False,
        )
        start, images = time.perf_counter(), 0
        for batch in batches:
            if max_steps is not None and self.state.step >= max_steps:
                break
            logs, grad_norm = self._optimizer_step(batch)
            images += len(batch) * self.world_size
            throughput = images / max(time.perf_counter() - start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.3f}", img_s=f"{throughput:.2f}")
            if self.state.step % self.log_every == 0:
                lr = self.scheduler.get_last_lr()[0]
                record = {"step": self.state.step, "epoch": self.state.epoch, "lr": lr}
                self.log(record | {"grad_norm": float(grad_norm), "images_per_s": throughput, **logs})
            if self.save_every_steps and self.state.step % self.save_every_steps == 0:
                self.save_resume()
            if on_step is not None:
                on_step(self.state.step)
            if self._stop_requested():
                bar.close()
                raise KeyboardInterrupt
        bar.close()
