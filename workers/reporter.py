"""The reporter an objective receives: stream (step, value) to the driver, stop when pruned."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class Pruned(Exception):
    """Raised by ``Reporter.report`` when the driver decided to prune the trial.

    Let it propagate (or return after catching it): the trial runner records the trial as PRUNED.
    """


# send(step, value) -> True when the trial must stop.
Sender = Callable[[int, float], bool]


class Reporter:
    """Handed to the objective by the trial runner.

    ``report(step, value)`` sends an intermediate value (e.g. validation accuracy after an epoch)
    to the driver, which stores it and asks the study's pruner; when the pruner says stop,
    ``report`` raises :class:`Pruned` so the training loop ends cleanly at that step.
    """

    def __init__(
        self,
        *,
        trial_number: int = 0,
        seed: int = 0,
        device: str = "cpu",
        send: Sender | None = None,
    ) -> None:
        self.trial_number = trial_number
        self.seed = seed
        self.device = device
        self._send = send
        self._stopped = False
        self.last_step: int | None = None
        self.reported: dict[int, float] = {}  # every (step, value) sent, returned with the outcome
        self.metrics: dict[str, float] = {}  # the latest value of each logged metric
        self.history: dict[int, dict[str, float]] = {}  # step -> metrics logged for that step
        self._pending: dict[str, float] = {}

    @classmethod
    def local(cls, seed: int = 0, device: str = "cpu") -> Reporter:
        """A reporter that never prunes: call your objective outside hpo, e.g. in a notebook."""
        return cls(seed=seed, device=device)

    def report(self, step: int, value: float) -> None:
        """Report ``value`` at ``step``; raises :class:`Pruned` if the trial should stop."""
        if self._stopped:
            raise Pruned(f"trial {self.trial_number} was pruned at step {self.last_step}")
        step, value = int(step), float(value)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.last_step = step
        self.reported.setdefault(step, value)
        if self._pending:
            self.history.setdefault(step, {}).update(self._pending)
            self._pending = {}
        if self._send is not None and self._send(step, value):
            self._stopped = True
            raise Pruned(f"trial {self.trial_number} pruned at step {step}")

    def log(self, **metrics: Any) -> None:
        """Record extra metrics (e.g. train_accuracy) for the step reported next; they are kept
        with the trial (its latest values, and per step for learning curves)."""
        for key, val in metrics.items():
            val = float(val)
            if math.isfinite(val):
                self.metrics[key] = val
                self._pending[key] = val

    @property
    def should_stop(self) -> bool:
        """True once the trial was pruned (for loops that prefer polling to exceptions)."""
        return self._stopped
