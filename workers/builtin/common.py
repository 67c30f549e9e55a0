"""What the builtin workloads share: optimizer, learning-rate schedule, loss and the epoch loop.

Every builtin is a classifier trained with cross-entropy. ``fit`` runs the epochs, and after
each one measures accuracy and loss on the training and validation data in eval mode (no dropout,
no augmentation, so the train/validation gap is a fair measure of overfitting), records the
training numbers with ``reporter.log`` and reports the validation accuracy with
``reporter.report`` (which raises ``workers.Pruned`` when the pruner stops the trial).

Parameters read from ``params`` (all optional, defaults in brackets):
``lr`` [1e-3], ``optimizer`` [adamw] (adamw | sgd), ``momentum`` [0.9, sgd only],
``weight_decay`` [0], ``schedule`` [constant] (constant | cosine | step), ``warmup`` [0, fraction
of all steps], ``label_smoothing`` [0], ``batch_size`` [64].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.reporter import Reporter

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")

# One training step's data: (inputs, targets); inputs is whatever the model takes.
Batch = tuple[Any, torch.Tensor]
# Yields one epoch of shuffled training batches, drawing randomness only from the generator.
EpochBatches = Callable[[torch.Generator], Iterable[Batch]]


def make_optimizer(params: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum. Weight decay applies to weight matrices and kernels only:
    decaying biases and normalization scales only hurts."""
    lr = float(params.get("lr", 1e-3))
    weight_decay = float(params.get("weight_decay", 0.0))
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    name = params.get("optimizer", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(params.get("momentum", 0.9)))
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":  # x0.1 at half of the budget, x0.01 at three quarters
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def make_scheduler(params: dict[str, Any], optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-step schedule: constant, cosine decay to zero, or step decay; optional linear warmup."""
    schedule = params.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    warmup = float(params.get("warmup", 0.0))
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup is a fraction of the training steps in [0, 1), got {warmup}")
    warmup_steps = int(warmup * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total_steps, warmup_steps)
    )


def make_loss(params: dict[str, Any]) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=float(params.get("label_smoothing", 0.0)))


def tensor_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> tuple[EpochBatches, int]:
    """Shuffled minibatches of in-memory tensors; returns (epoch batches, steps per epoch).

    A last batch of a single example is dropped (batch norm cannot train on one example).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    steps = n // batch_size + (1 if n % batch_size > 1 else 0)

    def batches(generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2 and n > 1:
                continue
            xb = x[idx]
            if augment is not None:
                xb = augment(xb, generator)
            yield xb, y[idx]

    return batches, max(1, steps)


def chunks(x: torch.Tensor, y: torch.Tensor, size: int = 1024) -> list[Batch]:
    """Evaluation batches, in order."""
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Sequence[Batch]) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over all targets; sequence outputs count every position."""
    model.eval()
    correct, loss, count = 0.0, 0.0, 0
    for inputs, targets in batches:
        logits = model(inputs)
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        correct += (logits.argmax(dim=-1) == targets).sum().item()
        loss += F.cross_entropy(logits.float(), targets, reduction="sum").item()
        count += targets.numel()
    count = max(count, 1)
    return correct / count, loss / count


def fit(
    model: nn.Module,
    params: dict[str, Any],
    reporter: Reporter,
    *,
    epochs: int,
    train_batches: EpochBatches,
    steps_per_epoch: int,
    train_eval: Sequence[Batch],
    val_eval: Sequence[Batch],
    clip_grad_norm: float | None = None,
) -> float:
    """Train for ``epochs``, report validation accuracy after each, return the last one."""
    epochs = int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loss_fn = make_loss(params)
    optimizer = make_optimizer(params, model)
    scheduler = make_scheduler(params, optimizer, epochs * steps_per_epoch)
    # Shuffling and augmentation draw from their own generator, seeded by the trial's seed.
    generator = torch.Generator().manual_seed(reporter.seed)
    val_acc = 0.0
    checkpoint = reporter.load_checkpoint()
    start = resume(checkpoint, params, model, optimizer, scheduler, generator)
    if checkpoint:
        val_acc = float(checkpoint.get("val_acc", 0.0))  # trained to its end already: that is its result
    for epoch in range(start, epochs):
        model.train()
        for inputs, targets in train_batches(generator):
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            scheduler.step()
        train_acc, train_loss = evaluate(model, train_eval)
        val_acc, val_loss = evaluate(model, val_eval)
        reporter.log(
            train_accuracy=train_acc,
            train_loss=train_loss,
            val_loss=val_loss,
            generalization_gap=train_acc - val_acc,
        )
        # saved before the report: a report that ends the trial here (a PBT segment) keeps the epoch
        reporter.save_checkpoint({
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "val_acc": val_acc,
        }, step=epoch)
        reporter.report(epoch, val_acc)
    return val_acc


def resume(checkpoint: Any, params: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: Any, generator: torch.Generator) -> int:
    """Restore a checkpoint saved by ``fit``; the epoch to continue at (0 without one).

    The optimizer's hyperparameters come from ``params``, not from the checkpoint: a trial that
    continues another's checkpoint with changed values (Population Based Training) trains on with
    its own learning rate and weight decay, at the point of the schedule the checkpoint reached.
    """
    if not checkpoint:
        return 0
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    generator.set_state(checkpoint["generator"])
    lr = float(params.get("lr", 1e-3))
    weight_decay = float(params.get("weight_decay", 0.0))
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for i, group in enumerate(optimizer.param_groups):
        group["initial_lr"], group["lr"] = lr, lr * factor
        if i == 0:  # the group of weight matrices (see make_optimizer)
            group["weight_decay"] = weight_decay
        if "momentum" in group and "momentum" in params:
            group["momentum"] = float(params["momentum"])
    return int(checkpoint["epoch"]) + 1


def int_param(params: dict[str, Any], name: str, default: int) -> int:
    return int(params.get(name, default))


def float_param(params: dict[str, Any], name: str, default: float) -> float:
    return float(params.get(name, default))


def bool_param(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
