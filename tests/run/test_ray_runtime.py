"""The Ray runtime that `hpo serve` starts for itself, as real processes: a serve whose raylet
dies exits 3 for its supervisor and the next serve finishes the study; what a `kill -9` of a
serve leaves of its runtime is stopped by the next hpo process that starts one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hpo import api

from serves import finish_with_a_new_serve, serve_slow_study, wait_complete
from shell import HPO


def test_a_serve_whose_raylet_dies_exits_3_and_the_next_serve_finishes(ray_runtime, tmp_path):
    url = f"sqlite:///{tmp_path}/raylet.db"
    # Ray's GCS declares a silent node dead after 5 failed health checks 3 s apart; checked
    # faster here (Ray's own settings, for this serve's runtime only) the study can be short
    fast_checks = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "2",
                   "RAY_health_check_timeout_ms": "500"}
    serve = serve_slow_study(tmp_path, url, n=8, seed=2, delay=0.5, extra_env=fast_checks)
    try:
        wait_complete(url, "slow", 1)
        raylets = [p for p in _children_of(serve.pid) if b"raylet/raylet" in _cmdline(p)]
        assert raylets, "no raylet under the serve"
        os.kill(raylets[0], signal.SIGKILL)
        code = serve.wait(timeout=120)
    finally:
        serve.kill()
    assert code == 3, (tmp_path / "a.log").read_text()[-2000:]
    mid = api.status("slow", storage=url)
    assert mid.state == "INTERRUPTED" and mid.running == 0
    finish_with_a_new_serve(url, 8)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def test_leftovers_of_a_killed_serves_ray_runtime_are_stopped_by_the_next_one(tmp_path, monkeypatch):
    """`kill -9` of hpo serve leaves Ray's agents of the runtime it started running; what the
    next hpo process does before it starts a runtime (ray_session calls stop_leftovers) stops
    them, and only them."""
    from hpo.run.ray_leftovers import processes_of, stop_leftovers

    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_STORAGE", "HPO_RAY_ADDRESS")}
    env["HPO_STATE_DIR"] = str(state)
    record = None
    serve = subprocess.Popen([HPO, "serve", "--storage", f"sqlite:///{tmp_path}/s.db", "--poll", "0.5"], env=env,
                             stdout=(tmp_path / "a.log").open("w"), stderr=subprocess.STDOUT)
    try:
        record = state / "ray-runtimes" / f"{serve.pid}.json"
        deadline = time.monotonic() + 120
        while not record.exists() and time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.2)
        assert record.exists(), (tmp_path / "a.log").read_text()[-2000:]
        session = json.loads(record.read_text())["session_dir"]
        while len(processes_of(session)) < 3 and time.monotonic() < deadline:  # its runtime is up
            time.sleep(0.2)
    finally:
        serve.kill()
        serve.wait(timeout=30)
    monkeypatch.setenv("HPO_STATE_DIR", str(state))
    assert stop_leftovers() >= 1
    assert processes_of(session) == [], "the killed serve's Ray processes are still running"
    assert not record.exists()


def test_a_runtime_hpo_starts_first_stops_the_leftovers_of_dead_ones():
    """The wiring of the test above: ray_session stops leftovers before it starts a runtime."""
    probe = ("import sys\nfrom hpo.run import ray_leftovers, ray_runtime\n"
             "def called(*a, **k):\n    print('STOPPED-LEFTOVERS-FIRST'); sys.exit(0)\n"
             "ray_leftovers.stop_leftovers = called\n"
             "with ray_runtime.ray_session(None):\n    print('STARTED-WITHOUT')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HPO_RAY_ADDRESS", "RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert result.stdout.strip() == "STOPPED-LEFTOVERS-FIRST", result.stderr[-2000:]
