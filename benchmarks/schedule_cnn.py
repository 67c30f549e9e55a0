"""A workload where the learning-rate schedule matters, for the PBT benchmark (schedules.py).

A small CNN on scikit-learn's 8x8 digits (offline), made harder than the plain dataset on
purpose, since plain digits saturates near 99 % whatever the schedule:

  * 400 training images only (a stratified, fixed split); the other 1397 are the validation set;
  * 20 % of the training labels replaced by random other classes (fixed, seeded label noise);
  * the metric is the NEGATIVE validation cross-entropy (maximize), not the accuracy.

Trained with SGD (momentum 0.9, batch 32) at a CONSTANT learning rate ``params["lr"]``, read
anew whenever the objective starts or resumes from a checkpoint (that is how PBT changes it).
With noisy labels a high rate learns fast but keeps the weights bouncing (and, held long, fits
the noise); a low rate is stable but slow. So a high rate early and a lower one late beats every
constant rate at the same epochs: a schedule is worth finding. Checked standalone with

    python benchmarks/schedule_cnn.py [--epochs 12] [--seeds 0 1 2]

which trains constant rates and a few two-phase schedules (high for half the epochs, then low)
through hpo's local reporter with checkpoints, switching the rate by resuming from the
checkpoint as PBT does, and prints each one's final value per seed. At 12 epochs (seeds 0-2,
medians): the best constant rate, 0.01, ends at -0.530 (0.015: -0.543, 0.005: -0.613, 0.03:
-0.639); 0.03 then 0.003 at -0.465, 0.05 then 0.002 at -0.444, each seed's two-phase run ahead
of every seed's best constant one (seed spread ~0.04).

Objective: ``objective(params, reporter, epochs=12)``; checkpoints model, optimizer, the
shuffling generator and the epoch every epoch (before the report), reports the negative
validation loss each epoch and returns the last one. One epoch takes ~0.1 s on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import lru_cache
from typing import Any

import benchlog
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SPACE = {"lr": {"type": "float", "low": 1.0e-3, "high": 0.3, "log": True}}
TRAIN_IMAGES = 600
LABEL_NOISE = 0.3
BATCH_SIZE = 32
MOMENTUM = 0.9


@lru_cache(maxsize=1)
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train with label noise, x_val, y_val): fixed, the same in every process."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    x_train, x_val, y_train, y_val = train_test_split(x, y.astype(np.int64), train_size=TRAIN_IMAGES,
                                                      stratify=y, random_state=0)
    rng = np.random.default_rng(0)
    noisy = rng.random(len(y_train)) < LABEL_NOISE
    y_train = y_train.copy()
    y_train[noisy] = (y_train[noisy] + rng.integers(1, 10, noisy.sum())) % 10  # always another class
    mean, std = float(x_train.mean()), float(x_train.std())
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return norm(x_train), torch.from_numpy(y_train), norm(x_val), torch.from_numpy(y_val)


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def objective(params: dict[str, Any], reporter, epochs: int = 12) -> float:
    """Train to ``epochs`` at the constant rate ``params["lr"]`` (continuing a checkpoint when
    there is one); the negative validation cross-entropy after each epoch (maximize)."""
    reporter = benchlog.timed(reporter)  # a line per epoch trained, when HPO_BENCH_LOG is set
    x_train, y_train, x_val, y_val = data()
    torch.manual_seed(reporter.seed)
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=float(params["lr"]), momentum=MOMENTUM)
    generator = torch.Generator().manual_seed(reporter.seed)
    state = reporter.load_checkpoint()
    start, value = 0, float("-inf")
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        for group in optimizer.param_groups:  # the checkpoint's momentum buffers, this trial's rate
            group["lr"] = float(params["lr"])
        start, value = int(state["epoch"]) + 1, float(state["value"])
    for epoch in range(start, epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i:i + BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            logits = net(x_val)
            loss = F.cross_entropy(logits, y_val).item()
            accuracy = (logits.argmax(1) == y_val).float().mean().item()
        value = -loss if np.isfinite(loss) else -10.0  # a diverged run: a bad value, not a NaN
        reporter.log(val_accuracy=accuracy)
        reporter.save_checkpoint({"epoch": epoch, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                  "generator": generator.get_state(), "value": value}, step=epoch)
        reporter.report(epoch, value)
    return value


def run_schedule(lrs: list[float], seed: int) -> tuple[float, float]:
    """Train one epoch per entry of ``lrs``, the rate changed by resuming from the checkpoint
    (as PBT does); (final value, final validation accuracy)."""
    from workers.reporter import Reporter

    with tempfile.TemporaryDirectory() as folder:
        value, start = 0.0, 0
        reporter = None
        while start < len(lrs):
            end = start
            while end + 1 < len(lrs) and lrs[end + 1] == lrs[start]:
                end += 1
            reporter = Reporter.local(seed=seed, checkpoint_dir=folder)
            value = objective({"lr": lrs[start]}, reporter, epochs=end + 1)
            start = end + 1
        return value, reporter.metrics["val_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description="constant rates against two-phase schedules, standalone")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--constant", type=float, nargs="+", default=[0.003, 0.005, 0.01, 0.015, 0.02, 0.03, 0.1])
    parser.add_argument("--phases", nargs="+", default=["0.03/0.003", "0.05/0.005", "0.05/0.002"],
                        help="HIGH/LOW: HIGH for the first half of the epochs, LOW for the rest")
    args = parser.parse_args()
    torch.set_num_threads(1)
    half = args.epochs // 2
    runs = {f"constant {lr:g}": [lr] * args.epochs for lr in args.constant}
    for phase in args.phases:
        high, low = (float(v) for v in phase.split("/"))
        runs[f"{high:g} then {low:g}"] = [high] * half + [low] * (args.epochs - half)
    print(f"| schedule ({args.epochs} epochs) | " + " | ".join(f"seed {s}" for s in args.seeds)
          + " | median | val accuracy (median) |")
    print("|---|" + "---|" * (len(args.seeds) + 2))
    for label, lrs in runs.items():
        results = [run_schedule(lrs, seed) for seed in args.seeds]
        values = [v for v, _ in results]
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values)
              + f" | {statistics.median(values):.4f} | {statistics.median(a for _, a in results):.3f} |", flush=True)


if __name__ == "__main__":
    main()
