"""Resources per trial: fractional GPUs on Ray's logical GPUs, threads, memory, GPU checks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from optuna.trial import TrialState

from hpo.errors import HpoError
from hpo.run.driver import plan_placement

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
    """The timeout counts from the trial's launch, a cold worker's start included: 10 s leaves the
    0.1 s trial room on a loaded 2-core machine (a slow Ray worker start timed it out with 2 s,
    and once with 5 s: the 30 s trial's timeout then failed the study before the 0.1 s one ran)."""
    spec = make_spec(
        objective="objectives:sleepy", search_space={"seconds": {"type": "categorical", "choices": [0.1, 30.0]}},
        sampler="grid", n_trials=2, max_concurrent_trials=2, trial_timeout=10, max_failed_trials=0,
    )
    study, result = drive(store, spec)
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    assert [t.params["seconds"] for t in by_state[TrialState.COMPLETE]] == [0.1]
    failed = by_state[TrialState.FAIL]
    assert [t.params["seconds"] for t in failed] == [30.0]
    assert "exceeded trial_timeout of 10 s" in failed[0].user_attrs["hpo:error"]
    assert (failed[0].datetime_complete - failed[0].datetime_start).total_seconds() < 20  # not the 30 s
    assert result.state == "FAILED" and "max_failed_trials=0" in result.message


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
