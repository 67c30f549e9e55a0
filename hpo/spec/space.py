"""Declarative search spaces: float, int, categorical and conditional parameters.

A space is an ordered mapping ``name -> parameter``; a parameter with ``when`` is only sampled
when an earlier parameter has one of the given values (``momentum`` only when ``optimizer`` is
``sgd``). Sampling walks the parameters in order and calls Optuna's ``suggest_*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from hpo.errors import HpoError

Scalar = None | bool | int | float | str


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    # Sample this parameter only when every named earlier parameter has one of the values.
    when: dict[str, Scalar | list[Scalar]] | None = None

    def condition_holds(self, sampled: dict[str, Any]) -> bool:
        for name, wanted in (self.when or {}).items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if name not in sampled or not any(_same(sampled[name], a) for a in allowed):
                return False
        return True


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (YAML choices may mix them)."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int) and not isinstance(value, bool)
            and self.low <= value <= self.high and (value - self.low) % self.step == 0
        )

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, choices: list[Scalar]) -> list[Scalar]:
        if not choices:
            raise ValueError("choices must not be empty")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError("choices must be distinct")
        return choices

    def suggest(self, trial: optuna.Trial, name: str) -> Scalar:
        return trial.suggest_categorical(name, self.choices)

    def contains(self, value: Any) -> bool:
        return any(_same(value, choice) for choice in self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not be greater than high ({high})")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {low})")
    if log and step is not None:
        raise ValueError("log and step cannot be combined")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchSpace(RootModel[dict[str, Param]]):
    """An ordered mapping of parameter names to parameters."""

    @model_validator(mode="after")
    def _check_conditions(self) -> SearchSpace:
        if not self.root:
            raise ValueError("search space has no parameters")
        seen: dict[str, Param] = {}
        for name, param in self.root.items():
            for ref, wanted in (param.when or {}).items():
                if ref not in seen:
                    raise ValueError(
                        f"parameter {name!r}: 'when' refers to {ref!r}, "
                        "which must be defined earlier in the space"
                    )
                choices = getattr(seen[ref], "choices", None)
                for value in wanted if isinstance(wanted, list) else [wanted]:
                    if choices is not None and not any(_same(value, c) for c in choices):
                        raise ValueError(
                            f"parameter {name!r}: 'when' value {value!r} is not a choice of {ref!r}"
                        )
            seen[name] = param
        return self

    @property
    def params(self) -> dict[str, Param]:
        return self.root

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter on ``trial``; returns the sampled values in order."""
        sampled: dict[str, Any] = {}
        for name, param in self.root.items():
            if param.condition_holds(sampled):
                sampled[name] = param.suggest(trial, name)
        return sampled


def builtin_spaces_dir() -> Path:
    import search_spaces

    return Path(search_spaces.__file__).parent


def builtin_space_names() -> list[str]:
    return sorted(p.stem for p in builtin_spaces_dir().glob("*.yaml"))


def resolve_space_source(ref: str | dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], str]:
    """Turn an inline mapping, a builtin name or a path into raw data plus a label for errors."""
    if isinstance(ref, dict):
        return ref, "inline search_space"
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        label = str(path)
    else:
        path = builtin_spaces_dir() / f"{ref}.yaml"
        label = f"search space {ref!r}"
        if not path.exists():
            raise HpoError(
                f"unknown search space {ref!r}; builtin spaces: {', '.join(builtin_space_names())}"
                " (or give a path to a .yaml file)"
            )
    if not path.exists():
        raise HpoError(f"search space file not found: {path}")
    data = _load_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("params"), dict) and set(data) <= {"params", "description"}:
        data = data["params"]  # a file may wrap its parameters: {description: ..., params: {...}}
    if not isinstance(data, dict):
        raise HpoError(f"{label}: expected a mapping of parameter names to parameters")
    return data, label


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise HpoError(f"{path}: not a file")
    try:
        return yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise HpoError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise HpoError(f"{path}: malformed YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
