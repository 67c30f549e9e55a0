"""Cheap objectives for tests: analytic functions with a multi-step learning curve."""

from __future__ import annotations

import math
import time


def curve(params, reporter, steps: int = 6, delay: float = 0.0):
    """A quadratic bowl approached along a learning curve; minimize. Reports every step."""
    target = (params["x"] - 0.3) ** 2 + (params.get("y", 0.0) + 0.1) ** 2
    value = target
    for step in range(steps):
        value = target + 1.0 / (step + 1)
        if delay:
            time.sleep(delay)
        reporter.report(step, value)
    return value


def fails_when_x_large(params, reporter):
    reporter.report(0, params["x"])
    if params["x"] > 0.5:
        raise RuntimeError(f"x too large: {params['x']:.3f}")
    return params["x"]


def returns_nan(params, reporter):
    reporter.report(0, 1.0)
    return math.nan if params["x"] > 0.5 else params["x"]


def always_fails(params, reporter):
    raise ValueError("this objective always fails")
