"""The driver's policy on a simulated backend and clock: exact counts, no sleeps.

Optuna and SQLite are real; only what runs the trials (hpo's TrialBackend seam) and time (its
Clock seam) are simulated, so budgets, retries, limits, timeouts, cancel and lease loss are
checked exactly. tests/run/test_driver.py and tests/run/test_faults.py run the same policy on Ray.
"""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from hpo.run.ask_ahead import AskAhead
from hpo.run.driver import LeaseLost, StudyDriver
from hpo.run.recorder import StudyRecorder
from hpo.store.attrs import ERROR_ATTR, INFO_ATTR, RESUMES_ATTR, was_stopped
from hpo.store.jobs import JobState
from hpo.store.owned_storage import OwnedStudyStorage

from fake_backend import FakeBackend, FakeClock, Script
from studies import assert_exact_budget, make_spec, new_study, states

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def drive(store, spec, behave, *, clock=None, **kwargs):
    clock = clock or FakeClock()
    backend = FakeBackend(clock, behave)
    study = new_study(store, spec)
    driver = StudyDriver(study, spec, backend=backend, clock=clock, poll_interval=1.0, **kwargs)
    return study, backend, driver


def ends_so_at_first(times: dict[int, int], how: str):
    """A ``behave``: the i-th new parameter set's first ``times[i]`` runs end ``how`` (a Script
    flag: ``crash``, ``channel_lost``), its later runs complete; every run takes 3 s."""
    left_by_x: dict[float, int] = {}

    def behave(task):
        x = task.params["x"]
        if x not in left_by_x:
            left_by_x[x] = times.get(len(left_by_x), 0)
        left = left_by_x[x]
        if left:
            left_by_x[x] = left - 1
        return Script(duration=3, **{how: left > 0})

    return behave


def test_budget_is_exact_and_slots_are_never_exceeded(store):
    spec = make_spec(search_space=X, n_trials=20, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=5 + 10 * task.params["x"]))
    result = driver.run()
    assert result.state == JobState.COMPLETED and result.counts.complete == 20
    assert_exact_budget(study, 20)
    assert len(backend.launched) == 20 and backend.most_at_once == 2 and backend.closed


def test_no_more_trials_run_than_the_cluster_holds(store):
    """max_concurrent_trials above what fits: each running trial holds a worker, so the rest wait
    in the driver, not on workers that cannot be placed."""
    spec = make_spec(search_space=X, n_trials=9, sampler="random", max_concurrent_trials=8)
    study, backend, driver = drive(store, spec, lambda task: Script(duration=10))
    driver.run()
    assert_exact_budget(study, 9)
    assert backend.most_at_once == 2  # the fake backend also fails any launch past its 2 CPUs
    assert [t for t, _ in backend.launched] == [0, 0, 10, 10, 20, 20, 30, 30, 40]


def test_worker_deaths_are_retried_with_the_same_parameters(store):
    spec = make_spec(search_space=X, n_trials=10, sampler="random", max_retries=2)
    # The 3rd and 6th parameter sets lose their worker once; the 8th on every attempt.
    study, backend, driver = drive(store, spec, ends_so_at_first({2: 1, 5: 1, 7: 3}, "crash"))
    result = driver.run()
    assert result.state == JobState.COMPLETED
    assert_exact_budget(study, 10)
    failed = study.get_trials(states=(TrialState.FAIL,))
    # two once each; the third three times (attempts 1-3), after which max_retries=2 gives up
    assert len(failed) == 5
    by_x: dict[float, list] = {}
    for trial in study.trials:
        by_x.setdefault(trial.params["x"], []).append(trial)
    for trials in by_x.values():
        attempts = [t.user_attrs.get("hpo:attempt", 1) for t in trials]
        assert attempts == list(range(1, len(trials) + 1))  # same parameters, next attempt each time
    gave_up = [ts for ts in by_x.values() if len(ts) == 3]
    assert len(gave_up) == 1 and all(t.state == TrialState.FAIL for t in gave_up[0])
    assert gave_up[0][-1].user_attrs["hpo:run"]["retried"] is False


