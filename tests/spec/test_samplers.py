"""Every sampler through the real driver and local worker processes, on analytic objectives (the
driver on Ray workers is tested in tests/run)."""

from __future__ import annotations

import itertools

import pytest
from optuna.trial import FrozenTrial, TrialState

from hpo.spec.samplers import SAMPLERS, grid_of

from studies import HARTMANN6, assert_exact_budget, drive, make_spec

DISCRETE = {
    "a": {"type": "categorical", "choices": ["p", "q"]},
    "b": {"type": "int", "low": 1, "high": 5, "step": 2},
    "c": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
}


def test_every_registered_sampler_is_tested():
    assert set(SAMPLERS.names()) == {
        "tpe", "random", "grid", "qmc", "cmaes", "gp", "nsgaii", "nsgaiii", "bruteforce"
    }


@pytest.mark.parametrize(
    "sampler",
    [
        "random",
        {"name": "tpe", "options": {"n_startup_trials": 4, "multivariate": True, "group": True}},
        {"name": "qmc", "options": {"qmc_type": "sobol"}},
        {"name": "cmaes", "options": {"n_startup_trials": 2}},
        {"name": "gp", "options": {"n_startup_trials": 4}},
        {"name": "nsgaii", "options": {"population_size": 4}},
        {"name": "nsgaiii", "options": {"population_size": 4}},
    ],
    ids=lambda s: s if isinstance(s, str) else s["name"],
)
def test_continuous_samplers_on_hartmann6(store, sampler):
    spec = make_spec(
        objective="builtin:hartmann6", search_space=HARTMANN6, sampler=sampler, n_trials=10,
        objective_args={"steps": 3},
    )
    study, result = drive(store, spec, local=True)
    assert_exact_budget(study, 10)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(trials) == 10 and result.counts.complete == 10
    first_seen: dict[tuple, FrozenTrial] = {}
    for trial in trials:  # no repeats, but for what a genetic sampler does on purpose
        earlier = first_seen.setdefault(tuple(sorted(trial.params.items())), trial)
        if earlier is not trial:  # an NSGA child may copy a parent of an earlier generation
            assert _generation(trial) > _generation(earlier), (earlier.number, trial.number)
    for trial in trials:
        assert all(0.0 <= v <= 1.0 for v in trial.params.values()) and len(trial.params) == 6
        assert -3.33 < trial.value < 0.0  # Hartmann6's range on the unit cube
    assert result.best.value == min(t.value for t in trials)


def _generation(trial: FrozenTrial) -> int:
    """The NSGA sampler's generation of a trial (a trial of another sampler has none: fails)."""
    (generation,) = [v for k, v in trial.system_attrs.items() if k.endswith(":generation")]
    return int(generation)


def test_grid_visits_every_point_once(store):
    spec = make_spec(objective="objectives:curve", search_space={**DISCRETE, "x": {"type": "float", "low": 0, "high": 1, "step": 0.5}},
                     sampler="grid", n_trials=2 * 3 * 3 * 3, objective_args={"steps": 1})
    assert grid_of(spec.search_space) == {"a": ["p", "q"], "b": [1, 3, 5], "c": [0.0, 0.25, 0.5], "x": [0.0, 0.5, 1.0]}
    study, _ = drive(store, spec, local=True)
    assert_exact_budget(study, 54)
    seen = [(t.params["a"], t.params["b"], t.params["c"], t.params["x"]) for t in study.trials]
    assert sorted(seen) == sorted(itertools.product(["p", "q"], [1, 3, 5], [0.0, 0.25, 0.5], [0.0, 0.5, 1.0]))


def test_grid_needs_steps_for_floats():
    from hpo.errors import HpoError

    with pytest.raises(HpoError, match="sampler 'grid' needs a step for float parameter 'x'"):
        make_spec(sampler="grid")


def test_bruteforce_enumerates_a_discrete_space(store):
    space = {"a": DISCRETE["a"], "b": DISCRETE["b"], "x": {"type": "float", "low": 0, "high": 1, "step": 0.5}}
    spec = make_spec(search_space=space, sampler="bruteforce", n_trials=18, objective_args={"steps": 1})
    study, _ = drive(store, spec, local=True)
    assert_exact_budget(study, 18)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 18


@pytest.mark.parametrize("sampler", ["random", "tpe", "qmc"])
def test_a_seed_makes_a_run_repeatable(sqlite_url, tmp_path, sampler):
    from hpo.store.database import Store

    runs = []
    for i in range(2):
        store = Store(f"sqlite:///{tmp_path}/seed{i}.db")
        spec = make_spec(sampler=sampler, seed=42, n_trials=6, max_concurrent_trials=1, objective_args={"steps": 1})
        study, _ = drive(store, spec, local=True)
        runs.append([t.params for t in study.trials])
        store.dispose()
    assert runs[0] == runs[1]
    other = Store(f"sqlite:///{tmp_path}/other.db")
    study, _ = drive(other, make_spec(sampler=sampler, seed=43, n_trials=6, max_concurrent_trials=1, objective_args={"steps": 1}),
                     local=True)
    other.dispose()
    assert [t.params for t in study.trials] != runs[0]
