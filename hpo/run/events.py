"""What a study run tells its observer (the CLI's progress bar): counts and the best trial so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpo.spec.study import StudySpec


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # the objective raised, returned no number, timed out, or its worker died
    running: int = 0
    stopped: int = 0  # cancelled, handed back, interrupted: hpo stopped them; not failures

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


@dataclass
class Best:
    number: int
    value: float
    params: dict[str, Any]


class Observer(Protocol):
    """Receives progress events (the CLI's progress bar is one)."""

    def started(self, spec: StudySpec, counts: Counts) -> None: ...

    def trial_finished(self, trial: FrozenTrial, counts: Counts, best: Best | None) -> None: ...
