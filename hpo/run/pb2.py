"""PB2's explore step: choose a member's next values with a time-varying GP bandit (Parker-Holder
et al., "Provably Efficient Online Hyperparameter Optimization with Population-Based Bandits",
2020) instead of perturbing them at random.

The data: for each finished segment, the values it trained with (scaled to [0, 1], log-scaled
where the space says log) and the generation, against how much the member's score changed over
the segment. A Gaussian process with a squared-exponential kernel over the values, times a
kernel that forgets older generations (``(1 - forget) ** (|t - t'| / 2)``), predicts the change
of a segment run now with any values; the values with the highest upper confidence bound win.
Several members choosing in one generation each see the others' choices as already observed
(their variance shrinks there), so they spread out. numpy only; a few hundred candidates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpo.spec.space import FloatParam, IntParam

NOISE = 0.05  # observation noise (the changes are standardized)
FORGET = 0.1  # how much of the similarity between two generations is lost per generation apart
LENGTHS = (0.05, 0.1, 0.2, 0.4, 0.8)  # length scales tried; the most likely one is used
CANDIDATES = 512


@dataclass(frozen=True)
class Observation:
    values: dict[str, float]  # the numeric values the segment trained with
    generation: int
    change: float  # the score's change over the segment, in the direction that is better


class GpBandit:
    def __init__(self, params: dict[str, FloatParam | IntParam], rng: random.Random) -> None:
        self.params = params
        self.names = sorted(params)
        self.rng = rng

    def scale(self, values: dict[str, float]) -> list[float]:
        out = []
        for name in self.names:
            p = self.params[name]
            low, high, v = float(p.low), float(p.high), float(values[name])
            if p.log:
                low, high, v = math.log(low), math.log(high), math.log(max(v, p.low))
            out.append(0.0 if high == low else min(1.0, max(0.0, (v - low) / (high - low))))
        return out

    def unscale(self, point: Sequence[float]) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for name, u in zip(self.names, point):
            p = self.params[name]
            low, high = float(p.low), float(p.high)
            v = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if p.log else low + u * (high - low)
            out[name] = _snap(p, v)
        return out

    def choose(self, history: Sequence[Observation], generation: int, around: Sequence[dict[str, float]]) -> list[
            dict[str, float | int]]:
        """One set of values per entry of ``around`` (the donors the members copied), for the
        segment of ``generation``; chosen in turn, each seeing the earlier ones as observed."""
        if not history:
            return [dict(a) for a in around]
        x = np.array([self.scale(o.values) + [o.generation] for o in history], dtype=float)
        y = np.array([o.change for o in history], dtype=float)
        y = (y - y.mean()) / (y.std() or 1.0)
        length = max(LENGTHS, key=lambda ell: _log_likelihood(x, y, ell))
        chosen: list[dict[str, float | int]] = []
        for donor in around:
            candidates = self._candidates(donor)
            grid = np.column_stack([candidates, np.full(len(candidates), generation)])
            mean, var = _posterior(x, y, grid, length)
            beta = math.sqrt(2 * math.log(max(2, len(y)) ** 2 * len(self.names) * math.pi ** 2 / 0.6))
            best = int(np.argmax(mean + beta * np.sqrt(np.maximum(var, 0.0))))
            chosen.append(self.unscale(candidates[best]))
            # the choice counts as observed at its predicted mean: the next member looks elsewhere
            x = np.vstack([x, grid[best]])
            y = np.append(y, mean[best])
        return chosen

    def _candidates(self, donor: dict[str, float]) -> np.ndarray:
        """Uniform points of the box, and points near the donor's values."""
        d = len(self.names)
        centre = np.array(self.scale(donor))
        uniform = np.array([[self.rng.random() for _ in range(d)] for _ in range(CANDIDATES // 2)])
        local = centre + np.array([[self.rng.gauss(0.0, 0.1) for _ in range(d)] for _ in range(CANDIDATES // 2)])
        points: np.ndarray = np.clip(np.vstack([uniform, local, centre[None, :]]), 0.0, 1.0)
        return points


def _kernel(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    space = ((a[:, None, :-1] - b[None, :, :-1]) ** 2).sum(-1)
    apart = np.abs(a[:, None, -1] - b[None, :, -1])
    similar: np.ndarray = np.exp(-space / (2 * length**2)) * (1 - FORGET) ** (apart / 2)
    return similar


def _posterior(x: np.ndarray, y: np.ndarray, at: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    k = _kernel(x, x, length) + NOISE * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    ks = _kernel(at, x, length)
    mean = ks @ alpha
    v = np.linalg.solve(chol, ks.T)
    return mean, 1.0 - (v**2).sum(0)


def _log_likelihood(x: np.ndarray, y: np.ndarray, length: float) -> float:
    k = _kernel(x, x, length) + NOISE * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
    return float(-0.5 * y @ alpha - np.log(np.diag(chol)).sum())


def _snap(param: FloatParam | IntParam, value: float) -> float | int:
    value = min(float(param.high), max(float(param.low), value))
    if isinstance(param, IntParam):
        return int(param.low + round((value - param.low) / param.step) * param.step)
    if param.step:
        return min(float(param.high), float(param.low) + round((value - float(param.low)) / param.step) * param.step)
    return float(value)
