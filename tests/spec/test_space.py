"""Search spaces sampled on real Optuna trials: ranges, log/step, choices and conditions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.spec.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    builtin_space_names,
    builtin_spaces_dir,
    resolve_space_source,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

N = 50


def space(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace.model_validate(params)


def draw(sp: SearchSpace, n: int = N, seed: int = 0) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    """Sample ``sp`` on ``n`` trials of a fresh in-memory study with a seeded random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        values = sp.sample(trial)
        out.append((trial, values))
        study.tell(trial, 0.0)
    return out


def test_float_range_is_respected():
    sp = space({"x": {"type": "float", "low": -2.5, "high": 4.0}})
    xs = [values["x"] for _, values in draw(sp)]
    assert all(isinstance(x, float) for x in xs)
    assert all(-2.5 <= x <= 4.0 for x in xs)
    assert len(set(xs)) > N // 2  # actually random, not a constant
    assert min(xs) < 0.0 < max(xs)  # both halves of the range get visited


def test_int_range_is_respected():
    sp = space({"n": {"type": "int", "low": 3, "high": 9}})
    ns = [values["n"] for _, values in draw(sp)]
    assert all(type(n) is int for n in ns)
    assert all(3 <= n <= 9 for n in ns)
    assert len(set(ns)) >= 5


def test_float_log_scale_is_honoured():
    sp = space({"lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True}})
    results = draw(sp)
    lrs = [values["lr"] for _, values in results]
    assert all(1e-5 <= lr <= 1.0 for lr in lrs)
    # Log-uniform puts ~60% below 1e-2; uniform would put ~1% there.
    assert sum(lr < 1e-2 for lr in lrs) >= N // 4
    trial, _ = results[0]
    assert trial.distributions["lr"].log is True


def test_int_log_scale_is_honoured():
    sp = space({"units": {"type": "int", "low": 1, "high": 1024, "log": True}})
    results = draw(sp)
    units = [values["units"] for _, values in results]
    assert all(1 <= u <= 1024 for u in units)
    # Log-uniform puts about a third below 10; uniform would put ~1% there.
    assert sum(u < 10 for u in units) >= N // 8
    assert results[0][0].distributions["units"].log is True


def test_float_step_is_honoured():
    sp = space({"d": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1}})
    ds = [values["d"] for _, values in draw(sp)]
    grid = [0.1, 0.2, 0.3, 0.4, 0.5]
    for d in ds:
        assert 0.1 - 1e-9 <= d <= 0.5 + 1e-9
        assert any(math.isclose(d, g, abs_tol=1e-9) for g in grid), d
    assert len({round(d, 6) for d in ds}) >= 4


def test_int_step_values_are_multiples_from_low():
    sp = space({"k": {"type": "int", "low": 3, "high": 23, "step": 4}})
    ks = [values["k"] for _, values in draw(sp)]
    assert all(3 <= k <= 23 for k in ks)
    assert all((k - 3) % 4 == 0 for k in ks), ks
    assert len(set(ks)) >= 4  # 3, 7, 11, 15, 19, 23


def test_categorical_values_come_from_choices():
    choices = ["relu", 2, 0.5, True, None]
    sp = space({"c": {"type": "categorical", "choices": choices}})
    cs = [values["c"] for _, values in draw(sp)]
    for c in cs:
        assert any(c is x or (type(c) is type(x) and c == x) for x in choices), c
    assert len({repr(c) for c in cs}) == len(choices)  # every choice shows up in 50 draws


def test_conditional_parameter_present_exactly_when_condition_holds():
    sp = space(
        {
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        }
    )
    seen = set()
    for trial, values in draw(sp, seed=1):
        seen.add(values["optimizer"])
        assert "lr" in values  # unconditional parameters are always sampled
        if values["optimizer"] == "sgd":
            assert "momentum" in values
            assert 0.0 <= values["momentum"] <= 0.99
            assert "momentum" in trial.params
        else:
            assert "momentum" not in values
            assert "momentum" not in trial.params  # not even suggested to Optuna
            assert "momentum" not in trial.distributions
    assert seen == {"adamw", "sgd"}  # both branches were exercised


def test_when_with_a_list_of_allowed_values():
    sp = space(
        {
            "kind": {"type": "categorical", "choices": ["a", "b", "c", "d"]},
            "extra": {"type": "int", "low": 0, "high": 5, "when": {"kind": ["a", "c"]}},
        }
    )
    seen = set()
    for _, values in draw(sp, seed=2):
        seen.add(values["kind"])
        assert ("extra" in values) == (values["kind"] in ("a", "c")), values
    assert seen == {"a", "b", "c", "d"}


def test_when_with_several_conditions_needs_all_of_them():
    sp = space(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "nesterov": {"type": "categorical", "choices": [True, False]},
            "damp": {"type": "float", "low": 0.0, "high": 1.0, "when": {"opt": "sgd", "nesterov": False}},
        }
    )
    combos = set()
    for _, values in draw(sp, n=60, seed=3):
        combos.add((values["opt"], values["nesterov"]))
        assert ("damp" in values) == (values["opt"] == "sgd" and values["nesterov"] is False), values
    assert len(combos) == 4


