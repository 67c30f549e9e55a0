"""Resources per trial: fractional GPUs on Ray's logical GPUs, threads, memory, GPU checks."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from optuna.trial import TrialState

from hpo.errors import HpoError
from hpo.run.driver import plan_placement
from hpo.spec.study import parse_spec

from studies import assert_exact_budget, drive, make_spec


def test_fractional_gpus_share_two_logical_gpus(ray_runtime, store, tmp_path):
    # The session's Ray has 2 logical GPUs; gpu: 0.5 lets four trials run at once, two per GPU.
    barrier = tmp_path / "barrier"  # a folder of its own: the store's files sit in tmp_path
    barrier.mkdir()
    spec = make_spec(
        objective="objectives:gpu_probe", search_space={"x": {"type": "float", "low": 0, "high": 1}},
        objective_args={"barrier": str(barrier), "parties": 4},
        resources={"cpu": 0.5, "gpu": 0.5, "memory": "64MiB"}, max_concurrent_trials=None, n_trials=4,
    )
    assert plan_placement(spec).concurrency == 4
    study, _ = drive(store, spec)
    assert_exact_budget(study, 4)
    runs = [t.user_attrs["hpo:run"]["metrics"] for t in study.trials]
    # All four overlapped in time...
    assert max(r["start"] for r in runs) < min(r["end"] for r in runs)
    # ...each saw one GPU in CUDA_VISIBLE_DEVICES, two trials per GPU.
    assert sorted(r["gpu"] for r in runs) == [0.0, 0.0, 1.0, 1.0]
    assert all(r["threads"] == 1 for r in runs)  # torch.set_num_threads(max(1, int(cpu)))


def test_cpu_count_sets_torch_threads(ray_runtime, store):
    spec = make_spec(
        objective="objectives:gpu_probe", search_space={"x": {"type": "float", "low": 0, "high": 1}},
        resources={"cpu": 2}, n_trials=1,
    )
    study, _ = drive(store, spec)
    metrics = study.trials[0].user_attrs["hpo:run"]["metrics"]
    assert metrics["threads"] == 2 and metrics["gpu"] == -1.0  # no GPU asked, none visible


def test_more_gpu_than_the_cluster_has_is_refused(ray_runtime):
    with pytest.raises(HpoError, match="gpu: 3 per trial but the Ray cluster has 2 GPUs"):
        plan_placement(make_spec(resources={"gpu": 3}))


def test_memory_sizes_parse():
    assert make_spec(resources={"memory": "2GiB"}).resources.memory == 2 * 1024**3
    assert make_spec(resources={"memory": "512MB"}).resources.memory == 512 * 1000**2
    assert make_spec(resources={"memory": 1000}).resources.memory == 1000
    with pytest.raises(HpoError, match="field 'resources.memory'"):
        make_spec(resources={"memory": "lots"})


def test_trial_timeout_fails_the_trial_with_the_reason(ray_runtime, store):
    """The timeout counts from when the worker began the trial, after its cold start (the
    error says it began: its notice came through the report channel). The first failure stops
    the study (max_failed_trials=0), so the 0.1 s trial must have begun within 10 s of the 30 s
    one's beginning: both workers start at once."""
    spec = make_spec(
        objective="objectives:sleepy", search_space={"seconds": {"type": "categorical", "choices": [0.1, 30.0]}},
        sampler="grid", n_trials=2, max_concurrent_trials=2, trial_timeout=10, max_failed_trials=0,
    )
    study, result = drive(store, spec)
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    assert [t.params["seconds"] for t in by_state[TrialState.COMPLETE]] == [0.1]
    failed = by_state[TrialState.FAIL]
    assert [t.params["seconds"] for t in failed] == [30.0]
    assert failed[0].user_attrs["hpo:error"] == "trial exceeded trial_timeout of 10 s"
    # cut 10 s after it began, not after its 30 s: both workers started together, so it ended
    # about 10 s after the 0.1 s trial did (from its launch it would be 10 s plus a cold start)
    [done] = by_state[TrialState.COMPLETE]
    assert (failed[0].datetime_complete - done.datetime_complete).total_seconds() < 20
    assert result.state == "FAILED" and "max_failed_trials=0" in result.message


