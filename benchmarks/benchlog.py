"""What every benchmark objective logs, the same way under every system (compare.py reads it).

Importing this module appends ``pid <pid>`` to the file named by ``HPO_BENCH_LOG`` (when set), so
the harness counts the processes that loaded the objective. ``timed(reporter, **work)``, called as
the objective starts, appends ``call <pid> <epoch s> [name=value ...]`` and wraps the reporter so
that each ``report(...)`` call appends ``report <pid> <ms> <epoch s at its end>``: the time the
objective waited for the system's answer (store the value, ask the pruner), measured inside the
objective for hpo, Optuna and Ray Tune alike. ``work`` is what one step of the trial costs to
train, in the objective's own terms (heavy.py: optimizer steps, multiply-adds, parameters
updated), so that work.py can tell a system that trains slower from a search that chose costlier
trials.
"""

from __future__ import annotations

import os
import time

PATH = os.environ.get("HPO_BENCH_LOG")


def _append(line: str) -> None:
    if PATH:  # one O_APPEND write per line: lines of concurrent processes never interleave
        fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class TimedReporter:
    """The objective's reporter, with each ``report`` call timed; everything else passes through."""

    def __init__(self, reporter) -> None:
        self._reporter = reporter

    def report(self, step: int, value: float) -> None:
        started = time.perf_counter()
        try:
            self._reporter.report(step, value)  # raises Pruned when the trial must stop
        finally:
            _append(f"report {os.getpid()} {1000 * (time.perf_counter() - started):.3f} {time.time():.6f}\n")

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def timed(reporter, **work: float) -> TimedReporter:
    features = "".join(f" {name}={value:g}" for name, value in sorted(work.items()))
    _append(f"call {os.getpid()} {time.time():.6f}{features}\n")
    return TimedReporter(reporter)


_append(f"pid {os.getpid()}\n")
