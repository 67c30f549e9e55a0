"""Cheap analytic benchmarks with a learning curve: ``builtin:branin`` and ``builtin:hartmann6``.

Each reports ``steps`` intermediate values that approach the function's value from above like a
training curve (with optional noise, seeded by the trial's seed), and returns the exact value at
the end, so sampler quality (regret) and pruning can be measured without training anything.
"""

from __future__ import annotations

import math
import random
import time

from workers.reporter import Reporter

HARTMANN6_MIN = -3.32236801141551
BRANIN_MIN = 0.397887357729738

_A = [
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
]
_P = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6_value(x: list[float]) -> float:
    total = 0.0
    for alpha, a_row, p_row in zip(_ALPHA, _A, _P):
        total += alpha * math.exp(-sum(a * (xi - p) ** 2 for a, xi, p in zip(a_row, x, p_row)))
    return -total


def branin_value(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def _curve(value: float, reporter: Reporter, steps: int, noise: float, delay: float, checkpoints: bool) -> float:
    """``checkpoints``: save one after every step and continue from one, like a training loop
    (off by default: these functions measure samplers, where a file per step only costs)."""
    rng = random.Random(reporter.seed)
    scale = 1.0 + abs(value)
    saved = reporter.load_checkpoint() if checkpoints else None
    start = 0
    if saved is not None:
        start = saved["step"] + 1
        rng.setstate(saved["rng"])
    for step in range(start, steps):
        remaining = 0.5 ** (step + 1) if step < steps - 1 else 0.0
        observed = value + scale * remaining + (rng.gauss(0.0, noise) if noise else 0.0)
        if delay:
            time.sleep(delay)
        if checkpoints:
            reporter.save_checkpoint({"step": step, "rng": rng.getstate()}, step=step)
        reporter.report(step, observed)
    return value


def hartmann6(params: dict, reporter: Reporter, steps: int = 5, noise: float = 0.0, delay: float = 0.0,
              checkpoints: bool = False) -> float:
    """Hartmann 6-D on [0, 1]^6 (params x0..x5); minimize; global minimum about -3.3224."""
    return _curve(hartmann6_value([params[f"x{i}"] for i in range(6)]), reporter, steps, noise, delay, checkpoints)


def branin(params: dict, reporter: Reporter, steps: int = 5, noise: float = 0.0, delay: float = 0.0,
           checkpoints: bool = False) -> float:
    """Branin on x1 in [-5, 10], x2 in [0, 15]; minimize; global minimum about 0.3979."""
    return _curve(branin_value(params["x1"], params["x2"]), reporter, steps, noise, delay, checkpoints)
