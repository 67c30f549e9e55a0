"""Fault injection with real processes; every assertion is read back from the database."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import threading
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from hpo import api
from hpo.store.schema import trial_attempts

from conftest import IN_CI
from serves import start_serve, stop, wait_finished
from shell import hpo
from studies import make_spec


def attempts(url: str, study: str) -> list[dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(trial_attempts).where(trial_attempts.c.study_name == study)).all()
    engine.dispose()
    return [dict(r._mapping) for r in rows]


def assert_exact(study: optuna.Study, n: int) -> None:
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def assert_retried(study: optuna.Study, failed: list) -> None:
    """Each failed trial was retried once, with the same parameters, as the next attempt. A
    trial killed between its ask and the write of its parameters (one transaction, before its
    dispatch) has none stored and never ran: its retry samples its own."""
    for trial in failed:
        retries = [t for t in study.trials if t.user_attrs.get("hpo:retry_of") == trial.number]
        assert len(retries) == 1, trial.number
        if trial.params:
            assert retries[0].params == trial.params
        else:
            assert retries[0].params, "the retry of a trial without parameters sampled none"
        assert retries[0].user_attrs["hpo:attempt"] == trial.user_attrs["hpo:run"]["attempt"] + 1


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_killing_workers_five_times(ray_runtime, sqlite_url, tmp_path, backend):
    spec = make_spec(
        name="kills", objective="objectives:pid_writer", search_space={"x": {"type": "float", "low": 0, "high": 1}},
        objective_args={"workdir": str(tmp_path), "steps": 6, "delay": 0.15}, sampler="random",
        n_trials=20, max_concurrent_trials=2, max_retries=2,
    )
    killed: list[int] = []
    killed_pids: list[int] = []
    done = threading.Event()

    def trial(number: int):
        trials = optuna.load_study(study_name="kills", storage=sqlite_url).get_trials(deepcopy=False)
        return trials[number] if number < len(trials) else None

    def wait_for(condition) -> bool:
        deadline = time.monotonic() + 60
        while not condition() and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        return condition()

    def steps_reported(mark) -> int:
        try:
            return len(mark.read_text().splitlines())
        except OSError:  # the trial ended: its mark is gone
            return -1

    def killer() -> None:
        """Event-driven: kill a first attempt once it has reported a step, then wait until the
        driver has recorded that trial failed before choosing the next."""
        seen = set()
        while len(killed) < 5 and not done.is_set():
            marks = [(int(m.stem.split("-")[0]), int(m.stem.split("-")[1]), m) for m in sorted(tmp_path.glob("*.pid"))]
            fresh = [(n, pid, m) for n, pid, m in marks
                     if n not in seen and (t := trial(n)) is not None and "hpo:attempt" not in t.user_attrs]
            if not fresh:
                time.sleep(0.02)
                continue
            number, pid, mark = fresh[0]
            seen.add(number)
            if wait_for(lambda: steps_reported(mark) != 0) and steps_reported(mark) > 0:
                os.kill(pid, signal.SIGKILL)
                killed.append(number)
                killed_pids.append(pid)
                wait_for(lambda: trial(number).state == TrialState.FAIL)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        summary = api.run(spec, storage=sqlite_url, backend=backend)
    finally:
        done.set()
        thread.join()
    assert len(killed) == 5
    study = optuna.load_study(study_name="kills", storage=sqlite_url)
    assert_exact(study, 20)
    assert summary.state == "COMPLETED" and summary.complete + summary.pruned == 20
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.number for t in failed) == sorted(killed)
    for trial in failed:
        assert "Worker" in trial.user_attrs["hpo:error"] or "died" in trial.user_attrs["hpo:error"]
    assert_retried(study, failed)
    # Each killed worker was replaced by one new worker: the retries ran elsewhere, and no more
    # processes ran trials than the two slots plus one per kill (a killed worker may have run
    # trials before the one it died in).
    pids = {t.user_attrs["hpo:run"]["pid"] for t in study.trials if t.state != TrialState.FAIL}
    died_in = dict(zip(killed, killed_pids))  # trial number -> the pid killed under it
    retries = [t for t in study.trials if t.user_attrs.get("hpo:retry_of") in died_in and t.state != TrialState.FAIL]
    assert len(retries) == len(killed)
    assert all(t.user_attrs["hpo:run"]["pid"] != died_in[t.user_attrs["hpo:retry_of"]] for t in retries)
    assert len(pids | set(killed_pids)) <= 2 + len(killed_pids)
    rows = attempts(sqlite_url, "kills")
    assert len(rows) == 25  # 20 trials + 5 retries, one row per attempt
    assert sorted(r["trial_number"] for r in rows if r["state"] == "FAIL") == sorted(killed)
    assert all(r["state"] in ("COMPLETE", "PRUNED", "FAIL") and r["finished_at"] for r in rows)
    # `hpo trials` shows the attempts.
    shown = {row["number"]: row for row in api.trials("kills", storage=sqlite_url)}
    for trial in failed:
        retry = next(t for t in study.trials if t.user_attrs.get("hpo:retry_of") == trial.number)
        assert shown[retry.number]["attempt"] == 2 and shown[retry.number]["retry_of"] == trial.number


SLOW = """\
name: {name}
objective: builtin:branin
objective_args: {{steps: 5, delay: {delay}, checkpoints: true}}
search_space: branin
sampler: random
n_trials: {n}
max_concurrent_trials: 2
seed: 4
"""


def test_kill_9_of_serve_then_another_serve_finishes_exactly(tmp_path):
    url = f"sqlite:///{tmp_path}/crash.db"
    spec = tmp_path / "crash.yaml"
    # 2.5 s trials, killed while one that has stored reports started at most 1.5 s ago: reports
    # reach the database up to a flush interval (1 s) after they are made, so a trial seen with
    # reports can be near its end, and the one seen must still be running when the serve dies
    spec.write_text(SLOW.format(name="crash", n=10, delay=0.5))
    assert hpo("submit", str(spec), "--storage", url).returncode == 0
    first = start_serve(url, "--lease", "2", log=tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while api.status("crash", storage=url).complete < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        while not _young_with_reports(url, "crash", max_age=1.5) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    mid = api.status("crash", storage=url)
    assert mid.state == "RUNNING" and mid.running >= 1  # the dead owner left them behind
    second = start_serve(url, "--lease", "2", log=tmp_path / "second.log")
    try:
        states = wait_finished(url, ["crash"], timeout=180)
    finally:
        stop(second)
    assert states == {"crash": "COMPLETED"}, (tmp_path / "second.log").read_text()
    study = optuna.load_study(study_name="crash", storage=url)
    assert_exact(study, 10)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == mid.running
    assert all("its owner stopped" in t.user_attrs["hpo:error"] for t in failed)
    assert_retried(study, failed)
    # each retry continued from its checkpoint: one continuous curve, no stored step trained again
    for trial in failed:
        retry = next(t for t in study.trials if t.user_attrs.get("hpo:retry_of") == trial.number)
        assert sorted(retry.intermediate_values) == list(range(5)), (trial.number, retry.intermediate_values)
        assert retry.user_attrs["hpo:run"].get("resumed_steps", 0) >= max(trial.intermediate_values, default=-1) + 1
    assert any(t.intermediate_values for t in failed)  # at least one had trained when its serve died
    owners = {t.user_attrs["hpo:run"]["owner"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(owners) == 2  # both serves finished trials; none was told twice
    assert len({t.number for t in study.trials}) == len(study.trials)


def _young_with_reports(url: str, name: str, max_age: float) -> bool:
    """A running trial has stored a report (so it has saved a checkpoint before it) and started
    at most ``max_age`` seconds ago (by its start time in the database, written at once)."""
    study = optuna.load_study(study_name=name, storage=url)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    now = datetime.datetime.now()
    return any(t.intermediate_values and t.datetime_start is not None
               and (now - t.datetime_start).total_seconds() <= max_age for t in running)


def _postgres_restart_command() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


@pytest.mark.skipif(
    not (IN_CI or os.environ.get("HPO_TEST_RESTART_POSTGRES")),
    reason="restarts the machine's PostgreSQL: runs under CI (or with HPO_TEST_RESTART_POSTGRES=1)",
)
@pytest.mark.restarts_postgres
def test_postgres_restart_mid_study(postgres_url, tmp_path):
    spec = tmp_path / "pg.yaml"
    spec.write_text(SLOW.format(name="pg-restart", n=14, delay=0.2))
    assert hpo("submit", str(spec), "--storage", postgres_url).returncode == 0
    serve = start_serve(postgres_url, log=tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 120
        while api.status("pg-restart", storage=postgres_url).complete < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        restart = subprocess.run(_postgres_restart_command(), capture_output=True, text=True, timeout=120)
        assert restart.returncode == 0, restart.stderr
        states = wait_finished(postgres_url, ["pg-restart"], timeout=240)
    finally:
        code = stop(serve)
    log = (tmp_path / "serve.log").read_text()
    assert states == {"pg-restart": "COMPLETED"}, log
    assert code == 0, log
    study = optuna.load_study(study_name="pg-restart", storage=postgres_url)
    assert_exact(study, 14)
    # No result lost: every attempt that ended is recorded, and any failed one was retried.
    rows = attempts(postgres_url, "pg-restart")
    assert all(r["finished_at"] for r in rows)
    assert_retried(study, [t for t in study.trials if t.state == TrialState.FAIL and
                           (t.user_attrs.get("hpo:run") or {}).get("retried")])
