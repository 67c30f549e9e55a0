"""Objectives shared by every system in the comparison benchmark (hpo, Optuna, Ray Tune).

Each takes ``(params, reporter)`` like any hpo objective; adapters in compare.py feed Optuna
trials and Ray Tune sessions through the same Reporter, so all systems run identical code.
"""

from __future__ import annotations

import time

from workers.reporter import Reporter

NOOP_SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}}

# The costliest corner (3 layers of 1024 units, batch 32) takes ~10x the cheapest per epoch.
TRAIN_SPACE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
    "hidden": {"type": "int", "low": 16, "high": 512, "log": True},
    "layers": {"type": "int", "low": 1, "high": 3},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}


def noop(params: dict, reporter: Reporter, steps: int = 5) -> float:
    """Near-zero cost: five reports and a return."""
    value = params["x"] + params["y"]
    for step in range(steps):
        reporter.report(step, value + 1.0 / (step + 1))
    return value


def sleeper(params: dict, reporter: Reporter, seconds: float = 1.0, steps: int = 5) -> float:
    """A trial of ``seconds`` of pure waiting, reported in ``steps`` parts (no pruning)."""
    value = params["x"]
    for step in range(steps):
        time.sleep(seconds / steps)
        reporter.report(step, value)
    return value


def train(params: dict, reporter: Reporter, epochs: int = 8) -> float:
    """The builtin torch MLP on digits; validation accuracy each epoch (maximize)."""
    from workers.builtin import mlp  # here, so the workloads without torch never load it

    return mlp.objective(params, reporter, epochs=epochs)
