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
        self._multi_objective = len(study.directions) > 1

    def report(self, trial: optuna.Trial, step: int, value: float) -> bool:
        """Store an intermediate value; True when the pruner says the trial should stop."""
        if self._multi_objective:
            # Optuna neither stores nor prunes reports of multi-objective trials; keep the
            # learning curve visible anyway, and never prune.
            self.study._storage.set_trial_intermediate_value(trial._trial_id, step, value)
            return False
        trial.report(value, step)  # Optuna keeps the first value of a step reported twice
        return trial.should_prune()

    def complete(
        self, trial: optuna.Trial, values: list[float], constraints: dict[str, float], info: dict[str, Any]
    ) -> FrozenTrial:
        trial.set_user_attr(INFO_ATTR, info)
        for key, value in constraints.items():
            trial.set_constraint(key, value)  # samplers read these; feasible when all <= 0
        return self._tell(trial, values if self._multi_objective else values[0])

    def prune(self, trial: optuna.Trial, info: dict[str, Any]) -> FrozenTrial:
        trial.set_user_attr(INFO_ATTR, info)
        return self._tell(trial, state=TrialState.PRUNED)

    def fail(self, trial_id: int, number: int, reason: str, info: dict[str, Any] | None = None) -> FrozenTrial:
        storage = self.study._storage
        storage.set_trial_user_attr(trial_id, ERROR_ATTR, reason)
        if info:
            storage.set_trial_user_attr(trial_id, INFO_ATTR, info)
        return self._tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def _tell(self, *args: Any, **kwargs: Any) -> FrozenTrial:
        # Samplers that run out of points (grid, bruteforce) call study.stop() from after_trial,
        # which Optuna only allows inside study.optimize(). Mark the tell as such so the stop is
        # recorded (see `exhausted`) instead of raising before the trial is finished.
        local = self.study._thread_local
        local.in_optimize_loop = True
        try:
            return self.study.tell(*args, **kwargs)
        finally:
            local.in_optimize_loop = False

    @property
    def exhausted(self) -> bool:
        """True once the sampler said it has nothing left to sample."""
        return bool(getattr(self.study, "_stop_flag", False))

    def stale_running(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
