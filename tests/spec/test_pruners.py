"""Every pruner through the real driver and local worker processes, with multi-step learning curves
(the driver on Ray workers is tested in tests/run)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from hpo.spec.pruners import PRUNERS

from studies import HARTMANN6, assert_exact_budget, assert_stopped_at_decision, drive, make_spec, states

N = 12


def run(store, pruner, steps=6, noise=0.02, **fields):
    spec = make_spec(
        objective="builtin:hartmann6", search_space=HARTMANN6, sampler="random", seed=3, n_trials=N,
        objective_args={"steps": steps, "noise": noise}, pruner=pruner, **fields,
    )
    study, result = drive(store, spec, local=True)
    assert_exact_budget(study, N)
    assert_stopped_at_decision(study)
    assert result.counts.pruned == states(study)[TrialState.PRUNED]
    return study, result


def test_every_registered_pruner_is_tested():
    assert set(PRUNERS.names()) == {
        "none", "median", "percentile", "successive_halving", "asha", "hyperband", "wilcoxon", "threshold", "patient"
    }


def test_none_prunes_nothing(store):
    study, result = run(store, "none")
    assert result.counts.pruned == 0
    assert all(len(t.intermediate_values) == 6 for t in study.trials)


@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 1}},
        {"name": "percentile", "options": {"percentile": 25.0, "n_startup_trials": 2}},
        {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 3}},
        {"name": "asha", "options": {"min_resource": 1, "reduction_factor": 3}},
        {"name": "hyperband", "options": {"min_resource": 1, "max_resource": 6, "reduction_factor": 3}},
        {"name": "wilcoxon", "options": {"p_threshold": 0.3, "n_startup_steps": 2}},
        {"name": "patient", "options": {"wrapped": {"name": "median", "options": {"n_startup_trials": 2}}, "patience": 0}},
    ],
    ids=lambda p: p["name"],
)
def test_pruners_stop_poor_trials_early(store, pruner):
    study, result = run(store, pruner, max_concurrent_trials=1)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, f"{pruner['name']} pruned nothing in {N} trials"
    for trial in pruned:
        assert len(trial.intermediate_values) < 6  # stopped before the last epoch
        assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            assert len(trial.intermediate_values) == 6


def test_threshold_prunes_exactly_the_trials_above_it(store):
    # Curves only go down, so a trial is pruned at step 0 exactly when its first value is above.
    study, _ = run(store, {"name": "threshold", "options": {"upper": 0.3}}, noise=0.0)
    for trial in study.trials:
        first = trial.intermediate_values[0]
        if first > 0.3:
            assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
        else:
            assert trial.state == TrialState.COMPLETE
    assert 0 < states(study)[TrialState.PRUNED] < N


def test_asynchronous_pruning_never_waits_for_stragglers(store, tmp_path):
    """ASHA semantics: while trial 0 is stuck before its first report, the other slot keeps
    finishing trials, judged against what has been reported so far. (Trial 0 waits until five
    others have ended: the slot frees, and the next is launched, only once one is recorded, so
    at least four were recorded before it goes on; a pruner that waited for it would leave it
    waiting for its full 60 s instead, with none of them done.)"""
    done = tmp_path / "done"
    done.mkdir()
    spec = make_spec(
        objective="objectives:straggler", n_trials=8, max_concurrent_trials=2,
        objective_args={"done": str(done), "others": 5},
        pruner={"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 2}},
    )
    study, _ = drive(store, spec, local=True)
    assert_exact_budget(study, 8)
    straggler = study.trials[0]
    done_before = [
        t for t in study.trials[1:]
        if t.datetime_complete and t.datetime_complete < straggler.datetime_complete
    ]
    assert len(done_before) >= 4
    assert any(t.state == TrialState.PRUNED for t in study.trials)
