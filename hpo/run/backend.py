"""The trial backend: the driver's one door to whatever runs trials.

The driver decides (budget, retries, pruning, timeouts, cancel, lease loss); a backend only
runs what it is given and says what happened. ``hpo.run.ray_backend.RayBackend`` runs trials on
long-lived Ray workers; tests run the driver's policy on a fake one with simulated time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from workers.runner import TrialOutcome, TrialTask

Report = tuple[str, int, float]  # (attempt key, step, value)
Decision = tuple[str, int, bool]  # (attempt key, step, stop)


@dataclass(frozen=True)
class Slot:
    """What one trial asks for: the identity of the code it runs and the resources it holds."""

    objective: str
    import_path: str | None
    cpu: float
    gpu: float = 0.0
    memory: int | None = None
    version: str | None = None  # the objective's file as imported (time and size): edited, not reused


@dataclass(frozen=True)
class Finished:
    key: str
    outcome: TrialOutcome
    infrastructure: bool = False  # the worker or its node died: not the objective's fault
    stopped: bool = False  # hpo's own machinery lost it (its report channel died): run it again, using no retry


@dataclass
class Events:
    reports: list[Report] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    # attempts whose worker began running them: its process is up and has imported the
    # objective, so what follows is the trial's own time (its trial_timeout counts from here)
    began: list[str] = field(default_factory=list)


class TrialBackend(ABC):
    """Runs the trials of one study run. Not thread-safe: one backend per driver run."""

    where = "the Ray cluster"  # what capacity() measures, as errors name it

    @abstractmethod
    def capacity(self) -> tuple[float, float]:
        """(CPUs, GPUs) the backend can give trials in total."""

    @abstractmethod
    def open(self, box: str, slot: Slot) -> None:
        """Start a study run: its reports mailbox and the kind of worker its trials need."""

    @abstractmethod
    def launch(self, task: TrialTask) -> None:
        """Start ``task`` now (the driver never launches more trials than it has slots)."""

    def release_spare(self) -> None:
        """The driver launches nothing more for now: workers it did not relaunch may go."""

    @abstractmethod
    def poll(self, timeout: float) -> Events:
        """What happened since the last poll, waiting up to ``timeout`` seconds for something:
        reports, trials that began on their worker, trials that ended."""

    @abstractmethod
    def decide(self, decisions: list[Decision]) -> None:
        """Answer reports that wait for a prune decision."""

    @abstractmethod
    def cancel(self, key: str) -> None:
        """Stop a running trial; the backend reports nothing more about it."""

    @abstractmethod
    def close(self) -> None:
        """End the study run: running trials are stopped, their workers told to stop. Called
        also when ``open`` failed part way."""