def test_trials_whose_report_channel_died_are_run_again_using_no_retry(store):
    """A trial stopped because hpo's report channel died is handed back like one hpo stops itself:
    queued again with the same parameters even with max_retries 0 (and as often as it happens),
    never counted as a failure (a failure limit of 0 would have stopped the study)."""
    spec = make_spec(search_space=X, n_trials=6, sampler="random", max_retries=0, max_failed_trials=0)
    # the 2nd parameter set once, the 4th twice
    study, backend, driver = drive(store, spec, ends_so_at_first({1: 1, 3: 2}, "channel_lost"))
    result = driver.run()
    assert result.state == JobState.COMPLETED
    assert result.counts.failed == 0 and result.counts.stopped == 3
    assert_exact_budget(study, 6)
    handed_back = study.get_trials(states=(TrialState.FAIL,))
    assert len(handed_back) == 3
    assert all(t.user_attrs["hpo:stopped"] and t.user_attrs["hpo:error"].startswith("ChannelLost") for t in handed_back)
    assert all(t.user_attrs["hpo:run"]["retried"] for t in handed_back)
    by_x: dict[float, list[TrialState]] = {}  # each parameter set's runs, in order
    for trial in sorted(study.trials, key=lambda t: t.number):
        by_x.setdefault(trial.params["x"], []).append(trial.state)
    assert sorted(len(runs) for runs in by_x.values()) == [1, 1, 1, 1, 2, 3]
    assert all(runs[-1] == TrialState.COMPLETE and set(runs[:-1]) <= {TrialState.FAIL} for runs in by_x.values())


def test_failure_limit_stops_the_study_with_the_last_error(store):
    spec = make_spec(search_space=X, n_trials=20, sampler="random", max_failed_trials=3, max_concurrent_trials=1)
    study, backend, driver = drive(store, spec, lambda task: Script(duration=1, error="ValueError: bad data"))
    result = driver.run()
    assert result.state == JobState.FAILED
    assert "stopped after 4 failed trials (max_failed_trials=3)" in result.message and "bad data" in result.message
    assert states(study)[TrialState.FAIL] == 4 and states(study)[TrialState.RUNNING] == 0


def test_no_prepared_trial_starts_once_the_failure_limit_stops_the_study(store):
    spec = make_spec(search_space=X, n_trials=20, sampler="random", max_failed_trials=1)
    study, backend, driver = drive(store, spec, lambda task: Script(duration=1 + task.trial_number, error="ValueError: bad data"),
                                   ask_ahead=AskAhead.always())
    result = driver.run()
    assert result.state == JobState.FAILED
    # Trials 0 and 1 ran; 2 (prepared) took 0's slot; 1's failure hit the limit, so 3 (prepared
    # meanwhile) never started: failed as such, not left RUNNING.
    assert len(backend.launched) == 3
    errors = [t.user_attrs[ERROR_ATTR] for t in study.trials]
    assert errors[3] == "not started: the study is stopping" and states(study)[TrialState.RUNNING] == 0


def test_a_result_is_recorded_even_when_the_next_launch_fails(store):
    spec = make_spec(search_space=X, n_trials=6, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=5 + task.trial_number, value=0.5),
                                   ask_ahead=AskAhead.always())
    backend.fail_launch = 2  # the prepared trial's launch, when trial 0 ends
    with pytest.raises(RuntimeError, match="could not be started"):
        driver.run()
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.5
    assert backend.closed and backend.cancelled == [backend.launched[1][1]]


def test_trial_timeout_cancels_the_trial_and_fails_it(store):
    spec = make_spec(search_space=X, n_trials=6, sampler="random", trial_timeout=30, max_concurrent_trials=1)
    study, backend, driver = drive(store, spec, lambda task: Script(duration=100 if task.trial_number == 1 else 5))
    driver.run()
    assert_exact_budget(study, 6)
    stuck = study.trials[1]
    assert stuck.state == TrialState.FAIL and "trial_timeout of 30 s" in stuck.user_attrs[ERROR_ATTR]
    assert not was_stopped(stuck)  # a trial past its time limit is a failure
    assert len(backend.cancelled) == 1 and backend.cancelled[0].startswith(f"{stuck._trial_id}-")
    # Cancelled within one poll of its limit (simulated time), and its slot reused at once.
    start = next(t for t, key in backend.launched if key == backend.cancelled[0])
    after = [t for t, _ in backend.launched if t > start]
    assert 30 < after[0] - start <= 31


