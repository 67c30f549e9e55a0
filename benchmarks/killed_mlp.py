"""The builtin MLP (digits, real torch training) whose worker is killed at chosen trials: the
objective of benchmarks/resume.py. Each epoch trained appends a line to ``log``; trial numbers
in ``kill_trials`` SIGKILL their own process right after reporting epoch ``kill_after`` (their
retries have other numbers and run through). ``resume: false`` hides the checkpoints from the
workload (what a study without them does: the retry trains from epoch 0)."""

from __future__ import annotations

import os
import signal

from workers.builtin import mlp


class _Reporter:
    def __init__(self, reporter, log: str, kill: bool, kill_after: int, resume: bool) -> None:
        self._reporter, self._log, self._kill, self._kill_after, self._resume = reporter, log, kill, kill_after, resume

    def report(self, step: int, value: float) -> None:
        with open(self._log, "a") as f:
            f.write(f"{self._reporter.trial_number} {step}\n")
        self._reporter.report(step, value)
        if self._kill and step == self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def load_checkpoint(self):
        return self._reporter.load_checkpoint() if self._resume else None

    def save_checkpoint(self, state, step=None) -> bool:
        return self._reporter.save_checkpoint(state, step) if self._resume else False

    def __getattr__(self, name: str):
        return getattr(self._reporter, name)


def objective(params: dict, reporter, log: str, kill_trials: list[int], kill_after: int = 6,
              resume: bool = True, epochs: int = 10) -> float:
    wrapped = _Reporter(reporter, log, reporter.trial_number in kill_trials, kill_after, resume)
    return mlp.objective(params, wrapped, epochs=epochs)
