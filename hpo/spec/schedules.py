"""Schedules: hyperparameters that change while trials train. ``pbt``: Population Based Training.

    schedule: {name: pbt, options: {population: 8, interval: 2, quantile: 0.25,
                                    resample_probability: 0.25, mutations: [lr, weight_decay]}}

A population of ``population`` members trains in segments of ``interval`` steps (each segment an
Optuna trial). After every segment of the whole population, each member in the bottom
``quantile`` copies the checkpoint and values of a random member of the top ``quantile``
(exploit) and changes the values of ``mutations`` (explore: resampled from the search space with
``resample_probability``, else multiplied by one of ``perturb`` for numbers, or moved to a
neighbouring choice). The study ends when every member has trained to its end (its objective
returned): its budget is the population's training, not ``n_trials``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpo.errors import HpoError
from hpo.spec.space import CategoricalParam, SearchSpace


class PbtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    population: int = Field(default=8, ge=2)
    interval: int = Field(default=2, ge=1, description="steps per segment")
    quantile: float = Field(default=0.25, gt=0, le=0.5)
    resample_probability: float = Field(default=0.25, ge=0, le=1)
    perturb: tuple[float, float] = (0.8, 1.2)
    mutations: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _factors(self) -> PbtOptions:
        if any(f <= 0 for f in self.perturb):
            raise ValueError("perturb factors must be > 0")
        return self


def pbt_options(options: dict[str, Any], space: SearchSpace) -> PbtOptions:
    """Validate a pbt schedule's options against the search space; one line when wrong."""
    try:
        parsed = PbtOptions.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise HpoError(f"option {where!r}: {err['msg']}" if where else err["msg"]) from None
    params = space.params
    for name in parsed.mutations or []:
        if name not in params:
            raise HpoError(f"mutations: {name!r} is not in the search space")
        if params[name].when:
            raise HpoError(f"mutations: {name!r} is conditional; PBT mutates unconditional parameters only")
    if parsed.mutations is None:
        parsed.mutations = [n for n, p in params.items() if not p.when and not isinstance(p, CategoricalParam)]
        if not parsed.mutations:
            raise HpoError("the search space has no numeric parameter to mutate; name the mutations")
    return parsed
