"""Study specs: loading, resolving and validating, with one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpo.errors import HpoError
from hpo.spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from hpo.spec.study import StudySpec, load_spec, parse_spec

from conftest import REPO

EXAMPLE = REPO / "examples" / "digits-mlp.yaml"

MLP_PARAMS = [
    "lr", "optimizer", "momentum", "weight_decay", "hidden", "layers", "dropout", "batch_size",
    "batch_norm", "label_smoothing", "schedule",
]


def minimal(**overrides: Any) -> dict[str, Any]:
    """A valid spec mapping; ``overrides`` replace fields, a value of ``...`` removes one."""
    data: dict[str, Any] = {
        "name": "unit-study",
        "objective": "objectives:curve",
        "n_trials": 5,
        "search_space": {"x": {"type": "float", "low": -1.0, "high": 1.0}},
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def write_spec(directory: Path, data: dict[str, Any], filename: str = "spec.yaml") -> Path:
    path = directory / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_error(data: dict[str, Any], base_dir: Path | None = None) -> str:
    """Parse ``data``, expecting an HpoError; return its message after checking it is one line."""
    with pytest.raises(HpoError) as info:
        parse_spec(data, base_dir=base_dir or REPO, source="spec")
    return one_line(info.value)


def one_line(exc: HpoError) -> str:
    message = str(exc)
    assert message, "error message is empty"
    assert "\n" not in message, f"error message spans lines: {message!r}"
    return message


# --- valid specs -------------------------------------------------------------------------------


def test_example_spec_loads_with_space_sampler_and_pruner():
    spec = load_spec(EXAMPLE)

    assert spec.name == "digits-mlp"
    assert spec.objective == "builtin:mlp"
    assert spec.objective_args == {"epochs": 12}
    assert spec.direction == "maximize"
    assert spec.n_trials == 30
    assert spec.max_concurrent_trials == 2
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0.0
    assert spec.seed == 7
    assert spec.base_dir == EXAMPLE.parent.resolve()

    # `search_space: mlp` resolved to the builtin file's parameters, in file order.
    assert isinstance(spec.search_space, SearchSpace)
    assert list(spec.search_space.params) == MLP_PARAMS
    params = spec.search_space.params
    assert isinstance(params["lr"], FloatParam) and params["lr"].log is True
    assert isinstance(params["hidden"], IntParam) and (params["hidden"].low, params["hidden"].high) == (16, 256)
    assert isinstance(params["batch_size"], CategoricalParam) and params["batch_size"].choices == [32, 64, 128]
    assert params["momentum"].when == {"optimizer": "sgd"}

    sampler = spec.build_sampler()
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 8
    assert sampler._multivariate is True

    pruner = spec.build_pruner()
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 2
    assert pruner._reduction_factor == 3


def test_example_spec_json_round_trip_is_equal():
    spec = load_spec(EXAMPLE)
    again = StudySpec.from_json(spec.to_json())
    assert again == spec
    assert list(again.search_space.params) == MLP_PARAMS
    assert again.base_dir == spec.base_dir


def test_json_round_trip_of_inline_spec_is_equal(tmp_path):
    data = minimal(
        description="inline space",
        objective_args={"steps": 3, "note": None},
        search_space={
            "alpha": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "beta": {"type": "int", "low": 0, "high": 10, "step": 2},
            "gamma": {"type": "categorical", "choices": ["a", "b", None], "when": {"beta": [0, 2]}},
        },
        sampler={"name": "random"},
        pruner={"name": "median", "options": {"n_startup_trials": 2}},
        timeout=60,
        seed=3,
        resources={"cpu": 2, "gpu": 0.5},
    )
    spec = parse_spec(data, base_dir=tmp_path)
    text = spec.to_json()
    assert "\n" not in text
    again = StudySpec.from_json(text)
    assert again == spec
    assert again.base_dir == tmp_path
    assert again.objective_args == {"steps": 3, "note": None}
    assert again.search_space.params["gamma"].choices == ["a", "b", None]
    assert isinstance(again.build_pruner(), optuna.pruners.MedianPruner)


def test_json_round_trip_keeps_parameter_order():
    order = ["zeta", "alpha", "mid"]
    space = {name: {"type": "int", "low": 0, "high": i + 1} for i, name in enumerate(order)}
    spec = parse_spec(minimal(search_space=space), base_dir=REPO)
    assert list(spec.search_space.params) == order
    assert list(StudySpec.from_json(spec.to_json()).search_space.params) == order


def test_shorthand_sampler_and_pruner_names():
    spec = parse_spec(minimal(sampler="random", pruner="median", seed=1), base_dir=REPO)
    assert spec.sampler.name == "random" and spec.sampler.options == {}
    assert spec.pruner.name == "median" and spec.pruner.options == {}
    assert isinstance(spec.build_sampler(), optuna.samplers.RandomSampler)
    assert isinstance(spec.build_pruner(), optuna.pruners.MedianPruner)


def test_defaults_are_tpe_sampler_and_no_pruner():
    spec = parse_spec(minimal(), base_dir=REPO)
    assert spec.study_directions == ["minimize"]
    assert isinstance(spec.build_sampler(), optuna.samplers.TPESampler)
    assert isinstance(spec.build_pruner(), optuna.pruners.NopPruner)


def test_timeout_alone_is_a_budget():
    spec = parse_spec(minimal(n_trials=..., timeout=30), base_dir=REPO)
    assert spec.n_trials is None
    assert spec.timeout == 30.0


def test_name_override_replaces_the_file_name():
    spec = load_spec(EXAMPLE, name="digits-mlp-rerun.2")
    assert spec.name == "digits-mlp-rerun.2"
    assert load_spec(EXAMPLE).name == "digits-mlp"


def test_name_override_is_validated_too():
    with pytest.raises(HpoError) as info:
        load_spec(EXAMPLE, name="bad name")
    message = one_line(info.value)
    assert "field 'name'" in message


def test_name_override_supplies_a_missing_name(tmp_path):
    path = write_spec(tmp_path, minimal(name=...))
    assert load_spec(path, name="given").name == "given"


def test_inline_search_space(tmp_path):
    path = write_spec(
        tmp_path,
        minimal(
            search_space={
                "units": {"type": "int", "low": 8, "high": 64, "log": True},
                "act": {"type": "categorical", "choices": ["relu", "tanh"]},
            }
        ),
    )
    spec = load_spec(path)
    assert list(spec.search_space.params) == ["units", "act"]
    assert spec.search_space.params["units"].log is True
    assert spec.base_dir == tmp_path.resolve()


def test_builtin_search_space_by_name(tmp_path):
    path = write_spec(tmp_path, minimal(search_space="mlp"))
    spec = load_spec(path)
    assert list(spec.search_space.params) == MLP_PARAMS


def test_search_space_path_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "mine.yaml").write_text(
        "description: a file with params under a key\n"
        "params:\n"
        "  depth: {type: int, low: 1, high: 4}\n"
        "  rate: {type: float, low: 0.01, high: 0.1}\n"
    )
    (tmp_path / "flat.yml").write_text("width: {type: categorical, choices: [1, 2]}\n")
    specs = tmp_path / "specs"
    specs.mkdir()
    nested = write_spec(specs, minimal(search_space="../spaces/mine.yaml"), "nested.yaml")
    flat = write_spec(tmp_path, minimal(search_space="flat.yml"), "flat-spec.yaml")

    # The working directory must not matter: resolve against the spec file's directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert list(load_spec(nested).search_space.params) == ["depth", "rate"]
    assert list(load_spec(flat).search_space.params) == ["width"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_patient_pruner_wrapping_a_valid_pruner():
    spec = parse_spec(
        minimal(
            pruner={
                "name": "patient",
                "options": {
                    "wrapped": {"name": "median", "options": {"n_startup_trials": 1}},
                    "patience": 2,
                },
            }
        ),
        base_dir=REPO,
    )
    pruner = spec.build_pruner()
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.MedianPruner)
    assert pruner._patience == 2

    short = parse_spec(
        minimal(pruner={"name": "patient", "options": {"wrapped": "hyperband", "patience": 1}}),
        base_dir=REPO,
    )
    assert isinstance(short.build_pruner()._wrapped_pruner, optuna.pruners.HyperbandPruner)


# --- bad input: one line, naming the problem ------------------------------------------------


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nobjective: objectives:curve\n  n_trials: 3\n")
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "malformed YAML" in message
    assert "line 3" in message
    assert str(path) in message


def test_malformed_search_space_file_is_reported_under_search_space(tmp_path):
    (tmp_path / "space.yaml").write_text("x: {type: float, low: 0\n  high: [1\n")
    path = write_spec(tmp_path, minimal(search_space="space.yaml"))
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "field 'search_space'" in message
    assert "malformed YAML" in message


@pytest.mark.parametrize("text", ["- name: x\n- objective: y\n", "just a string\n", "42\n", ""])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "mapping" in message
    assert str(path) in message


def test_missing_spec_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "not found" in message
    assert str(path) in message


def test_spec_path_that_is_a_directory(tmp_path):
    with pytest.raises(HpoError) as info:
        load_spec(tmp_path)
    assert "not found" in one_line(info.value)


def test_unknown_top_level_key():
    message = spec_error(minimal(n_trails=30))
    assert "field 'n_trails': unknown key" in message


def test_unknown_nested_key_in_resources():
    message = spec_error(minimal(resources={"cpus": 2}))
    assert "field 'resources.cpus': unknown key" in message


def test_several_problems_are_summarised_on_one_line():
    message = spec_error(minimal(n_trails=30, colour="red", n_trials=0))
    assert "more problem" in message


def test_unknown_sampler_name():
    message = spec_error(minimal(sampler="annealing"))
    assert "field 'sampler'" in message
    assert "'annealing'" in message
    assert "tpe" in message  # the valid choices are listed


def test_unknown_pruner_name():
    message = spec_error(minimal(pruner={"name": "mediam"}))
    assert "field 'pruner'" in message
    assert "'mediam'" in message
    assert "median" in message


def test_unknown_sampler_option():
    message = spec_error(minimal(sampler={"name": "tpe", "options": {"n_startup": 4}}))
    assert "field 'sampler'" in message
    assert "'n_startup'" in message
    assert "n_startup_trials" in message  # the allowed options are listed


def test_seed_is_not_a_user_sampler_option():
    message = spec_error(minimal(sampler={"name": "random", "options": {"seed": 4}}))
    assert "field 'sampler'" in message
    assert "'seed'" in message


def test_unknown_pruner_option():
    message = spec_error(minimal(pruner={"name": "median", "options": {"warmup": 2}}))
    assert "field 'pruner'" in message
    assert "'warmup'" in message


def test_bad_pruner_option_value_type():
    message = spec_error(minimal(pruner={"name": "median", "options": {"n_startup_trials": "five"}}))
    assert "field 'pruner'" in message
    assert "median" in message


def test_sampler_option_of_the_wrong_type_is_refused_when_the_sampler_runs():
    # TPESampler accepts any value when built; it fails only on its first ask (in the driver).
    message = spec_error(minimal(sampler={"name": "tpe", "options": {"n_startup_trials": "ten"}}))
    assert message.startswith("spec: field 'sampler': TypeError:")


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "n_trials: 9\n")
    with pytest.raises(HpoError, match=r"malformed YAML: key 'n_trials' is given twice at line \d+"):
        load_spec(path)


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(yaml.safe_dump(minimal(description="caf\u00e9"), allow_unicode=True).encode("latin-1"))
    with pytest.raises(HpoError, match=r"spec.yaml: not UTF-8 text \(byte \d+\)"):
        load_spec(path)


def test_a_folder_given_as_search_space_is_one_line(tmp_path):
    (tmp_path / "spaces").mkdir()
    with pytest.raises(HpoError, match=r"field 'search_space': .*spaces: not a file"):
        parse_spec(minimal(search_space="spaces/"), base_dir=tmp_path)


@pytest.mark.parametrize("value", [5.0, "adamw2"])
def test_enqueued_values_outside_the_space_are_refused(value):
    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "opt": {"type": "categorical", "choices": ["adamw", "sgd"]}}
    name = "x" if isinstance(value, float) else "opt"
    message = spec_error(minimal(search_space=space, enqueue=[{name: value}]))
    assert f"enqueue[0]: {name}={value!r} is outside its range in the search space" in message


def test_bad_pruner_option_value():
    message = spec_error(minimal(pruner={"name": "percentile", "options": {"percentile": 150.0}}))
    assert "field 'pruner'" in message
    assert "percentile" in message


def test_options_must_be_a_mapping():
    message = spec_error(minimal(sampler={"name": "tpe", "options": ["multivariate"]}))
    assert "field 'sampler.options'" in message


def test_patient_pruner_wrapping_an_unknown_pruner():
    message = spec_error(
        minimal(pruner={"name": "patient", "options": {"wrapped": {"name": "sometimes"}, "patience": 2}})
    )
    assert "field 'pruner'" in message
    assert "'sometimes'" in message


def test_patient_pruner_wrapped_with_unknown_key():
    message = spec_error(
        minimal(
            pruner={
                "name": "patient",
                "options": {"wrapped": {"name": "median", "opts": {}}, "patience": 2},
            }
        )
    )
    assert "field 'pruner'" in message
    assert "'opts'" in message


def test_patient_pruner_without_patience():
    message = spec_error(minimal(pruner={"name": "patient", "options": {"wrapped": "median"}}))
    assert "field 'pruner'" in message
    assert "patience" in message


@pytest.mark.parametrize("kind, low, high", [("float", 2.0, 1.0), ("int", 10, 3)])
def test_low_greater_than_high(kind, low, high):
    message = spec_error(minimal(search_space={"p": {"type": kind, "low": low, "high": high}}))
    assert "field 'search_space.p'" in message
    assert "low" in message and "high" in message


def test_low_equal_to_high_is_allowed():
    spec = parse_spec(minimal(search_space={"p": {"type": "int", "low": 4, "high": 4}}), base_dir=REPO)
    assert spec.search_space.params["p"].low == 4


@pytest.mark.parametrize(
    "kind, low, high", [("float", 0.0, 1.0), ("float", -1.0, 1.0), ("int", 0, 8), ("int", -2, 8)]
)
def test_log_scale_needs_positive_low(kind, low, high):
    message = spec_error(minimal(search_space={"p": {"type": kind, "low": low, "high": high, "log": True}}))
    assert "field 'search_space.p'" in message
    assert "log" in message and "low" in message


@pytest.mark.parametrize("kind, step", [("float", 0.1), ("int", 2)])
def test_log_cannot_be_combined_with_step(kind, step):
    message = spec_error(
        minimal(search_space={"p": {"type": kind, "low": 1, "high": 9, "log": True, "step": step}})
    )
    assert "field 'search_space.p'" in message
    assert "log and step" in message


@pytest.mark.parametrize("kind", ["float", "int"])
def test_step_must_be_positive(kind):
    message = spec_error(minimal(search_space={"p": {"type": kind, "low": 0, "high": 4, "step": 0}}))
    assert "field 'search_space.p.step'" in message


def test_empty_categorical_choices():
    message = spec_error(minimal(search_space={"c": {"type": "categorical", "choices": []}}))
    assert "field 'search_space.c.choices'" in message
    assert "empty" in message


def test_duplicate_categorical_choices():
    message = spec_error(minimal(search_space={"c": {"type": "categorical", "choices": ["a", "a"]}}))
    assert "field 'search_space.c.choices'" in message
    assert "distinct" in message


def test_parameter_without_type():
    message = spec_error(minimal(search_space={"p": {"low": 0.0, "high": 1.0}}))
    assert "field 'search_space.p'" in message
    assert "'type'" in message


def test_unknown_parameter_type():
    message = spec_error(minimal(search_space={"p": {"type": "loguniform", "low": 0.1, "high": 1.0}}))
    assert "field 'search_space.p'" in message
    assert "'type' must be one of float, int, categorical" in message


def test_unknown_key_in_a_parameter():
    message = spec_error(minimal(search_space={"p": {"type": "float", "low": 0, "high": 1, "lg": True}}))
    assert "field 'search_space.p.lg': unknown key" in message


def test_parameter_missing_a_bound():
    message = spec_error(minimal(search_space={"p": {"type": "float", "low": 0.0}}))
    assert "field 'search_space.p.high'" in message


def test_empty_search_space():
    message = spec_error(minimal(search_space={}))
    assert "field 'search_space'" in message
    assert "no parameters" in message


def test_missing_search_space():
    message = spec_error(minimal(search_space=...))
    assert "field 'search_space'" in message


def test_search_space_of_the_wrong_type():
    message = spec_error(minimal(search_space=["x"]))
    assert "field 'search_space'" in message


def test_neither_n_trials_nor_timeout():
    message = spec_error(minimal(n_trials=...))
    assert "n_trials" in message and "timeout" in message


@pytest.mark.parametrize("value", [0, -3])
def test_n_trials_must_be_positive(value):
    message = spec_error(minimal(n_trials=value))
    assert "field 'n_trials'" in message
    assert "greater than 0" in message


def test_timeout_must_be_positive():
    message = spec_error(minimal(timeout=0))
    assert "field 'timeout'" in message


@pytest.mark.parametrize("value", [0, -1])
def test_resources_cpu_must_be_positive(value):
    message = spec_error(minimal(resources={"cpu": value}))
    assert "field 'resources.cpu'" in message
    assert "greater than 0" in message


def test_resources_gpu_must_not_be_negative():
    message = spec_error(minimal(resources={"gpu": -0.5}))
    assert "field 'resources.gpu'" in message


def test_bad_direction():
    message = spec_error(minimal(direction="up"))
    assert "field 'direction'" in message


@pytest.mark.parametrize("name", ["my study", "team/study", "", "-leading-dash", "x" * 201, "tab\tname", "trailing\n"])
def test_bad_study_name(name):
    message = spec_error(minimal(name=name))
    assert "field 'name'" in message


@pytest.mark.parametrize("name", ["a", "Study_1", "digits-mlp.v2", "x" * 200])
def test_good_study_names(name):
    assert parse_spec(minimal(name=name), base_dir=REPO).name == name


def test_missing_name():
    message = spec_error(minimal(name=...))
    assert "field 'name'" in message


@pytest.mark.parametrize("objective", ["objectives.curve", "objectives:", ":curve", "builtin:", ""])
def test_objective_must_be_module_colon_function(objective):
    message = spec_error(minimal(objective=objective))
    assert "field 'objective'" in message


@pytest.mark.parametrize("objective", ["objectives:curve", "pkg.mod:fn", "builtin:mlp"])
def test_objective_forms_accepted(objective):
    assert parse_spec(minimal(objective=objective), base_dir=REPO).objective == objective


def test_unknown_builtin_search_space():
    message = spec_error(minimal(search_space="resnet"))
    assert "field 'search_space'" in message
    assert "'resnet'" in message
    assert "mlp" in message  # the builtin names are listed


def test_search_space_file_not_found(tmp_path):
    path = write_spec(tmp_path, minimal(search_space="spaces/missing.yaml"))
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "field 'search_space'" in message
    assert "not found" in message
    assert str(tmp_path / "spaces" / "missing.yaml") in message


def test_search_space_file_that_is_not_a_mapping(tmp_path):
    (tmp_path / "space.yaml").write_text("- x\n- y\n")
    path = write_spec(tmp_path, minimal(search_space="space.yaml"))
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "field 'search_space'" in message
    assert "mapping" in message


def test_error_in_a_search_space_file_names_the_parameter(tmp_path):
    (tmp_path / "space.yaml").write_text("params:\n  rate: {type: float, low: 1.0, high: 0.5}\n")
    path = write_spec(tmp_path, minimal(search_space="space.yaml"))
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert "field 'search_space.rate'" in message
    assert str(path) in message


def test_when_referring_to_a_later_parameter():
    message = spec_error(
        minimal(
            search_space={
                "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimizer": "sgd"}},
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            }
        )
    )
    assert "field 'search_space'" in message
    assert "'momentum'" in message and "'optimizer'" in message
    assert "earlier" in message


def test_when_referring_to_an_undefined_parameter():
    message = spec_error(
        minimal(
            search_space={
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"optimiser": "sgd"}},
            }
        )
    )
    assert "field 'search_space'" in message
    assert "'optimiser'" in message


def test_when_referring_to_itself():
    message = spec_error(
        minimal(search_space={"p": {"type": "int", "low": 0, "high": 3, "when": {"p": 1}}})
    )
    assert "'p'" in message and "earlier" in message


def test_errors_from_a_file_name_the_file(tmp_path):
    path = write_spec(tmp_path, minimal(n_trials=0))
    with pytest.raises(HpoError) as info:
        load_spec(path)
    message = one_line(info.value)
    assert message.startswith(f"{path}: ")
    assert "field 'n_trials'" in message


def test_hpo_error_flattens_multiline_messages():
    assert str(HpoError("first\n  second\tthird")) == "first second third"