def test_condition_on_an_inactive_parameter_is_false():
    sp = space(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "sched": {"type": "categorical", "choices": ["step", "cos"], "when": {"opt": "sgd"}},
            "gamma": {"type": "float", "low": 0.1, "high": 0.9, "when": {"sched": "step"}},
        }
    )
    saw_gamma = False
    for _, values in draw(sp, seed=4):
        if values["opt"] == "adam":
            assert "sched" not in values and "gamma" not in values
        else:
            assert ("gamma" in values) == (values["sched"] == "step")
            saw_gamma = saw_gamma or "gamma" in values
    assert saw_gamma


def test_condition_on_a_numeric_value():
    sp = space(
        {
            "layers": {"type": "int", "low": 1, "high": 3},
            "skip": {"type": "categorical", "choices": ["yes", "no"], "when": {"layers": [2, 3]}},
        }
    )
    for _, values in draw(sp, seed=5):
        assert ("skip" in values) == (values["layers"] >= 2)


def test_parameter_order_is_kept():
    order = ["zeta", "alpha", "mid", "beta", "omega"]
    sp = space({name: {"type": "int", "low": 0, "high": 10} for name in order})
    assert list(sp.params) == order
    for trial, values in draw(sp, n=5):
        assert list(values) == order
        assert list(trial.params) == order


def test_conditional_order_is_kept():
    sp = space(
        {
            "opt": {"type": "categorical", "choices": ["sgd"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"opt": "sgd"}},
            "a_last": {"type": "int", "low": 0, "high": 1},
        }
    )
    _, values = draw(sp, n=1)[0]
    assert list(values) == ["opt", "momentum", "a_last"]


