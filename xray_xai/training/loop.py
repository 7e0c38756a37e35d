"""The epoch loop shared by the trainers: resumable state, per-epoch log and the best weights.

Every epoch runs the mini-batches in a seeded random order under a linear warm-up then cosine
learning rate (timm's ``CosineLRScheduler``, set from the step number alone, so a resumed run
continues the schedule exactly), updates an EMA of the weights, then scores the raw and the EMA weights on
validation; weights that beat every earlier score go to ``WORK/best.safetensors``. The model,
EMA and optimizer state are saved to ``WORK/last`` after every epoch (safetensors + JSON,
nothing pickled), and a rerun resumes after the last finished epoch.
"""

from __future__ import annotations

import json
import math
import operator
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from tqdm import tqdm

BEST = "best.safetensors"
LAST = "last"


@dataclass(frozen=True)
class Schedule:
    """The parts of a trainer's configuration that drive the loop."""

    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    seed: int


@dataclass(frozen=True)
class Validation:
    """One epoch's validation: the selection score of each candidate ("raw", "ema"), extra
    fields for the run's history, and the validation part of the epoch's log line."""

    scores: dict[str, float]
    history: dict[str, float]
    summary: str


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, steps_per_epoch: int) -> CosineLRScheduler:
    """Per-step learning rate of ``schedule``: a linear warm-up over ``warmup_epochs`` from
    ``lr / warmup steps`` to ``lr``, then a cosine decay to zero at the last step of ``epochs``.

    The rate of a step depends on the step alone (``scheduler.step_update(step)``), never on the
    scheduler's history, so a resumed run needs no saved scheduler state.
    """
    total, warmup = steps_per_epoch * schedule.epochs, int(schedule.warmup_epochs * steps_per_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"] = schedule.lr  # the peak rate, whatever the optimizer was created or resumed with
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=0.0,
        warmup_t=warmup,
        warmup_lr_init=schedule.lr / warmup if warmup else 0.0,
        warmup_prefix=True,  # the cosine starts after the warm-up
        t_in_epochs=False,
    )


def save_state(
    path: Path, model: torch.nn.Module, ema: ModelEmaV3, optimizer: torch.optim.Optimizer, meta: dict
) -> None:
    """Resumable training state as safetensors + JSON (nothing pickled)."""
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous() for k, v in ema.module.state_dict().items()})
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path.with_suffix(".safetensors"))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))


def load_state(path: Path, model: torch.nn.Module, ema: ModelEmaV3, optimizer: torch.optim.Optimizer) -> dict:
    """Load :func:`save_state`'s tensors into the model, EMA and optimizer; return its metadata."""
    tensors = load_file(str(path.with_suffix(".safetensors")))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    opt_state = optimizer.state_dict()
    opt_state["state"] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            opt_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(opt_state)
    return json.loads(path.with_suffix(".json").read_text())


def best_weights(work: Path) -> dict[str, torch.Tensor]:
    """The state dict of the best weights a run in ``work`` has seen."""
    return load_file(str(work / BEST))


def run_record(command: str, config: dict[str, Any], meta: dict) -> dict[str, Any]:
    """How a trainer's run went, as its card's ``training`` record opens for every trainer: the
    ``command`` (``python -m MODULE``) with this process's arguments, the ``config``, and the
    epochs, wall time and torch threads of the :func:`run_epochs` run whose metadata is ``meta``."""
    return {
        "command": " ".join([command] + sys.argv[1:]),
        "config": config,
        "epochs_run": meta["epoch"],
        "wall_time_s": round(meta["elapsed_s"], 1),
        "torch_threads": torch.get_num_threads(),
    }


def run_epochs(
    model: torch.nn.Module,
    ema: ModelEmaV3,
    optimizer: torch.optim.Optimizer,
    *,
    work: Path,
    schedule: Schedule,
    config: dict[str, Any],
    n_train: int,
    batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    validate: Callable[[dict[str, torch.nn.Module]], Validation],
    best_key: str,
    same_run: Callable[[dict, dict], bool] = operator.eq,
) -> dict:
    """Train for the epochs of ``schedule`` not yet finished in ``work``; return the run's metadata.

    ``batch_loss(indices, generator)`` is the loss of one mini-batch of training items;
    ``validate`` scores the candidates ``{"raw": model, "ema": ema.module}``. The metadata holds
    the finished ``epoch``, the best score under ``best_key``, the ``best`` epoch and weights,
    the per-epoch ``history``, the training time ``elapsed_s`` and the ``config``. A saved run is
    resumed only if ``same_run(saved config, config)``.
    """
    config = json.loads(json.dumps(config))
    meta = resume(work, model, ema, optimizer, config, same_run) or {
        "epoch": 0,
        best_key: -1.0,
        "best": None,
        "history": [],
        "elapsed_s": 0.0,
        "config": config,
    }
    steps_per_epoch = math.ceil(n_train / schedule.batch_size)
    scheduler = lr_scheduler(optimizer, schedule, steps_per_epoch)
    candidates = {"raw": model, "ema": ema.module}
    generator = torch.Generator()
    for epoch in range(meta["epoch"] + 1, schedule.epochs + 1):
        generator.manual_seed(schedule.seed * 1000 + epoch)
        started = time.time()
        model.train()
        order = torch.randperm(n_train, generator=generator)
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{schedule.epochs}", file=sys.stderr, leave=False)
        for step_in_epoch in bar:
            step = (epoch - 1) * steps_per_epoch + step_in_epoch
            scheduler.step_update(step)
            loss = batch_loss(
                order[step_in_epoch * schedule.batch_size : (step_in_epoch + 1) * schedule.batch_size], generator
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(model, step=step)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        validation = validate(candidates)
        meta["elapsed_s"] += time.time() - started
        meta["epoch"] = epoch
        meta["history"].append({"epoch": epoch, "train_loss": float(np.mean(losses)), **validation.history})
        print(
            f"epoch {epoch:2d}  train_loss {np.mean(losses):.4f}  {validation.summary}  ({time.time() - started:.0f}s)",
            flush=True,
        )
        for name, candidate in candidates.items():
            if validation.scores[name] > meta[best_key]:
                meta[best_key], meta["best"] = float(validation.scores[name]), {"epoch": epoch, "weights": name}
                save_file({k: v.contiguous() for k, v in candidate.state_dict().items()}, str(work / BEST))
        save_state(work / LAST, model, ema, optimizer, meta)
    return meta


def resume(
    work: Path,
    model: torch.nn.Module,
    ema: ModelEmaV3,
    optimizer: torch.optim.Optimizer,
    config: dict,
    same_run: Callable[[dict, dict], bool],
) -> dict | None:
    """The metadata of the run saved in ``work``, its state loaded; None when there is none."""
    if not (work / LAST).with_suffix(".json").is_file():
        return None
    meta = load_state(work / LAST, model, ema, optimizer)
    if not same_run(meta["config"], config):
        raise SystemExit(f"{work} holds a run with another configuration; use another --work folder.")
    meta["config"] = config
    print(f"resuming after epoch {meta['epoch']}", flush=True)
    return meta
