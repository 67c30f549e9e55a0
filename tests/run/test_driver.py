"""The study driver on a real Ray runtime and a real SQLite store, with cheap objectives."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from hpo.run.ask_ahead import AskAhead
from hpo.run.driver import StudyDriver, plan_placement, trial_seed
from hpo.store.attrs import ERROR_ATTR
from hpo.store.jobs import JobState

from studies import drive, make_spec, new_study, states


def test_exact_budget_with_pruning(ray_runtime, store):
    spec = make_spec(
        n_trials=12,
        objective_args={"steps": 6, "delay": 0.02},
        pruner={"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 1}},
    )
    study = new_study(store, spec)
    result = StudyDriver(study, spec, poll_interval=0.2).run()
    counts = states(study)
    assert result.state == JobState.COMPLETED
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 12
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.FAIL] == 0
    assert counts[TrialState.PRUNED] >= 1
    assert result.counts.complete == counts[TrialState.COMPLETE]
    assert result.counts.pruned == counts[TrialState.PRUNED]
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))  # every epoch stored, in order
        info = trial.user_attrs["hpo:run"]
        # The worker stopped exactly at the step where the pruner decided: nothing after it.
        assert info["last_step"] == steps[-1]
        if trial.state == TrialState.COMPLETE:
            assert len(steps) == 6
            assert trial.value == pytest.approx(trial.intermediate_values[5])
        else:  # pruned at its last report (which may be the final step's)
            assert trial.value == trial.intermediate_values[steps[-1]]
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result.best.number == best.number and result.best.value == best.value


def test_failures_are_recorded_and_replaced(ray_runtime, store):
    spec = make_spec(objective="objectives:fails_when_x_large", n_trials=6, max_failed_trials=50, sampler="random", seed=0)
    study = new_study(store, spec)
    result = StudyDriver(study, spec, poll_interval=0.2).run()
    counts = states(study)
    assert counts[TrialState.COMPLETE] == 6
    assert counts[TrialState.FAIL] == result.counts.failed >= 1
    for trial in study.trials:
        if trial.state == TrialState.FAIL:
            assert trial.params["x"] > 0.5
            assert "RuntimeError: x too large" in trial.user_attrs[ERROR_ATTR]
            assert "Traceback" in trial.user_attrs[ERROR_ATTR] or "line" in trial.user_attrs[ERROR_ATTR]


def test_nan_is_a_failure(ray_runtime, store):
    spec = make_spec(objective="objectives:returns_nan", n_trials=5, max_failed_trials=50, sampler="random", seed=0)
    study = new_study(store, spec)
    StudyDriver(study, spec, poll_interval=0.2).run()
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["x"] > 0.5 for t in failed)
    assert all("nan" in t.user_attrs[ERROR_ATTR] for t in failed)
    assert states(study)[TrialState.COMPLETE] == 5


def test_failure_limit_stops_the_study(ray_runtime, store):
    spec = make_spec(objective="objectives:always_fails", n_trials=20, max_failed_trials=3)
    study = new_study(store, spec)
    result = StudyDriver(study, spec, poll_interval=0.2).run()
    assert result.state == JobState.FAILED
    assert "max_failed_trials=3" in result.message and "always fails" in result.message
    counts = states(study)
    assert counts[TrialState.RUNNING] == 0
    assert 4 <= counts[TrialState.FAIL] <= 6  # the limit, plus what was in flight (2 running, 1 queued)


def test_resume_counts_earlier_trials_and_fails_stale_running(ray_runtime, store):
    spec = make_spec(n_trials=5)
    study = new_study(store, spec)
    StudyDriver(study, make_spec(n_trials=3), poll_interval=0.2).run()
    stale = study.ask()  # left RUNNING by an owner that died
    stale.suggest_float("x", 0, 1)
    result = StudyDriver(study, spec, poll_interval=0.2).run()
    counts = states(study)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 5
    assert counts[TrialState.RUNNING] == 0
    frozen = study.trials[stale.number]
    assert frozen.state == TrialState.FAIL and "its owner stopped" in frozen.user_attrs[ERROR_ATTR]
    assert result.counts.finished == 5
    # The stale trial was retried with the same parameters, as attempt 2.
    retries = [t for t in study.trials if t.user_attrs.get("hpo:retry_of") == stale.number]
    assert len(retries) == 1 and retries[0].params["x"] == frozen.params["x"]
    assert retries[0].user_attrs["hpo:attempt"] == 2


def test_trial_seeds_depend_on_study_seed_and_number():
    spec = make_spec(seed=3)
    assert trial_seed(spec, "a", 0) != trial_seed(spec, "a", 1)
    assert trial_seed(spec, "a", 4) == trial_seed(make_spec(seed=3), "b", 4)
    assert trial_seed(make_spec(seed=None), "a", 0) != trial_seed(make_spec(seed=None), "b", 0)


def _most_at_once(study, stored: bool = False) -> int:
    """The most trials whose run intervals overlap at one moment: as the workers measured them,
    or (``stored``) as the store says (datetime_start/complete: optuna-dashboard's timeline)."""
    if stored:
        runs = [{"start": t.datetime_start.timestamp(), "end": t.datetime_complete.timestamp()} for t in study.trials]
    else:
        runs = [t.user_attrs["hpo:run"]["metrics"] for t in study.trials]
    # an end and a start at the same instant do not overlap
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


@pytest.mark.parametrize("limit, saturates", [(2, True), (1, False)])
def test_a_trial_queued_ahead_never_runs_past_the_limit(ray_runtime, store, tmp_path, limit, saturates):
    """With every CPU in use one more trial may be prepared (no idle gap when a slot frees); where
    max_concurrent_trials is below what the cluster holds, none is, since a slot that frees may
    not be this study's. (Prepared whatever the asks take, here: hpo.run.ask_ahead decides.)"""
    barrier = tmp_path / "barrier"  # the first `limit` trials wait for each other, then run 1 s:
    barrier.mkdir()  # they overlap however far apart their workers started
    spec = make_spec(objective="objectives:gpu_probe", search_space={"x": {"type": "float", "low": 0, "high": 1}},
                     n_trials=5, max_concurrent_trials=limit,
                     objective_args={"barrier": str(barrier), "parties": limit, "hold": 1.0})
    assert plan_placement(spec).saturates is saturates  # the session's Ray has 2 CPUs
    study, _ = drive(store, spec, ask_ahead=AskAhead.always())
    assert states(study)[TrialState.COMPLETE] == len(study.trials) == 5
    assert _most_at_once(study) == limit
    # Queued ahead: the trial after the first `limit` ones was asked before any of them ended
    # and waited for a slot; the store times its run from its worker's start, so the timeline
    # that optuna-dashboard and the report draw never shows more trials at once than ran.
    assert (study.trials[limit].user_attrs["hpo:run"]["queued_s"] > 0.5) is saturates
    assert _most_at_once(study, stored=True) == limit
    for trial in study.trials:  # the stored run holds what the objective measured of itself
        run = trial.user_attrs["hpo:run"]["metrics"]
        assert trial.datetime_start.timestamp() <= run["start"] and run["end"] <= trial.datetime_complete.timestamp()


def test_a_running_trial_finished_from_optuna_dashboard_is_neither_lost_nor_run_again(store, tmp_path):
    """optuna-dashboard's "tell" on a trial the driver runs: the dashboard's result stands (the
    worker's late one is dropped, not told twice) and the budget stays exact. (Trial 1 holds
    before its last step until the tell is done, so the tell always meets it running.)"""
    import threading
    import time

    from hpo.read.dashboard import build_app
    from hpo.run.local_backend import LocalBackend

    from browser import wsgi_call

    spec = make_spec(name="told-by-hand", objective="objectives:pid_writer", sampler="random", n_trials=6,
                     search_space={"x": {"type": "float", "low": 0, "high": 1}},
                     objective_args={"workdir": str(tmp_path), "steps": 8, "delay": 0.15,
                                     "gate": str(tmp_path / "told"), "gate_trial": 1})
    study = new_study(store, spec)
    app = build_app(store, writable=True)
    told = []

    def tell_trial_one_by_hand() -> None:
        try:
            deadline = time.monotonic() + 60
            while not list(tmp_path.glob("1-*.pid")) and time.monotonic() < deadline:
                time.sleep(0.05)
            study_id = store.optuna.get_study_id_from_name("told-by-hand")
            trial_id = store.optuna.get_trial_id_from_study_id_trial_number(study_id, 1)
            told.append(wsgi_call(app, "POST", f"/api/trials/{trial_id}/tell", {"state": "Complete", "values": [123.0]})[0])
        finally:
            (tmp_path / "told").touch()  # trial 1 goes on to its end

    thread = threading.Thread(target=tell_trial_one_by_hand)
    thread.start()
    try:
        result = StudyDriver(study, spec, poll_interval=0.2, backend=LocalBackend(cpus=2)).run()
    finally:
        thread.join()
    assert told and told[0][:1] == "2"
    trials = store.optuna.get_all_trials(store.optuna.get_study_id_from_name("told-by-hand"))
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == 6 and counts[TrialState.RUNNING] == 0
    assert trials[1].state == TrialState.COMPLETE and trials[1].value == 123.0  # the dashboard's, kept
    assert result.counts.complete + result.counts.pruned == 6


def test_one_slot_runs_the_study_optuna_runs_trial_by_trial(store):
    """With one slot the driver asks, prunes and tells in the order Optuna's own
    ``study.optimize`` does, so a seeded study is the one Optuna runs in-process: the same
    parameters (a conditional one included), reports, prune decisions and values, trial by trial.
    Where parallel runs of the two differ (benchmarks/compare.py's heavy workload), that comes
    from running trials at once (and distributed Optuna's one sampler per process), not from how
    hpo drives Optuna's sampler and pruner (benchmarks/one_slot.py checks the same on that
    workload)."""
    import math

    import optuna

    from hpo.spec.space import SearchSpace
    from workers.reporter import Pruned, Reporter
    from workers.reporter import trial_seed as torch_seed  # what hpo's driver gives a trial

    import objectives

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "kind": {"type": "categorical", "choices": ["a", "b"]},
             "y": {"type": "float", "low": -1.0, "high": 1.0, "when": {"kind": "b"}}}
    sampler = {"name": "tpe", "options": {"n_startup_trials": 5}}
    pruner = {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 3}}
    spec = make_spec(name="as-optuna", search_space=space, sampler=sampler, pruner=pruner, seed=7, n_trials=20,
                     max_concurrent_trials=1)
    # never a trial asked ahead of a free slot (one slot never saturates this machine anyway)
    study, _ = drive(store, spec, local=True, ask_ahead=AskAhead(share=math.inf))

    reference = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=5),
                                    pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    sample = SearchSpace.model_validate(space).sample

    def objective(trial: optuna.Trial) -> float:
        def send(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        reporter = Reporter(trial_number=trial.number, seed=torch_seed(7, trial.number), send=send)
        try:
            return objectives.curve(sample(trial), reporter)
        except Pruned:
            raise optuna.TrialPruned() from None

    reference.optimize(objective, n_trials=20)
    ours, theirs = study.trials, reference.trials
    assert len(ours) == len(theirs) == 20
    assert {t.state for t in theirs} == {TrialState.COMPLETE, TrialState.PRUNED}  # both outcomes compared
    assert any("y" in t.params for t in theirs) and any("y" not in t.params for t in theirs)
    for a, b in zip(ours, theirs):
        assert (a.number, a.params, a.state, a.intermediate_values) == (b.number, b.params, b.state, b.intermediate_values)
        assert a.value == b.value