@pytest.mark.parametrize(
    "param",
    [
        {"type": "float", "low": -1.0, "high": 1.0},
        {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        {"type": "int", "low": 0, "high": 10},
        {"type": "int", "low": 2, "high": 512, "log": True},
        {"type": "int", "low": 1, "high": 21, "step": 5},
        {"type": "categorical", "choices": ["a", "b", "c"]},
        {"type": "categorical", "choices": [32, 64, 128]},
        {"type": "categorical", "choices": [None, True, 1.5, "x"]},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items() if k != "choices") + ("-choices" if "choices" in p else ""),
)
def test_distribution_matches_what_optuna_recorded(param):
    sp = space({"p": param})
    (trial, values), = draw(sp, n=1)
    expected = sp.params["p"].distribution()
    recorded = trial.distributions["p"]
    assert type(recorded) is type(expected)
    assert recorded == expected
    assert expected._contains(expected.to_internal_repr(values["p"]))


def test_distribution_types():
    sp = space(
        {
            "f": {"type": "float", "low": 0.0, "high": 1.0},
            "i": {"type": "int", "low": 0, "high": 1},
            "c": {"type": "categorical", "choices": [1, 2]},
        }
    )
    params = sp.params
    assert isinstance(params["f"], FloatParam)
    assert isinstance(params["i"], IntParam)
    assert isinstance(params["c"], CategoricalParam)
    assert isinstance(params["f"].distribution(), optuna.distributions.FloatDistribution)
    assert isinstance(params["i"].distribution(), optuna.distributions.IntDistribution)
    assert isinstance(params["c"].distribution(), optuna.distributions.CategoricalDistribution)


def test_distributions_let_a_trial_be_replayed():
    """Distributions rebuilt from the space accept values sampled earlier (e.g. for enqueue/add_trial)."""
    sp = space(
        {
            "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
            "units": {"type": "int", "low": 8, "high": 128, "log": True},
        }
    )
    trial, values = draw(sp, n=1)[0]
    dists = {name: sp.params[name].distribution() for name in values}
    frozen = optuna.trial.create_trial(params=values, distributions=dists, value=1.0)
    study = optuna.create_study()
    study.add_trial(frozen)
    assert study.trials[0].params == values


def test_fixed_trial_samples_given_values():
    sp = space(
        {
            "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
        }
    )
    assert sp.sample(optuna.trial.FixedTrial({"opt": "sgd", "momentum": 0.5})) == {"opt": "sgd", "momentum": 0.5}
    assert sp.sample(optuna.trial.FixedTrial({"opt": "adamw"})) == {"opt": "adamw"}


def test_there_are_builtin_spaces():
    names = builtin_space_names()
    assert "mlp" in names
    assert names == sorted(names)
    assert len(names) == len(list(builtin_spaces_dir().glob("*.yaml")))


@pytest.mark.parametrize("name", builtin_space_names())
def test_every_builtin_space_validates_and_samples(name, tmp_path):
    data, label = resolve_space_source(name, tmp_path)
    assert name in label
    sp = SearchSpace.model_validate(data)
    assert sp.params
    for param in sp.params.values():
        assert param.description, "builtin parameters should say what they do"
    for trial, values in draw(sp, n=10, seed=6):
        assert set(values) <= set(sp.params)
        for pname, value in values.items():
            assert trial.distributions[pname] == sp.params[pname].distribution()
            assert sp.params[pname].condition_holds(values)


def test_mlp_space_matches_its_file():
    data, _ = resolve_space_source("mlp", builtin_spaces_dir())
    sp = SearchSpace.model_validate(data)
    assert list(sp.params) == [
        "lr", "optimizer", "momentum", "weight_decay", "hidden", "layers", "dropout", "batch_size",
        "batch_norm", "label_smoothing", "schedule",
    ]
    assert sp.params["momentum"].when == {"optimizer": "sgd"}
    assert sp.params["lr"].log and sp.params["hidden"].log


def test_when_value_must_be_a_choice_of_the_referenced_parameter():
    from hpo.errors import HpoError
    from hpo.spec.study import parse_spec

    with pytest.raises(HpoError, match="'when' value 'sgdd' is not a choice of 'optimizer'"):
        parse_spec(
            {
                "name": "typo",
                "objective": "builtin:mlp",
                "n_trials": 1,
                "search_space": {
                    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
                    "momentum": {"type": "float", "low": 0, "high": 1, "when": {"optimizer": "sgdd"}},
                },
            },
            base_dir=Path("."),
        )


def test_true_and_one_are_different_conditions():
    space = SearchSpace.model_validate(
        {
            "flag": {"type": "categorical", "choices": [1, True]},
            "extra": {"type": "int", "low": 0, "high": 3, "when": {"flag": True}},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        params = space.sample(study.ask())
        seen.add((params["flag"] is True, "extra" in params))
    assert seen == {(True, True), (False, False)}
