"""PB2's GP bandit on its own: it learns where the score grows fastest, and members choosing in
one generation spread out instead of all taking the same values."""

from __future__ import annotations

import random

import pytest

from hpo.run.pb2 import GpBandit, Observation
from hpo.spec.space import FloatParam


def _history(peak: float, seed: int = 0) -> list[Observation]:
    rng = random.Random(seed)
    history = []
    for generation in range(1, 6):
        for _ in range(6):
            x = rng.random()
            history.append(Observation({"lr": x}, generation, change=1.0 - 8 * (x - peak) ** 2 + rng.gauss(0, 0.02)))
    return history


@pytest.mark.parametrize("peak", [0.2, 0.7])
def test_the_bandit_chooses_values_near_where_the_score_grew_fastest(peak):
    bandit = GpBandit({"lr": FloatParam(type="float", low=0.0, high=1.0)}, random.Random(1))
    [chosen] = bandit.choose(_history(peak), generation=6, around=[{"lr": 1.0 - peak}])
    assert abs(chosen["lr"] - peak) < 0.15


def test_members_choosing_together_spread_out_and_log_scales_are_respected():
    params = {"lr": FloatParam(type="float", low=1e-4, high=1e-1, log=True)}
    bandit = GpBandit(params, random.Random(2))
    history = [Observation({"lr": 10 ** (-4 + 3 * o.values["lr"])}, o.generation, o.change) for o in _history(0.5)]
    first, second = bandit.choose(history, generation=6, around=[{"lr": 1e-3}, {"lr": 1e-3}])
    assert all(1e-4 <= c["lr"] <= 1e-1 for c in (first, second))
    assert first["lr"] != second["lr"]
    assert abs(bandit.scale(first)[0] - 0.5) < 0.15  # the peak lies in the middle of the log range
    assert bandit.choose([], generation=1, around=[{"lr": 1e-3}]) == [{"lr": 1e-3}]  # nothing learnt yet
