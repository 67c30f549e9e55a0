"""Helpers for tests that drive real studies: specs from dicts, and the driver on a store."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import optuna
from optuna.trial import TrialState

from hpo.run.driver import StudyDriver
from hpo.spec.study import parse_spec
from hpo.store.jobs import utcnow
from hpo.store.owned_storage import OwnedStudyStorage
from hpo.store.schema import jobs as jobs_table

from conftest import TESTS_DIR

XY_SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": -1.0, "high": 1.0}}
HARTMANN6 = "hartmann6"  # builtin search space name


def make_spec(**fields):
    data = {
        "name": "test-study",
        "objective": "objectives:curve",
        "search_space": XY_SPACE,
        "n_trials": 8,
        "max_concurrent_trials": 2,
        "seed": 1,
        **fields,
    }
    return parse_spec(data, base_dir=TESTS_DIR)


def new_study(store, spec):
    """The study as the driver runs it in production: on hpo's owned (write-behind) storage."""
    optuna.create_study(study_name=spec.name, storage=store.optuna, directions=spec.study_directions)
    return optuna.load_study(
        study_name=spec.name, storage=OwnedStudyStorage(store.optuna, spec.name, engine=store.writer),
        sampler=spec.build_sampler(), pruner=spec.build_pruner(),
    )


def drive(store, spec, *, local: bool = False, **driver_kwargs):
    """Create the study for ``spec`` in ``store`` and run it with the real driver on Ray (with
    ``local``: on local worker processes, as `hpo run` runs a study on one machine)."""
    study = new_study(store, spec)
    if local:
        from hpo.run.local_backend import LocalBackend

        driver_kwargs["backend"] = LocalBackend(poll_interval=0.2)
    result = StudyDriver(study, spec, poll_interval=0.2, **driver_kwargs).run()
    return study, result


def states(study) -> dict[TrialState, int]:
    trials = study.get_trials(deepcopy=False)
    return {s: sum(t.state == s for t in trials) for s in TrialState}


def assert_exact_budget(study, n_trials: int) -> None:
    counts = states(study)
    assert counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] == n_trials, counts
    assert counts[TrialState.RUNNING] == 0 and counts[TrialState.WAITING] == 0, counts


def assert_stopped_at_decision(study) -> None:
    """Every trial's worker stopped at its last stored step: nothing trained past a prune."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED, TrialState.COMPLETE)):
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps)))
        if steps:
            assert trial.user_attrs["hpo:run"]["last_step"] == steps[-1]


def worker_runs(study) -> list[dict]:
    """Each trial's `hpo:run` record, in trial order."""
    return [t.user_attrs["hpo:run"] for t in sorted(study.trials, key=lambda t: t.number)]


def assert_warm_workers(study) -> set[int]:
    """Every worker process paid one cold start and kept its module state from trial to trial
    (objectives:counts_calls logs how many trials its process ran). Returns the pids."""
    from collections import defaultdict

    info = worker_runs(study)
    by_pid = defaultdict(list)
    for r in info:
        by_pid[r["pid"]].append(r)
    assert sum(r["cold_start"] for r in info) == len(by_pid)  # one cold start per process
    for trials in by_pid.values():
        # The module-level cache: each later trial in a process saw the earlier ones' entries.
        assert [r["metrics"]["calls"] for r in trials] == list(range(1, len(trials) + 1))
        assert trials[0]["cold_start"] and not any(r["cold_start"] for r in trials[1:])
        assert trials[0]["startup_cpu_s"] > 0 and trials[0]["startup_s"] > 0
    return set(by_pid)


def stop_when_file_appears(flag) -> threading.Event:
    """An event set once ``flag`` (a path) exists: an objective writes it to have its driver
    handed back at a chosen moment (a driver's ``stop``)."""
    stop = threading.Event()

    def watch():
        while not flag.exists():
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def expire_lease(store, name: str) -> None:
    """Make the study's job lease lapse now, as a serve that stopped renewing leaves it."""
    with store.engine.begin() as conn:
        conn.execute(jobs_table.update().where(jobs_table.c.study_name == name)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
