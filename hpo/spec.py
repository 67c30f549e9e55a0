"""The study spec: a YAML file validated with pydantic. Every error names the field at fault."""

from __future__ import annotations

import json
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

from hpo.errors import HpoError
from hpo.pruners import PRUNERS
from hpo.samplers import SAMPLERS
from hpo.space import SearchSpace, _load_yaml, resolve_space_source

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one trial gets from Ray: logical CPUs and (fractional) GPUs."""

    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


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


class StudySpec(_Strict):
    """A validated study: what to run, over which space, how to search and prune, on what budget."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    objective: str = Field(min_length=1)
    objective_args: dict[str, Any] = Field(default_factory=dict)
    search_space: SearchSpace
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    max_concurrent_trials: int | None = Field(default=None, gt=0)
    max_failed_trials: int | None = Field(default=None, ge=0)
    resources: Resources = Field(default_factory=Resources)
    seed: int | None = None

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
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials, timeout, or both")
        return self

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
        return SAMPLERS.build(self.sampler.name, self.sampler.options, seed=self.seed)

    def build_pruner(self):
        return PRUNERS.build(self.pruner.name, self.pruner.options)

    def to_json(self) -> str:
        """Self-contained form stored with the job (the search space inlined)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["_base_dir"] = str(self._base_dir)
        return json.dumps(data)  # keep key order: the search space is ordered

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        data = json.loads(text)
        base_dir = Path(data.pop("_base_dir", "."))
        return parse_spec(data, base_dir=base_dir, source="stored spec")


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


def parse_spec(data: dict[str, Any], *, base_dir: Path, source: str = "spec") -> StudySpec:
    """Validate a spec given as a mapping (search_space may be a name, a path or a mapping)."""
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
    try:
        spec.build_sampler()
    except HpoError as exc:
        raise HpoError(f"{source}: field 'sampler': {exc}") from None
    try:
        spec.build_pruner()
    except HpoError as exc:
        raise HpoError(f"{source}: field 'pruner': {exc}") from None
    return spec


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

