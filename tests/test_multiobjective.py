"""Multi-objective studies and constraints, end to end through hpo.api.run."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo import api
from hpo.errors import HpoError

from studies import make_spec


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_nsgaii_returns_a_pareto_front(sqlite_url):
    spec = make_spec(
        name="mo", objective="objectives:two_objectives", search_space={"x": {"type": "float", "low": -2, "high": 4}},
        directions=["minimize", "minimize"], metrics=["f1", "f2"],
        sampler={"name": "nsgaii", "options": {"population_size": 6}}, n_trials=16,
    )
    summary = api.run(spec, storage=sqlite_url, backend="local")
    assert summary.state == "COMPLETED" and summary.complete == 16
    study = optuna.load_study(study_name="mo", storage=sqlite_url)
    assert study.metric_names == ["f1", "f2"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    front = summary.pareto_front
    assert front and {e["number"] for e in front} == {t.number for t in study.best_trials}
    for entry in front:
        assert not any(dominates(t.values, entry["values"]) for t in complete)
        assert entry["values"] == pytest.approx([entry["params"]["x"] ** 2, (entry["params"]["x"] - 2) ** 2])
    # Multi-objective reports are kept as learning curves but never prune.
    assert all(0 in t.intermediate_values for t in complete)


def test_tuple_results_and_wrong_arity(sqlite_url):
    spec = make_spec(
        name="mo-tuple", objective="objectives:two_objectives_tuple", search_space={"x": {"type": "float", "low": 0, "high": 2}},
        directions=["minimize", "maximize"], n_trials=4,
    )
    summary = api.run(spec, storage=sqlite_url, backend="local")
    assert summary.complete == 4 and len(summary.pareto_front) >= 1
    wrong = make_spec(
        name="mo-wrong", objective="objectives:two_objectives_tuple", search_space={"x": {"type": "float", "low": 0, "high": 2}},
        n_trials=3, max_failed_trials=0,
    )
    summary = api.run(wrong, storage=sqlite_url, backend="local")
    assert summary.state == "FAILED" and "returned 2 value(s) for 1 direction(s)" in summary.message


def test_pruner_with_several_directions_is_refused():
    with pytest.raises(HpoError, match="Optuna does not prune multi-objective trials"):
        make_spec(directions=["minimize", "minimize"], pruner="median")


def test_constraints_mark_infeasible_trials(sqlite_url):
    spec = make_spec(
        name="constrained", objective="objectives:constrained_branin", search_space="branin",
        sampler={"name": "tpe", "options": {"n_startup_trials": 5}}, n_trials=14, seed=5,
    )
    summary = api.run(spec, storage=sqlite_url, backend="local")
    study = optuna.load_study(study_name="constrained", storage=sqlite_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    infeasible = [t for t in complete if t.constraints["c0"] > 0]
    assert all(t.constraints["c0"] == pytest.approx(t.params["x1"] + t.params["x2"] - 8) for t in complete)
    assert infeasible and summary.infeasible == len(infeasible)
    best = study.best_trial  # Optuna picks the best feasible trial
    assert best.constraints["c0"] <= 0
    assert summary.best_trial == best.number and summary.best_value == best.value
