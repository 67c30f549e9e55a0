"""Samplers by name. Options are passed through to Optuna and checked against its signatures."""

from __future__ import annotations

import optuna

from hpo.registry import Registry

SAMPLERS: Registry[optuna.samplers.BaseSampler] = Registry("sampler")

SAMPLERS.register("tpe", optuna.samplers.TPESampler, hidden=("seed",))
SAMPLERS.register("random", optuna.samplers.RandomSampler, hidden=("seed",))
SAMPLERS.register("qmc", optuna.samplers.QMCSampler, hidden=("seed",))
SAMPLERS.register("cmaes", optuna.samplers.CmaEsSampler, hidden=("seed",))
SAMPLERS.register("gp", optuna.samplers.GPSampler, hidden=("seed",))
SAMPLERS.register("nsgaii", optuna.samplers.NSGAIISampler, hidden=("seed",))
SAMPLERS.register("nsgaiii", optuna.samplers.NSGAIIISampler, hidden=("seed",))
SAMPLERS.register("bruteforce", optuna.samplers.BruteForceSampler, hidden=("seed",))
