"""Objectives shared by every system in the comparison benchmark (hpo, Optuna, Ray Tune).

Each takes ``(params, reporter)`` like any hpo objective; the Optuna and Ray Tune peers
(benchmarks/peers/) feed their trials through the same Reporter, so all systems run identical
code. Every objective reports through ``benchlog.timed`` (report latency, processes started).
The import-heavy objective (torch and data at import) is in heavy.py.
"""

from __future__ import annotations

import time

import benchlog

from workers.reporter import Reporter

NOOP_SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0.0, "high": 1.0}}

# The costliest corner (3 layers of 512 units, batch 32) takes ~10x the cheapest per epoch.
TRAIN_SPACE = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 0.3, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
    "hidden": {"type": "int", "low": 16, "high": 512, "log": True},
    "layers": {"type": "int", "low": 1, "high": 3},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
}

# heavy.py's space: TRAIN_SPACE on 9 600 training rows instead of 1 437, so its costliest corner
# is narrowed (256 units, batch 64) to keep an epoch under ~0.5 s on one core.
HEAVY_SPACE = {
    **TRAIN_SPACE,
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
}


def noop(params: dict, reporter: Reporter, steps: int = 5) -> float:
    """Near-zero cost: five reports and a return."""
    reporter = benchlog.timed(reporter)
    value = params["x"] + params["y"]
    for step in range(steps):
        reporter.report(step, value + 1.0 / (step + 1))
    return value


def sleeper(params: dict, reporter: Reporter, seconds: float = 1.0, steps: int = 5) -> float:
    """A trial of ``seconds`` of pure waiting, reported in ``steps`` parts (no pruning)."""
    reporter = benchlog.timed(reporter)
    value = params["x"]
    for step in range(steps):
        time.sleep(seconds / steps)
        reporter.report(step, value)
    return value


def ticker(params: dict, reporter: Reporter, steps: int = 10, seconds: float = 0.05) -> float:
    """Report latency: ``steps`` reports ``seconds`` apart, nearly no CPU, every one decided on."""
    reporter = benchlog.timed(reporter)
    value = params["x"] + params["y"]
    for step in range(steps):
        time.sleep(seconds)
        reporter.report(step, value + 1.0 / (step + 1))
    return value + 1.0 / steps


def train(params: dict, reporter: Reporter, epochs: int = 8) -> float:
    """The builtin torch MLP on digits; validation accuracy each epoch (maximize)."""
    from workers.builtin import mlp  # here, so the workloads without torch never load it

    return mlp.objective(params, benchlog.timed(reporter), epochs=epochs)
