"""The store is shared with Optuna's own tools: what they do to it is input hpo must survive.

A study deleted with `optuna delete-study` (what optuna-dashboard's trash icon does) leaves
hpo's job row behind; every verb copes with that, before, during and after a run. Trials a
script adds, asks or enqueues while hpo runs the study are numbered around, counted and left to
their owner.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from hpo import api
from hpo.errors import StudyMissing
from hpo.run.service import Server
from hpo.store.database import Store
from hpo.store.jobs import Jobs, JobState

from shell import as_json, assert_one_line_error, hpo_many, ok
from studies import make_spec

OPTUNA = str(Path(sys.executable).parent / "optuna")


def delete_with_optuna_cli(url: str, name: str) -> None:
    subprocess.run([OPTUNA, "delete-study", "--storage", url, "--study-name", name], check=True,
                   capture_output=True, timeout=60)


def job_of(url: str, name: str):
    engine = sa.create_engine(url)
    try:
        return Jobs(engine).get(name)
    finally:
        engine.dispose()


def run_until_a_trial_completes(spec, sqlite_url: str) -> tuple[threading.Thread, dict]:
    """`api.run` of ``spec`` in a thread (local workers), returned once a first trial is COMPLETE
    and the run still goes on; the dict gets its "summary" or "error" when it ends."""
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = api.run(spec, storage=sqlite_url, backend="local")
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        try:  # read-only SQL: the test's own reads stay out of the run's way
            with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
                if conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]:
                    break
        except sqlite3.Error:  # not created yet
            pass
        time.sleep(0.05)
    assert thread.is_alive(), outcome  # the run is under way (not failed, not finished)
    return thread, outcome


def test_every_verb_copes_with_a_study_deleted_by_optunas_cli(sqlite_url):
    spec = make_spec(name="gone", n_trials=3)
    assert api.run(spec, storage=sqlite_url, backend="local").state == "COMPLETED"
    assert api.run(make_spec(name="kept", n_trials=2), storage=sqlite_url, backend="local").state == "COMPLETED"
    delete_with_optuna_cli(sqlite_url, "gone")

    listed, status, trials, export, resume, best = hpo_many(
        ["list", "--storage", sqlite_url, "--json"],
        ["status", "gone", "--storage", sqlite_url],
        ["trials", "gone", "--storage", sqlite_url],
        ["export", "gone", "--storage", sqlite_url],
        ["resume", "gone", "--storage", sqlite_url],
        ["best", "gone", "--storage", sqlite_url],
    )
    rows = {row["study_name"]: row for row in as_json(listed)}
    assert rows["gone"]["state"] == "MISSING" and "deleted outside hpo" in rows["gone"]["message"]
    assert rows["kept"]["state"] == "COMPLETED" and rows["kept"]["complete"] == 2
    for result in (status, trials, export, resume, best):
        assert_one_line_error(result, "study 'gone' was deleted outside hpo")
    assert job_of(sqlite_url, "gone").state == JobState.COMPLETED  # nothing was changed by reading

    (deleted,) = hpo_many(["delete", "gone", "--storage", sqlite_url, "--yes"])
    assert "deleted" in ok(deleted)
    assert job_of(sqlite_url, "gone") is None
    assert [row["study_name"] for row in as_json(hpo_many(["list", "--storage", sqlite_url, "--json"])[0])] == ["kept"]


def test_run_and_submit_replace_whats_left_of_a_deleted_study(sqlite_url):
    spec = make_spec(name="again", n_trials=2)
    api.run(spec, storage=sqlite_url, backend="local")
    optuna.delete_study(study_name="again", storage=sqlite_url)
    summary = api.run(make_spec(name="again", n_trials=3), storage=sqlite_url, backend="local")
    assert summary.state == "COMPLETED" and summary.complete + summary.pruned == 3  # a fresh study, not 2 + 1
    optuna.delete_study(study_name="again", storage=sqlite_url)
    assert api.submit(make_spec(name="again", n_trials=3), storage=sqlite_url) == "again"
    assert job_of(sqlite_url, "again").state == JobState.QUEUED
    assert optuna.load_study(study_name="again", storage=sqlite_url).trials == []


def test_a_study_deleted_while_it_runs_stops_with_one_line_and_no_worker_left(sqlite_url):
    spec = make_spec(name="doomed", n_trials=40, objective_args={"delay": 0.2})
    thread, outcome = run_until_a_trial_completes(spec, sqlite_url)
    optuna.delete_study(study_name="doomed", storage=sqlite_url)
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), StudyMissing), outcome
    job = job_of(sqlite_url, "doomed")
    assert job.state == JobState.CANCELLED and job.lease_expires_at is None
    assert "deleted outside hpo" in job.message


def test_serve_marks_a_queued_study_deleted_outside_hpo_failed_and_runs_the_rest(ray_runtime, sqlite_url):
    api.submit(make_spec(name="vanished", n_trials=2), storage=sqlite_url)
    api.submit(make_spec(name="present", n_trials=2), storage=sqlite_url)
    optuna.delete_study(study_name="vanished", storage=sqlite_url)
    store = Store(sqlite_url)
    stop = threading.Event()
    server = Server(store, poll_s=0.2, capacity=lambda: (2.0, 0.0))
    thread = threading.Thread(target=server.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = {name: job_of(sqlite_url, name).state for name in ("vanished", "present")}
            if states == {"vanished": JobState.FAILED, "present": JobState.COMPLETED}:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
        store.dispose()
    assert states == {"vanished": JobState.FAILED, "present": JobState.COMPLETED}
    vanished = job_of(sqlite_url, "vanished")
    assert "deleted outside hpo" in vanished.message and (vanished.crashes or 0) == 0


@pytest.mark.parametrize("verb", ["cancel", "delete"])
def test_cancel_and_delete_of_a_deleted_queued_study(sqlite_url, verb):
    api.submit(make_spec(name="q", n_trials=2), storage=sqlite_url)
    optuna.delete_study(study_name="q", storage=sqlite_url)
    (result,) = hpo_many([verb, "q", "--storage", sqlite_url, "--yes"] if verb == "delete" else [verb, "q", "--storage", sqlite_url])
    ok(result)
    job = job_of(sqlite_url, "q")
    assert (job is None) if verb == "delete" else (job.state == JobState.CANCELLED)


def test_trials_optunas_tools_add_while_hpo_runs_the_study_count_and_are_left_to_their_owner(sqlite_url, tmp_path):
    """While `hpo run` drives a study, a script (or optuna-dashboard) adds a finished trial, asks
    one for itself and enqueues one. hpo numbers around them, runs the enqueued one, counts the
    added one towards the budget (as it counts trials added before a run) and its value as the
    best, and leaves the asked one RUNNING for its asker, who can still tell it. (hpo's trials
    after the first two wait for a gate the script opens when it is done: the run cannot end
    before the script's changes land, however slow the machine.)"""
    gate = tmp_path / "gate"
    spec = make_spec(name="shared", n_trials=10, objective_args={"delay": 0.1, "gate": str(gate), "gate_from": 2})
    thread, outcome = run_until_a_trial_completes(spec, sqlite_url)
    try:
        study = optuna.load_study(study_name="shared", storage=sqlite_url)
        dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0), "y": optuna.distributions.FloatDistribution(-1.0, 1.0)}
        added = study.add_trial(optuna.trial.create_trial(params={"x": 0.3, "y": -0.1}, distributions=dists, value=-1.0))
        asked = study.ask(dists)
        study.enqueue_trial({"x": 0.123, "y": 0.5})
    finally:
        gate.touch()
    thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome

    summary = outcome["summary"]
    assert summary.state == "COMPLETED" and summary.complete + summary.pruned == 10
    assert summary.best_value == -1.0 and summary.running == 1
    trials = optuna.load_study(study_name="shared", storage=sqlite_url).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no number twice
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 10  # nine of hpo's and the one added
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == [asked.number]
    ran_enqueued = [t for t in finished if t.params == {"x": 0.123, "y": 0.5}]
    assert len(ran_enqueued) == 1 and "hpo:run" in ran_enqueued[0].user_attrs
    assert added is None and [t.value for t in trials if "hpo:run" not in t.user_attrs and t.state.is_finished()] == [-1.0]
    study.tell(asked, 0.5)  # the asker's trial was left to the asker
    assert optuna.load_study(study_name="shared", storage=sqlite_url).trials[asked.number].state == TrialState.COMPLETE
