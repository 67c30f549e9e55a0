"""The report channel: one actor per driver process, one mailbox per study run, on real Ray."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import ray
from optuna.trial import TrialState

from workers.channel import ReportChannel, process_channel

from studies import HARTMANN6, assert_exact_budget, assert_stopped_at_decision, drive, make_spec

X01 = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def test_mailboxes_keep_studies_apart(ray_runtime):
    channel = ReportChannel.remote()
    waiting_a = channel.report.remote("a", "t1", 0, 0.5)
    waiting_b = channel.report.remote("b", "t1", 0, 0.7)
    assert ray.get(channel.report.remote("b", "t2", 0, 0.9, False)) is False  # queued, not waited for
    ray.get(channel.began.remote("b", "t3"))
    assert ray.get(channel.take.remote("a", 5.0)) == ([("t1", 0, 0.5)], [])
    reports, began = ray.get(channel.take.remote("b", 5.0))
    assert sorted(reports) == [("t1", 0, 0.7), ("t2", 0, 0.9)] and began == ["t3"]
    ray.get(channel.decide.remote("a", [("t1", 0, True)]))
    assert ray.get(waiting_a, timeout=10) is True
    ray.get(channel.decide.remote("b", [("t1", 0, False)]))
    assert ray.get(waiting_b, timeout=10) is False
    ray.kill(channel)


def test_a_closed_mailbox_stops_its_workers_and_stays_closed(ray_runtime):
    channel = ReportChannel.remote()
    waiting = channel.report.remote("s", "t1", 3, 1.0)
    assert ray.get(channel.take.remote("s", 5.0)) == ([("t1", 3, 1.0)], [])
    ray.get(channel.close.remote("s"))
    assert ray.get(waiting, timeout=10) is True  # the worker waiting for a decision is told to stop
    assert ray.get(channel.report.remote("s", "t2", 0, 1.0, False)) is True  # so is a late one
    ray.get(channel.began.remote("s", "t3"))  # dropped: nobody counts its time
    assert ray.get(channel.take.remote("s", 30.0), timeout=10) == ([], [])  # no long wait on a closed box
    assert ray.get(channel.boxes.remote()) == 0
    ray.kill(channel)


def test_one_channel_per_process_and_a_dead_one_is_replaced(ray_runtime):
    first = process_channel()
    assert process_channel() is first
    ray.kill(first)  # asynchronous: a call sent right after it can still be answered
    deadline = time.monotonic() + 60
    while True:  # until the actor is gone
        try:
            ray.get(first.boxes.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            break
        assert time.monotonic() < deadline, "a killed channel still answers after 60 s"
        time.sleep(0.05)
    second = process_channel()
    assert second is not first
    assert ray.get(second.report.remote("box", "t", 0, 1.0, False)) is False


def test_a_channel_slow_to_answer_is_kept_for_the_studies_that_use_it(ray_runtime, monkeypatch):
    """A channel still starting (or starved on a busy machine) is not dead: replacing it would
    kill it under every other study of the process (a serve's second study once did that to the
    first, whose driver then stopped with ActorDiedError)."""
    import workers.channel as channel_module

    first = process_channel()
    ray.get(first.boxes.remote(), timeout=60)
    monkeypatch.setattr(channel_module, "PING_TIMEOUT_S", 0.0)  # no ping can be answered in time
    assert process_channel() is first
    assert ray.get(first.report.remote("kept", "t", 0, 1.0, False), timeout=30) is False  # still alive


def _ppid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):  # the process ended meanwhile
        return None


def _channel_processes() -> int:
    """Live ReportChannel actor processes of this test session's Ray runtime: titled so by Ray,
    and children of a raylet that this process started (another Ray on the machine, e.g. a
    second test run, has channels of its own)."""
    stats = {int(p.parent.name): p for p in Path("/proc").glob("[0-9]*/stat")}
    ours = {pid for pid, stat in stats.items() if _ppid(stat) == os.getpid()}  # raylet, gcs_server, ...
    count = 0
    for pid, stat in stats.items():
        try:
            titled = (stat.parent / "cmdline").read_bytes().startswith(b"ray::ReportChannel")
        except OSError:
            continue
        count += titled and _ppid(stat) in ours
    return count


def test_studies_running_at_once_share_the_channel_and_prune_correctly(ray_runtime, store):
    """As under `hpo serve`: two drivers in threads of one process, each with its own pruner;
    every decision reaches its own study's worker, and no study adds a channel process."""
    ray.get(process_channel().boxes.remote())  # this process's channel runs before the studies start
    seen, done = [], threading.Event()

    def watch():  # how many channel processes exist while the studies run
        while not done.wait(0.1):
            seen.append(_channel_processes())

    results = {}

    def run(name, upper):
        spec = make_spec(
            name=name, objective="builtin:hartmann6", search_space=HARTMANN6, sampler="random", seed=3,
            n_trials=8, max_concurrent_trials=1, objective_args={"steps": 4, "noise": 0.0},
            pruner={"name": "threshold", "options": {"upper": upper}},
        )
        results[name] = drive(store, spec)[0]

    threads = [threading.Thread(target=run, args=(name, upper)) for name, upper in (("low", 0.2), ("high", 0.5))]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    watcher.join()
    assert set(results) == {"low", "high"}
    for name, upper in (("low", 0.2), ("high", 0.5)):
        study = results[name]
        assert_exact_budget(study, 8)
        assert_stopped_at_decision(study)
        for trial in study.trials:  # curves only go down: pruned at step 0 exactly when above
            above = trial.intermediate_values[0] > upper
            assert trial.state == (TrialState.PRUNED if above else TrialState.COMPLETE), (name, trial.number)
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_a_channel_killed_mid_study_is_replaced_and_its_running_trials_run_again(ray_runtime, store, tmp_path, pruner):
    """The channel dies (killed, out of memory) while trials report to it: the study goes on with
    a new channel, the trials that were running stop at their next report and are run again with
    the same parameters (max_retries 0: a handed-back trial uses no retry), the budget stays exact
    and nothing is counted as failed. Without a pruner reports are not waited for; with one each
    waits for its decision: both ways notice the dead channel."""
    spec = make_spec(
        name=f"channel-killed-{pruner}", objective="objectives:pid_writer", search_space=X01, sampler="random",
        objective_args={"workdir": str(tmp_path), "steps": 6, "delay": 0.15}, n_trials=8,
        max_concurrent_trials=2, max_retries=0, max_failed_trials=0, pruner={"name": pruner},
    )
    killed: list = []
    done = threading.Event()

    def steps_reported(mark: Path) -> int:
        try:
            return len(mark.read_text().splitlines())
        except OSError:  # the trial ended: its mark is gone
            return 0

    def killer() -> None:  # once a trial has reported and has steps left: kill the channel
        while not done.is_set():
            if any(1 <= steps_reported(mark) <= 3 for mark in tmp_path.glob("*.pid")):
                killed.append(process_channel())
                ray.kill(killed[0], no_restart=True)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        study, result = drive(store, spec)
    finally:
        done.set()
        thread.join()
    assert killed, "no trial reported a step"
    assert result.state.name == "COMPLETED", result
    assert result.counts.failed == 0
    assert_exact_budget(study, 8)
    handed_back = [t for t in study.trials if t.state == TrialState.FAIL]
    assert 1 <= len(handed_back) <= 2 and result.counts.stopped == len(handed_back)
    for trial in handed_back:
        assert trial.user_attrs["hpo:stopped"] is True
        assert trial.user_attrs["hpo:error"].startswith("ChannelLost: the report channel died during trial")
        again = [t for t in study.trials if t.user_attrs.get("hpo:retry_of") == trial.number]
        assert len(again) == 1 and again[0].params == trial.params
        assert again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    replacement = process_channel()
    assert replacement is not killed[0]
    assert ray.get(replacement.boxes.remote(), timeout=30) == 0  # alive, and the study's mailbox closed