def test_trial_timeout_counts_from_when_the_worker_began_the_trial(store):
    """A cold worker's start (20 s here) is the worker's, not the trial's: a 25 s trial after it
    completes under a 30 s limit, and a 100 s one is cancelled 30 s after it began."""
    spec = make_spec(search_space=X, n_trials=2, sampler="random", trial_timeout=30, max_concurrent_trials=1)
    scripts = {0: Script(startup=20, duration=25), 1: Script(startup=20, duration=100), 2: Script(duration=5)}
    study, backend, driver = drive(store, spec, lambda task: scripts[task.trial_number])
    driver.run()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs[ERROR_ATTR] == "trial exceeded trial_timeout of 30 s"
    (launched, key), (relaunched, _) = backend.launched[1:]
    assert backend.cancelled == [key] and 50 < relaunched - launched <= 51  # 20 s start-up + 30 s, one poll


@pytest.mark.parametrize(("trial_timeout", "start_limit"), [(30, 300), (500, 500)])
def test_a_trial_whose_worker_never_begins_it_fails_saying_so(store, trial_timeout, start_limit):
    """With a trial_timeout, a worker gets the worker start-up allowance (300 s), or the
    trial_timeout where that is longer, to begin a trial."""
    spec = make_spec(search_space=X, n_trials=1, sampler="random", trial_timeout=trial_timeout,
                     max_concurrent_trials=1)
    scripts = {0: Script(startup=float("inf")), 1: Script(startup=250, duration=5)}
    study, backend, driver = drive(store, spec, lambda task: scripts[task.trial_number])
    driver.run()
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs[ERROR_ATTR] == (
        "trial never began: its worker was still starting (placement, process start, imports, module-level data) "
        f"{start_limit} s after the trial's launch")
    assert not was_stopped(study.trials[0])  # a failure, counted as one
    assert start_limit < backend.launched[1][0] - backend.launched[0][0] <= start_limit + 1


def test_cancel_seen_at_a_heartbeat_stops_running_trials(store):
    spec = make_spec(search_space=X, n_trials=50, sampler="random")
    beats = []

    def heartbeat():
        beats.append(1)
        return JobState.CANCELLED if len(beats) == 3 else None

    study, backend, driver = drive(store, spec, lambda task: Script(duration=7), heartbeat=heartbeat,
                                   heartbeat_interval=10, ask_ahead=AskAhead.always())
    result = driver.run()
    assert result.state == JobState.CANCELLED
    assert len(backend.cancelled) == 2 and backend.closed
    cancelled = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(cancelled) == 3  # the two running and the one prepared
    assert all("cancelled" in t.user_attrs[ERROR_ATTR] for t in cancelled)
    assert all(was_stopped(t) for t in cancelled)  # stopped by hpo, not failures of the objective
    assert result.counts.stopped == 3 and result.counts.failed == 0
    assert states(study)[TrialState.RUNNING] == 0
    assert states(study)[TrialState.COMPLETE] == 8  # two slots, 7 s each, cancelled at t=30


def test_lease_loss_stops_without_writing_the_running_trials(store):
    spec = make_spec(search_space=X, n_trials=50, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=7),
                                   heartbeat=lambda: JobState.RUNNING, heartbeat_interval=10, ask_ahead=AskAhead.always())
    with pytest.raises(LeaseLost):
        driver.run()
    assert backend.closed and len(backend.cancelled) == 2
    # The new owner fails and retries what was running; this one wrote nothing more.
    assert states(study)[TrialState.RUNNING] == 3 and states(study)[TrialState.COMPLETE] == 2


def test_stop_hands_running_trials_back(store):
    spec = make_spec(search_space=X, n_trials=50, sampler="random")
    stop = threading.Event()

    def behave(task):
        if task.trial_number == 6:
            stop.set()
        return Script(duration=4)

    study, backend, driver = drive(store, spec, behave, stop=stop)
    result = driver.run()
    assert result.state == JobState.INTERRUPTED
    handed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert handed and all("handed back" in t.user_attrs[ERROR_ATTR] for t in handed)
    assert all(was_stopped(t) for t in handed)
    assert result.counts.stopped == len(handed) and result.counts.failed == 0
    assert states(study)[TrialState.RUNNING] == 0


