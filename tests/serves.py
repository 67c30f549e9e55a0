"""`hpo serve` as real processes, for the service, runtime and fault tests: a quick study's spec, a
serve started and stopped as an operator would, a serve in the test's process on the session's
Ray, and waiting for studies to finish."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hpo import api

from shell import HPO, hpo

QUICK = """\
name: {name}
objective: builtin:branin
objective_args: {{steps: 4, delay: 0.05}}
search_space: branin
sampler: random
n_trials: {n}
max_concurrent_trials: 2
seed: {seed}
"""


def write_spec(tmp_path: Path, name: str, n: int = 6, seed: int = 0) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(QUICK.format(name=name, n=n, seed=seed))
    return path


def start_serve(url: str, *args: str, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"} | (extra_env or {})
    return subprocess.Popen([HPO, "serve", "--storage", url, "--poll", "0.5", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_serving(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the serve's log says it is serving (its Ray runtime is up, its store checked)."""
    deadline = time.monotonic() + timeout
    while "serving" not in log.read_text():
        assert proc.poll() is None, f"the serve exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the serve was not serving after {timeout:g} s:\n{log.read_text()}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def wait_finished(url: str, names: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states = {}
    while time.monotonic() < deadline:
        known = {s.study_name: s.state for s in api.list_studies(storage=url)}  # one store open a poll
        states = {n: known.get(n, "MISSING") for n in names}
        if all(s in ("COMPLETED", "FAILED", "CANCELLED") for s in states.values()):
            break
        time.sleep(0.3)
    return states


def serve_slow_study(tmp_path: Path, url: str, n: int, seed: int, delay: float,
                     extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Submit study "slow" (n trials of 4 steps of ``delay`` s) and start a serve on it."""
    spec = tmp_path / "slow.yaml"
    spec.write_text(QUICK.format(name="slow", n=n, seed=seed).replace("delay: 0.05", f"delay: {delay}"))
    assert hpo("submit", str(spec), "--storage", url).returncode == 0
    return start_serve(url, log=tmp_path / "a.log", extra_env=extra_env)


@contextlib.contextmanager
def serving_here(url: str, **options) -> Iterator[None]:
    """A serve in this process, on the session's Ray (it starts no runtime of its own), for as
    long as the block runs."""
    from hpo.run.service import Server
    from hpo.store.database import Store

    store = Store(url)
    stop_event = threading.Event()
    thread = threading.Thread(target=Server(store, poll_s=0.1, **options).run, args=(stop_event,))
    thread.start()
    try:
        yield
    finally:
        stop_event.set()
        thread.join()
        store.dispose()


def finish_with_a_new_serve(url: str, n: int) -> None:
    """A next serve resumes study "slow" and finishes its budget exactly. It runs in this process
    (a next `hpo serve` process finishes a study in test_faults' kill -9 test)."""
    with serving_here(url):
        states = wait_finished(url, ["slow"], timeout=120)
    assert states == {"slow": "COMPLETED"}
    final = api.status("slow", storage=url)
    assert final.complete + final.pruned == n and final.running == 0


def wait_complete(url: str, name: str, n: int, timeout: float = 90) -> None:
    """Until ``n`` trials of the study are complete; fails when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while (complete := api.status(name, storage=url).complete) < n:
        assert time.monotonic() < deadline, f"{name}: {complete} of {n} trials complete after {timeout:g} s"
        time.sleep(0.3)
