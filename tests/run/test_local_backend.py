"""The local backend: long-lived worker processes of this machine, no Ray (single-machine `hpo run`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import api
from hpo.errors import HpoError
from hpo.run.driver import StudyDriver
from hpo.run.local_backend import LocalBackend
from hpo.spec.study import parse_spec

from conftest import TESTS_DIR
from shell import HPO
from studies import assert_exact_budget, assert_stopped_at_decision, assert_warm_workers, make_spec, new_study

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}



def drive_local(store, spec, **kwargs):
    study = new_study(store, spec)
    result = StudyDriver(study, spec, poll_interval=0.2, backend=LocalBackend(**kwargs)).run()
    return study, result


def test_twenty_trials_on_two_slots_run_in_two_processes_that_keep_their_module_state(store):
    spec = make_spec(objective="objectives:counts_calls", search_space=X, n_trials=20, sampler="random")
    study, result = drive_local(store, spec, cpus=2)
    assert result.state.value == "COMPLETED"
    assert_exact_budget(study, 20)
    pids = assert_warm_workers(study)
    assert len(pids) == 2 and os.getpid() not in pids


def test_pruning_decisions_reach_the_worker_at_the_reported_step(store):
    spec = make_spec(n_trials=12, pruner={"name": "median", "options": {"n_startup_trials": 2}},
                     objective_args={"steps": 6})
    study, _ = drive_local(store, spec, cpus=2)
    assert_exact_budget(study, 12)
    assert any(t.state == TrialState.PRUNED for t in study.trials)
    assert_stopped_at_decision(study)  # no worker trained past the step it was stopped at


def test_trial_timeout_ends_the_worker_and_the_next_trial_gets_a_new_one(store):
    spec = make_spec(objective="objectives:sleepy", search_space={"seconds": {"type": "categorical", "choices": [60]}},
                     n_trials=3, max_concurrent_trials=1, trial_timeout=1, max_failed_trials=2)
    study, result = drive_local(store, spec, cpus=1)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    timed_out = [t for t in failed if "trial_timeout" in t.user_attrs.get("hpo:error", "")]
    assert len(timed_out) == 3  # one more than max_failed_trials stops the study
    assert result.state.value == "FAILED"
    assert not _children()  # each sleeping worker was ended, not left to sleep its minute


def test_an_objective_that_cannot_be_imported_is_one_line_and_no_worker_is_left(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n\ndef objective(params, reporter):\n    return 1\n")
    spec = parse_spec({"name": "broken", "objective": "broken:objective", "search_space": X, "n_trials": 2},
                      base_dir=tmp_path)
    with pytest.raises(HpoError, match="cannot be imported: ModuleNotFoundError: No module named 'no_such_module_xyz'"):
        api.run(spec, storage=f"sqlite:///{tmp_path}/s.db", backend="local")
    assert "broken" not in sys.modules  # imported in the workers only
    assert not (tmp_path / "s.db").exists() or not optuna.get_all_study_names(f"sqlite:///{tmp_path}/s.db")
    assert not _children()


def test_auto_runs_on_ray_only_when_asked_to_or_for_gpus(monkeypatch):
    monkeypatch.delenv("HPO_RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a new local Ray runtime would have no GPUs
    cpu = make_spec(search_space=X)
    gpu = make_spec(search_space=X, resources={"cpu": 1, "gpu": 0.5})
    fallback = make_spec(search_space=X, resources={"cpu": 1, "gpu": 0.5, "cpu_fallback": True})
    connected = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    assert api.choose_backend(cpu) == ("ray" if connected else "local")
    assert api.choose_backend(cpu, ray_address="127.0.0.1:6380") == "ray"
    assert api.choose_backend(gpu, ray_address="127.0.0.1:6380") == "ray"  # the cluster is asked once joined
    assert api.choose_backend(cpu, "ray") == "ray"
    if connected:  # this process's Ray runtime places the GPUs (or refuses them)
        assert api.choose_backend(gpu) == api.choose_backend(fallback) == "ray"
    else:
        with pytest.raises(HpoError, match="gpu: 0.5 per trial but this machine has no GPUs"):
            api.choose_backend(gpu)
        with pytest.raises(HpoError, match="this machine has no GPUs"):
            api.choose_backend(gpu, "ray")
        assert api.choose_backend(fallback) == "local"
        assert api.choose_backend(fallback, "ray") == "ray"  # as asked: Ray's runtime then runs them on CPUs
    with pytest.raises(HpoError, match="runs no GPU trials"):
        api.choose_backend(gpu, "local")
    with pytest.raises(HpoError, match="drop --ray-address"):
        api.choose_backend(cpu, "local", "127.0.0.1:6380")


def _children() -> list[int]:
    """Live local worker processes started by this one (zombies excluded; the session's Ray
    processes are children too, and not what is counted)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"workers.local_worker" in cmdline:
            out.append(int(stat.parent.name))
    return out


SPEC = """\
name: {name}
objective: objectives:{objective}
objective_args: {args}
search_space: {{x: {{type: float, low: 0, high: 1}}}}
sampler: random
n_trials: {n}
max_concurrent_trials: 2
seed: 3
"""


def _spec_file(tmp_path: Path, name: str, objective: str, args: dict, n: int) -> Path:
    """A spec next to a copy of tests/objectives.py (the CLI imports objectives from the spec's folder)."""
    shutil.copy(TESTS_DIR / "objectives.py", tmp_path / "objectives.py")
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, objective=objective, args=json.dumps(args), n=n))
    return path


def test_hpo_run_on_one_machine_runs_trials_in_two_plain_processes(tmp_path):
    dump = tmp_path / "env.txt"
    # each trial holds its worker 0.5 s: a trial that ended in a millisecond would free the first
    # worker before the next trial is launched, which then (rightly) goes to that warm worker
    spec = _spec_file(tmp_path, "plain", "dump_environment", {"path": str(dump), "hold": 0.5}, 4)
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_RAY_ADDRESS", "HPO_BACKEND", "HPO_STORAGE")}
    done = subprocess.run([HPO, "run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["timings"]["backend"] == "local"  # auto: no address, no GPU
    assert "workers.local_worker" in dump.read_text().splitlines()[-1]
    assert summary["compute"]["workers"]["processes"] == 2 and summary["complete"] == 4


def test_killing_hpo_run_leaves_no_worker_training(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = _spec_file(tmp_path, "driver-killed", "pid_writer", {"workdir": str(marks), "steps": 200,
                                                                      "delay": 0.1}, 4)
    proc = subprocess.Popen([HPO, "run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", "--backend", "local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(marks.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(m.stem.split("-")[1]) for m in marks.glob("*.pid")]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
