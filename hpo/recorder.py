"""The driver's single seam for writing to the study: every Optuna write goes through here.

Keeping reports, tells and failure notes in one small class lets a later version batch them
(write-behind, one transaction per tick) without touching the scheduling logic.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

ERROR_ATTR = "hpo:error"
INFO_ATTR = "hpo:run"


class StudyRecorder:
    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def report(self, trial: optuna.Trial, step: int, value: float) -> bool:
        """Store an intermediate value; True when the pruner says the trial should stop."""
        trial.report(value, step)  # Optuna keeps the first value of a step reported twice
        return trial.should_prune()

    def complete(self, trial: optuna.Trial, value: float, info: dict[str, Any]) -> FrozenTrial:
        trial.set_user_attr(INFO_ATTR, info)
        return self.study.tell(trial, value)

    def prune(self, trial: optuna.Trial, info: dict[str, Any]) -> FrozenTrial:
        trial.set_user_attr(INFO_ATTR, info)
        return self.study.tell(trial, state=TrialState.PRUNED)

    def fail(self, trial_id: int, number: int, reason: str, info: dict[str, Any] | None = None) -> FrozenTrial:
        storage = self.study._storage
        storage.set_trial_user_attr(trial_id, ERROR_ATTR, reason)
        if info:
            storage.set_trial_user_attr(trial_id, INFO_ATTR, info)
        return self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def stale_running(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
