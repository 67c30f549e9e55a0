"""``builtin:transformer``: a small transformer encoder on a generated sequence task (no download).

Tasks (``task`` argument), generated from ``data_seed`` so every trial sees the same data:

- ``sort`` (default): the input is ``length`` random tokens from a vocabulary of ``vocab``; the
  model outputs the sorted sequence, one class per position. The metric is per-token accuracy
  (about 1/vocab at chance; position-wise frequency alone gives ~0.3). Sorting needs attention:
  each output position depends on comparing all inputs.
- ``signals``: classify a noisy 1-D signal of 64 samples (sine, square, sawtooth or triangle wave
  with random frequency, phase and amplitude); the signal is cut into 8 patches of 8 samples,
  which are the tokens. The metric is accuracy.

Network: token (or patch) embedding plus a learned position embedding, ``layers`` pre-norm
encoder layers of width ``width`` with ``heads`` attention heads and a feed-forward block of
``ff_mult * width``, ``dropout`` in attention and feed-forward; the sequence task classifies
every position, the signal task the mean over positions. Gradients are clipped to norm 1.

Reports validation accuracy every epoch, logs training accuracy/loss, returns the final
validation accuracy. Parameters: ``width``, ``heads``, ``layers``, ``ff_mult``, ``dropout`` and
those of :mod:`workers.builtin.common` (lr, optimizer, weight_decay, schedule, warmup, ...).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from workers.builtin.common import chunks, fit, float_param, int_param, tensor_batches
from workers.reporter import Reporter

TASKS = ("sort", "signals")
SIGNAL_LENGTH, PATCH = 64, 8
WAVES = ("sine", "square", "sawtooth", "triangle")


@lru_cache(maxsize=4)
def make_sort_data(n: int, length: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, length))
    return torch.from_numpy(x), torch.from_numpy(np.sort(x, axis=1))


@lru_cache(maxsize=4)
def make_signal_data(n: int, seed: int, noise: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` signals, balanced over the four wave forms; returns (N x 8 x 8 patches, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(WAVES)
    rng.shuffle(labels)
    t = np.linspace(0.0, 1.0, SIGNAL_LENGTH, endpoint=False)[None, :]
    cycles = rng.uniform(1.0, 5.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    amplitude = rng.uniform(0.5, 1.5, size=(n, 1))
    u = (cycles * t + phase) % 1.0  # position within the period, in [0, 1)
    waves = np.stack(
        [np.sin(2 * np.pi * u), np.where(u < 0.5, 1.0, -1.0), 2.0 * u - 1.0, 4.0 * np.abs(u - 0.5) - 1.0]
    )
    x = amplitude * waves[labels, np.arange(n)] + rng.normal(0.0, noise, size=(n, SIGNAL_LENGTH))
    patches = x.astype(np.float32).reshape(n, SIGNAL_LENGTH // PATCH, PATCH)
    return torch.from_numpy(patches), torch.from_numpy(labels.astype(np.int64))


class Encoder(nn.Module):
    """Pre-norm transformer encoder over token ids (``vocab``) or real-valued patches (``patch``)."""

    def __init__(
        self, *, width: int, heads: int, layers: int, ff_mult: int, dropout: float, length: int,
        n_classes: int, vocab: int | None = None, patch: int | None = None, per_position: bool = True,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.embed = nn.Embedding(vocab, width) if vocab else nn.Linear(patch, width)
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=ff_mult * width, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)
        self.per_position = per_position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.encoder(self.embed(x) + self.position))
        return self.head(h if self.per_position else h.mean(dim=1))


def objective(
    params: dict,
    reporter: Reporter,
    epochs: int = 10,
    task: str = "sort",
    length: int = 12,
    vocab: int = 20,
    n_train: int = 2000,
    n_val: int = 500,
    data_seed: int = 0,
) -> float:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    n_train, n_val = int(n_train), int(n_val)
    if n_train < 2 or n_val < 1:
        raise ValueError(f"need n_train >= 2 and n_val >= 1, got {n_train} and {n_val}")
    if task == "sort":
        x, y = make_sort_data(n_train + n_val, int(length), int(vocab), int(data_seed))
        shape = dict(vocab=int(vocab), length=int(length), n_classes=int(vocab), per_position=True)
    else:
        x, y = make_signal_data(n_train + n_val, int(data_seed))
        shape = dict(patch=PATCH, length=SIGNAL_LENGTH // PATCH, n_classes=len(WAVES), per_position=False)
    torch.manual_seed(reporter.seed)
    device = torch.device(reporter.device)
    x, y = x.to(device), y.to(device)
    x_train, y_train, x_val, y_val = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    model = Encoder(
        width=int_param(params, "width", 64),
        heads=int_param(params, "heads", 4),
        layers=int_param(params, "layers", 2),
        ff_mult=int_param(params, "ff_mult", 2),
        dropout=float_param(params, "dropout", 0.0),
        **shape,
    ).to(device)
    batches, steps = tensor_batches(x_train, y_train, int_param(params, "batch_size", 64))
    return fit(
        model, params, reporter,
        epochs=epochs, train_batches=batches, steps_per_epoch=steps,
        train_eval=chunks(x_train, y_train), val_eval=chunks(x_val, y_val),
        clip_grad_norm=1.0,
    )
