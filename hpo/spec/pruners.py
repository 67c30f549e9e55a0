"""Pruners by name: Optuna's, ``asha`` (Ray Tune's stopping rule, hpo/spec/asha.py), and ``patient``,
which wraps another pruner given as ``wrapped: {name, options}``."""

from __future__ import annotations

from typing import Any

import optuna

from hpo.errors import HpoError
from hpo.spec.asha import AshaPruner
from hpo.spec.registry import Registry

PRUNERS: Registry[optuna.pruners.BasePruner] = Registry("pruner")


def _patient(
    wrapped: str | dict[str, Any], patience: int, min_delta: float = 0.0
) -> optuna.pruners.BasePruner:
    if isinstance(wrapped, str):
        wrapped = {"name": wrapped}
    if not isinstance(wrapped, dict) or "name" not in wrapped:
        raise HpoError("pruner 'patient' needs wrapped: {name: ..., options: {...}}")
    unknown = set(wrapped) - {"name", "options"}
    if unknown:
        raise HpoError(f"unknown key {sorted(unknown)[0]!r} in pruner 'patient' wrapped")
    inner = PRUNERS.build(wrapped["name"], wrapped.get("options") or {})
    return optuna.pruners.PatientPruner(inner, patience=patience, min_delta=min_delta)


PRUNERS.register("none", optuna.pruners.NopPruner)
PRUNERS.register("median", optuna.pruners.MedianPruner)
PRUNERS.register("percentile", optuna.pruners.PercentilePruner)
PRUNERS.register("successive_halving", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.register("asha", AshaPruner)
PRUNERS.register("hyperband", optuna.pruners.HyperbandPruner)
PRUNERS.register("threshold", optuna.pruners.ThresholdPruner)
PRUNERS.register("wilcoxon", optuna.pruners.WilcoxonPruner)
PRUNERS.register("patient", _patient)
