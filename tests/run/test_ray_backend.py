"""Long-lived trial workers on a real Ray runtime: reuse, module-level state, identity, deaths."""

from __future__ import annotations

import sys
import time

import pytest
import ray

from hpo.errors import HpoError
from hpo.run.backend import Slot
from hpo.run.driver import StudyDriver, plan_placement
from hpo.run.ray_backend import POOL, RayBackend, prepare_workers
from hpo.spec.study import parse_spec
from workers.channel import process_channel
from workers.runner import TrialTask

from studies import assert_exact_budget, assert_warm_workers, drive, make_spec, new_study, worker_runs

X = {"x": {"type": "float", "low": 0.0, "high": 1.0}}



def test_twenty_trials_on_two_slots_start_at_most_three_processes(ray_runtime, store):
    spec = make_spec(objective="objectives:counts_calls", search_space=X, n_trials=20, sampler="random")
    study, _ = drive(store, spec)
    assert_exact_budget(study, 20)
    pids = assert_warm_workers(study)
    assert 1 <= len(pids) <= 3, pids


def _train_module(folder, value: float) -> None:
    folder.mkdir()
    (folder / "train.py").write_text(f"def objective(params, reporter):\n    return {value}\n")


def test_studies_whose_modules_share_a_name_never_share_a_worker(ray_runtime, store, tmp_path):
    _train_module(tmp_path / "a", 1.0)
    _train_module(tmp_path / "b", 2.0)
    values = {}
    for name in ("a", "b"):
        spec = parse_spec({"name": f"same-name-{name}", "objective": "train:objective", "search_space": X,
                           "n_trials": 4, "max_concurrent_trials": 2}, base_dir=tmp_path / name)
        study = new_study(store, spec)
        # Workers kept after the run: the next study gets them only if it runs the same code.
        StudyDriver(study, spec, poll_interval=0.2, backend=RayBackend(keep_idle_s=60)).run()
        values[name] = {t.value for t in study.trials}
    POOL.reap(0)
    assert values == {"a": {1.0}, "b": {2.0}}


def test_a_next_study_of_the_same_kind_starts_on_warm_workers(ray_runtime, store):
    pids = []
    for name in ("first", "second"):
        spec = make_spec(name=name, objective="objectives:counts_calls", search_space=X, n_trials=4)
        study = new_study(store, spec)
        StudyDriver(study, spec, poll_interval=0.2, backend=RayBackend(keep_idle_s=60)).run()
        pids.append({r["pid"]: r["cold_start"] for r in worker_runs(study)})
    POOL.reap(0)
    assert POOL.idle() == 0
    assert set(pids[1]) <= set(pids[0]) and not any(pids[1].values())


def test_an_edited_objective_file_never_runs_on_a_worker_that_imported_the_old_one(ray_runtime, store, tmp_path):
    _train_module(tmp_path / "a", 1.0)
    values = []
    for value in (1.0, 22.0):  # another size too: Python's bytecode cache keys on size and seconds
        (tmp_path / "a" / "train.py").write_text(f"def objective(params, reporter):\n    return {value}  # edited\n")
        spec = parse_spec({"name": f"edited-{value:g}", "objective": "train:objective", "search_space": X,
                           "n_trials": 2, "max_concurrent_trials": 2}, base_dir=tmp_path / "a")
        study = new_study(store, spec)
        StudyDriver(study, spec, poll_interval=0.2, backend=RayBackend(keep_idle_s=60)).run()
        values.append({t.value for t in study.trials})
    POOL.reap(0)
    assert values == [{1.0}, {22.0}]


def test_a_study_of_another_kind_ends_the_idle_workers(ray_runtime, store):
    spec = make_spec(name="kept", objective="objectives:counts_calls", search_space=X, n_trials=2)
    StudyDriver(new_study(store, spec), spec, poll_interval=0.2, backend=RayBackend(keep_idle_s=60)).run()
    assert POOL.idle() == 2
    other = make_spec(name="other", search_space=X, n_trials=2)  # objectives:curve: another kind
    StudyDriver(new_study(store, other), other, poll_interval=0.2).run()
    assert POOL.idle() == 0  # the kept ones were ended when the other kind opened, its own at its end


def test_hpo_run_checks_the_objective_in_a_worker_and_ends_the_workers_when_refused(ray_runtime, tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n\ndef objective(params, reporter):\n    return 1\n")
    spec = parse_spec({"name": "broken", "objective": "broken:objective", "search_space": X, "n_trials": 2},
                      base_dir=tmp_path)
    with pytest.raises(HpoError, match="cannot be imported: ModuleNotFoundError: No module named 'no_such_module_xyz'"):
        prepare_workers(spec, plan_placement(spec))
    assert "broken" not in sys.modules  # imported in the workers only
    assert POOL.idle() == 0


def test_a_worker_the_cluster_cannot_place_is_a_clear_error(ray_runtime):
    spec = make_spec(search_space=X, resources={"cpu": 1, "memory": "100TiB"})
    with pytest.raises(HpoError, match=r"no Ray worker with cpu: 1, memory: \d+ bytes started within 3 s"):
        prepare_workers(spec, plan_placement(spec), timeout_s=3)
    assert POOL.idle() == 0


def test_a_trial_whose_began_notice_died_with_the_channel_counts_as_begun(ray_runtime, tmp_path):
    """The report channel dies while the worker still imports the objective (2 s): the worker's
    notice that it began the trial goes to the dead channel, so the backend says the trial began
    once it sees the channel dead, and the trial's trial_timeout still applies."""
    (tmp_path / "slow_start.py").write_text(
        "import time\n\ntime.sleep(2)\n\n\ndef objective(params, reporter):\n    time.sleep(60)\n")
    slot = Slot(objective="slow_start:objective", import_path=str(tmp_path), cpu=1)
    backend = RayBackend(poll_interval=0.2)
    backend.open("began-lost/0", slot)
    try:
        backend.launch(TrialTask(key="t-0", trial_number=0, objective=slot.objective, params={},
                                 import_path=slot.import_path, box="began-lost/0"))
        ray.kill(process_channel(), no_restart=True)
        began: list[str] = []
        deadline = time.monotonic() + 60
        while not began and time.monotonic() < deadline:
            began += backend.poll(0.5).began
        assert began == ["t-0"]
    finally:
        backend.close()
    POOL.reap(0)
