"""The study spec: a YAML file validated with pydantic. Every error names the field at fault."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hpo.defaults import KEEP_BEST_CHECKPOINTS
from hpo.errors import HpoError
from hpo.spec.pruners import PRUNERS
from hpo.spec.samplers import SAMPLERS
from hpo.spec.schedules import PbtOptions, PromotionOptions, pbt_options, promotion_options
from hpo.spec.space import SearchSpace, _load_yaml, resolve_space_source
from workers.buckets import check_url, is_object_url

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4,
          "tib": 1024**4}


class Resources(_Strict):
    """What one trial gets from Ray: logical CPUs, (fractional) GPUs and memory."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)
    memory: int | None = Field(default=None, gt=0, description="bytes; '2GiB', '512MB' accepted")
    # Run on CPUs when the cluster has no GPUs, instead of refusing the study.
    cpu_fallback: bool = False

    @field_validator("memory", mode="before")
    @classmethod
    def _parse_memory(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"expected bytes or a size like '2GiB' or '512MB', got {value!r}")
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class WarmStart(_Strict):
    """Seed a new study with the best trials of an earlier study in the same store."""

    study: str = Field(min_length=1)
    top_k: int = Field(default=5, gt=0)


class Checkpoints(_Strict):
    """Where trials' checkpoints go (the artifact store) and how many outlive their trials."""

    path: str | None = Field(
        default=None, min_length=1, description="a folder (relative to the spec's), or an s3:// or gs:// URL"
    )
    keep_best: int = Field(default=KEEP_BEST_CHECKPOINTS, ge=0)

    @field_validator("path")
    @classmethod
    def _object_store(cls, value: str | None) -> str | None:
        if value is not None and "://" in value:
            check_url(value)  # a URL: an object store whose client library is installed
        return value


class _Named(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `sampler: tpe` is short for `sampler: {name: tpe}`.
        return {"name": data} if isinstance(data, str) else data


class SamplerSpec(_Named):
    name: str = "tpe"


class PrunerSpec(_Named):
    name: str = "none"


class ScheduleSpec(_Named):
    name: Literal["none", "pbt", "pb2"] = "none"


class StudySpec(_Strict):
    """A validated study: what to run, over which space, how to search and prune, on what budget."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    objective: str = Field(min_length=1)
    objective_args: dict[str, Any] = Field(default_factory=dict)
    search_space: SearchSpace
    direction: Literal["minimize", "maximize"] | None = None
    directions: list[Literal["minimize", "maximize"]] | None = Field(default=None, min_length=1)
    # Names of the objective's values (required when it returns a dict of several metrics).
    metrics: list[str] | None = Field(default=None, min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    max_concurrent_trials: int | None = Field(default=None, gt=0)
    max_failed_trials: int | None = Field(default=None, ge=0)
    trial_timeout: float | None = Field(default=None, gt=0, description="seconds per trial")
    # A trial whose worker died (killed, out of memory, node lost) or whose owner died is run
    # again up to max_retries times, with the same parameters unless retry_same_params is off.
    max_retries: int = Field(default=2, ge=0)
    retry_same_params: bool = True
    resources: Resources = Field(default_factory=Resources)
    seed: int | None = None
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    warm_start: WarmStart | None = None
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)

    # Directory that relative objective modules are imported from (the spec file's directory).
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("objective")
    @classmethod
    def _objective_form(cls, value: str) -> str:
        if value.startswith("builtin:"):
            if not value.removeprefix("builtin:"):
                raise ValueError("builtin objective needs a name, e.g. builtin:mlp")
        elif ":" not in value or not all(value.split(":", 1)):
            raise ValueError("expected 'builtin:<name>' or 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if self.schedule.name in ("pbt", "pb2"):
            self._check_pbt()
        elif self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials, timeout, or both")
        if self.direction is not None and self.directions is not None:
            raise ValueError("give direction or directions, not both")
        if self.metrics is not None:
            if len(self.metrics) != len(self.study_directions):
                raise ValueError(
                    f"metrics names {len(self.metrics)} values but there are "
                    f"{len(self.study_directions)} directions"
                )
            if len(set(self.metrics)) != len(self.metrics) or "constraints" in self.metrics:
                raise ValueError("metrics must be distinct and not named 'constraints'")
        if self.is_multi_objective and self.pruner.name != "none":
            raise ValueError(
                f"pruner {self.pruner.name!r} cannot be used with several directions: Optuna does "
                "not prune multi-objective trials (use pruner: none)"
            )
        try:
            promotion_options(self.pruner.name, self.pruner.options)
        except HpoError as exc:
            raise ValueError(f"pruner: {exc}") from None
        space = self.search_space.params
        for i, params in enumerate(self.enqueue):
            for name, value in params.items():
                if name not in space:
                    raise ValueError(f"enqueue[{i}]: {name!r} is not in the search space")
                if not space[name].contains(value):
                    raise ValueError(f"enqueue[{i}]: {name}={value!r} is outside its range in the search space")
        return self

    def _check_pbt(self) -> None:
        kind = self.schedule.name
        if self.n_trials is not None:
            raise ValueError(f"schedule {kind}: the budget is the population's training (population x segments); "
                             "drop n_trials")
        if self.is_multi_objective:
            raise ValueError(f"schedule {kind} needs a single direction")
        if self.pruner.name != "none":
            raise ValueError(f"schedule {kind} replaces the pruner (its bottom quantile copies the top): use pruner: none")
        try:
            options = pbt_options(self.schedule.options, self.search_space)
        except HpoError as exc:
            raise ValueError(f"schedule: {exc}") from None
        if len(self.enqueue) > options.population:
            raise ValueError(f"schedule {kind}: enqueue has more configurations than the population ({options.population})")

    @property
    def pbt(self) -> PbtOptions | None:
        """PBT's options (``pb2`` too: the same schedule, explored by a GP bandit)."""
        return pbt_options(self.schedule.options, self.search_space) if self.schedule.name in ("pbt", "pb2") else None

    @property
    def promotion(self) -> PromotionOptions | None:
        """Successive halving / Hyperband that pause and promote trials (the driver decides)."""
        return promotion_options(self.pruner.name, self.pruner.options)

    @property
    def study_directions(self) -> list[str]:
        return self.directions or [self.direction or "minimize"]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.study_directions) > 1

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def failure_limit(self) -> int:
        """How many failed trials stop the study (default: as many as the trial budget, min 5)."""
        if self.max_failed_trials is not None:
            return self.max_failed_trials
        return max(self.n_trials or 0, 5)

    def build_sampler(self):
        return SAMPLERS.build(self.sampler.name, self.sampler.options, seed=self.seed, space=self.search_space)

    def build_pruner(self):
        if self.promotion is not None:  # the driver pauses and promotes; Optuna's pruner stays out
            return PRUNERS.build("none", {})
        options = {k: v for k, v in self.pruner.options.items() if k != "promotion"}  # promotion: false
        return PRUNERS.build(self.pruner.name, options)

    def to_json(self) -> str:
        """Self-contained form stored with the job (the search space inlined)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["_base_dir"] = str(self._base_dir)
        return json.dumps(data)  # keep key order: the search space is ordered

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        data = json.loads(text)
        base_dir = Path(data.pop("_base_dir", "."))
        return parse_spec(data, base_dir=base_dir, source="stored spec", trusted=True)


def load_spec(path: str | Path, **overrides: Any) -> StudySpec:
    """Read, resolve and validate a spec file. Raises HpoError with one line naming the problem.

    ``overrides`` replace top-level fields (e.g. ``name=``, ``n_trials=``); None values are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise HpoError(f"spec file not found: {path}")
    data = _load_yaml(path)
    if not isinstance(data, dict):
        raise HpoError(f"{path}: expected a mapping of spec fields at the top level")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_spec(data, base_dir=path.resolve().parent, source=str(path))


