"""A simulated trial backend and clock for the driver's policy tests (hpo's own seams).

Trials take simulated seconds: each begins ``startup`` seconds after its launch (its worker's
start), then reports ``steps`` times, evenly spaced, then ends; the clock moves only when the
driver polls. Everything else the driver touches (Optuna, SQLite) is real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hpo.run.backend import Decision, Events, Finished, Slot, TrialBackend
from workers.runner import TrialOutcome, TrialTask


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Script:
    """How one trial behaves."""

    duration: float = 10.0  # from when it begins
    startup: float = 0.0  # from its launch until it begins (a cold worker's start; inf: never)
    steps: int = 0  # reports at duration * (i + 1) / (steps + 1) after it began
    value: float = 0.0  # the final value; reports approach it as 1 / (step + 1) above
    crash: bool = False  # the worker dies when the trial would end (an infrastructure failure)
    error: str | None = None  # the objective raises this when it would end
    channel_lost: bool = False  # its report channel dies when it would end (hpo's machinery, not the worker)


@dataclass
class _Trial:
    task: TrialTask
    script: Script
    launched: float
    began: bool = False
    step: int = 0  # next step to report
    waiting: bool = False  # a report waits for its decision
    pruned: bool = False

    @property
    def start(self) -> float:
        return self.launched + self.script.startup

    def next_time(self) -> float:
        if self.pruned:
            return -1.0  # ends at once
        if not self.began:
            return self.start
        if self.waiting:
            return float("inf")
        s = self.script
        if self.step < s.steps:
            return self.start + s.duration * (self.step + 1) / (s.steps + 1)
        return self.start + s.duration


@dataclass
class FakeBackend(TrialBackend):
    clock: FakeClock
    behave: Callable[[TrialTask], Script]
    cpus: float = 2.0
    gpus: float = 0.0
    running: dict[str, _Trial] = field(default_factory=dict)
    launched: list[tuple[float, str]] = field(default_factory=list)  # (time, key)
    cancelled: list[str] = field(default_factory=list)
    most_at_once: int = 0
    closed: bool = False
    fail_launch: int | None = None  # the launch (0-based) that raises, as a worker that cannot start
    interrupt_launch: int | None = None  # the launch (0-based) after whose send Ctrl-C lands

    def capacity(self) -> tuple[float, float]:
        return self.cpus, self.gpus

    def open(self, box: str, slot: Slot) -> None:
        self.slot = slot

    def launch(self, task: TrialTask) -> None:
        assert not self.closed
        if self.fail_launch == len(self.launched):
            raise RuntimeError("the worker could not be started")
        self.running[task.key] = _Trial(task, self.behave(task), self.clock.now)
        self.launched.append((self.clock.now, task.key))
        self.most_at_once = max(self.most_at_once, len(self.running))
        assert len(self.running) * self.slot.cpu <= self.cpus, "launched past the cluster's CPUs"
        if self.interrupt_launch == len(self.launched) - 1:
            raise KeyboardInterrupt  # the signal's handler runs as the call returns: the trial runs

    def poll(self, timeout: float) -> Events:
        events = Events()
        if not self.running:
            self.clock.now += timeout
            return events
        due = min(t.next_time() for t in self.running.values())
        if due > self.clock.now + timeout:
            self.clock.now += timeout
            return events
        self.clock.now = max(self.clock.now, due)
        for key, trial in list(self.running.items()):
            if trial.next_time() > self.clock.now:
                continue
            s = trial.script
            if not trial.began:
                events.began.append(key)
                trial.began = True
                continue
            if trial.pruned:
                events.finished.append(Finished(key, self._outcome(trial, "pruned")))
            elif trial.step < s.steps:
                events.reports.append((key, trial.step, s.value + 1.0 / (trial.step + 1)))
                trial.step += 1
                trial.waiting = trial.task.decisions
                continue
            elif s.channel_lost:
                events.finished.append(Finished(key, TrialOutcome(state="fail", error="ChannelLost: died"), stopped=True))
            elif s.crash:
                events.finished.append(Finished(key, TrialOutcome(state="fail", error="ActorDiedError: killed"), True))
            elif s.error:
                events.finished.append(Finished(key, self._outcome(trial, "fail", error=s.error)))
            else:
                events.finished.append(Finished(key, self._outcome(trial, "complete", values=[s.value])))
            del self.running[key]
        return events

    def _outcome(self, trial: _Trial, state: str, **kw) -> TrialOutcome:
        reports = {i: trial.script.value + 1.0 / (i + 1) for i in range(trial.step)}
        return TrialOutcome(state=state, last_step=trial.step - 1 if trial.step else None, reports=reports,
                            duration=self.clock.now - trial.start, pid=1, **kw)

    def decide(self, decisions: list[Decision]) -> None:
        for key, step, stop in decisions:
            trial = self.running.get(key)
            if trial is not None and trial.waiting and trial.step - 1 == step:
                trial.waiting = False
                trial.pruned = stop

    def cancel(self, key: str) -> None:
        if self.running.pop(key, None) is not None:
            self.cancelled.append(key)

    def close(self) -> None:
        self.closed = True
        for key in list(self.running):
            self.cancel(key)
