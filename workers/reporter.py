"""The reporter an objective receives: stream (step, value) to the driver, stop when pruned."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from workers.checkpoints import BucketCheckpoints, CheckpointFolder, open_checkpoints


class Pruned(Exception):
    """Raised by ``Reporter.report`` when the driver decided to prune the trial.

    Let it propagate (or return after catching it): the trial runner records the trial as PRUNED.
    """


def trial_seed(base: int, number: int) -> int:
    """The seed hpo gives trial ``number`` of a study whose seed is ``base`` (``reporter.seed``).
    Here, in the package objectives import, so that a script running the same objective outside
    hpo (benchmarks/peers/) can give its trials the very same seeds at no import cost."""
    return (base * 1_000_003 + number) % (2**31 - 1)


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
        checkpoints: CheckpointFolder | BucketCheckpoints | None = None,
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
        self._checkpoints = checkpoints
        self.checkpoint_step: int | None = None  # the step of the checkpoint loaded, if any
        self.saved_step: int | None = None  # the step of the last checkpoint saved
        self._unsettled: int | None = None  # a checkpoint's step not reported yet (see workers.checkpoints)

    @classmethod
    def local(cls, seed: int = 0, device: str = "cpu", checkpoint_dir: str | None = None) -> Reporter:
        """A reporter that never prunes: call your objective outside hpo, e.g. in a notebook
        (with ``checkpoint_dir``, its checkpoints go there)."""
        return cls(seed=seed, device=device, checkpoints=open_checkpoints(checkpoint_dir) if checkpoint_dir else None)

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, state: Any, step: int | None = None) -> bool:
        """Keep ``state`` as the trial's checkpoint at ``step`` (default: the step reported last).

        ``state``: any picklable object (a dict of torch state dicts is typical; saved with
        torch.save when torch is loaded), ``bytes``, or a ``pathlib.Path`` to a file or folder
        you wrote (copied). Save *before* you report the step: a report may end the trial (a
        PBT segment, a pruner), and the work of that step is kept only if it was saved. A trial
        that is retried, handed back, resumed or continued by PBT gets the newest checkpoint
        back from :meth:`load_checkpoint`. Returns False when the study keeps no checkpoints.
        """
        if self._checkpoints is None:
            return False
        if step is None:
            if self.last_step is None:
                raise ValueError("save_checkpoint needs a step before the first report")
            step = self.last_step
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self._checkpoints.save(state, step, self.reported)
        self.saved_step = step
        self._unsettled = step if max(self.reported, default=-1) < step else None
        return True

    def load_checkpoint(self) -> Any:
        """The trial's newest checkpoint (what :meth:`save_checkpoint` was given; a ``Path`` to a
        local copy for files), or None when there is none. Continue at ``checkpoint_step + 1``."""
        if self._checkpoints is None:
            return None
        loaded = self._checkpoints.load(map_location=self.device)
        if loaded is None:
            return None
        state, self.checkpoint_step = loaded
        # the curve so far comes back with the trial's outcome, so a continued trial stores it whole
        for step, value in self._checkpoints.curve(self.checkpoint_step).items():
            self.reported.setdefault(step, value)
        return state

    def report(self, step: int, value: float) -> None:
        """Report ``value`` at ``step``; raises :class:`Pruned` if the trial should stop."""
        if self._stopped:
            raise Pruned(f"trial {self.trial_number} was pruned at step {self.last_step}")
        step, value = int(step), float(value)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.last_step = step
        self.reported.setdefault(step, value)
        if self._unsettled is not None and step >= self._unsettled and self._checkpoints is not None:
            self._checkpoints.record_curve(self._unsettled, self.reported)  # before a prune can end it
            self._unsettled = None
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
