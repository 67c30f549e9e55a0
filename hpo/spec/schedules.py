"""Schedules: trials that run in segments. ``pbt``: Population Based Training (hyperparameters that
change while trials train); ``promotion``: a pruner option of successive halving and Hyperband
(trials pause at a rung and are promoted from their checkpoint later, instead of stopping).

    schedule: {name: pbt, options: {population: 8, interval: 2, quantile: 0.25,
                                    resample_probability: 0.25, mutations: [lr, weight_decay]}}

A population of ``population`` members trains in segments of ``interval`` steps (each segment an
Optuna trial). After every segment of the whole population, each member in the bottom
``quantile`` copies the checkpoint and values of a random member of the top ``quantile``
(exploit) and changes the values of ``mutations`` (explore: resampled from the search space with
``resample_probability``, else multiplied by one of ``perturb`` for numbers, or moved to a
neighbouring choice). The study ends when every member has trained to its end (its objective
returned): its budget is the population's training, not ``n_trials``. ``pb2`` takes the same
options and explores the numeric ``mutations`` with a GP bandit instead (``perturb`` and
``resample_probability`` then apply to choices only).
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
    # the steps of a full training (the objective's epochs): the last segment ends there and the
    # objective returns in it; without it, a member whose training ends on a segment boundary
    # runs one more, empty segment that only finds that out
    steps: int | None = Field(default=None, ge=1)

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


PROMOTING_PRUNERS = ("successive_halving", "hyperband")


class PromotionOptions(BaseModel):
    """Successive halving (one bracket) or Hyperband (several) with promotion, as in ASHA:

        pruner: {name: successive_halving, options: {promotion: true, min_resource: 1, reduction_factor: 3}}
        pruner: {name: hyperband, options: {promotion: true, min_resource: 1, max_resource: 27}}

    A trial pauses at each rung (step ``min_resource * reduction_factor ** (rate + k)``) unless
    it is in the top ``1 / reduction_factor`` of the trials that reached the rung; a paused trial
    is promoted (continued from its checkpoint) as soon as enough others reached the rung after it.
    Hyperband runs brackets with early-stopping rates 0 .. n-1 side by side. ``n_trials`` counts
    configurations; each continuation is one more Optuna trial of the same lineage.
    """

    model_config = ConfigDict(extra="forbid")

    pruner: str
    promotion: bool = True
    min_resource: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=4, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)
    max_resource: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _kind(self) -> PromotionOptions:
        if self.pruner == "hyperband":
            if self.max_resource is None:
                raise ValueError("hyperband with promotion needs max_resource (the steps of a full trial)")
            if self.max_resource < self.min_resource:
                raise ValueError("max_resource must be >= min_resource")
            if self.min_early_stopping_rate:
                raise ValueError("hyperband sets each bracket's min_early_stopping_rate itself")
        elif self.max_resource is not None:
            raise ValueError("max_resource is a hyperband option")
        return self

    @property
    def brackets(self) -> list[int]:
        """Each bracket's early-stopping rate."""
        if self.pruner != "hyperband" or self.max_resource is None:
            return [self.min_early_stopping_rate]
        n, top = 0, self.min_resource
        while top * self.reduction_factor <= self.max_resource:
            top *= self.reduction_factor
            n += 1
        return list(range(n + 1))


def promotion_options(pruner: str, options: dict[str, Any]) -> PromotionOptions | None:
    """The promotion options of a pruner spec (None: the pruner stops trials for good)."""
    if not options.get("promotion"):
        return None
    if pruner not in PROMOTING_PRUNERS:
        raise HpoError(f"option 'promotion' is for pruners {' and '.join(PROMOTING_PRUNERS)}, not {pruner!r}")
    try:
        return PromotionOptions.model_validate({**options, "pruner": pruner})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise HpoError(f"option {where!r}: {msg}" if where else msg) from None
