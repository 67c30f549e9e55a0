"""Schedules: policies that run each configuration in segments, decided by the driver.

A schedule stops a running trial at a step of its choosing (not a prune: the trial's checkpoint
is kept), records that segment as it says, and queues the segments that continue a lineage
(Optuna's enqueue: fixed values, lineage attributes; the continuation resumes from the newest
checkpoint). Two exist: Population Based Training (hpo.run.pbt) and successive halving /
Hyperband with promotion (hpo.run.promotion). Each rebuilds its state from the store
(``recover``), so a new owner of the study carries on where a killed one stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

from optuna.trial import FrozenTrial

# params, attrs, (copy the newest checkpoint from lineage, to lineage) or None
Enqueue = tuple[dict[str, Any], dict[str, Any], tuple[int, int] | None]
SegmentEnd = Literal["complete", "paused"]


class Schedule(ABC):
    """What the driver asks a schedule, in the order it asks."""

    @abstractmethod
    def owns(self, attrs: dict[str, Any]) -> bool:
        """Whether a trial with these user attributes is one of the schedule's segments."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether a trial may be dispatched now (a queued segment, or a new configuration)."""

    @abstractmethod
    def dispatched(self, trial_number: int, attrs: dict[str, Any]) -> dict[str, Any] | None:
        """A trial was asked; the attributes to set on it (a new configuration), else None."""

    @abstractmethod
    def requeued(self) -> None:
        """One of its segments was queued again (a retry, a stopped trial)."""

    @abstractmethod
    def stops(self, trial_number: int, attrs: dict[str, Any], step: int, value: float) -> bool:
        """At a report: whether the trial's segment ends here (its worker stops)."""

    @abstractmethod
    def segment_end(self, trial_number: int, attrs: dict[str, Any], last_step: int | None) -> SegmentEnd | None:
        """A trial that the schedule stopped: how to record it (None: it was not stopped by it)."""

    @abstractmethod
    def finished(self, trial: FrozenTrial, info: dict[str, Any]) -> list[Enqueue]:
        """A segment was recorded as ``trial`` (``info``: the driver's run info); what to queue."""

    @abstractmethod
    def goes_on(self, trial: FrozenTrial, info: dict[str, Any]) -> bool:
        """Whether the trial's lineage may continue (its newest checkpoint is kept)."""

    @abstractmethod
    def recover(self, trials: list[FrozenTrial]) -> list[Enqueue]:
        """Rebuild the state from the study's trials (what was RUNNING is re-queued already)."""

    def resumed(self, trial_number: int, attrs: dict[str, Any], curve: dict[int, float]) -> None:
        """A trial about to run continues its lineage from a checkpoint; ``curve``: the values
        reported up to it (reports its worker will not send again)."""

    def reported(self) -> list[Enqueue]:
        """After a batch of reports: segments to queue now (default: none)."""
        return []

    def unfinished(self) -> str | None:
        """When the study stops on its timeout: what the schedule had left to do, if anything."""
        return None