SLOW_IMPORT = """\
import time

time.sleep({seconds})  # a module that builds its data at import, as training scripts do


def objective(params, reporter):
    time.sleep(params["x"])
    return params["x"]
"""


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_workers_slow_start_does_not_count_against_trial_timeout(request, store, tmp_path, backend):
    """A 2 s trial_timeout with an objective whose import takes 4 s: the first trial of each
    worker pays the import and completes; the worker's start is recorded as start-up."""
    if backend == "ray":
        request.getfixturevalue("ray_runtime")
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT.format(seconds=4))
    spec = parse_spec({"name": "slow-import", "objective": "slow_import:objective", "n_trials": 3,
                       "search_space": {"x": {"type": "categorical", "choices": [0.2]}},
                       "max_concurrent_trials": 1, "trial_timeout": 2, "max_failed_trials": 0}, base_dir=tmp_path)
    study, result = drive(store, spec, local=backend == "local")
    assert result.state == "COMPLETED", [t.user_attrs.get("hpo:error") for t in study.trials]
    assert_exact_budget(study, 3)
    runs = [t.user_attrs["hpo:run"] for t in study.trials]
    assert [r["cold_start"] for r in runs] == [True, False, False]
    assert runs[0]["startup_s"] >= 4


def test_a_worker_that_never_begins_its_trial_fails_it(store, tmp_path):
    """An import that hangs: with a trial_timeout, the trial fails once its worker had the
    start-up allowance (3 s here, 300 s by default) without beginning it, and the worker ends."""
    (tmp_path / "hung_import.py").write_text(SLOW_IMPORT.format(seconds=120))
    spec = parse_spec({"name": "hung-import", "objective": "hung_import:objective", "n_trials": 1,
                       "search_space": {"x": {"type": "categorical", "choices": [0.2]}},
                       "trial_timeout": 1, "max_failed_trials": 0}, base_dir=tmp_path)
    started = time.monotonic()
    study, result = drive(store, spec, local=True, worker_start_s=3)
    assert time.monotonic() - started < 60  # not the import's 120 s
    assert result.state == "FAILED"
    [trial] = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["hpo:error"] == ("trial never began: its worker was still starting (placement, process "
                                             "start, imports, module-level data) 3 s after the trial's launch")


GPU_SPEC = """\
name: gpu-study
objective: builtin:branin
search_space: branin
n_trials: 2
resources: {gpu: 1%s}
"""


def test_gpu_on_a_machine_without_gpus_is_refused_or_runs_on_local_cpus(tmp_path):
    """A new local Ray runtime on a machine without GPUs (none visible, whatever the hardware)
    would have none: refused before Ray starts, or run on local CPU workers when allowed."""
    from shell import HPO, assert_one_line_error

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HPO_RAY_ADDRESS", None)
    spec = tmp_path / "gpu.yaml"
    spec.write_text(GPU_SPEC % "")
    db = tmp_path / "gpu.db"
    result = subprocess.run([HPO, "run", str(spec), "--storage", f"sqlite:///{db}"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert_one_line_error(result, "gpu: 1 per trial but this machine has no GPUs for the Ray runtime hpo would start")
    assert not db.exists()

    spec.write_text(GPU_SPEC % ", cpu_fallback: true")
    result = subprocess.run([HPO, "run", str(spec), "--storage", f"sqlite:///{db}", "--json"], capture_output=True,
                            text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] == 2 and summary["timings"]["backend"] == "local"
    assert summary["message"] == "this machine has no GPUs: trials run on CPUs (cpu_fallback)"


def test_a_cluster_without_gpus_refuses_or_falls_back_to_cpus():
    no_gpus = (2.0, 0.0)
    with pytest.raises(HpoError, match="gpu: 1 per trial but the Ray cluster has no GPUs"):
        plan_placement(make_spec(resources={"gpu": 1}), no_gpus)
    placement = plan_placement(make_spec(resources={"gpu": 1, "cpu_fallback": True}), no_gpus)
    assert placement.gpu == 0 and placement.note == "the Ray cluster has no GPUs: trials run on CPUs (cpu_fallback)"
    with pytest.raises(HpoError, match="cpu: 4 per trial but this machine has 2 CPUs"):
        plan_placement(make_spec(resources={"cpu": 4}), no_gpus, "this machine")
