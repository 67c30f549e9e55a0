"""`hpo serve` as real processes, for the service and fault tests: a quick study's spec, a serve
started and stopped as an operator would, and waiting for studies to finish."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from hpo import api

from shell import HPO

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
