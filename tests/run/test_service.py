"""Service mode with real processes: submit, several `hpo serve` replicas on PostgreSQL, a Ray
cluster of two nodes, graceful stop, and the SQLite one-serve rule."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo import api

from conftest import TESTS_DIR
from ray_cluster import processes_under, ray_start_cluster
from serves import (
    finish_with_a_new_serve,
    serve_slow_study,
    serving_here,
    start_serve,
    stop,
    wait_complete,
    wait_finished,
    wait_serving,
    write_spec,
)
from shell import SECRET, assert_one_line_error, hpo
from studies import make_spec


def test_two_replicas_on_postgres_run_each_study_once(postgres_url, tmp_path):
    """Both replicas serve before the studies are submitted (a replica whose Ray starts first
    could otherwise run all six before the other is up), then each study runs under one."""
    names = [f"svc-{i}" for i in range(6)]
    replicas = [start_serve(postgres_url, "--max-studies", "2", log=tmp_path / f"serve{i}.log") for i in range(2)]
    try:
        for i, replica in enumerate(replicas):
            wait_serving(replica, tmp_path / f"serve{i}.log")
        for i, name in enumerate(names):  # `hpo submit` from the shell is tested in test_cli_verbs
            assert api.submit(write_spec(tmp_path, name, seed=i), storage=postgres_url) == name
        states = wait_finished(postgres_url, names, timeout=240)
    finally:
        codes = [stop(p) for p in replicas]
    logs = "\n".join((tmp_path / f"serve{i}.log").read_text() for i in range(2))
    assert states == {n: "COMPLETED" for n in names}, logs
    assert codes == [0, 0], logs
    owners_seen = set()
    for name in names:
        study = optuna.load_study(study_name=name, storage=postgres_url)
        trials = study.get_trials(deepcopy=False)
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
        assert not any(t.state == TrialState.RUNNING for t in trials)
        owners = {t.user_attrs["hpo:run"].get("owner", repr((t.state, t.user_attrs))) for t in trials}
        assert len(owners) == 1, f"{name} ran under {owners}"  # never two replicas at once
        owners_seen |= owners
    assert len(owners_seen) == 2, "both replicas should have run studies"
    assert logs.count("running study") == 6


def test_serve_refuses_a_second_replica_on_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path}/one.db"
    first = start_serve(url, log=tmp_path / "first.log")
    try:
        wait_serving(first, tmp_path / "first.log")
        second = hpo("serve", "--storage", url, timeout=60)
        assert_one_line_error(second, "SQLite allows one serve per file")
    finally:
        assert stop(first) == 0


def test_sigterm_hands_running_trials_back_and_the_next_serve_finishes(ray_runtime, tmp_path):
    url = f"sqlite:///{tmp_path}/term.db"
    serve = serve_slow_study(tmp_path, url, n=10, seed=1, delay=0.25)
    try:
        wait_complete(url, "slow", 2)
    finally:
        assert stop(serve) == 0
    mid = api.status("slow", storage=url)
    assert mid.state == "INTERRUPTED" and mid.running == 0 and mid.complete < 10
    assert mid.stopped >= 1 and mid.failed == 0  # the running trials were handed back, not failed
    finish_with_a_new_serve(url, 10)


def test_the_readmes_cluster_recipe_runs_a_study_on_both_nodes(tmp_path):
    """Two real `ray start --block` nodes on loopback (token auth exported, own temp dir), a
    study across them, nodes named by host in `hpo trials`, and SIGTERM leaves no Ray process.
    The nodes were started with database credentials in their environment (which their workers
    inherit): a trial still finds none."""
    # short: Ray's Unix sockets live under it (a path of pytest's tmp_path is too long for them)
    temp_dir = Path(tempfile.mkdtemp(prefix="hpo-ray-", dir="/tmp"))
    url = f"sqlite:///{tmp_path}/c.db"
    leaked = {"PGPASSWORD": SECRET, "OTHER_DB": f"postgresql://hpo:{SECRET}@db.internal/hpo"}
    with ray_start_cluster(temp_dir, node_env=leaked) as address:
        spec = write_spec(tmp_path, "cluster", n=8)
        result = hpo("run", str(spec), "--storage", url, "--ray-address", address, "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(hpo("trials", "cluster", "--storage", url, "--format", "json").stdout)
        assert processes_under(temp_dir), "the cluster's processes do not use its own temp dir"
        dump = tmp_path / "seen.txt"
        shutil.copy(TESTS_DIR / "objectives.py", tmp_path / "objectives.py")
        (tmp_path / "env.yaml").write_text(
            f"name: env\nobjective: objectives:dump_environment\nobjective_args: {{path: {dump}}}\n"
            "search_space: {x: {type: float, low: 0, high: 1}}\nn_trials: 1\n")
        result = hpo("run", str(tmp_path / "env.yaml"), "--storage", url, "--ray-address", address)
        assert result.returncode == 0, result.stderr
        seen = dump.read_text()
        assert "RAY_AUTH_MODE=token" in seen  # a worker of the cluster dumped what it inherited
        assert SECRET not in seen
    study = optuna.load_study(study_name="cluster", storage=url)
    nodes = {t.user_attrs["hpo:run"]["node"] for t in study.trials}
    assert len(nodes) == 2, nodes
    # both nodes run on this machine's IP: named by it, told apart by a short node id
    (host,) = {t.user_attrs["hpo:run"]["host"] for t in study.trials}
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host), host
    assert {r["node"] for r in rows} == {f"{host}#{n[:6]}" for n in nodes}
    deadline = time.monotonic() + 30
    while processes_under(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_under(temp_dir) == [], "SIGTERM to `ray start --block` left Ray processes running"
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_fair_share_runs_no_more_studies_than_hold_one_trial_each():
    from hpo.run.service import FairShare

    share = FairShare(capacity=lambda: (2.0, 1.0))
    one_cpu = make_spec(resources={"cpu": 1})
    assert share.has_room() and share.cap(one_cpu) == 2
    share.add("a", 1.0, 0.0)
    assert share.has_room() and share.cap(one_cpu) == 2
    share.add("b", 1.0, 0.0)
    assert not share.has_room() and share.cap(one_cpu) == 1  # a third would wait for a worker
    share.remove("a")
    share.add("gpu", 0.5, 1.0)
    assert share.has_room()  # 1.5 of 2 CPUs, 1 of 1 GPU
    share.add("gpu2", 0.25, 0.5)
    assert not share.has_room()  # GPUs over-reserved


def test_a_serve_never_claims_again_a_study_it_runs_when_its_own_lease_lapsed(store):
    """Under load the first renewal of a short lease can come late; the serve's next poll must not
    start a second driver of the same study (it would fail the first one's live trials)."""
    from hpo.run.service import Server
    from hpo.store.jobs import Jobs

    from studies import expire_lease

    store.upgrade()
    Jobs(store.engine).create("mine", "{}")
    server = Server(store, lease_s=2, capacity=lambda: (4.0, 0.0))
    job = server.jobs.claim_next(server.owner, 2)
    running = threading.Event()
    driver = threading.Thread(target=running.wait)  # stands in for the study's driver thread
    driver.start()
    try:
        server._threads[job.study_name] = driver
        expire_lease(store, "mine")
        server.claim_more(threading.Event())
        assert server._threads == {"mine": driver}  # no second driver
        assert server.jobs.get("mine").owner == server.owner
    finally:
        running.set()
        driver.join()


def test_a_study_whose_driver_crashes_every_time_ends_failed_instead_of_looping(ray_runtime, tmp_path):
    """A stored spec that validates but crashes the driver (here: a sampler option of the wrong
    type, as an older hpo let through submit) is retried after a backoff, then FAILED."""
    import sqlalchemy as sa

    from hpo.store.database import Store
    from hpo.store.schema import jobs as jobs_table

    url = f"sqlite:///{tmp_path}/poison.db"
    assert hpo("submit", str(write_spec(tmp_path, "poison")), "--storage", url).returncode == 0
    store = Store(url)
    with store.engine.begin() as conn:
        spec = json.loads(conn.execute(sa.select(jobs_table.c.spec)).scalar())
        spec["sampler"] = {"name": "tpe", "options": {"n_startup_trials": "ten"}}
        conn.execute(jobs_table.update().values(spec=json.dumps(spec)))
    store.dispose()
    with serving_here(url, crash_backoff_s=0.2):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and api.status("poison", storage=url).state != "FAILED":
            time.sleep(0.2)
        time.sleep(1.0)  # a serve still looping would claim it again meanwhile
    status = api.status("poison", storage=url)
    assert status.state == "FAILED" and "crashed 3 times" in status.message and "TypeError" in status.message
    study = optuna.load_study(study_name="poison", storage=url)
    assert len(study.trials) <= 3 and not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_studies_whose_modules_share_a_name_run_their_own_code_under_one_serve(ray_runtime, tmp_path):
    """a/train.py and b/train.py, each with its own check_args: submitted from one process and
    run by one serve, each study's trials get its own module's args and code."""
    url = f"sqlite:///{tmp_path}/same.db"
    for name, value in (("a", 1.0), ("b", 2.0)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train.py").write_text(
            f"def check_args(args, base_dir):\n    return {{**args, 'v': {value}}}\n\n"
            f"def objective(params, reporter, v=0.0):\n    return v + {value} * 10\n")
        (folder / "spec.yaml").write_text(
            f"name: same-{name}\nobjective: train:objective\nsearch_space: {{x: {{type: float, low: 0, high: 1}}}}\n"
            "n_trials: 3\nmax_concurrent_trials: 1\n")
        api.submit(folder / "spec.yaml", storage=url)
    with serving_here(url):
        states = wait_finished(url, ["same-a", "same-b"], timeout=120)
    assert states == {"same-a": "COMPLETED", "same-b": "COMPLETED"}
    for name, expected in (("a", 11.0), ("b", 22.0)):
        study = optuna.load_study(study_name=f"same-{name}", storage=url)
        assert {t.value for t in study.trials} == {expected}
    assert "train" not in sys.modules  # neither module ran in this (the serve's) process


def test_a_cluster_with_no_live_cpu_hands_studies_back_instead_of_failing_them(ray_runtime, tmp_path):
    """The policy on a cluster that reports no CPU (its raylet died): nothing FAILED, the serve
    ends with RuntimeLost (exit 3) for a supervisor to restart it."""
    import pytest

    from hpo.errors import RuntimeLost
    from hpo.run.service import Server
    from hpo.store.database import Store

    url = f"sqlite:///{tmp_path}/lost.db"
    assert hpo("submit", str(write_spec(tmp_path, "waiting")), "--storage", url).returncode == 0
    store = Store(url)
    server = Server(store, poll_s=0.05, capacity=lambda: (0.0, 0.0))
    try:
        with pytest.raises(RuntimeLost, match="restart hpo serve"):
            server.run(threading.Event())
    finally:
        store.dispose()
    assert api.status("waiting", storage=url).state == "QUEUED"