def test_a_ctrl_c_landing_right_after_a_launch_hands_that_trial_back_too(store):
    """SIGTERM or Ctrl-C can land between the backend's send and the driver's next line (seen
    on a loaded machine): the trial already runs on its worker, so it is handed back and queued
    again like the others, not left failed with nothing to resume it."""
    spec = make_spec(search_space=X, n_trials=6, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=50))
    backend.interrupt_launch = 1
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    handed = [t for t in study.trials if t.state == TrialState.FAIL]
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(handed) == 2 and all(was_stopped(t) and t.user_attrs["hpo:run"]["retried"] for t in handed)
    assert sorted(t.user_attrs[RESUMES_ATTR] for t in queued) == sorted(t.number for t in handed)
    assert sorted(backend.cancelled) == sorted(key for _, key in backend.launched)  # both workers stopped


def test_study_timeout_starts_no_trial_after_the_deadline(store):
    spec = make_spec(search_space=X, n_trials=None, timeout=60, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=25), ask_ahead=AskAhead.always())
    result = driver.run()
    # Trials start at 0, 0 (two slots), 25, 25, 50, 50; none at 75 > 60; the last end at 75.
    assert [t for t, _ in backend.launched] == [0, 0, 25, 25, 50, 50]
    assert result.state == JobState.COMPLETED and result.counts.complete == 6
    # The trial prepared for the next free slot never started: it is failed, not left RUNNING.
    assert states(study)[TrialState.RUNNING] == 0
    assert [t.user_attrs[ERROR_ATTR] for t in study.get_trials(states=(TrialState.FAIL,))] == [
        "not started: the study's timeout was reached"]
    assert result.counts.stopped == 1 and result.counts.failed == 0


def test_a_prepared_trial_takes_a_freed_slot_at_once(store):
    spec = make_spec(search_space=X, n_trials=7, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=10 + task.trial_number),
                                   ask_ahead=AskAhead.always())
    driver.run()
    assert_exact_budget(study, 7)
    # The third trial was asked before any trial ended, and launched the moment trial 0 ended:
    # it waited 10 s queued, and its run starts at its launch, not at its ask.
    assert backend.launched[2][0] == 10
    info = study.trials[2].user_attrs[INFO_ATTR]
    assert info["queued_s"] == 10 and study.trials[0].user_attrs[INFO_ATTR]["queued_s"] == 0
    assert study.trials[2].datetime_start >= study.trials[0].datetime_complete
    assert backend.most_at_once == 2


class _TimedSampler(optuna.samplers.RandomSampler):
    """Random sampling whose every ask takes ``ask_s`` on the simulated clock."""

    def __init__(self, clock: FakeClock, ask_s: float) -> None:
        super().__init__(seed=0)
        self.clock, self.ask_s = clock, ask_s

    def before_trial(self, study, trial) -> None:
        self.clock.now += self.ask_s
        super().before_trial(study, trial)


class _InterruptedSampler(optuna.samplers.RandomSampler):
    """Random sampling; Ctrl-C lands while the trial numbered ``at`` is sampled."""

    def __init__(self, at: int) -> None:
        super().__init__(seed=0)
        self.at = at

    def sample_independent(self, study, trial, name, distribution):
        if trial.number == self.at:
            raise KeyboardInterrupt
        return super().sample_independent(study, trial, name, distribution)


def test_a_ctrl_c_while_a_trial_is_sampled_leaves_nothing_running(store):
    """The trial being asked exists in the store (RUNNING) before the driver tracks it; without
    an attempt row a next run would leave it to 'its asker' for ever. It is failed as stopped."""
    spec = make_spec(search_space=X, n_trials=6, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=10))
    study.sampler = _InterruptedSampler(at=3)
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert states(study)[TrialState.RUNNING] == 0
    asked = study.trials[3]
    assert asked.state == TrialState.FAIL and was_stopped(asked) and "while it was asked" in asked.user_attrs[ERROR_ATTR]