def parse_spec(data: dict[str, Any], *, base_dir: Path, source: str = "spec", trusted: bool = False) -> StudySpec:
    """Validate a spec given as a mapping (search_space may be a name, a path or a mapping), and
    build and try its sampler and pruner on two throwaway trials. ``trusted``: a stored spec,
    read back, whose sampler and pruner were tried when it was submitted: not built again (so
    `hpo list` over many studies builds none; the driver builds them when it runs one)."""
    data = dict(data)
    if "search_space" in data:
        ref = data["search_space"]
        if not isinstance(ref, (str, dict)):
            raise HpoError(f"{source}: field 'search_space': expected a name, a path or a mapping")
        try:
            data["search_space"], _ = resolve_space_source(ref, base_dir)
        except HpoError as exc:
            raise HpoError(f"{source}: field 'search_space': {exc}") from None
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise HpoError(f"{source}: {_describe(exc)}") from None
    spec._base_dir = base_dir
    if spec.checkpoints.path is not None and not is_object_url(spec.checkpoints.path):
        # stored absolute: the serve may run elsewhere
        spec.checkpoints.path = str((base_dir / Path(spec.checkpoints.path).expanduser()).resolve())
    if trusted:
        return spec
    try:
        spec.build_sampler()
    except HpoError as exc:
        raise HpoError(f"{source}: field 'sampler': {exc}") from None
    try:
        spec.build_pruner()
    except HpoError as exc:
        raise HpoError(f"{source}: field 'pruner': {exc}") from None
    _try_sampler_and_pruner(spec, source)
    return spec


def _try_sampler_and_pruner(spec: StudySpec, source: str) -> None:
    """Run the sampler and pruner on a throwaway in-memory study for a few trials of the space,
    so an option of the wrong type (``n_startup_trials: "ten"``) fails here, not in the driver."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "study created", "trial finished/failed" lines
    study = optuna.create_study(directions=spec.study_directions, sampler=spec.build_sampler(),
                                pruner=spec.build_pruner(), storage=optuna.storages.InMemoryStorage())
    n_values = len(spec.study_directions)
    stage = ["sampler"]

    def objective(trial: optuna.Trial):  # inside optimize, a sampler may stop the study (grid)
        stage[0] = "sampler"
        spec.search_space.sample(trial)
        if n_values == 1:
            stage[0] = "pruner"
            trial.report(float(trial.number), 0)
            trial.should_prune()
        stage[0] = "sampler"
        return [float(trial.number)] * n_values if n_values > 1 else float(trial.number)

    try:
        study.optimize(objective, n_trials=2)
    except HpoError:
        raise
    except Exception as exc:  # the options' types only show when the sampler or pruner runs
        raise HpoError(f"{source}: field '{stage[0]}': {type(exc).__name__}: {exc}") from None
    finally:
        optuna.logging.set_verbosity(verbosity)


_UNION_TAGS = {"float", "int", "categorical"}


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        if len(loc) >= 3 and loc[0] == "search_space" and loc[2] in _UNION_TAGS:
            del loc[2]  # drop pydantic's union tag: search_space.lr.float.low -> search_space.lr.low
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            msg = "'type' must be one of float, int, categorical"
        parts.append(f"field '{'.'.join(loc)}': {msg}" if loc else msg)
    if len(parts) > 1:
        return f"{parts[0]} (and {len(parts) - 1} more problem{'s' if len(parts) > 2 else ''})"
    return parts[0]

