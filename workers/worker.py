"""A long-lived trial worker: one process that runs trial after trial of one objective.

The driver keeps one such worker per slot (a Ray actor with the trial's CPUs, GPUs and memory),
so what a process pays once (imports, datasets an objective builds at module level, torch's
warm-up, a CUDA context) is paid once per worker, not once per trial. A worker only ever runs
one objective from one import path: the driver's pool is keyed by that identity, so two studies
whose modules share a name never meet in one process.

Each outcome says which process ran the trial and, for the first trial of a process (a cold
start), what the process spent before it: wall seconds since the process started and CPU
seconds, imports and module-level data included.
"""

from __future__ import annotations

import os
import time

from workers.credentials import drop_credentials
from workers.runner import TrialOutcome, TrialTask, check_objective, resolve_objective, run_remote_trial, run_trial


class TrialWorker:
    """The body of a worker: a Ray actor (wrapped with ``ray.remote`` by the Ray backend) or a
    plain process of this machine (``workers.local_worker``, the local backend)."""

    def __init__(self, objective: str, import_path: str | None) -> None:
        # before any objective code runs: a cluster's nodes may have started with a credential
        drop_credentials()
        self.objective = objective
        self.import_path = import_path
        self.trials = 0
        self._startup: tuple[float, float | None] | None = None  # once the objective is imported

    def _imported(self) -> tuple[float, float | None]:
        """Import the objective once (with any data it builds at module level) and note what the
        process had spent by then: its start-up, not its first trial's training."""
        if self._startup is None:
            try:
                resolve_objective(self.objective, self.import_path)
            except Exception:
                pass  # the trial (or the check) resolves again and reports the error
            self._startup = (time.process_time(), process_age())
        return self._startup

    def run(self, task: TrialTask, channel) -> TrialOutcome:
        """Ray: reports go through the driver process's report channel actor, and so does the
        notice that the trial began (not waited for)."""
        return self.execute(task, lambda t: run_remote_trial(t, channel),
                            began=lambda: channel.began.remote(task.box, task.key))

    def execute(self, task: TrialTask, runner=None, began=None) -> TrialOutcome:
        """Run one trial with ``runner(task) -> TrialOutcome`` (default: ``run_trial`` without
        reports) and add what the process it ran in cost. ``began()`` is called once the process
        is ready for the trial (the objective imported), just before the trial runs: the driver
        counts the trial's time from there, not from its launch."""
        if task.objective != self.objective or task.import_path != self.import_path:
            # The pool's identity guarantees this never happens; refuse rather than mix code.
            raise RuntimeError(f"worker for {self.objective!r} was sent a trial of {task.objective!r}")
        cold = self.trials == 0
        startup = self._imported()
        self.trials += 1
        if began is not None:
            began()
        outcome = runner(task) if runner is not None else run_trial(task, None)
        outcome.pid = os.getpid()
        outcome.cold = cold
        if cold:
            outcome.startup_cpu_s, outcome.startup_s = startup
        return outcome

    def check(self, args: dict) -> tuple[str | None, dict]:
        """Import the objective (start-up the process pays once anyway) and check its args."""
        self._imported()
        return check_objective(self.objective, self.import_path, args)


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