@pytest.mark.parametrize("ask_s, prepared", [(0.0, False), (0.1, False), (0.5, True)])
def test_a_trial_is_prepared_ahead_only_where_asks_take_a_share_of_a_trials_time(store, ask_s, prepared):
    """A trial asked before a slot frees is sampled without the result that frees it, so the
    driver prepares one only where the ask would hold the freed slot idle for 2 % or more of a
    trial's time (here 0.5 s asks against 10 s trials; not 0.1 s)."""
    clock = FakeClock()
    spec = make_spec(search_space=X, n_trials=8, sampler="random")
    study, backend, driver = drive(store, spec, lambda task: Script(duration=10), clock=clock)
    study.sampler = _TimedSampler(clock, ask_s)
    driver.run()
    assert_exact_budget(study, 8)
    assert backend.most_at_once == 2
    queued = [t.user_attrs[INFO_ATTR]["queued_s"] for t in study.trials]
    assert queued[:3] == [0, 0, 0]  # nothing is known of the trials' time before one ends
    # prepared: asked while both slots ran, so queued until one freed; else asked when one freed
    assert any(q > 0 for q in queued) is prepared


def test_pruning_stops_trials_at_the_decision_step(store):
    spec = make_spec(search_space=X, n_trials=16, sampler="random",
                     pruner={"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 0}})
    study, backend, driver = drive(store, spec, lambda task: Script(duration=10, steps=5, value=task.params["x"]))
    result = driver.run()
    assert_exact_budget(study, 16)
    assert result.counts.pruned >= 3
    for trial in study.get_trials(states=(TrialState.PRUNED,)):
        assert max(trial.intermediate_values) == trial.user_attrs["hpo:run"]["last_step"] < 4


def test_a_trial_added_from_outside_just_before_the_budget_ends_is_counted_not_run_past(store):
    """Optuna's tools add a finished trial while the third of four runs: the driver looks at the
    database once more before the dispatch that would use up the budget, so it runs three of its
    own and the study ends with exactly four finished (its once-a-second sync is held off here,
    so only that last look can find it)."""
    import optuna

    spec = make_spec(search_space=X, n_trials=4, sampler="random", max_concurrent_trials=1)

    def behave(task):
        if task.trial_number == 2:
            fresh = optuna.storages.RDBStorage(store.url.render_as_string(hide_password=False))
            outside = optuna.load_study(study_name=spec.name, storage=fresh)
            outside.add_trial(optuna.trial.create_trial(
                params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, value=-1.0))
            fresh.engine.dispose()
        return Script(duration=5.0, value=task.params["x"])

    study, backend, driver = drive(store, spec, behave, flush_interval=1e9)
    result = driver.run()
    assert result.state == JobState.COMPLETED and result.counts.complete == 4 and len(backend.launched) == 3
    assert_exact_budget(study, 4)
    assert result.best.value == -1.0 and result.best.number == 3


def test_a_resumed_study_retries_its_dead_owners_trial_and_leaves_one_asked_from_outside_to_its_asker(store):
    """As a study resumes, a trial its dead owner left RUNNING (it has hpo's attempt row, written in
    the transaction that started it) is failed and retried with its parameters; a trial that
    `optuna ask` started meanwhile has none, so it is left RUNNING for its asker, who can tell it."""
    store.upgrade()  # hpo's tables: the attempt rows
    spec = make_spec(search_space=X, n_trials=3, sampler="random", max_retries=1)
    first = new_study(store, spec)
    dead = StudyRecorder(first, owner="dead", engine=store.engine)
    left = dead.ask()  # its owner died right after starting it: nothing else was written
    left.suggest_float("x", 0.0, 1.0)
    dead.flush()
    asker = optuna.load_study(study_name=spec.name, storage=store.optuna)
    asked = asker.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})

    clock = FakeClock()
    study = optuna.load_study(study_name=spec.name, storage=OwnedStudyStorage(store.optuna, spec.name),
                              sampler=spec.build_sampler(), pruner=spec.build_pruner())
    driver = StudyDriver(study, spec, backend=FakeBackend(clock, lambda task: Script(duration=5)), clock=clock,
                         poll_interval=1.0, engine=store.engine, owner="next")
    result = driver.run()
    assert result.state == JobState.COMPLETED and result.counts.complete == 3 and result.counts.stopped == 1
    trials = optuna.load_study(study_name=spec.name, storage=store.optuna).get_trials(deepcopy=False)
    assert trials[left.number].state == TrialState.FAIL and was_stopped(trials[left.number])
    retry = [t for t in trials if t.user_attrs.get("hpo:retry_of") == left.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trials[left.number].params
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == [asked.number]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    asker.tell(asked, 0.5)  # still the asker's to tell
    assert optuna.load_study(study_name=spec.name, storage=store.optuna).trials[asked.number].value == 0.5
