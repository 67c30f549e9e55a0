"""Samplers by name. Options are passed through to Optuna and checked against its signatures."""

from __future__ import annotations

import optuna

from hpo.errors import HpoError
from hpo.spec.registry import Registry
from hpo.spec.space import CategoricalParam, FloatParam, SearchSpace

SAMPLERS: Registry[optuna.samplers.BaseSampler] = Registry("sampler")

SAMPLERS.register("tpe", optuna.samplers.TPESampler, hidden=("seed",))
SAMPLERS.register("random", optuna.samplers.RandomSampler, hidden=("seed",))
SAMPLERS.register("qmc", optuna.samplers.QMCSampler, hidden=("seed",))
SAMPLERS.register("cmaes", optuna.samplers.CmaEsSampler, hidden=("seed",))
SAMPLERS.register("gp", optuna.samplers.GPSampler, hidden=("seed",))
SAMPLERS.register("nsgaii", optuna.samplers.NSGAIISampler, hidden=("seed",))
SAMPLERS.register("nsgaiii", optuna.samplers.NSGAIIISampler, hidden=("seed",))
SAMPLERS.register("bruteforce", optuna.samplers.BruteForceSampler, hidden=("seed",))


def grid_of(space: SearchSpace) -> dict[str, list]:
    """Every parameter's grid: categorical choices, int steps, float steps (floats need a step)."""
    grid = {}
    for name, param in space.params.items():
        if isinstance(param, CategoricalParam):
            grid[name] = list(param.choices)
        elif isinstance(param, FloatParam):
            if param.step is None:
                raise HpoError(f"sampler 'grid' needs a step for float parameter {name!r}")
            count = int(round((param.high - param.low) / param.step)) + 1
            grid[name] = [round(param.low + i * param.step, 12) for i in range(count)]
        else:
            if param.log:
                raise HpoError(f"sampler 'grid' cannot enumerate log-scale int parameter {name!r}")
            grid[name] = list(range(param.low, param.high + 1, param.step))
    return grid


def _grid(space: SearchSpace, seed: int | None = None) -> optuna.samplers.GridSampler:
    return optuna.samplers.GridSampler(grid_of(space), seed=seed)


SAMPLERS.register("grid", _grid, hidden=("seed", "space"))
